//! Provisioning sidecar harness: a private data directory with a fleet CA,
//! server certificate, admin token and store (SQLite file, or a PostgreSQL
//! URL), the sidecar serving both HTTPS APIs on 127.0.0.1:0, real HTTPS
//! clients (optionally presenting a client certificate), and device-side
//! helpers (CSRs with good and bad keys, bundle unzipping).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_config::Config;
use gatehouse_provisioning::metrics::Metrics;
use gatehouse_provisioning::{Provisioning, Sidecar};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Which store the sidecar uses.
#[derive(Debug, Clone)]
pub enum StoreKind {
    Sqlite,
    /// A PostgreSQL URL (an empty database of its own).
    Postgres(String),
}

/// A running sidecar in a private directory.
#[derive(Debug)]
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub config_path: PathBuf,
    pub sidecar: Sidecar,
    pub token: String,
    /// The sidecar's metrics (unregistered).
    pub metrics: Metrics,
    /// A bootstrap certificate and key (PEM) issued on first use by
    /// [`Harness::bootstrap_identity`].
    bootstrap: tokio::sync::OnceCell<(String, String)>,
}

impl Harness {
    /// Creates `data_dir` with `gatehouse ca init`, then starts the sidecar.
    /// `extra` is appended inside `[provisioning]`.
    pub async fn start(store: StoreKind, extra: &str) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-prov-")
            .tempdir()
            .expect("temp dir");
        let db = match &store {
            StoreKind::Sqlite => "sqlite://data/provisioning.db".to_owned(),
            StoreKind::Postgres(url) => url.clone(),
        };
        let text = format!(
            "data_dir = \"data\"\n\n[tls]\ncrl = \"data/ca.crl\"\n\n[provisioning]\n\
             listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             database_url = \"{db}\"\n{extra}\n"
        );
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, text).expect("write config");
        let config = Config::load(&config_path).expect("valid test config");
        gatehouse_provisioning::init_fleet(
            &config,
            "Gatehouse Test Fleet CA",
            &["localhost".into(), "127.0.0.1".into()],
            false,
        )
        .await
        .expect("gatehouse ca init");
        let metrics = Metrics::unregistered();
        let service = Arc::new(
            Provisioning::open(&config, metrics.clone())
                .await
                .expect("open provisioning"),
        );
        let sidecar = Sidecar::start(&config, service)
            .await
            .expect("start sidecar");
        let token = std::fs::read_to_string(&config.provisioning.admin_token_file)
            .expect("token file")
            .trim()
            .to_owned();
        Harness {
            dir,
            config,
            config_path,
            sidecar,
            token,
            metrics,
            bootstrap: tokio::sync::OnceCell::new(),
        }
    }

    /// A bootstrap certificate of this fleet and its key (PEM), issued and
    /// downloaded through the service the first time it is asked for.
    pub async fn bootstrap_identity(&self) -> &(String, String) {
        self.bootstrap
            .get_or_init(|| async {
                let svc = &self.sidecar.service;
                let boot = svc
                    .issue_bootstrap("harness batch", "harness")
                    .await
                    .expect("issue bootstrap");
                let zip = svc
                    .download_bootstrap(boot.id, "harness")
                    .await
                    .expect("download bootstrap");
                let files = unzip(&zip);
                (
                    files["bootstrap.crt"].clone(),
                    files["bootstrap.key"].clone(),
                )
            })
            .await
    }

    /// An HTTPS client presenting this fleet's bootstrap certificate, as a
    /// factory-fresh device does on the device API.
    pub async fn device_client(&self) -> reqwest::Client {
        let (cert, key) = self.bootstrap_identity().await;
        self.client(Some((cert, key)))
    }

    /// The fleet CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.config.provisioning.ca_cert).expect("CA cert")
    }

    /// `https://127.0.0.1:PORT{path}` on the device listener.
    pub fn device_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.sidecar.device_addr)
    }

    /// `https://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.sidecar.admin_addr)
    }

    /// An HTTPS client trusting the fleet CA, optionally presenting a client
    /// certificate (PEM cert, PEM key).
    pub fn client(&self, identity: Option<(&str, &str)>) -> reqwest::Client {
        https_client(&self.ca_pem(), identity)
    }

    /// Stops the sidecar.
    pub async fn stop(self) {
        self.sidecar.stop().await;
    }
}

