//! Running the sidecar: both HTTPS listeners plus the periodic renewal watch
//! and CRL refresh, stoppable as one unit. `gatehouse serve` starts it next
//! to the broker; `gatehouse provisioning serve` runs it alone.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_config::Config;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::admin::{AdminToken, TokenError};
use crate::http::tls::TlsError;
use crate::http::{AppState, admin, device, server, tls};
use crate::service::Provisioning;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot listen on {addr}: {source}; pick a free address in [provisioning]")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Logs one warning when the admin API listens beyond loopback. `true` when
/// it warned.
pub fn warn_if_admin_exposed(admin_addr: SocketAddr) -> bool {
    if admin_addr.ip().to_canonical().is_loopback() {
        return false;
    }
    tracing::warn!(
        key = "provisioning.admin_listen",
        %admin_addr,
        "the admin API listens beyond loopback: anyone who reaches {admin_addr} can try the \
         admin token; set [provisioning] admin_listen to 127.0.0.1:PORT, or keep this address \
         on a firewalled management network"
    );
    true
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    /// Where the device API listens (useful with port 0).
    pub device_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    pub service: Arc<Provisioning>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Sidecar {
    /// Binds `[provisioning] listen` and `admin_listen` and starts serving.
    pub async fn start(
        config: &Config,
        service: Arc<Provisioning>,
    ) -> Result<Sidecar, SidecarError> {
        let p = &config.provisioning;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| SidecarError::Bind { addr, source })
        };
        let device_l = bind(p.listen).await?;
        let admin_l = bind(p.admin_listen).await?;
        Self::start_on(config, service, device_l, admin_l).await
    }

    /// Serves on already-bound listeners.
    pub async fn start_on(
        config: &Config,
        service: Arc<Provisioning>,
        device_l: TcpListener,
        admin_l: TcpListener,
    ) -> Result<Sidecar, SidecarError> {
        let p = &config.provisioning;
        let token = AdminToken::from_file(&p.admin_token_file)?;
        let device_tls = tls::device_config(&p.cert, &p.key, &p.ca_cert)?;
        let admin_tls = tls::admin_config(&p.cert, &p.key)?;
        let device_addr = device_l.local_addr().map_err(|source| SidecarError::Bind {
            addr: p.listen,
            source,
        })?;
        let admin_addr = admin_l.local_addr().map_err(|source| SidecarError::Bind {
            addr: p.admin_listen,
            source,
        })?;
        let app = AppState {
            service: service.clone(),
        };
        let (stop, rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = JoinSet::new();
        let limits = server::Limits::from_settings(p);
        tasks.spawn(server::serve(
            device_l,
            device_tls,
            device::router(app.clone()),
            limits.clone(),
            stopped(rx.clone()),
        ));
        tasks.spawn(server::serve(
            admin_l,
            admin_tls,
            admin::router(app, token),
            limits,
            stopped(rx.clone()),
        ));
        tasks.spawn(service.clone().run_periodic(stopped(rx)));
        tracing::info!(%device_addr, %admin_addr, "provisioning sidecar listening");
        warn_if_admin_exposed(admin_addr);
        Ok(Sidecar {
            device_addr,
            admin_addr,
            service,
            stop,
            tasks,
        })
    }

    /// Stops accepting, ends the periodic job and waits for the tasks.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until the tasks end (they end only on [`Sidecar::stop`]).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captures what the fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn admin_api_beyond_loopback_is_warned_about_once() {
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(!warn_if_admin_exposed("127.0.0.1:8444".parse().unwrap()));
            assert!(!warn_if_admin_exposed("[::1]:8444".parse().unwrap()));
            assert!(warn_if_admin_exposed("0.0.0.0:8444".parse().unwrap()));
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("WARN"), "{text}");
        assert!(lines[0].contains("provisioning.admin_listen"), "{text}");
        assert!(lines[0].contains("0.0.0.0:8444"), "{text}");
    }
}
