//! `gatehouse`: the embedded edge broker's command line.

#![forbid(unsafe_code)]

mod provisioning_cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse_broker::devpki::DevPki;
use gatehouse_broker::fleet::StorePresence;
use gatehouse_broker::{Listeners, LogPresence, PresenceSink};
use gatehouse_config::{Config, ProvisioningStore};
use gatehouse_provisioning::metrics::Metrics as ProvisioningMetrics;
use gatehouse_provisioning::{Provisioning, Sidecar};

/// jemalloc instead of the system allocator: rumqttd gives every router
/// link buffers sized for 100–200 packets up front, and jemalloc keeps the
/// pages of a large allocation untouched (no header next to them) until
/// they are used, so an idle session costs only what it wrote.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Gatehouse: an MQTT broker that admits IoT gateways by their X.509 client
/// certificate and keeps each one inside its own topics, plus the
/// provisioning commands (fleet CA, bootstrap certificates, registrations,
/// certificates, CRL) that work on the same store as the sidecar.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version)]
struct Cli {
    /// gatehouse.toml to use (default: $GATEHOUSE_CONFIG, else built-in
    /// defaults). See config/gatehouse.example.toml for every key.
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: MQTT over mTLS (default 127.0.0.1:8883), Prometheus
    /// metrics (default http://127.0.0.1:9090/metrics) and the provisioning
    /// sidecar (device API https://127.0.0.1:8443, admin API :8444).
    ///
    /// With no config file it runs on built-in defaults and, on the first
    /// run, creates ./gatehouse-data/ with a dev CA, a broker certificate for
    /// localhost/127.0.0.1 and sample client certificates, then prints
    /// mosquitto_pub / mosquitto_sub commands that work against it.
    /// SIGINT/SIGTERM disconnect every session and exit 0; SIGHUP re-reads
    /// [identity] and [acl] from the config file (a broken file keeps the
    /// rules in force).
    ///
    /// The provisioning sidecar runs inside it unless `[provisioning]
    /// enabled = false`: device API https://127.0.0.1:8443, admin API
    /// https://127.0.0.1:8444 (bearer token from `admin_token_file`), on the
    /// same fleet CA, writing revocations to the CRL the broker watches.
    Serve,
    #[command(flatten)]
    Provisioning(provisioning_cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    gatehouse_broker::install_panic_hook();
    let result = match cli.command {
        Command::Serve => serve(cli.config),
        Command::Provisioning(cmd) => provisioning(cli.config, cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and those of its causes whose text it does not already hold
/// (most messages embed their source; added context does not).
fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn provisioning(config: Option<PathBuf>, cmd: provisioning_cli::Command) -> anyhow::Result<()> {
    let config = Config::load_or_default(config.as_deref())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(provisioning_cli::run(cmd, &config))
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load_or_default(config.as_deref())?;
    let dev = DevPki::ensure(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // First of all: a SIGTERM during start-up is a clean stop.
        let shutdown = shutdown_signal();
        let listeners = Listeners::bind(&config).await?;
        // One registry behind /metrics: broker, ingest and provisioning.
        let registry = prometheus::Registry::new();
        let sidecar = if config.provisioning.enabled {
            if dev.is_some()
                && provisioning_cli::ensure_admin_token(&config.provisioning.admin_token_file)?
            {
                tracing::info!(path = %config.provisioning.admin_token_file.display(), "admin token created (mode 0600)");
            }
            Some(start_sidecar(&config, &registry).await?)
        } else {
            None
        };
        if let Some((pki, created)) = &dev {
            let mqtt = listeners.mqtt.local_addr()?;
            let metrics = listeners.metrics.as_ref().and_then(|l| l.local_addr().ok());
            // A CA from `gatehouse ca init` has no sample clients to show.
            if *created || pki.operational_cert.exists() {
                println!("{}", pki.instructions(mqtt, metrics, *created));
            }
            if let Some(s) = &sidecar {
                println!(
                    "{}",
                    pki.provisioning_instructions(
                        s.device_addr,
                        s.admin_addr,
                        &config.provisioning.admin_token_file
                    )
                );
            }
        }
        let presence: Arc<dyn PresenceSink> = match &sidecar {
            Some(s) => Arc::new(StorePresence::start(s.service.store().clone())),
            None => Arc::new(LogPresence),
        };
        let (stop_notify, notify_stopped) = tokio::sync::oneshot::channel::<()>();
        let notify = match (&sidecar, &config.provisioning.store) {
            (Some(s), ProvisioningStore::Postgres(url)) if config.tls.crl.is_some() => {
                Some(tokio::spawn(gatehouse_provisioning::notify::follow_crl_notifications(
                    s.service.clone(),
                    url.clone(),
                    async {
                        let _ = notify_stopped.await;
                    },
                )))
            }
            _ => None,
        };
        let result =
            gatehouse_broker::run(config, listeners, presence, registry, shutdown).await;
        let _ = stop_notify.send(());
        if let Some(n) = notify {
            let _ = n.await;
        }
        if let Some(s) = sidecar {
            s.stop().await;
        }
        result?;
        Ok(())
    })
}

/// The provisioning sidecar next to the broker, on the same config: same
/// fleet CA ([provisioning] ca_cert defaults to [tls] ca, ca_key to
/// DATA_DIR/ca.key, where the dev PKI puts it) and the CRL in [tls] crl.
async fn start_sidecar(
    config: &Config,
    registry: &prometheus::Registry,
) -> anyhow::Result<Sidecar> {
    let service = Arc::new(
        Provisioning::open(config, ProvisioningMetrics::register(registry)?)
            .await
            .context(
                "cannot start the provisioning sidecar (run `gatehouse ca init`, or set \
                 [provisioning] enabled = false to run the broker alone)",
            )?,
    );
    service
        .refresh_crl_if_due()
        .await
        .context("cannot publish the CRL at start-up")?;
    Sidecar::start(config, service)
        .await
        .context("cannot start the provisioning sidecar")
}

/// Logs to stderr, `RUST_LOG` or `info,rumqttd=warn`. rumqttd's router opens
/// an ERROR-level span for every PUBLISH it routes (its events inside still
/// get logged); recording those spans cost a quarter of the broker's CPU
/// under load, so spans from rumqttd are never recorded.
fn init_logging() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let no_router_spans = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && meta.target().starts_with("rumqttd"))
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(env)
                .with_filter(no_router_spans),
        )
        .init();
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives while
/// the broker is still starting must stop it cleanly, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot install the SIGTERM/SIGINT handlers; the broker cannot be stopped cleanly");
                std::future::pending::<()>().await;
            }
        }
    }
}
