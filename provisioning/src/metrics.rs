//! Prometheus metrics of the sidecar, registered in a registry the caller
//! passes in (the broker's, or a private one).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// The sidecar's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Live operational certificates marked for renewal.
    pub renewal_due: IntGauge,
    /// Device registration requests by outcome (`registered`,
    /// `already_registered`, `invalid_request`, `rate_limited`, `server_error`).
    pub register_requests: IntCounterVec,
    /// Admin API requests refused for a missing or wrong token.
    pub admin_unauthorized: prometheus::IntCounter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let m = Self::unregistered();
        registry.register(Box::new(m.renewal_due.clone()))?;
        registry.register(Box::new(m.register_requests.clone()))?;
        registry.register(Box::new(m.admin_unauthorized.clone()))?;
        Ok(m)
    }

    /// Metrics not registered anywhere (CLI use).
    pub fn unregistered() -> Metrics {
        Metrics {
            renewal_due: IntGauge::new(
                "gatehouse_provisioning_certificates_renewal_due",
                "Operational certificates expiring within the renewal window (not revoked)",
            )
            .expect("valid metric"),
            register_requests: IntCounterVec::new(
                Opts::new(
                    "gatehouse_provisioning_register_requests_total",
                    "Device self-registration requests by outcome",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            admin_unauthorized: prometheus::IntCounter::new(
                "gatehouse_provisioning_admin_unauthorized_total",
                "Admin API requests refused for a missing or wrong bearer token",
            )
            .expect("valid metric"),
        }
    }
}