/// An HTTPS client trusting `ca_pem`, optionally presenting a client
/// certificate (PEM cert, PEM key).
pub fn https_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    https_client_from(ca_pem, identity, None)
}

/// [`https_client`] whose connections leave from `local` (e.g. a second
/// loopback address such as 127.0.0.2, to be another source IP).
pub fn https_client_from(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    local: Option<std::net::IpAddr>,
) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_client_config(ca_pem, identity))
        .local_address(local)
        .build()
        .expect("reqwest client")
}

/// A rustls client configuration trusting `ca_pem`, optionally presenting a
/// client certificate (PEM cert, PEM key), offering HTTP/1.1.
pub fn tls_client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
    }
}

/// A raw TLS connection (no HTTP client) to `addr`, for tests that speak
/// HTTP/1.1 byte by byte. `None` when the server closed it during the
/// handshake.
pub async fn raw_tls(
    ca_pem: &str,
    addr: std::net::SocketAddr,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(ca_pem, None)));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await.ok()
}

/// A device key and its CSR (PEM).
#[derive(Debug)]
pub struct DeviceKey {
    pub key_pem: String,
    pub csr_pem: String,
    /// SubjectPublicKeyInfo DER, to compare with the issued certificate.
    pub spki_der: Vec<u8>,
}

fn csr_for(key: &impl rcgen::SigningKey, key_pem: String) -> DeviceKey {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "aa:bb:cc:dd:ee:ff");
    params.distinguished_name = dn;
    let csr = params.serialize_request(key).expect("CSR");
    DeviceKey {
        key_pem,
        csr_pem: csr.pem().expect("CSR PEM"),
        spki_der: key.subject_public_key_info(),
    }
}

/// ECDSA P-256 key + CSR, as updated firmware makes them.
pub fn csr_p256() -> DeviceKey {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let pem = key.serialize_pem();
    csr_for(&key, pem)
}

/// RSA 2048 key + CSR.
pub fn csr_rsa2048() -> DeviceKey {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut RingRng::default(), 2048).expect("RSA key");
    let pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .expect("PKCS#8")
        .to_string();
    let kp = KeyPair::from_pem(&pem).expect("ring RSA key");
    csr_for(&kp, pem)
}

/// A CSR with an RSA 1024 key (too weak: must be refused).
pub fn csr_rsa1024() -> String {
    let signer = WeakRsa::generate(1024);
    csr_for(&signer, String::new()).csr_pem
}

/// A P-256 CSR whose signature does not verify (one bit flipped in it).
pub fn csr_bad_signature() -> String {
    let good = csr_p256().csr_pem;
    let block = pem::parse(&good).expect("PEM");
    let mut der = block.contents().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

/// RSA signer accepting key sizes ring refuses.
struct WeakRsa {
    key: rsa::RsaPrivateKey,
    public_der: Vec<u8>,
}

impl WeakRsa {
    fn generate(bits: usize) -> WeakRsa {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let key = rsa::RsaPrivateKey::new(&mut RingRng::default(), bits).expect("RSA key");
        let public_der = key
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1")
            .as_bytes()
            .to_vec();
        WeakRsa { key, public_der }
    }
}

impl rcgen::PublicKeyData for WeakRsa {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for WeakRsa {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        const PREFIX: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        let digest = ring::digest::digest(&ring::digest::SHA256, msg);
        let scheme = rsa::Pkcs1v15Sign {
            hash_len: Some(32),
            prefix: PREFIX.to_vec().into_boxed_slice(),
        };
        self.key
            .sign(scheme, digest.as_ref())
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// The files of a ZIP bundle, by name.
pub fn unzip(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a ZIP file");
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).expect("ZIP entry");
        let mut text = String::new();
        f.read_to_string(&mut text).expect("UTF-8 entry");
        out.insert(f.name().to_owned(), text);
    }
    out
}

/// `rand_core` RNG over ring's system RNG, for the `rsa` crate.
struct RingRng(ring::rand::SystemRandom);

impl Default for RingRng {
    fn default() -> Self {
        RingRng(ring::rand::SystemRandom::new())
    }
}

impl rsa::rand_core::RngCore for RingRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        ring::rand::SecureRandom::fill(&self.0, dest).expect("system RNG");
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for RingRng {}
