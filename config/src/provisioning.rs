//! `[provisioning]`: the provisioning sidecar (device self-registration API,
//! admin API, registry store, certificate issuance and CRL publication).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::load::Validator;

pub(crate) const LISTEN: &str = "127.0.0.1:8443";
pub(crate) const ADMIN_LISTEN: &str = "127.0.0.1:8444";
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin.token";
pub(crate) const STORE_FILE: &str = "provisioning.db";
pub(crate) const CA_KEY: &str = "ca.key";
pub(crate) const RATE_LIMIT: usize = 10;
pub(crate) const RATE_LIMIT_WINDOW: &str = "1h";
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
pub(crate) const VALIDITY_DAYS: usize = 3650;
pub(crate) const RENEWAL_WINDOW_DAYS: usize = 730;
pub(crate) const RENEWAL_CHECK_INTERVAL: &str = "1h";
pub(crate) const CRL_VALIDITY: &str = "7days";
pub(crate) const HEADER_READ_TIMEOUT: &str = "10s";
pub(crate) const BODY_READ_TIMEOUT: &str = "10s";
pub(crate) const MAX_CONNECTIONS: usize = 512;
pub(crate) const MAX_CONNECTIONS_PER_SOURCE: usize = 16;

/// `[provisioning]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvisioning {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub admin_token_file: Option<String>,
    pub database_url: Option<String>,
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub rate_limit: Option<i64>,
    pub rate_limit_window: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_body_bytes: Option<i64>,
    pub validity_days: Option<i64>,
    pub renewal_window_days: Option<i64>,
    pub renewal_check_interval: Option<String>,
    pub crl_validity: Option<String>,
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub max_connections_per_source: Option<i64>,
    pub require_bootstrap_cert: Option<bool>,
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisioningStore {
    /// A SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://…`), typically the database ingest writes to.
    Postgres(String),
}

/// `[provisioning]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningSettings {
    /// Run the sidecar inside `gatehouse serve`.
    pub enabled: bool,
    /// Device API (HTTPS) listen address.
    pub listen: SocketAddr,
    /// Admin API (HTTPS, bearer token) listen address.
    pub admin_listen: SocketAddr,
    /// File holding the admin bearer token (first line, trimmed).
    pub admin_token_file: PathBuf,
    pub store: ProvisioningStore,
    /// Fleet CA certificate used to sign device certificates.
    pub ca_cert: PathBuf,
    /// Fleet CA private key.
    pub ca_key: PathBuf,
    /// Server certificate chain presented by both listeners.
    pub cert: PathBuf,
    /// Private key of `cert`.
    pub key: PathBuf,
    /// Registration requests allowed per source IP per window.
    pub rate_limit: u32,
    pub rate_limit_window: Duration,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Validity of issued operational and bootstrap certificates.
    pub validity_days: u32,
    /// Certificates expiring within this many days are scheduled for renewal.
    pub renewal_window_days: u32,
    pub renewal_check_interval: Duration,
    /// nextUpdate - thisUpdate of generated CRLs; they are re-signed at half-life.
    pub crl_validity: Duration,
    /// Longest wait for a request's headers (also the idle keep-alive limit).
    pub header_read_timeout: Duration,
    /// Longest time to receive a request's whole body.
    pub body_read_timeout: Duration,
    /// Connections served at once per listener, all sources together.
    pub max_connections: usize,
    /// Connections served at once per source IP (trusted proxies exempt).
    pub max_connections_per_source: usize,
    /// Device registration needs a valid, unrevoked bootstrap certificate of
    /// this fleet as TLS client certificate (false only for legacy firmware).
    pub require_bootstrap_cert: bool,
}

