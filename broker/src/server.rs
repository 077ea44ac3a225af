//! The server: shared state, the accept loop (bounded by a semaphore, one
//! task per connection), the revocation listener and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_auth::RevocationHandle;
use gatehouse_config::Config;
use gatehouse_gate::{CrlEvent, Policy, PolicyHandle, RulesInForce, start_revocation};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, mpsc};

use crate::afterlife::Afterlife;
use crate::error::BrokerError;
use crate::flow::{self, Flow};
use crate::guard::{CatchUnwind, GaugeGuard};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::presence::PresenceSink;
use crate::quota::{ClientBook, PartialBudget};
use crate::registry::{Control, Registry};
use crate::router::{self, RouterHandle};
use crate::telemetry::Telemetry;
use crate::tls::TlsStore;

/// Everything a connection needs, shared read-only (or lock-free).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// `[identity]` and `[acl]` in force (swapped on SIGHUP).
    pub(crate) policy: PolicyHandle,
    pub(crate) revocation: RevocationHandle,
    pub(crate) tls: Arc<TlsStore>,
    pub(crate) router: RouterHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) presence: Arc<dyn PresenceSink>,
    pub(crate) telemetry: Telemetry,
    pub(crate) health: Arc<Health>,
    /// Subscriptions and retained messages per client (`[mqtt]` limits).
    pub(crate) book: ClientBook,
    /// Bytes of incomplete packets over all sessions.
    pub(crate) partial: PartialBudget,
    /// Session expiry and delayed wills.
    pub(crate) afterlife: Afterlife,
    /// Connected subscribers' queues: publishers wait for room (`flow`).
    pub(crate) flow: Flow,
}

/// Accepts on `listener`, or never when there is none.
async fn accept_opt(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The sockets `gatehouse serve` listens on.
#[derive(Debug)]
pub struct Listeners {
    pub mqtt: TcpListener,
    pub metrics: Option<TcpListener>,
    /// MQTT over WebSocket (`[listeners] websocket`), when configured.
    pub websocket: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `[listeners]`.
    pub async fn bind(config: &Config) -> Result<Listeners, BrokerError> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BrokerError::Bind { what, addr, source })
        };
        let mqtt = bind("mqtt", config.listeners.mqtt).await?;
        let metrics = match config.listeners.metrics {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let websocket = match config.listeners.websocket {
            Some(addr) => Some(bind("websocket", addr).await?),
            None => None,
        };
        Ok(Listeners {
            mqtt,
            metrics,
            websocket,
        })
    }
}

/// Runs the broker on already-bound listeners until `shutdown` resolves,
/// then disconnects every session (MQTT 5: reason 0x8B), waits until they
/// have drained or `listeners.drain_timeout` has passed, and flushes
/// telemetry ingest (to the database, or to the spool) before returning.
pub async fn run(
    config: Config,
    listeners: Listeners,
    presence: Arc<dyn PresenceSink>,
    registry: prometheus::Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    run_until_router_dies(config, listeners, presence, registry, shutdown, None).await
}

