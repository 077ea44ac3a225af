//! `gatehouse-bench bare-server`: the floor for `connect` — a bare rustls
//! server (same provider, same certificates, client certificate required
//! and verified against the fleet CA) that reads one CONNECT and answers
//! CONNACK, nothing else: no identity, CRL, ACL, router or session. Run as
//! its own process so it can be pinned and measured like a broker.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) fn serve(port: u16, ca: &Path, cert: &Path, key: &Path) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = crate::fleet::roots(ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // CONNECT: fixed header, remaining length, body.
                let mut header = [0u8; 1];
                if tls.read_exact(&mut header).await.is_err() || header[0] != 0x10 {
                    return;
                }
                let mut len = 0usize;
                for shift in [0, 7, 14, 21] {
                    let Ok(b) = tls.read_u8().await else { return };
                    len |= usize::from(b & 0x7f) << shift;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                let mut body = vec![0u8; len.min(65_536)];
                if tls.read_exact(&mut body).await.is_err() {
                    return;
                }
                if tls.write_all(&[0x20, 0x02, 0x00, 0x00]).await.is_err() {
                    return;
                }
                let mut sink = [0u8; 256];
                while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    })
}
