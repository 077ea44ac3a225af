//! Provisioning operations on top of the store and the fleet CA: device
//! registration, allocation (certificate issuance + bundle), rejection,
//! revocation with CRL publication, bootstrap certificates, renewal watch.
//! The HTTP APIs and the CLI are thin layers over [`Provisioning`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gatehouse_auth::{Fingerprint, Serial};
use gatehouse_ca::{Ca, CrlSpec, RevocationReason, RevokedEntry};
use gatehouse_config::{Classification, Config, ProvisioningSettings};
use serde::Serialize;
use time::OffsetDateTime;

use crate::bundle::{self, DeviceBundle};
use crate::error::ProvisioningError;
use crate::mac::{self, Mac};
use crate::metrics::Metrics;
use crate::store::{
    Bootstrap, NewCertificate, NewGateway, NewRegistration, Registration, Store, parse_ts, ts,
};

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

/// A CRL that was signed and published.
#[derive(Debug, Clone, Serialize)]
pub struct CrlPublished {
    pub number: u64,
    pub entries: usize,
    /// Where it was written (`None` when `[tls] crl` is disabled).
    pub path: Option<PathBuf>,
}

/// The provisioning service.
#[derive(Debug)]
pub struct Provisioning {
    store: Store,
    ca: Arc<Ca>,
    settings: ProvisioningSettings,
    crl_path: Option<PathBuf>,
    operational_ou: String,
    bootstrap_ou: String,
    metrics: Metrics,
    last_crl: Mutex<Option<String>>,
    /// Number of the last CRL this process signed.
    last_number: Mutex<Option<u64>>,
    /// Serialises CRL publication so a newer CRL is never overwritten by an older one.
    publishing: tokio::sync::Mutex<()>,
}

/// Who did an admin action (recorded in the audit log and `processed_by`).
pub type Actor<'a> = &'a str;

