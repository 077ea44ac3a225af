//! Prometheus metrics and the small HTTP server that exposes them
//! (`/metrics`, `/healthz`). Every metric is registered here, in one place.

use std::sync::Arc;

use gatehouse_auth::{Kind, RevocationHandle};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::tls::HandshakeResult;

/// Every metric of the broker.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub sessions_active: IntGaugeVec,
    pub handshakes: IntCounterVec,
    pub handshake_seconds: Histogram,
    pub acl_denials: IntCounterVec,
    pub connect_refused: IntCounterVec,
    pub revocation_kicks: IntCounter,
    pub messages_in: IntCounter,
    pub messages_out: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub connection_limit_hits: IntCounter,
    pub connections_open: IntGauge,
    pub protocol_errors: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub puback_withheld: IntCounterVec,
    pub session_panics: IntCounter,
    pub router_failures: IntCounter,
    pub accept_errors: IntCounter,
    pub quota_exceeded: IntCounterVec,
    pub partial_bytes: IntGauge,
    crl_reloads: IntCounterVec,
    crl_stale: IntGauge,
    crl_entries: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// Registers the broker's metrics in `r`, the registry `/metrics`
    /// serves (the provisioning sidecar and ingest register theirs there too).
    pub fn new(r: Registry) -> Result<Metrics, prometheus::Error> {
        let sessions_active = IntGaugeVec::new(
            Opts::new(
                "gatehouse_sessions_active",
                "Open MQTT sessions by certificate kind",
            ),
            &["kind"],
        )?;
        r.register(Box::new(sessions_active.clone()))?;
        let handshake_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_handshake_duration_seconds",
                "Time from TCP accept to a verified client certificate (TLS handshake, identity, revocation)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        r.register(Box::new(handshake_seconds.clone()))?;
        let m = Metrics {
            sessions_active,
            handshakes: counter_vec(
                &r,
                "gatehouse_handshakes_total",
                "TLS handshakes by result",
                &["result"],
            )?,
            handshake_seconds,
            acl_denials: counter_vec(
                &r,
                "gatehouse_acl_denials_total",
                "Requests refused by the topic ACL, by certificate kind and action",
                &["kind", "action"],
            )?,
            connect_refused: counter_vec(
                &r,
                "gatehouse_connect_refused_total",
                "CONNECTs refused after a good handshake, by reason",
                &["reason"],
            )?,
            revocation_kicks: counter(
                &r,
                "gatehouse_revocation_kicks_total",
                "Open sessions disconnected because their certificate was revoked",
            )?,
            messages_in: counter(
                &r,
                "gatehouse_messages_received_total",
                "PUBLISH packets accepted from clients",
            )?,
            messages_out: counter(
                &r,
                "gatehouse_messages_sent_total",
                "PUBLISH packets delivered to clients",
            )?,
            bytes_in: counter(
                &r,
                "gatehouse_bytes_received_total",
                "Bytes read from clients after TLS",
            )?,
            bytes_out: counter(
                &r,
                "gatehouse_bytes_sent_total",
                "Bytes written to clients before TLS",
            )?,
            connection_limit_hits: counter(
                &r,
                "gatehouse_connection_limit_hits_total",
                "Connections closed at accept because listeners.max_connections were open",
            )?,
            connections_open: gauge(
                &r,
                "gatehouse_connections_open",
                "Open TCP connections (handshaking or connected)",
            )?,
            protocol_errors: counter_vec(
                &r,
                "gatehouse_protocol_errors_total",
                "Connections closed for breaking MQTT, by reason",
                &["reason"],
            )?,
            tls_reloads: counter_vec(
                &r,
                "gatehouse_tls_reloads_total",
                "Reloads of the CA bundle / server certificate, by result",
                &["result"],
            )?,
            puback_withheld: counter_vec(
                &r,
                "gatehouse_puback_withheld_total",
                "QoS 1 PUBACKs not sent because ingest could not make the message durable (ingest.ack = \"durable\"), by reason",
                &["reason"],
            )?,
            session_panics: counter(
                &r,
                "gatehouse_session_panics_total",
                "Connection tasks that panicked (the connection was closed and its state released)",
            )?,
            router_failures: counter(
                &r,
                "gatehouse_router_failures_total",
                "Times the MQTT router thread died (the broker then exits for its supervisor to restart it)",
            )?,
            accept_errors: counter(
                &r,
                "gatehouse_accept_errors_total",
                "Failed accept() calls on the MQTT listener (out of file descriptors and the like)",
            )?,
            quota_exceeded: counter_vec(
                &r,
                "gatehouse_quota_exceeded_total",
                "Client requests refused by a per-client limit of [mqtt], by quota",
                &["quota"],
            )?,
            partial_bytes: gauge(
                &r,
                "gatehouse_partial_packet_bytes",
                "Bytes held in packets not yet complete, over all sessions (bounded by mqtt.max_partial_bytes)",
            )?,
            crl_reloads: counter_vec(
                &r,
                "gatehouse_crl_reloads_total",
                "CRL reloads by result (rollback: an older CRL refused)",
                &["result"],
            )?,
            crl_stale: gauge(
                &r,
                "gatehouse_crl_stale",
                "1 when the CRL in force is past its nextUpdate",
            )?,
            crl_entries: gauge(
                &r,
                "gatehouse_crl_entries",
                "Revoked serials in the CRL in force",
            )?,
            registry: r,
        };
        for result in HandshakeResult::ALL {
            m.handshakes.with_label_values(&[result.as_str()]);
        }
        for kind in [Kind::Operational, Kind::Bootstrap] {
            m.sessions_active.with_label_values(&[kind.as_str()]);
            for action in ["publish", "subscribe", "receive"] {
                m.acl_denials.with_label_values(&[kind.as_str(), action]);
            }
        }
        // The validator's labels, and those of the session and admission.
        let others = [
            "packet_timeout",
            "decoder_refused",
            "qos2_not_supported",
            "topic_alias",
            "unexpected_packet",
            "not_connect",
            "malformed",
            "connect_timeout",
            "closed_before_connect",
            "unsupported_protocol",
        ];
        for reason in crate::validate::LABELS.iter().chain(&others) {
            m.protocol_errors.with_label_values(&[reason]);
        }
        for quota in crate::quota::Quota::ALL {
            m.quota_exceeded.with_label_values(&[quota.as_str()]);
        }
        for result in ["ok", "failed"] {
            m.crl_reloads.with_label_values(&[result]);
            m.tls_reloads.with_label_values(&[result]);
        }
        m.crl_reloads.with_label_values(&["rollback"]);
        Ok(m)
    }

    /// Copies the CRL watcher's counters in, then renders the text format.
    pub fn render(&self, revocation: Option<&RevocationHandle>) -> String {
        if let Some(handle) = revocation {
            let s = handle.status();
            let sync = |c: IntCounter, total: u64| {
                let have = c.get();
                if total > have {
                    c.inc_by(total - have);
                }
            };
            sync(self.crl_reloads.with_label_values(&["ok"]), s.reloads_ok);
            sync(
                self.crl_reloads.with_label_values(&["failed"]),
                s.reloads_failed,
            );
            sync(
                self.crl_reloads.with_label_values(&["rollback"]),
                s.reloads_rollback,
            );
            self.crl_stale.set(i64::from(s.stale));
            self.crl_entries.set(s.entries as i64);
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves `/metrics` and `/healthz` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<crate::health::Health>,
    revocation: Option<RevocationHandle>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let revocation = revocation.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        metrics.render(revocation.as_ref()),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let health = health.clone();
                async move {
                    match health.problem() {
                        None => (axum::http::StatusCode::OK, "ok\n".to_owned()),
                        Some(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("unhealthy: {why}\n"),
                        ),
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "metrics listener failed");
    }
}