/// [`run`]; `router_dies`, when given, stands in for the router watchdog
/// (tests use it to see what the broker does when its router is gone).
async fn run_until_router_dies(
    config: Config,
    listeners: Listeners,
    presence: Arc<dyn PresenceSink>,
    registry: prometheus::Registry,
    shutdown: impl Future<Output = ()>,
    router_dies: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<(), BrokerError> {
    // Before anything slow: a SIGHUP from now on reloads instead of killing.
    let hangup = crate::reload::install();
    crate::limits::check_at_start(&config);
    let metrics = Arc::new(Metrics::new(registry)?);
    let tls = Arc::new(TlsStore::load(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
    )?);
    let (revocation, watcher) = start_revocation(&config.tls)?;
    let policy = PolicyHandle::new(Policy::from_config(&config)?);
    metrics.gate.emit(RulesInForce {
        path: config.source.as_deref(),
        config: &config,
        reloaded: false,
        restart_needed: &[],
    });
    let (ingest, ingest_service) = if config.ingest.enabled {
        let (handle, service) =
            gatehouse_ingest::start(&config.ingest, Some(&metrics.registry)).await?;
        (Some(handle), Some(service))
    } else {
        tracing::info!("[ingest] enabled = false: telemetry is not stored by this broker");
        (None, None)
    };
    let (router, router_watch) = RouterHandle::start(
        config.listeners.max_connections,
        flow::router_segments(config.mqtt.max_queued_bytes, router::SEGMENT_BYTES),
    )
    .map_err(BrokerError::RouterStart)?;
    let health = Arc::new(Health::default());
    let afterlife = Afterlife::start(&router).map_err(BrokerError::RouterStart)?;
    let shared = Arc::new(Shared {
        health: health.clone(),
        book: ClientBook::new(
            config.mqtt.max_new_topics_per_minute,
            config.mqtt.max_subscriptions_per_client,
            config.mqtt.max_retained_per_client,
        ),
        partial: PartialBudget::new(config.mqtt.max_partial_bytes),
        afterlife,
        flow: Flow::new(
            config.mqtt.max_queued_messages,
            config.mqtt.max_queued_bytes,
        ),
        telemetry: Telemetry::new(ingest, &config.ingest, metrics.puback_withheld.clone()),
        policy,
        revocation: revocation.clone(),
        tls: tls.clone(),
        router,
        metrics: metrics.clone(),
        registry: Arc::new(Registry::default()),
        presence,
        config,
    });

    let mut background = tokio::task::JoinSet::new();
    {
        let metrics = metrics.clone();
        background.spawn(
            tls.watch(
                shared
                    .config
                    .tls
                    .crl_poll_interval
                    .max(Duration::from_millis(250)),
                move |ok| {
                    metrics
                        .tls_reloads
                        .with_label_values(&[if ok { "ok" } else { "failed" }])
                        .inc();
                },
            ),
        );
    }
    if let Some(hup) = hangup {
        background.spawn(crate::reload::on_sighup(hup, shared.clone()));
    }
    background.spawn(revocation_kicks(
        revocation.clone(),
        shared.registry.clone(),
    ));
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = listeners.metrics {
        tracing::info!(addr = %listener.local_addr().map_err(|source| BrokerError::Bind { what: "metrics", addr: shared.config.listeners.metrics.unwrap_or(shared.config.listeners.mqtt), source })?, "metrics listening (/metrics, /healthz)");
        background.spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            health.clone(),
            watcher.as_ref().map(|w| w.handle()),
            async {
                let _ = metrics_stopped.await;
            },
        ));
    }

    let local = listeners.mqtt.local_addr().ok();
    tracing::info!(addr = ?local, max_connections = shared.config.listeners.max_connections, "MQTT over mTLS listening");
    if let Some(ws) = &listeners.websocket {
        let addr = ws.local_addr().ok();
        tracing::info!(addr = ?addr, "MQTT over WebSocket (wss, subprotocol \"mqtt\", same client certificates) listening");
    }
    // Every connection task holds a clone; `recv` returns None once all are gone.
    let (alive, mut drained) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(shared.config.listeners.max_connections));
    let mut router_died = false;
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut router_watch = std::pin::pin!(async move {
            match router_dies {
                Some(dies) => {
                    let _ = dies.await;
                }
                None => router_watch.died().await,
            }
        });
        loop {
            let ((tcp, peer), websocket) = tokio::select! {
                _ = &mut shutdown => break,
                _ = &mut router_watch => {
                    router_died = true;
                    health.router_died();
                    metrics.router_failures.inc();
                    tracing::error!("the MQTT router thread has died (a panic inside rumqttd); every session is cut. Stopping: ingest is flushed, then gatehouse exits non-zero so its supervisor restarts it");
                    break;
                }
                accepted = listeners.mqtt.accept() => match accepted {
                    Ok(a) => (a, false),
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        metrics.accept_errors.inc();
                        tracing::error!(error = %e, "accept failed (gatehouse_accept_errors_total; if it says 'Too many open files', raise LimitNOFILE / ulimit -n above listeners.max_connections)");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                accepted = accept_opt(listeners.websocket.as_ref()) => match accepted {
                    Ok(a) => (a, true),
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        metrics.accept_errors.inc();
                        tracing::error!(error = %e, "accept failed (gatehouse_accept_errors_total; if it says 'Too many open files', raise LimitNOFILE / ulimit -n above listeners.max_connections)");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                metrics.connection_limit_hits.inc();
                tracing::warn!(%peer, max = shared.config.listeners.max_connections, "connection limit reached; connection closed (listeners.max_connections)");
                drop(tcp);
                continue;
            };
            let shared = shared.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                // Released however the task ends, a panic included.
                let _open = GaugeGuard::new(shared.metrics.connections_open.clone());
                let _permit = permit;
                let _alive = alive;
                if let Err(panic) = CatchUnwind::new(crate::admission::serve(
                    tcp,
                    peer,
                    shared.clone(),
                    websocket,
                ))
                .await
                {
                    shared.metrics.session_panics.inc();
                    tracing::error!(%peer, panic, "connection task panicked; its connection is closed and its session state released (gatehouse_session_panics_total)");
                }
            });
        }
    }

    // Graceful shutdown: stop accepting, tell every session, wait for them.
    drop(listeners.mqtt);
    drop(listeners.websocket);
    drop(alive);
    let told = shared.registry.signal_all(Control::Shutdown);
    tracing::info!(sessions = told, "shutting down: disconnecting sessions");
    let deadline = shared.config.listeners.drain_timeout;
    if tokio::time::timeout(deadline, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            "sessions still open after listeners.drain_timeout; exiting anyway"
        );
    } else {
        tracing::info!("all sessions drained");
    }
    // Sessions are gone: write out what ingest still holds.
    if let Some(ingest) = ingest_service {
        ingest.shutdown().await;
    }
    let _ = stop_metrics.send(());
    background.abort_all();
    if let Some(w) = watcher {
        w.stop();
    }
    if router_died {
        return Err(BrokerError::RouterDied);
    }
    Ok(())
}