impl Validator<'_> {
    pub(crate) fn provisioning(
        &self,
        raw: RawProvisioning,
        data_dir: &Path,
        tls: &crate::TlsSettings,
    ) -> Result<ProvisioningSettings, ConfigError> {
        let addr = |key: &str, value: Option<String>, default: &str| {
            let text = value.unwrap_or_else(|| default.to_owned());
            text.parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    key,
                    format!("expected an address such as \"127.0.0.1:8443\", got {text:?}"),
                )
            })
        };
        let listen = addr("provisioning.listen", raw.listen, LISTEN)?;
        let admin_listen = addr("provisioning.admin_listen", raw.admin_listen, ADMIN_LISTEN)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(self.invalid(
                "provisioning.admin_listen",
                "the admin API needs its own address: make admin_listen differ from listen",
            ));
        }
        let store = match raw.database_url {
            None => ProvisioningStore::Sqlite(data_dir.join(STORE_FILE)),
            Some(url) => {
                if let Some(path) = url.strip_prefix("sqlite://") {
                    if path.trim().is_empty() {
                        return Err(self.invalid(
                            "provisioning.database_url",
                            "sqlite:// needs a file path, e.g. \"sqlite://gatehouse-data/provisioning.db\"",
                        ));
                    }
                    ProvisioningStore::Sqlite(self.path(path))
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    ProvisioningStore::Postgres(url)
                } else {
                    return Err(self.invalid(
                        "provisioning.database_url",
                        "expected \"sqlite://FILE\" or \"postgres://USER@HOST/DB\"",
                    ));
                }
            }
        };
        let path_or = |key: &str, value: Option<String>, default: PathBuf| {
            self.non_empty_path(key, value)
                .map(|p| p.unwrap_or(default))
        };
        let trusted_proxies = raw
            .trusted_proxies
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                p.trim().parse::<IpAddr>().map_err(|_| {
                    self.invalid(
                        &format!("provisioning.trusted_proxies.{i}"),
                        format!("expected an IP address such as \"10.0.0.1\", got {p:?}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let days = |key: &str, v: Option<i64>, default: usize| {
            self.positive(key, v, default, 36_500).map(|d| d as u32)
        };
        let validity_days = days(
            "provisioning.validity_days",
            raw.validity_days,
            VALIDITY_DAYS,
        )?;
        let renewal_window_days = days(
            "provisioning.renewal_window_days",
            raw.renewal_window_days,
            RENEWAL_WINDOW_DAYS,
        )?;
        let max_connections = self.positive(
            "provisioning.max_connections",
            raw.max_connections,
            MAX_CONNECTIONS,
            1_000_000,
        )?;
        let max_connections_per_source = self.positive(
            "provisioning.max_connections_per_source",
            raw.max_connections_per_source,
            MAX_CONNECTIONS_PER_SOURCE,
            1_000_000,
        )?;
        if max_connections_per_source > max_connections {
            return Err(self.invalid(
                "provisioning.max_connections_per_source",
                format!(
                    "must not exceed max_connections ({max_connections}); lower it or raise max_connections"
                ),
            ));
        }
        Ok(ProvisioningSettings {
            enabled: raw.enabled.unwrap_or(true),
            listen,
            admin_listen,
            admin_token_file: path_or(
                "provisioning.admin_token_file",
                raw.admin_token_file,
                data_dir.join(ADMIN_TOKEN_FILE),
            )?,
            store,
            ca_cert: path_or("provisioning.ca_cert", raw.ca_cert, tls.ca.clone())?,
            ca_key: path_or("provisioning.ca_key", raw.ca_key, data_dir.join(CA_KEY))?,
            cert: path_or("provisioning.cert", raw.cert, tls.cert.clone())?,
            key: path_or("provisioning.key", raw.key, tls.key.clone())?,
            rate_limit: self.positive(
                "provisioning.rate_limit",
                raw.rate_limit,
                RATE_LIMIT,
                1_000_000,
            )? as u32,
            rate_limit_window: self.duration(
                "provisioning.rate_limit_window",
                raw.rate_limit_window,
                RATE_LIMIT_WINDOW,
            )?,
            trusted_proxies,
            max_body_bytes: self.positive(
                "provisioning.max_body_bytes",
                raw.max_body_bytes,
                MAX_BODY_BYTES,
                16 * 1024 * 1024,
            )?,
            validity_days,
            renewal_window_days,
            renewal_check_interval: self.duration(
                "provisioning.renewal_check_interval",
                raw.renewal_check_interval,
                RENEWAL_CHECK_INTERVAL,
            )?,
            crl_validity: self.duration(
                "provisioning.crl_validity",
                raw.crl_validity,
                CRL_VALIDITY,
            )?,
            header_read_timeout: self.duration(
                "provisioning.header_read_timeout",
                raw.header_read_timeout,
                HEADER_READ_TIMEOUT,
            )?,
            body_read_timeout: self.duration(
                "provisioning.body_read_timeout",
                raw.body_read_timeout,
                BODY_READ_TIMEOUT,
            )?,
            max_connections,
            max_connections_per_source,
            require_bootstrap_cert: raw.require_bootstrap_cert.unwrap_or(true),
        })
    }
}
