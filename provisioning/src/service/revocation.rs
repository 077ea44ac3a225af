//! Revocation of a device or bootstrap certificate, followed by a CRL
//! publication.

use gatehouse_ca::RevocationReason;
use time::OffsetDateTime;

use super::{Actor, CrlPublished, LOG_TARGET, Provisioning};
use crate::error::ProvisioningError;

/// What [`Provisioning::revoke`] revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeTarget {
    /// A device's operational certificate, by its certificate id.
    Certificate(i64),
    /// A bootstrap certificate, by its id: every device of the batch it was
    /// burnt into is locked out (its key is erased too).
    Bootstrap(i64),
}

impl RevokeTarget {
    /// The record id.
    pub fn id(self) -> i64 {
        match self {
            RevokeTarget::Certificate(id) | RevokeTarget::Bootstrap(id) => id,
        }
    }

    /// The registry's name for the kind of record: `certificate` or
    /// `bootstrap` (audit actions and subjects, error messages).
    pub fn kind(self) -> &'static str {
        match self {
            RevokeTarget::Certificate(_) => "certificate",
            RevokeTarget::Bootstrap(_) => "bootstrap",
        }
    }
}

/// `certificate 7`, `bootstrap 2`.
impl std::fmt::Display for RevokeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

impl Provisioning {
    /// Revokes `target` (marked in the store with `reason` and `notes`,
    /// audited), then regenerates and publishes the CRL.
    pub async fn revoke(
        &self,
        target: RevokeTarget,
        reason: RevocationReason,
        notes: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<CrlPublished, ProvisioningError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.store.begin().await?;
        let marked = match target {
            RevokeTarget::Certificate(id) => {
                self.store
                    .revoke_certificate(&mut tx, id, reason.as_str(), notes, now)
                    .await?
            }
            RevokeTarget::Bootstrap(id) => {
                self.store
                    .revoke_bootstrap(&mut tx, id, reason.as_str(), notes, now)
                    .await?
            }
        };
        if !marked {
            drop(tx);
            return Err(if self.exists(target).await? {
                ProvisioningError::AlreadyRevoked { target }
            } else {
                ProvisioningError::NotFound {
                    what: target.kind(),
                    id: target.id(),
                }
            });
        }
        self.store
            .audit(
                &mut tx,
                actor,
                &format!("{}.revoke", target.kind()),
                &format!("{}:{}", target.kind(), target.id()),
                &format!("reason={reason} notes={}", notes.unwrap_or("")),
                now,
            )
            .await?;
        tx.commit().await?;
        match target {
            RevokeTarget::Certificate(id) => {
                tracing::warn!(target: LOG_TARGET, certificate = id, %reason, %actor, "certificate revoked");
            }
            RevokeTarget::Bootstrap(id) => {
                tracing::warn!(target: LOG_TARGET, bootstrap = id, %reason, %actor, "bootstrap certificate revoked: the whole batch is locked out");
            }
        }
        self.publish_crl().await
    }

    /// Whether the record `target` names exists.
    async fn exists(&self, target: RevokeTarget) -> Result<bool, ProvisioningError> {
        Ok(match target {
            RevokeTarget::Certificate(id) => self.store.certificate(id).await?.is_some(),
            RevokeTarget::Bootstrap(id) => self.store.bootstrap(id).await?.is_some(),
        })
    }
}
