//! The CRL: signed from the store's revocation list, written atomically to
//! `[tls] crl`, announced with `NOTIFY gatehouse_crl`, followed when
//! another node publishes, served, and re-signed before it goes stale.

use std::io::Write;
use std::path::{Path, PathBuf};

use gatehouse_auth::Serial;
use gatehouse_ca::{CrlSpec, RevokedEntry};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Actor, LOG_TARGET, Provisioning};
use crate::error::ProvisioningError;
use crate::store::parse_ts;

/// A CRL that was signed and published.
#[derive(Debug, Clone, Serialize)]
pub struct CrlPublished {
    pub number: u64,
    pub entries: usize,
    /// Where it was written (`None` when `[tls] crl` is disabled).
    pub path: Option<PathBuf>,
}

impl Provisioning {
    /// Signs a new CRL (next number) listing every revoked certificate,
    /// writes it atomically to `[tls] crl` and sends `NOTIFY gatehouse_crl`
    /// on PostgreSQL.
    pub async fn publish_crl(&self) -> Result<CrlPublished, ProvisioningError> {
        self.write_crl(true).await
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
            tracing::warn!(target: LOG_TARGET, "[tls] crl is disabled: the CRL is only served on GET /crl.pem");
        }
        *self.last_crl.lock().expect("crl lock") = Some(pem);
        *self.last_number.lock().expect("crl lock") = Some(number);
        if notify {
            self.store.notify_crl(&number.to_string()).await?;
            tracing::info!(target: LOG_TARGET, number, entries = revoked.len(), path = ?self.crl_path, "CRL published");
        } else {
            tracing::info!(target: LOG_TARGET, number, entries = revoked.len(), path = ?self.crl_path, "CRL rewritten from the database after NOTIFY gatehouse_crl");
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

    /// The CRL number of the CRL file this CA signed, if there is one.
    fn number_in_file(&self) -> Option<u64> {
        let bytes = std::fs::read(self.crl_path.as_ref()?).ok()?;
        let verifier = gatehouse_auth::CrlVerifier::from_ca_pem(self.ca.cert_pem()).ok()?;
        let set = gatehouse_auth::RevocationSet::from_crl_bytes(&bytes, &verifier).ok()?;
        u64::from_str_radix(set.crl_number.as_deref()?, 16).ok()
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
