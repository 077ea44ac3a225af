//! First-run developer PKI: with no config file and no CA yet, `gatehouse
//! serve` creates a dev CA, a broker certificate for localhost/127.0.0.1,
//! one sample operational and one sample bootstrap client and an empty CRL
//! in the data directory, then prints where they are and commands to try.
//! Private keys are written with mode 0600 and never printed.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gatehouse_ca::{Ca, CaOptions, CrlSpec, IssuedCert, LeafSpec};
use gatehouse_config::Config;
use time::{Duration, OffsetDateTime};

use crate::error::BrokerError;

/// Gateway code (CN and client id) of the sample operational client.
pub const SAMPLE_GATEWAY: &str = "GW0001-EEFF";
/// MAC the sample bootstrap client connects as.
pub const SAMPLE_MAC: &str = "aa:bb:cc:dd:ee:ff";

/// Where the dev PKI lives.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub data_dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub crl: PathBuf,
    pub operational_cert: PathBuf,
    pub operational_key: PathBuf,
    pub bootstrap_cert: PathBuf,
    pub bootstrap_key: PathBuf,
}

impl DevPki {
    fn paths(config: &Config) -> DevPki {
        let d = &config.data_dir;
        DevPki {
            data_dir: d.clone(),
            ca_cert: config.tls.ca.clone(),
            ca_key: d.join("ca.key"),
            server_cert: config.tls.cert.clone(),
            server_key: config.tls.key.clone(),
            crl: config.tls.crl.clone().unwrap_or_else(|| d.join("ca.crl")),
            operational_cert: d.join("clients").join(format!("{SAMPLE_GATEWAY}.crt")),
            operational_key: d.join("clients").join(format!("{SAMPLE_GATEWAY}.key")),
            bootstrap_cert: d.join("clients").join("bootstrap.crt"),
            bootstrap_key: d.join("clients").join("bootstrap.key"),
        }
    }

    /// With built-in defaults (no config file): the dev PKI, created on the
    /// first run (`created` = true). With a config file: `None`, nothing is
    /// generated (the files it names must exist).
    pub fn ensure(config: &Config) -> Result<Option<(DevPki, bool)>, BrokerError> {
        if config.source.is_some() {
            return Ok(None);
        }
        let pki = DevPki::paths(config);
        if pki.ca_cert.exists() {
            return Ok(Some((pki, false)));
        }
        let (bootstrap_ou, operational_ou) = config.identity.classify.issued_ous();
        gatehouse_config::secure_fs::ensure_private_dir(&pki.data_dir.join("clients")).map_err(
            |source| BrokerError::Write {
                path: pki.data_dir.clone(),
                source,
            },
        )?;
        let ca = Ca::generate(CaOptions {
            common_name: "Gatehouse Dev CA".into(),
            organization: Some("Gatehouse (development only)".into()),
            ..CaOptions::default()
        })?;
        ca.write_files(&pki.ca_cert, &pki.ca_key)?;
        let server = ca.issue_server(&["localhost".to_owned(), "127.0.0.1".to_owned()], 825)?;
        save(&server, &pki.server_cert, &pki.server_key)?;
        let mut spec = LeafSpec::client(SAMPLE_GATEWAY, 3650);
        spec.organizational_unit = Some(operational_ou);
        save(
            &ca.issue(&spec)?,
            &pki.operational_cert,
            &pki.operational_key,
        )?;
        let boot = ca.issue_bootstrap("dev-factory-batch", &bootstrap_ou, 3650)?;
        save(&boot, &pki.bootstrap_cert, &pki.bootstrap_key)?;
        let now = OffsetDateTime::now_utc();
        let crl = ca.crl(&CrlSpec {
            number: 1,
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(365),
            entries: Vec::new(),
        })?;
        write(&pki.crl, crl.as_bytes(), 0o644)?;
        Ok(Some((pki, true)))
    }

