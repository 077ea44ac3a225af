//! Bootstrap certificates: issuing one (it becomes the only active one) and
//! the one-time download of its factory bundle.

use time::OffsetDateTime;

use super::{Actor, LOG_TARGET, Provisioning};
use crate::bundle;
use crate::error::ProvisioningError;
use crate::store::{Bootstrap, ts};

impl Provisioning {
    /// Issues a new bootstrap certificate and makes it the only active one.
    pub async fn issue_bootstrap(
        &self,
        label: &str,
        actor: Actor<'_>,
    ) -> Result<Bootstrap, ProvisioningError> {
        let label = label.trim();
        if label.is_empty() || label.len() > 100 {
            return Err(ProvisioningError::InvalidLabel);
        }
        let issued = self.ca.issue_bootstrap(
            &format!("bootstrap {label}"),
            &self.bootstrap_ou,
            self.settings.validity_days,
        )?;
        let key = issued
            .key_pem
            .as_ref()
            .ok_or(ProvisioningError::BootstrapKeyMissing)?;
        let now = OffsetDateTime::now_utc();
        let mut tx = self.store.begin().await?;
        let id = self
            .store
            .insert_bootstrap(
                &mut tx,
                label,
                &issued.cert_pem,
                key.expose(),
                &issued.serial.to_string(),
                &issued.fingerprint.to_string(),
                &ts(issued.not_after),
                now,
            )
            .await?;
        self.store
            .audit(
                &mut tx,
                actor,
                "bootstrap.issue",
                &format!("bootstrap:{id}"),
                &format!("label={label} serial={}", issued.serial),
                now,
            )
            .await?;
        tx.commit().await?;
        tracing::info!(target: LOG_TARGET, bootstrap = id, %label, serial = %issued.serial, %actor, "bootstrap certificate issued; previous one deactivated");
        self.store
            .bootstrap(id)
            .await?
            .ok_or(ProvisioningError::NotFound {
                what: "bootstrap",
                id,
            })
    }

    /// The one-time factory bundle. The key is erased in the same
    /// transaction; a second call gets [`ProvisioningError::Gone`].
    pub async fn download_bootstrap(
        &self,
        id: i64,
        actor: Actor<'_>,
    ) -> Result<Vec<u8>, ProvisioningError> {
        let b = self
            .store
            .bootstrap(id)
            .await?
            .ok_or(ProvisioningError::NotFound {
                what: "bootstrap",
                id,
            })?;
        let now = OffsetDateTime::now_utc();
        let mut tx = self.store.begin().await?;
        let Some(key) = self.store.take_bootstrap_key(&mut tx, id, now).await? else {
            tracing::warn!(target: LOG_TARGET, bootstrap = id, %actor, "bootstrap bundle download refused: key already erased");
            return Err(ProvisioningError::Gone { id });
        };
        let zip = bundle::bootstrap_zip(
            &b.label,
            &b.certificate_pem,
            &key,
            self.ca.cert_pem(),
            &b.fingerprint,
        )?;
        self.store
            .audit(
                &mut tx,
                actor,
                "bootstrap.download",
                &format!("bootstrap:{id}"),
                "private key handed out and erased",
                now,
            )
            .await?;
        tx.commit().await?;
        tracing::warn!(target: LOG_TARGET, bootstrap = id, %actor, "bootstrap bundle downloaded; its private key is now erased from the store");
        Ok(zip)
    }
}
