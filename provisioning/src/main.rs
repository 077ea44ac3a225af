//! `gatehouse-provisioning`: the provisioning commands on their own, until
//! they are mounted into the `gatehouse` binary.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use gatehouse_config::Config;
use gatehouse_provisioning::cli;

/// Gatehouse provisioning: fleet CA, bootstrap certificates, registrations,
/// certificates, CRL and the provisioning sidecar.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version)]
struct Cli {
    /// Config file (default: $GATEHOUSE_CONFIG, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: cli::Command,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,gatehouse_provisioning=info".into()),
        )
        .init();
    let args = Cli::parse();
    let config = Config::load_or_default(args.config.as_deref())?;
    cli::run(args.command, &config).await
}
