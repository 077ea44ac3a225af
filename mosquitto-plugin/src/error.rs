//! Why the plugin could not start, and why a client was refused.

use std::net::SocketAddr;
use std::os::raw::c_int;

use gatehouse_auth::CrlError;
use gatehouse_config::ConfigError;
use gatehouse_gate::{ConnectRefusal, Handshake, Why};

use crate::ffi::CertError;

/// Start-up failures. Mosquitto refuses to start and logs this one line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    #[error(
        "no gatehouse.toml given: add `plugin_opt_config /path/to/gatehouse.toml` after the \
         `plugin` line in mosquitto.conf"
    )]
    NoConfigOption,
    #[error("unknown plugin option `plugin_opt_{0}`: the only option is `plugin_opt_config`")]
    UnknownOption(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Policy(#[from] gatehouse_gate::PolicyError),
    #[error("[tls] crl: {0}")]
    Crl(#[from] CrlError),
    #[error(
        "[plugin] metrics: cannot listen on {addr}: {source} (pick a free address or set metrics = \"\")"
    )]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("[ingest]: {0}")]
    Ingest(#[from] gatehouse_ingest::IngestError),
    #[error("cannot start the ingest threads: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(
        "Mosquitto refused to register the {event} callback (error {rc}); is this Mosquitto 2.0 or newer?"
    )]
    Register { event: &'static str, rc: c_int },
}

/// Why a client is not admitted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no client certificate (the listener needs `require_certificate true` and a `cafile`)")]
    NoCertificate,
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// The gate's ordered admission refused it.
    #[error(transparent)]
    Gate(#[from] gatehouse_gate::Refusal),
    #[error("Mosquitto could not set the username (error {0})")]
    Username(c_int),
}

impl Refusal {
    /// What the gate calls this refusal: a step of its admission, a failed
    /// certificate check (counted in `gatehouse_handshakes_total`), or a
    /// CONNECT refused after a good certificate
    /// (`gatehouse_connect_refused_total`).
    pub(crate) fn why(&self) -> Why<'_> {
        match self {
            Refusal::NoCertificate => Why::Certificate {
                outcome: Handshake::NoCert,
                detail: self,
            },
            Refusal::Certificate(_) => Why::Certificate {
                outcome: Handshake::BadChain,
                detail: self,
            },
            Refusal::Gate(r) => Why::Admission(r),
            Refusal::Username(_) => Why::Connect {
                reason: ConnectRefusal::Internal,
                detail: self,
            },
        }
    }
}
