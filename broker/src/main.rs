//! `gatehouse`: the embedded edge broker's command line.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gatehouse_broker::devpki::DevPki;
use gatehouse_broker::{Listeners, LogPresence};
use gatehouse_config::Config;

/// Gatehouse: an MQTT broker that admits IoT gateways by their X.509 client
/// certificate and keeps each one inside its own topics.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: MQTT over mTLS (default 127.0.0.1:8883) and
    /// Prometheus metrics (default http://127.0.0.1:9090/metrics).
    ///
    /// With no config file it runs on built-in defaults and, on the first
    /// run, creates ./gatehouse-data/ with a dev CA, a broker certificate for
    /// localhost/127.0.0.1 and sample client certificates, then prints
    /// mosquitto_pub / mosquitto_sub commands that work against it.
    /// SIGINT/SIGTERM disconnect every session and exit 0.
    Serve {
        /// gatehouse.toml to use (default: $GATEHOUSE_CONFIG, else built-in
        /// defaults). See config/gatehouse.example.toml for every key.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config } => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load_or_default(config.as_deref())?;
    let dev = DevPki::ensure(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        if let Some((pki, created)) = &dev {
            let mqtt = listeners.mqtt.local_addr()?;
            let metrics = listeners.metrics.as_ref().and_then(|l| l.local_addr().ok());
            println!("{}", pki.instructions(mqtt, metrics, *created));
        }
        gatehouse_broker::run(config, listeners, Arc::new(LogPresence), shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler; only Ctrl-C stops the broker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
