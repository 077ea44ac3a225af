//! One HTTPS accept loop: bounded by a semaphore (`max_connections`) and a
//! per-source-IP cap (`max_connections_per_source`, trusted proxies exempt),
//! the TLS handshake runs in the connection's own task under a deadline, then
//! hyper serves the axum router with the connection's [`Peer`] attached,
//! closing connections whose headers do not arrive within
//! `header_read_timeout` (bodies are bounded by the routers' body guard).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::Peer;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection limits of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once, all sources together.
    pub max_connections: usize,
    /// Connections served at once per source IP.
    pub max_per_source: usize,
    /// Sources exempt from the per-source cap (their clients are many).
    pub exempt: Vec<IpAddr>,
    /// Longest wait for a request's headers (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
}

impl Limits {
    /// The limits `[provisioning]` configures.
    pub fn from_settings(s: &gatehouse_config::ProvisioningSettings) -> Limits {
        Limits {
            max_connections: s.max_connections,
            max_per_source: s.max_connections_per_source,
            exempt: s.trusted_proxies.clone(),
            header_read_timeout: s.header_read_timeout,
        }
    }
}

/// Open connections per source IP.
#[derive(Debug, Default)]
struct PerSource {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct SourceSlot {
    table: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut open = self.open.lock().expect("per-source lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("per-source lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let limit = Arc::new(Semaphore::new(limits.max_connections));
    let per_source = Arc::new(PerSource::default());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = addr.ip().to_canonical();
        let slot = if limits.exempt.contains(&ip) {
            None
        } else {
            match per_source.try_take(ip, limits.max_per_source) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%addr, max = limits.max_per_source, "connection closed: too many open from this source");
                    drop(tcp);
                    continue;
                }
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(c.as_ref().to_vec()));
            let peer = Peer { addr, client_cert };
            let svc = TowerToHyperService::new(router.layer(axum::Extension(peer)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
}
