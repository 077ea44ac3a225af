//! The TLS side of the front door: the rustls server configuration (client
//! certificate required, chained to the fleet CA, TLS 1.2 and 1.3, ring
//! provider), its live reload when the CA, certificate or key file changes,
//! and the mapping of handshake failures to the gate's outcomes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};

use gatehouse_gate::Handshake;

use crate::error::BrokerError;

/// The handshake outcome an error of tokio-rustls's `accept` stands for.
pub(crate) fn handshake_of_io_error(e: &std::io::Error) -> Handshake {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return Handshake::Failed;
    };
    match err {
        rustls::Error::NoCertificatesPresented => Handshake::NoCert,
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Handshake::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Handshake::NotYetValid
            }
            CertificateError::Revoked => Handshake::Revoked,
            _ => Handshake::BadChain,
        },
        _ => Handshake::Failed,
    }
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let bytes = std::fs::read(path).map_err(|source| BrokerError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BrokerError::BadFile {
            what,
            path: path.to_path_buf(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(BrokerError::BadFile {
            what,
            path: path.to_path_buf(),
            reason: "no `CERTIFICATE` PEM block found".into(),
        });
    }
    Ok(certs)
}

/// Builds the server configuration from the `[tls]` files.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<ServerConfig, BrokerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in read_certs("CA bundle", ca)? {
        roots.add(c).map_err(|e| BrokerError::BadFile {
            what: "CA bundle",
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| BrokerError::Tls(format!("client verifier for {}: {e}", ca.display())))?;
    let chain = read_certs("server certificate", cert)?;
    let key_bytes = std::fs::read(key).map_err(|source| BrokerError::ReadFile {
        what: "server key",
        path: key.to_path_buf(),
        source,
    })?;
    // The error from the PEM parser never contains key material.
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| BrokerError::BadFile {
        what: "server key",
        path: key.to_path_buf(),
        reason: format!("expected an unencrypted PEM private key: {e}"),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| BrokerError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols.clear();
    Ok(config)
}

/// Metadata that changes when a file is rewritten or replaced.
fn stamp(path: &Path) -> Option<(u64, u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// The server configuration in force; every new connection takes the latest.
#[derive(Debug)]
pub struct TlsStore {
    current: ArcSwap<ServerConfig>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsStore {
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<TlsStore, BrokerError> {
        let config = server_config(ca, cert, key)?;
        Ok(TlsStore {
            current: ArcSwap::from_pointee(config),
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Polls the three files every `interval` and reloads when one changes;
    /// a failed reload keeps the previous configuration.
    pub(crate) async fn watch(
        self: Arc<Self>,
        interval: Duration,
        on_reload: impl Fn(bool) + Send + 'static,
    ) {
        let stamps = |s: &TlsStore| [stamp(&s.ca), stamp(&s.cert), stamp(&s.key)];
        let mut seen = stamps(&self);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamps(&self);
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&self.ca, &self.cert, &self.key) {
                Ok(config) => {
                    self.current.store(Arc::new(config));
                    tracing::info!(ca = %self.ca.display(), cert = %self.cert.display(), "TLS configuration reloaded; new connections use it");
                    on_reload(true);
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous CA and server certificate");
                    on_reload(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: rustls::Error) -> std::io::Error {
        // What tokio-rustls returns from `accept`.
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn rustls_errors_map_to_the_gates_outcomes() {
        use Handshake as H;
        let of = handshake_of_io_error;
        let cert = |c| io(rustls::Error::InvalidCertificate(c));
        assert_eq!(of(&io(rustls::Error::NoCertificatesPresented)), H::NoCert);
        assert_eq!(of(&cert(CertificateError::Expired)), H::Expired);
        assert_eq!(of(&cert(CertificateError::NotValidYet)), H::NotYetValid);
        assert_eq!(of(&cert(CertificateError::UnknownIssuer)), H::BadChain);
        assert_eq!(of(&cert(CertificateError::BadSignature)), H::BadChain);
        assert_eq!(of(&cert(CertificateError::Revoked)), H::Revoked);
        assert_eq!(of(&io(rustls::Error::HandshakeNotComplete)), H::Failed);
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(of(&eof), H::Failed);
    }

    #[test]
    fn missing_or_broken_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.crt");
        let e = server_config(&missing, &missing, &missing).unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
        std::fs::write(&missing, "not pem").unwrap();
        let e = server_config(&missing, &missing, &missing).unwrap_err();
        assert!(e.to_string().contains("no `CERTIFICATE`"), "{e}");
    }
}