impl Provisioning {
    /// Builds the service from an open store and a loaded CA.
    pub fn new(store: Store, ca: Arc<Ca>, config: &Config, metrics: Metrics) -> Provisioning {
        let (bootstrap_ou, operational_ou) = match &config.identity.classify {
            Classification::SubjectOu {
                bootstrap_ou,
                operational_ou,
            } => (bootstrap_ou.clone(), operational_ou.clone()),
            _ => ("bootstrap".to_owned(), "gateway".to_owned()),
        };
        Provisioning {
            store,
            ca,
            settings: config.provisioning.clone(),
            crl_path: config.tls.crl.clone(),
            operational_ou,
            bootstrap_ou,
            metrics,
            last_crl: Mutex::new(None),
            last_number: Mutex::new(None),
            publishing: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens the configured store and loads the CA from its files.
    pub async fn open(
        config: &Config,
        metrics: Metrics,
    ) -> Result<Provisioning, ProvisioningError> {
        let p = &config.provisioning;
        let ca = Ca::from_files(&p.ca_cert, &p.ca_key)?;
        let store = Store::open_settings(&p.store).await?;
        Ok(Self::new(store, Arc::new(ca), config, metrics))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &ProvisioningSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The fleet CA certificate, PEM.
    /// The CRL number of the CRL file this CA signed, if there is one.
    fn number_in_file(&self) -> Option<u64> {
        let bytes = std::fs::read(self.crl_path.as_ref()?).ok()?;
        let verifier = gatehouse_auth::CrlVerifier::from_ca_pem(self.ca.cert_pem()).ok()?;
        let set = gatehouse_auth::RevocationSet::from_crl_bytes(&bytes, &verifier).ok()?;
        u64::from_str_radix(set.crl_number.as_deref()?, 16).ok()
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    // ---- device registration ------------------------------------------------

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

    // ---- allocation / rejection ---------------------------------------------

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
            return Err(ProvisioningError::Conflict(format!(
                "registration {id} is {}, only PENDENTE records can be allocated",
                reg.status
            )));
        }
        if req.tenant.trim().is_empty() {
            return Err(ProvisioningError::Invalid(
                "tenant must not be empty".into(),
            ));
        }
        if !mac::valid_device_id(&req.device_id) {
            return Err(ProvisioningError::Invalid(format!(
                "device_id {:?} is invalid: use 1 to 24 characters A-Z a-z 0-9 _ . -",
                req.device_id
            )));
        }
        let mac = Mac::parse(&reg.mac).ok_or_else(|| {
            ProvisioningError::Invalid(format!("stored MAC {:?} is invalid", reg.mac))
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
            .ok_or_else(|| {
                ProvisioningError::Conflict(format!(
                    "a gateway with device_id {:?} or gateway code {code:?} already exists",
                    req.device_id
                ))
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
            return Err(ProvisioningError::Conflict(format!(
                "registration {id} was processed by someone else meanwhile"
            )));
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
        tracing::info!(registration = id, gateway_code = %code, certificate = cert_id, %serial, mode = kind, %actor, "registration allocated");
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
                Some(r) => ProvisioningError::Conflict(format!(
                    "registration {id} is {}, only PENDENTE records can be rejected",
                    r.status
                )),
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
        tracing::info!(registration = id, %actor, "registration rejected");
        self.store
            .registration(id)
            .await?
            .ok_or(ProvisioningError::NotFound {
                what: "registration",
                id,
            })
    }

    /// Appends an audit line for an action that changes nothing in the
    /// registry itself (bundle downloads, CRL re-signing).
    pub async fn audit(
        &self,
        actor: Actor<'_>,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), ProvisioningError> {
        let mut tx = self.store.begin().await?;
        self.store
            .audit(
                &mut tx,
                actor,
                action,
                subject,
                detail,
                OffsetDateTime::now_utc(),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Provisioning::publish_crl`] on an admin's request, audited.
    pub async fn publish_crl_by(
        &self,
        actor: Actor<'_>,
    ) -> Result<CrlPublished, ProvisioningError> {
        let crl = self.publish_crl().await?;
        self.audit(
            actor,
            "crl.write",
            &format!("crl:{}", crl.number),
            &format!("entries={}", crl.entries),
        )
        .await?;
        Ok(crl)
    }

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

    // ---- revocation ------------------------------------------------------------

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
        tracing::warn!(certificate = id, %reason, %actor, "certificate revoked");
        self.publish_crl().await
    }

    // ---- bootstrap ----------------------------------------------------------------

    /// Issues a new bootstrap certificate and makes it the only active one.
    pub async fn issue_bootstrap(
        &self,
        label: &str,
        actor: Actor<'_>,
    ) -> Result<Bootstrap, ProvisioningError> {
        let label = label.trim();
        if label.is_empty() || label.len() > 100 {
            return Err(ProvisioningError::Invalid(
                "label must be 1 to 100 characters".into(),
            ));
        }
        let issued = self.ca.issue_bootstrap(
            &format!("bootstrap {label}"),
            &self.bootstrap_ou,
            self.settings.validity_days,
        )?;
        let key = issued
            .key_pem
            .as_ref()
            .ok_or_else(|| ProvisioningError::Invalid("bootstrap key missing".into()))?;
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
        tracing::info!(bootstrap = id, %label, serial = %issued.serial, %actor, "bootstrap certificate issued; previous one deactivated");
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
            tracing::warn!(bootstrap = id, %actor, "bootstrap bundle download refused: key already erased");
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
        tracing::warn!(bootstrap = id, %actor, "bootstrap bundle downloaded; its private key is now erased from the store");
        Ok(zip)
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
        tracing::warn!(bootstrap = id, %reason, %actor, "bootstrap certificate revoked: the whole batch is locked out");
        self.publish_crl().await
    }

    // ---- CRL -----------------------------------------------------------------------

    /// Signs a new CRL (next number) listing every revoked certificate,
    /// writes it atomically to `[tls] crl` and sends `NOTIFY gatehouse_crl`
    /// on PostgreSQL.
    pub async fn publish_crl(&self) -> Result<CrlPublished, ProvisioningError> {
        self.write_crl(true).await
    }

    /// Another node published a CRL (`NOTIFY gatehouse_crl` with its
    /// number): re-signs the database's revocation list under that number
    /// into `[tls] crl`, where this node's broker watches it, without
    /// notifying again. Skipped when this process signed that number itself.
    pub async fn follow_crl(
        &self,
        number: Option<u64>,
    ) -> Result<Option<CrlPublished>, ProvisioningError> {
        if number.is_some() && number == *self.last_number.lock().expect("crl lock") {
            return Ok(None);
        }
        self.write_crl(false).await.map(Some)
    }

    async fn write_crl(&self, notify: bool) -> Result<CrlPublished, ProvisioningError> {
        let _one_at_a_time = self.publishing.lock().await;
        let now = OffsetDateTime::now_utc();
        let revoked = self.store.revoked().await?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in &revoked {
            let serial: Serial =
                r.serial
                    .parse()
                    .map_err(|e| crate::error::StoreError::Corrupt {
                        column: "serial",
                        reason: format!("{}: {e}", r.serial),
                    })?;
            entries.push(RevokedEntry {
                serial,
                revoked_at: parse_ts("revoked_at", &r.revoked_at)?,
                reason: r
                    .reason
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default(),
            });
        }
        let number = if notify {
            // Never below the CRL already published: brokers refuse a CRL
            // numbered lower than the one in force (a rollback), so a fresh
            // database must continue the file's sequence.
            let floor = self.number_in_file().map_or(0, |n| n + 1);
            self.store.next_crl_number(now, floor).await?
        } else {
            self.store.crl_state().await?.0.max(1)
        };
        let validity =
            time::Duration::try_from(self.settings.crl_validity).unwrap_or(time::Duration::days(7));
        let pem = self.ca.crl(&CrlSpec {
            number,
            this_update: now - time::Duration::minutes(5),
            next_update: now + validity,
            entries,
        })?;
        if let Some(path) = &self.crl_path {
            write_atomically(path, pem.as_bytes()).map_err(|source| {
                ProvisioningError::CrlWrite {
                    path: path.clone(),
                    source,
                }
            })?;
        } else {
            tracing::warn!("[tls] crl is disabled: the CRL is only served on GET /crl.pem");
        }
        *self.last_crl.lock().expect("crl lock") = Some(pem);
        *self.last_number.lock().expect("crl lock") = Some(number);
        if notify {
            self.store.notify_crl(&number.to_string()).await?;
            tracing::info!(number, entries = revoked.len(), path = ?self.crl_path, "CRL published");
        } else {
            tracing::info!(number, entries = revoked.len(), path = ?self.crl_path, "CRL rewritten from the database after NOTIFY gatehouse_crl");
        }
        Ok(CrlPublished {
            number,
            entries: revoked.len(),
            path: self.crl_path.clone(),
        })
    }

    /// The current CRL, PEM: the file brokers watch (another process, such
    /// as the CLI, may have rewritten it), else the last one published by
    /// this process, else a freshly published one.
    pub async fn current_crl(&self) -> Result<String, ProvisioningError> {
        if let Some(path) = &self.crl_path {
            if let Ok(text) = std::fs::read_to_string(path) {
                if text.contains("-----BEGIN X509 CRL-----") {
                    return Ok(text);
                }
            }
        }
        if let Some(pem) = self.last_crl.lock().expect("crl lock").clone() {
            return Ok(pem);
        }
        self.publish_crl().await?;
        Ok(self
            .last_crl
            .lock()
            .expect("crl lock")
            .clone()
            .unwrap_or_default())
    }

    /// Re-signs the CRL when none was published yet or the last one is past
    /// half its validity, so brokers never see it go stale.
    pub async fn refresh_crl_if_due(&self) -> Result<Option<CrlPublished>, ProvisioningError> {
        let (_, last) = self.store.crl_state().await?;
        let half = time::Duration::try_from(self.settings.crl_validity / 2)
            .unwrap_or(time::Duration::days(3));
        let missing = self.crl_path.as_ref().is_some_and(|p| !p.exists());
        match last {
            Some(t) if !missing && OffsetDateTime::now_utc() - t < half => Ok(None),
            _ => self.publish_crl().await.map(Some),
        }
    }

    // ---- renewal watch -------------------------------------------------------------

    /// Marks certificates expiring within the renewal window and updates the
    /// gauge. Returns how many were newly marked.
    pub async fn renewal_check(&self) -> Result<u64, ProvisioningError> {
        let now = OffsetDateTime::now_utc();
        let horizon = now + time::Duration::days(self.settings.renewal_window_days.into());
        let marked = self.store.schedule_renewals(horizon, now).await?;
        let due = self.store.certificates_due().await?;
        self.metrics.renewal_due.set(due.len() as i64);
        if marked > 0 {
            tracing::warn!(
                marked,
                due = due.len(),
                "certificates scheduled for renewal"
            );
        }
        Ok(marked)
    }

    /// Runs the renewal check (and CRL refresh) every
    /// `renewal_check_interval` until `shutdown` resolves.
    pub async fn run_periodic(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.settings.renewal_check_interval);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(e) = self.renewal_check().await {
                        tracing::error!(error = %e, "renewal check failed; retrying next interval");
                    }
                    if let Err(e) = self.refresh_crl_if_due().await {
                        tracing::error!(error = %e, "CRL refresh failed; retrying next interval");
                    }
                }
            }
        }
    }

    /// Fingerprint of a DER certificate as the store keeps it.
    pub fn fingerprint_of(der: &[u8]) -> String {
        Fingerprint::of(der).to_string()
    }
}

/// Writes `bytes` to `path` via a temporary file in the same directory,
/// fsync, then rename: watchers see the old file or the new one, never half.
/// The file is a CRL, public by nature, so it is made 0644: a Mosquitto
/// running as its own user must be able to read it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    gatehouse_config::secure_fs::ensure_private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "crl".into());
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let result = (|| {
        let mut f = gatehouse_config::secure_fs::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
