//! Revocation of operational and bootstrap certificates, each followed by a
//! CRL publication.

use gatehouse_ca::RevocationReason;
use time::OffsetDateTime;

use super::{Actor, CrlPublished, LOG_TARGET, Provisioning};
use crate::error::ProvisioningError;

impl Provisioning {
    /// Revokes an operational certificate, then regenerates and publishes
    /// the CRL.
    pub async fn revoke_certificate(
        &self,
        id: i64,
        reason: RevocationReason,
        notes: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<CrlPublished, ProvisioningError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.store.begin().await?;
        if !self
            .store
            .revoke_certificate(&mut tx, id, reason.as_str(), notes, now)
            .await?
        {
            drop(tx);
            return Err(match self.store.certificate(id).await? {
                None => ProvisioningError::NotFound {
                    what: "certificate",
                    id,
                },
                Some(_) => {
                    ProvisioningError::Conflict(format!("certificate {id} is already revoked"))
                }
            });
        }
        self.store
            .audit(
                &mut tx,
                actor,
                "certificate.revoke",
                &format!("certificate:{id}"),
                &format!("reason={reason} notes={}", notes.unwrap_or("")),
                now,
            )
            .await?;
        tx.commit().await?;
        tracing::warn!(target: LOG_TARGET, certificate = id, %reason, %actor, "certificate revoked");
        self.publish_crl().await
    }

    /// Emergency revocation of a bootstrap certificate (the whole batch).
    pub async fn revoke_bootstrap(
        &self,
        id: i64,
        reason: RevocationReason,
        notes: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<CrlPublished, ProvisioningError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.store.begin().await?;
        if !self
            .store
            .revoke_bootstrap(&mut tx, id, reason.as_str(), notes, now)
            .await?
        {
            drop(tx);
            return Err(match self.store.bootstrap(id).await? {
                None => ProvisioningError::NotFound {
                    what: "bootstrap",
                    id,
                },
                Some(_) => {
                    ProvisioningError::Conflict(format!("bootstrap {id} is already revoked"))
                }
            });
        }
        self.store
            .audit(
                &mut tx,
                actor,
                "bootstrap.revoke",
                &format!("bootstrap:{id}"),
                &format!("reason={reason} notes={}", notes.unwrap_or("")),
                now,
            )
            .await?;
        tx.commit().await?;
        tracing::warn!(target: LOG_TARGET, bootstrap = id, %reason, %actor, "bootstrap certificate revoked: the whole batch is locked out");
        self.publish_crl().await
    }
}
