//! Prometheus metrics and the optional `/metrics` listener (`[plugin]
//! metrics`), served by a plain std thread: no async runtime inside
//! Mosquitto. Names match the embedded broker's where they mean the same.
//!
//! | metric | labels |
//! |---|---|
//! | `gatehouse_handshakes_total` | `result`: `ok`, `no_certificate`, `bad_certificate`, `unknown_kind`, `expired`, `not_yet_valid`, `revoked`, `crl_expired`, `client_id`, `error` |
//! | `gatehouse_acl_denials_total` | `kind`, `action` (`publish`, `subscribe`, `receive`) |
//! | `gatehouse_revocation_kicks_total` | |
//! | `gatehouse_crl_reloads_total` | `result`: `ok`, `failed`, `rollback` |
//! | `gatehouse_crl_entries`, `gatehouse_crl_stale` | |
//! | `gatehouse_active_sessions` | `kind` |

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use gatehouse_auth::{CrlStatusSnapshot, Kind};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::error::PluginError;

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) handshakes: IntCounterVec,
    pub(crate) acl_denials: IntCounterVec,
    pub(crate) kicks: IntCounter,
    crl_reloads: IntCounterVec,
    crl_entries: IntGauge,
    crl_stale: IntGauge,
    active_sessions: IntGaugeVec,
}

impl Metrics {
    /// The registry `/metrics` serves (ingest registers its metrics here).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let handshakes = counter_vec(
            "gatehouse_handshakes_total",
            "Client identity checks (at CONNECT, or at the first ACL check with use_identity_as_username), by result",
            &["result"],
        );
        let acl_denials = counter_vec(
            "gatehouse_acl_denials_total",
            "Requests refused by the topic rules, by certificate kind and action",
            &["kind", "action"],
        );
        let crl_reloads = counter_vec(
            "gatehouse_crl_reloads_total",
            "CRL file reloads, by result (rollback: an older CRL refused)",
            &["result"],
        );
        let kicks = IntCounter::new(
            "gatehouse_revocation_kicks_total",
            "Open sessions disconnected because their certificate was revoked",
        )
        .expect("valid metric");
        registry
            .register(Box::new(kicks.clone()))
            .expect("unique metric");
        let active_sessions = IntGaugeVec::new(
            Opts::new(
                "gatehouse_active_sessions",
                "Identified client sessions, by certificate kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(active_sessions.clone()))
            .expect("unique metric");
        let m = Metrics {
            crl_entries: gauge(
                "gatehouse_crl_entries",
                "Revoked serials in the CRL in force",
            ),
            crl_stale: gauge(
                "gatehouse_crl_stale",
                "1 when the CRL in force is past its nextUpdate",
            ),
            registry,
            handshakes,
            acl_denials,
            kicks,
            crl_reloads,
            active_sessions,
        };
        // Make every label combination visible from the start.
        for kind in [Kind::Operational, Kind::Bootstrap] {
            m.active_sessions.with_label_values(&[kind.as_str()]).set(0);
        }
        for result in ["ok", "failed", "rollback"] {
            m.crl_reloads.with_label_values(&[result]);
        }
        m.handshakes.with_label_values(&["ok"]);
        m
    }

    pub(crate) fn session_opened(&self, kind: Kind) {
        self.active_sessions
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    pub(crate) fn session_closed(&self, kind: Kind) {
        self.active_sessions
            .with_label_values(&[kind.as_str()])
            .dec();
    }

    /// Brings the CRL metrics up to `status` (counters only move forward).
    pub(crate) fn crl_status(&self, status: &CrlStatusSnapshot) {
        for (result, total) in [
            ("ok", status.reloads_ok),
            ("failed", status.reloads_failed),
            ("rollback", status.reloads_rollback),
        ] {
            let c = self.crl_reloads.with_label_values(&[result]);
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        }
        self.crl_entries.set(status.entries as i64);
        self.crl_stale.set(i64::from(status.stale));
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The `/metrics` HTTP listener thread. Stops and joins on drop.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub(crate) fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<MetricsServer, PluginError> {
        let io = |source| PluginError::Metrics { addr, source };
        let listener = TcpListener::bind(addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gatehouse-metrics".into())
            .spawn(move || {
                while !stop_thread.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &metrics),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics listener: accept failed");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })
            .map_err(io)?;
        tracing::info!(%addr, "metrics listener started (GET /metrics)");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request: `GET /metrics` → 200, anything else → 404.
fn serve(mut stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let ok = line.starts_with(b"GET /metrics ") || line == b"GET /metrics";
    let (status, body, ctype) = if ok {
        ("200 OK", metrics.render(), "text/plain; version=0.0.4")
    } else {
        (
            "404 Not Found",
            b"only GET /metrics is served here\n".to_vec(),
            "text/plain",
        )
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}
