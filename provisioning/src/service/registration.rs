//! Device self-registration, and an admin's allocation or rejection of it.

use time::OffsetDateTime;

use super::{Actor, LOG_TARGET, Provisioning};
use crate::bundle::{self, DeviceBundle};
use crate::error::ProvisioningError;
use crate::mac::{self, Mac};
use crate::store::{NewCertificate, NewGateway, NewRegistration, Registration, ts};

/// An admin's allocation of a PENDENTE registration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateRequest {
    pub tenant: String,
    pub device_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// The result of an allocation. `bundle` is the ZIP (holding `device.key`
/// only in legacy mode).
#[derive(Debug)]
pub struct Allocation {
    pub registration_id: i64,
    pub gateway_id: i64,
    pub gateway_code: String,
    pub certificate_id: i64,
    pub serial: String,
    pub legacy: bool,
    pub bundle: Vec<u8>,
}

impl Provisioning {
    /// Records a device's self-registration (idempotent per MAC; REJEITADO
    /// records are ignored). The caller has validated the input.
    pub async fn register(
        &self,
        new: NewRegistration,
    ) -> Result<(Registration, bool), ProvisioningError> {
        let now = OffsetDateTime::now_utc();
        let (reg, created) = self.store.register(&new, now).await?;
        if created {
            tracing::info!(
                target: LOG_TARGET,
                id = reg.id, mac = ?reg.mac, ip = ?reg.source_ip.as_deref().unwrap_or("-"),
                csr = reg.has_csr, bootstrap = ?reg.bootstrap_id,
                "device registered, waiting for allocation"
            );
            return Ok((reg, true));
        }
        // A PENDENTE record made without a bootstrap certificate (legacy,
        // `require_bootstrap_cert = false`) is claimed by the device that
        // presents one: its CSR replaces the anonymous caller's.
        if new.bootstrap_id.is_some()
            && reg.bootstrap_id.is_none()
            && reg.status == crate::store::Status::Pendente
        {
            let mut tx = self.store.begin().await?;
            if self.store.claim_registration(&mut tx, reg.id, &new).await? {
                let detail = format!(
                    "mac={} bootstrap={} ip={} csr={}; replaces the anonymous registration from ip={} (csr={})",
                    new.mac,
                    new.bootstrap_id.unwrap_or_default(),
                    new.source_ip.as_deref().unwrap_or("-"),
                    new.csr_pem.is_some(),
                    reg.source_ip.as_deref().unwrap_or("-"),
                    reg.has_csr,
                );
                self.store
                    .audit(
                        &mut tx,
                        "device-api",
                        "registration.claim",
                        &format!("registration:{}", reg.id),
                        &detail,
                        now,
                    )
                    .await?;
                tx.commit().await?;
                tracing::warn!(
                    target: LOG_TARGET,
                    id = reg.id, mac = ?new.mac, ip = ?new.source_ip.as_deref().unwrap_or("-"),
                    anonymous_ip = ?reg.source_ip.as_deref().unwrap_or("-"),
                    bootstrap = ?new.bootstrap_id,
                    "anonymous registration claimed by a device presenting the bootstrap certificate; its data replace the anonymous ones"
                );
                let claimed =
                    self.store
                        .registration(reg.id)
                        .await?
                        .ok_or(ProvisioningError::NotFound {
                            what: "registration",
                            id: reg.id,
                        })?;
                return Ok((claimed, true));
            }
        }
        Ok((reg, false))
    }