    /// What to tell a developer: where things are and commands that work.
    pub fn instructions(
        &self,
        mqtt: std::net::SocketAddr,
        metrics: Option<std::net::SocketAddr>,
        created: bool,
    ) -> String {
        let p = |path: &Path| path.display().to_string();
        let port = mqtt.port();
        let tls = format!("-h localhost -p {port} --cafile {}", p(&self.ca_cert));
        let op = format!(
            "--cert {} --key {}",
            p(&self.operational_cert),
            p(&self.operational_key)
        );
        let boot = format!(
            "--cert {} --key {}",
            p(&self.bootstrap_cert),
            p(&self.bootstrap_key)
        );
        let mut s = String::new();
        s.push_str(if created {
            "Gatehouse dev PKI created (development only; keys are mode 0600):\n"
        } else {
            "Gatehouse dev PKI (development only):\n"
        });
        s.push_str(&format!(
            "  CA certificate       {}\n  CA key               {}\n",
            p(&self.ca_cert),
            p(&self.ca_key)
        ));
        s.push_str(&format!(
            "  broker cert / key    {} / {}\n",
            p(&self.server_cert),
            p(&self.server_key)
        ));
        s.push_str(&format!("  CRL (watched live)   {}\n", p(&self.crl)));
        s.push_str(&format!(
            "  operational client   {} / {}  (CN {SAMPLE_GATEWAY}, OU gateway)\n",
            p(&self.operational_cert),
            p(&self.operational_key)
        ));
        s.push_str(&format!(
            "  bootstrap client     {} / {}  (OU bootstrap, connects as a MAC)\n",
            p(&self.bootstrap_cert),
            p(&self.bootstrap_key)
        ));
        s.push_str(&format!("\nMQTT over mTLS on {mqtt}"));
        if let Some(m) = metrics {
            s.push_str(&format!("; metrics on http://{m}/metrics"));
        }
        s.push_str("\n\nTry it (mosquitto-clients). The gateway publishes a retained status, then reads its own topics back:\n");
        s.push_str(&format!("  mosquitto_pub {tls} {op} -i {SAMPLE_GATEWAY} -q 1 -r -t telemetry/{SAMPLE_GATEWAY}/status -m online\n"));
        s.push_str(&format!("  mosquitto_sub {tls} {op} -i {SAMPLE_GATEWAY} -t 'telemetry/{SAMPLE_GATEWAY}/#' -v -C 1\n"));
        s.push_str("A bootstrap device may only use its provisioning sub-tree:\n");
        s.push_str(&format!("  mosquitto_pub {tls} {boot} -i {SAMPLE_MAC} -q 1 -t tds/provision/{SAMPLE_MAC}/hello -m hi\n"));
        s.push_str("Anything else is refused (e.g. -t '#' or another gateway's topic).\n");
        s
    }

    /// The provisioning part of the first-run output: where the sidecar
    /// listens and where the admin token is (never the token itself).
    pub fn provisioning_instructions(
        &self,
        device: std::net::SocketAddr,
        admin: std::net::SocketAddr,
        admin_token_file: &Path,
    ) -> String {
        let ca = self.ca_cert.display();
        let token = admin_token_file.display();
        let mut s = String::new();
        s.push_str(
            "Provisioning sidecar (same fleet CA; revocations land in the CRL above):
",
        );
        s.push_str(&format!(
            "  device API           https://{device}/api/provision/register/  (GET /crl.pem)
"
        ));
        s.push_str(&format!(
            "  admin API            https://{admin}/api/...  (Authorization: Bearer <token>)
"
        ));
        s.push_str(&format!(
            "  admin token file     {token}  (mode 0600)
"
        ));
        s.push_str(
            "List pending self-registrations (or: gatehouse registrations list):
",
        );
        s.push_str(&format!(
            "  curl -sS --cacert {ca} -H \"Authorization: Bearer $(cat {token})\" https://localhost:{}/api/registrations?status=PENDENTE\n",
            admin.port()
        ));
        s
    }
}

fn save(cert: &IssuedCert, cert_path: &Path, key_path: &Path) -> Result<(), BrokerError> {
    write(cert_path, cert.cert_pem.as_bytes(), 0o644)?;
    if let Some(key) = &cert.key_pem {
        gatehouse_config::secure_fs::write(key_path, key.expose().as_bytes()).map_err(
            |source| BrokerError::Write {
                path: key_path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BrokerError> {
    let io = |source| BrokerError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)
}
