//! Prometheus metrics and the small HTTP server that exposes them
//! (`/metrics`, `/healthz`). Every metric is registered here, in one place.

use std::sync::Arc;

use gatehouse_auth::RevocationHandle;
use gatehouse_gate::GateMetrics;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric of the broker: the ones both shapes share ([`GateMetrics`])
/// and the broker's own.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Sessions, handshakes, CONNECT refusals, ACL denials, kicks, CRL.
    pub gate: GateMetrics,
    pub handshake_seconds: Histogram,
    pub messages_in: IntCounter,
    pub messages_out: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub connection_limit_hits: IntCounter,
    pub connections_open: IntGauge,
    pub protocol_errors: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub puback_withheld: IntCounterVec,
    pub messages_dropped: IntCounterVec,
    pub publish_waits: IntCounter,
    pub session_panics: IntCounter,
    pub router_failures: IntCounter,
    pub accept_errors: IntCounter,
    pub quota_exceeded: IntCounterVec,
    pub partial_bytes: IntGauge,
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
        let gate = GateMetrics::register(&r)?;
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
            gate,
            handshake_seconds,
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
            messages_dropped: counter_vec(
                &r,
                "gatehouse_messages_dropped_total",
                "Messages the broker did not deliver to a subscriber, by reason (subscriber_full: a QoS 0 PUBLISH waited 5 s for a full subscriber queue, mqtt.max_queued_*; packet_too_large: above the subscriber's Maximum Packet Size; not_authorized: the receive rules deny it) and QoS",
                &["reason", "qos"],
            )?,
            publish_waits: counter(
                &r,
                "gatehouse_publish_waits_total",
                "PUBLISHes that waited for room in a connected subscriber's queue (mqtt.max_queued_messages / max_queued_bytes): backpressure, the publisher's socket was not read meanwhile",
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
            registry: r,
        };
        // The validator's labels, and those of the session and admission.
        let others = [
            "packet_timeout",
            "decoder_refused",
            "receive_maximum_exceeded",
            "websocket_upgrade",
            "topic_alias_invalid",
            "topic_alias_unknown",
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
            m.tls_reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Copies the CRL watcher's counters in, then renders the text format.
    pub fn render(&self, revocation: Option<&RevocationHandle>) -> String {
        if let Some(handle) = revocation {
            self.gate.crl_status(&handle.status());
        }
        String::from_utf8(gatehouse_gate::render(&self.registry)).unwrap_or_default()
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
                            gatehouse_gate::CONTENT_TYPE,
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