    /// Allocates a PENDENTE registration to a tenant: creates the gateway,
    /// issues its certificate (from the stored CSR, or server-generated for
    /// legacy firmware) and marks the record PROVISIONADO.
    pub async fn allocate(
        &self,
        id: i64,
        req: &AllocateRequest,
        actor: Actor<'_>,
    ) -> Result<Allocation, ProvisioningError> {
        let reg = self
            .store
            .registration(id)
            .await?
            .ok_or(ProvisioningError::NotFound {
                what: "registration",
                id,
            })?;
        if reg.status != crate::store::Status::Pendente {
            return Err(ProvisioningError::NotAllocatable {
                id,
                status: reg.status,
            });
        }
        if req.tenant.trim().is_empty() {
            return Err(ProvisioningError::EmptyTenant);
        }
        if !mac::valid_device_id(&req.device_id) {
            return Err(ProvisioningError::InvalidDeviceId {
                device_id: req.device_id.clone(),
            });
        }
        let mac = Mac::parse(&reg.mac).ok_or_else(|| ProvisioningError::InvalidStoredMac {
            mac: reg.mac.clone(),
        })?;
        let code = mac::gateway_code(&req.device_id, &mac);
        let days = self.settings.validity_days;
        let (issued, kind) = match &reg.csr_pem {
            Some(csr) => (
                self.ca
                    .sign_operational_csr(csr, &code, &self.operational_ou, days)?,
                "csr",
            ),
            None => {
                tracing::warn!(
                    target: LOG_TARGET,
                    registration = id, gateway_code = %code,
                    "[LEGACY] registration has no CSR: generating the device key on the server; \
                     update the firmware to send csr_pem"
                );
                (
                    self.ca
                        .issue_operational_legacy(&code, &self.operational_ou, days)?,
                    "legacy",
                )
            }
        };
        let now = OffsetDateTime::now_utc();
        let mut tx = self.store.begin().await?;
        let gateway = NewGateway {
            device_id: req.device_id.clone(),
            serial_number: reg.serial.clone(),
            mac: reg.mac.clone(),
            gateway_code: code.clone(),
            model: reg.model.clone(),
            firmware_version: reg.fw_version.clone(),
            name: req.name.clone(),
            tenant: req.tenant.clone(),
        };
        let gateway_id = self
            .store
            .insert_gateway(&mut tx, &gateway, now)
            .await?
            .ok_or_else(|| ProvisioningError::GatewayExists {
                device_id: req.device_id.clone(),
                gateway_code: code.clone(),
            })?;
        let serial = issued.serial.to_string();
        let not_after = ts(issued.not_after);
        let cert_id = self
            .store
            .insert_certificate(
                &mut tx,
                gateway_id,
                &NewCertificate {
                    kind,
                    serial: serial.clone(),
                    fingerprint: issued.fingerprint.to_string(),
                    certificate_pem: issued.cert_pem.clone(),
                    csr_pem: reg.csr_pem.clone(),
                    not_after: not_after.clone(),
                },
                now,
            )
            .await?;
        if !self
            .store
            .mark_provisioned(
                &mut tx,
                id,
                gateway_id,
                cert_id,
                actor,
                req.notes.as_deref(),
                now,
            )
            .await?
        {
            return Err(ProvisioningError::ProcessedMeanwhile { id });
        }
        self.store
            .audit(
                &mut tx,
                actor,
                "registration.allocate",
                &format!("registration:{id}"),
                &format!(
                    "tenant={} device_id={} gateway_code={code} certificate={cert_id} serial={serial} mode={kind}",
                    req.tenant, req.device_id
                ),
                now,
            )
            .await?;
        tx.commit().await?;
        let zip = bundle::device_zip(&DeviceBundle {
            gateway_code: &code,
            serial: &serial,
            fingerprint: &issued.fingerprint.to_string(),
            not_after: &not_after,
            cert_pem: &issued.cert_pem,
            ca_pem: self.ca.cert_pem(),
            key_pem: issued.key_pem.as_ref().map(|k| k.expose()),
        })?;
        tracing::info!(target: LOG_TARGET, registration = id, gateway_code = %code, certificate = cert_id, %serial, mode = kind, %actor, "registration allocated");
        Ok(Allocation {
            registration_id: id,
            gateway_id,
            gateway_code: code,
            certificate_id: cert_id,
            serial,
            legacy: kind == "legacy",
            bundle: zip,
        })
    }

    /// PENDENTE → REJEITADO (a later POST from that MAC opens a new record).
    pub async fn reject(
        &self,
        id: i64,
        notes: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<Registration, ProvisioningError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.store.begin().await?;
        if !self.store.reject(&mut tx, id, actor, notes, now).await? {
            drop(tx);
            return Err(match self.store.registration(id).await? {
                None => ProvisioningError::NotFound {
                    what: "registration",
                    id,
                },
                Some(r) => ProvisioningError::NotRejectable {
                    id,
                    status: r.status,
                },
            });
        }
        self.store
            .audit(
                &mut tx,
                actor,
                "registration.reject",
                &format!("registration:{id}"),
                notes.unwrap_or(""),
                now,
            )
            .await?;
        tx.commit().await?;
        tracing::info!(target: LOG_TARGET, registration = id, %actor, "registration rejected");
        self.store
            .registration(id)
            .await?
            .ok_or(ProvisioningError::NotFound {
                what: "registration",
                id,
            })
    }
}
