//! Provisioning operations on top of the store and the fleet CA, one module
//! per use case:
//!
//! * `registration` — device self-registration, allocation (certificate
//!   issuance + bundle), rejection;
//! * `bootstrap` — bootstrap certificates and their one-time download;
//! * `bundle` — re-download of an operational bundle;
//! * `revocation` — revoking a device or bootstrap certificate ([`RevokeTarget`]), then
//!   publishing the CRL;
//! * `crl` — signing, publishing, following and serving the CRL;
//! * `renewal` — the renewal watch and the periodic task.
//!
//! The HTTP APIs and the CLI are thin layers over [`Provisioning`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gatehouse_auth::Fingerprint;
use gatehouse_ca::Ca;
use gatehouse_config::{Config, ProvisioningSettings};
use time::OffsetDateTime;

use crate::error::ProvisioningError;
use crate::metrics::Metrics;
use crate::store::Store;

/// Target of the service's log events: the module path they had before
/// `service` was split into use-case modules, so log lines and filters stay
/// the same.
const LOG_TARGET: &str = "gatehouse_provisioning::service";

mod bootstrap;
mod bundle;
mod crl;
mod registration;
mod renewal;
mod revocation;

pub use crl::{CrlPublished, write_atomically};
pub use registration::{AllocateRequest, Allocation};
pub use revocation::RevokeTarget;

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
        let (bootstrap_ou, operational_ou) = config.identity.classify.issued_ous();
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
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
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

    /// Fingerprint of a DER certificate as the store keeps it.
    pub fn fingerprint_of(der: &[u8]) -> String {
        Fingerprint::of(der).to_string()
    }
}
