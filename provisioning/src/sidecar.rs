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
        tasks.spawn(server::serve(
            device_l,
            device_tls,
            device::router(app.clone()),
            stopped(rx.clone()),
        ));
        tasks.spawn(server::serve(
            admin_l,
            admin_tls,
            admin::router(app, token),
            stopped(rx.clone()),
        ));
        tasks.spawn(service.clone().run_periodic(stopped(rx)));
        tracing::info!(%device_addr, %admin_addr, "provisioning sidecar listening");
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
