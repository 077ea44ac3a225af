//! Prometheus metrics and the optional `/metrics` listener (`[plugin]
//! metrics`), served by a plain std thread: no async runtime inside
//! Mosquitto. The metrics are the gate's ([`GateMetrics`]): the same names,
//! labels and label values as the embedded broker's, by construction.
//! Ingest registers its own in the same registry.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use gatehouse_auth::{CrlStatusSnapshot, Kind};
use gatehouse_gate::GateMetrics;
use prometheus::Registry;

use crate::error::PluginError;

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) gate: GateMetrics,
}

impl Metrics {
    /// The registry `/metrics` serves (ingest registers its metrics here).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let gate =
            GateMetrics::register(&registry).expect("a fresh registry takes the gate's metrics");
        Metrics { registry, gate }
    }

    pub(crate) fn session_opened(&self, kind: Kind) {
        self.gate.sessions_active(kind).inc();
    }

    pub(crate) fn session_closed(&self, kind: Kind) {
        self.gate.sessions_active(kind).dec();
    }

    /// Brings the CRL metrics up to `status` (counters only move forward).
    pub(crate) fn crl_status(&self, status: &CrlStatusSnapshot) {
        self.gate.crl_status(status);
    }

    fn render(&self) -> Vec<u8> {
        gatehouse_gate::render(&self.registry)
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
        ("200 OK", metrics.render(), gatehouse_gate::CONTENT_TYPE)
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