/// Disconnects open sessions whose certificate becomes revoked.
async fn revocation_kicks(revocation: RevocationHandle, registry: Arc<Registry>) {
    let mut updates = revocation.subscribe();
    loop {
        match updates.recv().await {
            Ok(update) => {
                if update.newly_revoked.is_empty() {
                    continue;
                }
                let n = registry.revoke(CrlEvent::Revoked(&update.newly_revoked));
                tracing::info!(
                    newly_revoked = update.newly_revoked.len(),
                    sessions = n,
                    "CRL update applied to open sessions"
                );
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let n = registry.revoke(CrlEvent::Missed(&revocation.current()));
                tracing::warn!(
                    missed,
                    sessions = n,
                    "missed CRL updates; rescanned every open session"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_tests::pki::Pki;

    /// When the router dies, the broker stops by itself: counted, ingest
    /// flushed, and `run` fails so `gatehouse serve` exits non-zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_router_stops_the_broker_with_an_error() {
        let pki = Pki::generate();
        let text = format!(
            "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n\n[listeners]\nmqtt = \"127.0.0.1:0\"\nmetrics = \"\"\n\n[ingest]\nenabled = false\n\n[provisioning]\nenabled = false\n",
            pki.ca_path, pki.server.cert_path, pki.server.key_path, pki.crl_path
        );
        let config = Config::parse(&text, "test.toml", pki.dir()).expect("config");
        let listeners = Listeners::bind(&config).await.expect("bind");
        let registry = prometheus::Registry::new();
        let (die, dies) = tokio::sync::oneshot::channel();
        let broker = tokio::spawn(run_until_router_dies(
            config,
            listeners,
            Arc::new(crate::LogPresence),
            registry.clone(),
            std::future::pending(),
            Some(dies),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!broker.is_finished(), "serving until the router dies");
        die.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), broker)
            .await
            .expect("stopped within 10 s")
            .expect("task");
        assert!(matches!(result, Err(BrokerError::RouterDied)), "{result:?}");
        let failures = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "gatehouse_router_failures_total")
            .map(|f| f.get_metric()[0].get_counter().get_value());
        assert_eq!(failures, Some(1.0));
    }
}
