//! Re-download of an operational bundle (never with a key).

use super::{Actor, Provisioning};
use crate::bundle::{self, DeviceBundle};
use crate::error::ProvisioningError;

impl Provisioning {
    /// Re-download of an operational bundle: certificate, CA and README;
    /// never a key (a legacy key is handed out once, at allocation).
    pub async fn certificate_bundle(
        &self,
        id: i64,
        actor: Actor<'_>,
    ) -> Result<Vec<u8>, ProvisioningError> {
        let c = self
            .store
            .certificate(id)
            .await?
            .ok_or(ProvisioningError::NotFound {
                what: "certificate",
                id,
            })?;
        let zip = bundle::device_zip(&DeviceBundle {
            gateway_code: &c.gateway_code,
            serial: &c.serial,
            fingerprint: &c.fingerprint,
            not_after: &c.not_after,
            cert_pem: &c.certificate_pem,
            ca_pem: self.ca.cert_pem(),
            key_pem: None,
        })?;
        self.audit(
            actor,
            "certificate.bundle",
            &format!("certificate:{id}"),
            "bundle without key",
        )
        .await?;
        Ok(zip)
    }
}
