//! The broker's error type: everything that can stop `gatehouse serve` from
//! starting. Per-connection problems are not errors of the broker: they are
//! logged, counted and end only that connection.

use std::path::PathBuf;

/// Why the broker could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] gatehouse_config::ConfigError),

    #[error(
        "cannot read {what} {path}: {source} (check [tls] in the config, or delete the data directory to regenerate the dev PKI)"
    )]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{what} {path} is unusable: {reason}")]
    BadFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("TLS setup failed: {0}")]
    Tls(String),

    #[error(transparent)]
    Identity(#[from] gatehouse_auth::IdentityError),

    #[error(transparent)]
    Crl(#[from] gatehouse_auth::CrlError),

    #[error(transparent)]
    Policy(#[from] gatehouse_gate::PolicyError),

    #[error("dev PKI generation failed: {0}")]
    DevPki(#[from] gatehouse_ca::CaError),

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "cannot listen on {addr} ({what}): {source}; is another broker running? change [listeners] {what}"
    )]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },

    #[error("cannot start telemetry ingest: {0}")]
    Ingest(#[from] gatehouse_ingest::IngestError),

    #[error(
        "the server key {key} does not belong to the server certificate {cert} ({reason}); point [tls] cert and key at a matching pair"
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },

    #[error(
        "the MQTT router thread died (a panic inside rumqttd); gatehouse stopped after flushing ingest so its supervisor can restart it"
    )]
    RouterDied,

    #[error("cannot start the MQTT router: {0}")]
    RouterStart(String),

    #[error("metrics setup failed: {0}")]
    Metrics(#[from] prometheus::Error),
}
