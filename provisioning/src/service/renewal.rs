//! The renewal watch: certificates nearing expiry, and the periodic task
//! that also keeps the CRL fresh.

use std::sync::Arc;

use time::OffsetDateTime;

use super::{LOG_TARGET, Provisioning};
use crate::error::ProvisioningError;

impl Provisioning {
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
                target: LOG_TARGET,
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
                        tracing::error!(target: LOG_TARGET, error = %e, "renewal check failed; retrying next interval");
                    }
                    if let Err(e) = self.refresh_crl_if_due().await {
                        tracing::error!(target: LOG_TARGET, error = %e, "CRL refresh failed; retrying next interval");
                    }
                }
            }
        }
    }
}
