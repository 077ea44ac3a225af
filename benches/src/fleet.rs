//! The benchmark fleet: a fleet CA and thousands of distinct operational
//! gateway certificates, kept on disk between runs (`--pki-dir`, default
//! `target/gatehouse-bench-pki`): generated once, reused afterwards, grown
//! when a run needs more. The same layout (`{cn}.crt` + `{cn}.key` per
//! gateway) is what `--cert-dir` reads for a broker that is not ours.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatehouse_ca::{Ca, CaOptions, KeyAlgorithm, KeySource, LeafSpec, Usage};
use gatehouse_tests::pki::OPERATIONAL_OU;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// One gateway: its gateway code (= CN = client id) and TLS client config.
pub(crate) struct Gateway {
    pub code: String,
    pub tls: Arc<rustls::ClientConfig>,
}

/// The gateway code of fleet member `i`, e.g. `GW00042-002A`.
pub(crate) fn gateway_code(i: usize) -> String {
    format!("GW{i:05}-{:04X}", i & 0xffff)
}

/// Loads the cached fleet CA from `dir` (creating it on first use).
pub(crate) fn fleet_ca(dir: &Path) -> Result<Ca, String> {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if crt.is_file() && key.is_file() {
        return Ca::from_files(&crt, &key).map_err(|e| format!("{}: {e}", dir.display()));
    }
    std::fs::create_dir_all(dir.join("gateways"))
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let ca = Ca::generate(&CaOptions {
        common_name: "Gatehouse Bench Fleet CA".into(),
        organization: Some("gatehouse-bench".into()),
        validity_days: 3650,
        key: KeyAlgorithm::EcdsaP256,
    })
    .map_err(|e| e.to_string())?;
    ca.write_files(&crt, &key).map_err(|e| e.to_string())?;
    Ok(ca)
}

/// Makes sure `dir/gateways` holds certificates for gateways `0..n`
/// signed by `ca`; returns how many it had to issue.
pub(crate) fn ensure_gateways(ca: &Ca, dir: &Path, n: usize) -> Result<usize, String> {
    let gw = dir.join("gateways");
    std::fs::create_dir_all(&gw).map_err(|e| format!("creating {}: {e}", gw.display()))?;
    let now = OffsetDateTime::now_utc();
    let mut issued = 0;
    for i in 0..n {
        let code = gateway_code(i);
        let (crt, key) = (
            gw.join(format!("{code}.crt")),
            gw.join(format!("{code}.key")),
        );
        if crt.is_file() && key.is_file() {
            continue;
        }
        let cert = ca
            .issue(&LeafSpec {
                common_name: code.clone(),
                organizational_unit: Some(OPERATIONAL_OU.into()),
                organization: None,
                sans: Vec::new(),
                usage: Usage::ClientAuth,
                not_before: now - Duration::hours(1),
                not_after: now + Duration::days(3650),
                key: KeySource::Generate(KeyAlgorithm::EcdsaP256),
            })
            .map_err(|e| format!("issuing {code}: {e}"))?;
        let pem = cert.key_pem.as_ref().ok_or("issued without a key")?;
        std::fs::write(&key, pem.expose().as_bytes()).map_err(|e| e.to_string())?;
        std::fs::write(&crt, cert.cert_pem.as_bytes()).map_err(|e| e.to_string())?;
        issued += 1;
    }
    Ok(issued)
}

/// The first `n` gateways of a certificate directory (`{cn}.crt` +
/// `{cn}.key`, sorted by name), each with a client config trusting `ca`.
pub(crate) fn load(cert_dir: &Path, ca: &Path, n: usize) -> Result<Vec<Gateway>, String> {
    let mut names: Vec<String> = std::fs::read_dir(cert_dir)
        .map_err(|e| format!("{}: {e}", cert_dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let code = name.strip_suffix(".crt")?.to_string();
            cert_dir
                .join(format!("{code}.key"))
                .is_file()
                .then_some(code)
        })
        .collect();
    names.sort();
    if names.len() < n {
        return Err(format!(
            "{} holds {} gateway certificates ({{cn}}.crt + {{cn}}.key), the run needs {n}",
            cert_dir.display(),
            names.len()
        ));
    }
    let roots = roots(ca)?;
    names
        .into_iter()
        .take(n)
        .map(|code| {
            let tls = client_config(
                &roots,
                &cert_dir.join(format!("{code}.crt")),
                &cert_dir.join(format!("{code}.key")),
            )?;
            Ok(Gateway { code, tls })
        })
        .collect()
}

/// The gateway directory of a cache dir.
pub(crate) fn gateway_dir(dir: &Path) -> PathBuf {
    dir.join("gateways")
}

pub(crate) fn roots(ca: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

/// Client config with `cert`/`key`, no session resumption (every connect
/// is a full handshake, as for a gateway that just booted).
pub(crate) fn client_config(
    roots: &Arc<rustls::RootCertStore>,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots.clone())
    .with_client_auth_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}
