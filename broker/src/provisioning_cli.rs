//! The provisioning commands of the `gatehouse` binary (clap derive):
//! `ca init`, `bootstrap issue|list|revoke`, `registrations
//! list|allocate|reject`, `certs list|revoke|due`, `crl write` and
//! `provisioning serve`. They work on the same store as the sidecar.
//! Lists print readable tables, or JSON with `--json`.
//!
//! The binary mounts [`Command`] and calls [`run`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gatehouse_ca::RevocationReason;
use gatehouse_config::Config;
use serde::Serialize;

use gatehouse_provisioning::metrics::Metrics;
use gatehouse_provisioning::service::{AllocateRequest, Provisioning, RevokeTarget};
use gatehouse_provisioning::sidecar::Sidecar;
use gatehouse_provisioning::store::Status;

/// Provisioning commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Fleet certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Factory bootstrap certificates (one active at a time).
    #[command(subcommand)]
    Bootstrap(BootstrapCommand),
    /// Device self-registrations (PENDENTE / PROVISIONADO / REJEITADO).
    #[command(subcommand)]
    Registrations(RegistrationsCommand),
    /// Operational certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Certificate revocation list.
    #[command(subcommand)]
    Crl(CrlCommand),
    /// The provisioning sidecar on its own (for Mosquitto deployments).
    #[command(subcommand)]
    Provisioning(ProvisioningCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create the fleet CA, a server certificate for the listeners, the admin
    /// token file and an empty CRL (existing files are kept unless --force).
    Init {
        /// Subject CN of the CA.
        #[arg(long, default_value = "Gatehouse Fleet CA")]
        common_name: String,
        /// Names/IPs of the server certificate (repeatable).
        #[arg(long = "server-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        server_names: Vec<String>,
        /// Replace an existing CA (every issued certificate stops verifying!).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The record id (see the matching `list` command).
    pub id: i64,
    /// RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, …
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
    /// Free-text notes for the audit log.
    #[arg(long)]
    pub notes: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BootstrapCommand {
    /// Issue a new bootstrap certificate (deactivates the previous one).
    Issue {
        /// Name of the factory batch, e.g. "batch 2026-11".
        #[arg(long)]
        label: String,
        /// Also take the one-time factory bundle (ZIP, key included) now.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Download the one-time factory bundle of a bootstrap certificate.
    Download {
        /// Bootstrap certificate id (see `gatehouse bootstrap list`).
        id: i64,
        /// Where to write the ZIP (mode 0600: it holds the batch's key).
        #[arg(long)]
        out: PathBuf,
    },
    /// List bootstrap certificates.
    List(JsonFlag),
    /// Emergency revocation: locks out the whole batch.
    Revoke(RevokeArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RegistrationsCommand {
    /// List registrations, optionally of one status.
    List {
        /// Only this status: PENDENTE, PROVISIONADO or REJEITADO.
        #[arg(long)]
        status: Option<Status>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Allocate a PENDENTE registration: create the gateway, issue its
    /// certificate and write the provisioning bundle.
    Allocate {
        /// Registration id (see `gatehouse registrations list`).
        id: i64,
        /// Tenant (account) the gateway belongs to.
        #[arg(long)]
        tenant: String,
        /// Logical device id; the gateway code (certificate CN) becomes
        /// DEVICE_ID-XXXX with the last 4 hex digits of the MAC.
        #[arg(long)]
        device_id: String,
        /// Human-readable gateway name.
        #[arg(long)]
        name: Option<String>,
        /// Notes for the audit log.
        #[arg(long)]
        notes: Option<String>,
        /// Where to write the ZIP bundle.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Reject a PENDENTE registration.
    Reject {
        /// Registration id (see `gatehouse registrations list`).
        id: i64,
        /// Why (kept on the record and in the audit log).
        #[arg(long)]
        notes: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// List operational certificates.
    List(JsonFlag),
    /// Revoke a certificate; the CRL is regenerated and published.
    Revoke(RevokeArgs),
    /// Run the renewal check and list certificates due for renewal.
    Due(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CrlCommand {
    /// Sign and publish a fresh CRL ([tls] crl, NOTIFY on PostgreSQL).
    Write(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProvisioningCommand {
    /// Run the sidecar alone (next to Mosquitto + plugin): the device API
    /// ([provisioning] listen), the admin API ([provisioning] admin_listen)
    /// and Prometheus metrics ([listeners] metrics), until Ctrl-C / SIGTERM.
    Serve,
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

async fn service(config: &Config) -> anyhow::Result<Provisioning> {
    Provisioning::open(config, Metrics::unregistered())
        .await
        .context("cannot open the provisioning service (did you run `gatehouse ca init`?)")
}

/// Runs one provisioning command.
pub(crate) async fn run(cmd: Command, config: &Config) -> anyhow::Result<()> {
    match cmd {
        Command::Ca(CaCommand::Init {
            common_name,
            server_names,
            force,
        }) => ca_init(config, &common_name, &server_names, force).await,
        Command::Bootstrap(c) => bootstrap(c, config).await,
        Command::Registrations(c) => registrations(c, config).await,
        Command::Certs(c) => certs(c, config).await,
        Command::Crl(CrlCommand::Write(j)) => {
            let crl = service(config).await?.publish_crl_by(&actor()).await?;
            if j.json {
                print_json(&crl)
            } else {
                println!(
                    "CRL #{} with {} revoked certificate(s) written to {}",
                    crl.number,
                    crl.entries,
                    crl.path
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "(nowhere: [tls] crl is disabled)".into())
                );
                Ok(())
            }
        }
        Command::Provisioning(ProvisioningCommand::Serve) => serve(config).await,
    }
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let service = Arc::new(
        Provisioning::open(config, Metrics::register(&registry)?)
            .await
            .context("cannot start the provisioning sidecar")?,
    );
    service.refresh_crl_if_due().await?;
    let sidecar = Sidecar::start(config, service).await?;
    println!(
        "provisioning: device API https://{}  admin API https://{}",
        sidecar.device_addr, sidecar.admin_addr
    );
    let metrics = match config.listeners.metrics {
        Some(addr) => {
            let server = serve_metrics(addr, registry).await?;
            println!("provisioning: metrics http://{addr}/metrics");
            Some(server)
        }
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sidecar.stop().await;
    if let Some(m) = metrics {
        m.abort();
    }
    Ok(())
}

/// Prometheus text on `GET /metrics` at `[listeners] metrics` (the sidecar
/// alone has no broker to serve them).
async fn serve_metrics(
    addr: std::net::SocketAddr,
    registry: prometheus::Registry,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on [listeners] metrics = \"{addr}\" (pick a free address, or \"\" for none)"
        )
    })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        gatehouse_gate::CONTENT_TYPE,
                    )],
                    gatehouse_gate::render(&registry),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    }))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    gatehouse_config::secure_fs::write(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a fresh random admin token (mode 0600) to `path` unless the file
/// exists. `true` when it wrote one.
pub(crate) fn ensure_admin_token(path: &Path) -> anyhow::Result<bool> {
    Ok(gatehouse_provisioning::ensure_admin_token(path)?)
}

async fn ca_init(
    config: &Config,
    common_name: &str,
    server_names: &[String],
    force: bool,
) -> anyhow::Result<()> {
    let done = gatehouse_provisioning::init_fleet(config, common_name, server_names, force).await?;
    if done.ca_written {
        println!(
            "CA: wrote {} and {} (keep the key secret)",
            done.ca_cert.display(),
            done.ca_key.display()
        );
    } else {
        println!("CA: keeping {}", done.ca_cert.display());
    }
    if let Some((cert, key)) = &done.server_cert {
        println!(
            "server certificate: wrote {} and {} for {}",
            cert.display(),
            key.display(),
            server_names.join(", ")
        );
    }
    if let Some(token) = &done.admin_token {
        println!("admin token: wrote {} (mode 0600)", token.display());
    }
    println!("CRL #{} published", done.crl_number);
    Ok(())
}

async fn bootstrap(cmd: BootstrapCommand, config: &Config) -> anyhow::Result<()> {
    let svc = service(config).await?;
    let actor = actor();
    match cmd {
        BootstrapCommand::Issue { label, out, json } => {
            let b = svc.issue_bootstrap(&label, &actor).await?;
            if let Some(out) = &out {
                let zip = svc.download_bootstrap(b.id, &actor).await?;
                write_private(out, &zip)?;
            }
            if json.json {
                return print_json(&b);
            }
            println!(
                "bootstrap {} \"{}\" issued (now the only active one), fingerprint {}",
                b.id, b.label, b.fingerprint
            );
            match out {
                Some(out) => println!(
                    "factory bundle written to {} — the key is now erased from the server",
                    out.display()
                ),
                None => println!(
                    "download its one-time bundle: gatehouse bootstrap download {} --out FILE.zip",
                    b.id
                ),
            }
            Ok(())
        }
        BootstrapCommand::Download { id, out } => {
            let zip = svc.download_bootstrap(id, &actor).await?;
            write_private(&out, &zip)?;
            println!(
                "factory bundle written to {} — the key is now erased from the server",
                out.display()
            );
            Ok(())
        }
        BootstrapCommand::List(j) => {
            let list = svc.store().bootstraps().await?;
            if j.json {
                return print_json(&list);
            }
            table(
                &[
                    "ID",
                    "LABEL",
                    "ACTIVE",
                    "KEY HELD",
                    "REVOKED",
                    "NOT AFTER",
                    "FINGERPRINT",
                ],
                list.iter()
                    .map(|b| {
                        vec![
                            b.id.to_string(),
                            b.label.clone(),
                            yes(b.is_active),
                            yes(b.key_available),
                            b.revoked_at.clone().unwrap_or_else(|| "-".into()),
                            b.not_after.clone(),
                            b.fingerprint.clone(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        BootstrapCommand::Revoke(a) => {
            revoke(&svc, RevokeTarget::Bootstrap(a.id), &a, &actor).await
        }
    }
}

async fn registrations(cmd: RegistrationsCommand, config: &Config) -> anyhow::Result<()> {
    let svc = service(config).await?;
    let actor = actor();
    match cmd {
        RegistrationsCommand::List { status, json } => {
            let list = svc.store().registrations(status).await?;
            if json.json {
                return print_json(&list);
            }
            table(
                &[
                    "ID",
                    "STATUS",
                    "MAC",
                    "SERIAL",
                    "MODEL",
                    "FW",
                    "CSR",
                    "SOURCE IP",
                    "CREATED",
                ],
                list.iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.status.to_string(),
                            r.mac.clone(),
                            opt(&r.serial),
                            opt(&r.model),
                            opt(&r.fw_version),
                            yes(r.has_csr),
                            opt(&r.source_ip),
                            r.created_at.clone(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        RegistrationsCommand::Allocate {
            id,
            tenant,
            device_id,
            name,
            notes,
            out,
            json,
        } => {
            let a = svc
                .allocate(
                    id,
                    &AllocateRequest {
                        tenant,
                        device_id,
                        name,
                        notes,
                    },
                    &actor,
                )
                .await?;
            write_private(&out, &a.bundle)?;
            #[derive(Serialize)]
            struct Out<'a> {
                registration_id: i64,
                gateway_id: i64,
                gateway_code: &'a str,
                certificate_id: i64,
                serial: &'a str,
                mode: &'a str,
                bundle: &'a Path,
            }
            let o = Out {
                registration_id: a.registration_id,
                gateway_id: a.gateway_id,
                gateway_code: &a.gateway_code,
                certificate_id: a.certificate_id,
                serial: &a.serial,
                mode: if a.legacy { "legacy" } else { "csr" },
                bundle: &out,
            };
            if json.json {
                return print_json(&o);
            }
            println!(
                "registration {id} allocated: gateway {} (certificate {}, serial {}, {} mode); bundle written to {}",
                o.gateway_code,
                o.certificate_id,
                o.serial,
                o.mode,
                out.display()
            );
            if a.legacy {
                println!(
                    "warning: legacy firmware — the bundle holds the device's private key; deliver it securely"
                );
            }
            Ok(())
        }
        RegistrationsCommand::Reject { id, notes } => {
            svc.reject(id, notes.as_deref(), &actor).await?;
            println!("registration {id} rejected");
            Ok(())
        }
    }
}

async fn certs(cmd: CertsCommand, config: &Config) -> anyhow::Result<()> {
    let svc = service(config).await?;
    let list_table = |list: &[gatehouse_provisioning::store::Certificate]| {
        table(
            &[
                "ID",
                "GATEWAY",
                "MODE",
                "SERIAL",
                "NOT AFTER",
                "REVOKED",
                "RENEWAL",
            ],
            list.iter()
                .map(|c| {
                    vec![
                        c.id.to_string(),
                        c.gateway_code.clone(),
                        c.kind.clone(),
                        c.serial.clone(),
                        c.not_after.clone(),
                        match (&c.revoked_at, &c.revoke_reason) {
                            (Some(at), Some(r)) => format!("{at} ({r})"),
                            (Some(at), None) => at.clone(),
                            _ => "-".into(),
                        },
                        yes(c.renewal_scheduled),
                    ]
                })
                .collect(),
        )
    };
    match cmd {
        CertsCommand::List(j) => {
            let list = svc.store().certificates().await?;
            if j.json {
                return print_json(&list);
            }
            list_table(&list);
            Ok(())
        }
        CertsCommand::Due(j) => {
            svc.renewal_check().await?;
            let list = svc.store().certificates_due().await?;
            if j.json {
                return print_json(&list);
            }
            list_table(&list);
            Ok(())
        }
        CertsCommand::Revoke(a) => {
            revoke(&svc, RevokeTarget::Certificate(a.id), &a, &actor()).await
        }
    }
}

/// `bootstrap|certs revoke`: revokes `target` and reports the CRL published.
async fn revoke(
    svc: &Provisioning,
    target: RevokeTarget,
    a: &RevokeArgs,
    actor: &str,
) -> anyhow::Result<()> {
    let reason = parse_reason(&a.reason)?;
    let crl = svc
        .revoke(target, reason, a.notes.as_deref(), actor)
        .await?;
    println!(
        "{target} revoked ({reason}); CRL #{} published with {} entr(ies)",
        crl.number, crl.entries
    );
    Ok(())
}

fn parse_reason(s: &str) -> anyhow::Result<RevocationReason> {
    match s.parse() {
        Ok(r) => Ok(r),
        Err(m) => bail!(
            "{m}: use an RFC 5280 reason such as keyCompromise, superseded, cessationOfOperation"
        ),
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints left-aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    if rows.is_empty() {
        println!("(none)");
    }
    for r in rows {
        line(r);
    }
}
