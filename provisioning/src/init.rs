//! Setting up a fleet's files (`gatehouse ca init`): the CA, the listeners'
//! server certificate, the admin token and a first CRL. The library does the
//! work and reports what it did; the command line prints it.

use std::path::{Path, PathBuf};

use gatehouse_ca::{Ca, CaOptions};
use gatehouse_config::Config;
use gatehouse_config::secure_fs;

use crate::error::ProvisioningError;
use crate::metrics::Metrics;
use crate::service::Provisioning;

/// What [`init_fleet`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetInit {
    /// `true`: a new CA was written to `ca_cert` / `ca_key`; `false`: the
    /// existing one was kept.
    pub ca_written: bool,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The server certificate and key written, when one was.
    pub server_cert: Option<(PathBuf, PathBuf)>,
    /// The admin token file, when it was created.
    pub admin_token: Option<PathBuf>,
    /// Number of the CRL published.
    pub crl_number: u64,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisioningError + '_ {
    move |source| ProvisioningError::WriteFile {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a fresh random admin token (64 hex characters, mode 0600) to
/// `path` unless the file exists. `true` when it wrote one.
pub fn ensure_admin_token(path: &Path) -> Result<bool, ProvisioningError> {
    if path.exists() {
        return Ok(false);
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| ProvisioningError::Random)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    secure_fs::write(path, format!("{token}\n").as_bytes()).map_err(write_err(path))?;
    Ok(true)
}

/// Creates what `[provisioning]` names: the fleet CA (kept when it exists,
/// unless `force`), a server certificate for `server_names` (when missing,
/// or `force`), the admin token (when missing) and a CRL. Keys and the token
/// are written 0600 in 0700 directories.
pub async fn init_fleet(
    config: &Config,
    common_name: &str,
    server_names: &[String],
    force: bool,
) -> Result<FleetInit, ProvisioningError> {
    let p = &config.provisioning;
    secure_fs::ensure_private_dir(&config.data_dir).map_err(write_err(&config.data_dir))?;
    let ca_written = !p.ca_cert.exists() || force;
    let ca = if ca_written {
        let ca = Ca::generate(CaOptions {
            common_name: common_name.to_owned(),
            ..CaOptions::default()
        })?;
        for f in [&p.ca_cert, &p.ca_key] {
            secure_fs::ensure_parent_dir(f).map_err(write_err(f))?;
        }
        ca.write_files(&p.ca_cert, &p.ca_key)?;
        ca
    } else {
        Ca::from_files(&p.ca_cert, &p.ca_key)?
    };
    let server_cert = if !p.cert.exists() || force {
        let server = ca.issue_server(server_names, 825)?;
        secure_fs::ensure_parent_dir(&p.cert).map_err(write_err(&p.cert))?;
        std::fs::write(&p.cert, &server.cert_pem).map_err(write_err(&p.cert))?;
        let key = server.key_pem.ok_or(ProvisioningError::ServerKeyMissing)?;
        secure_fs::write(&p.key, key.expose().as_bytes()).map_err(write_err(&p.key))?;
        Some((p.cert.clone(), p.key.clone()))
    } else {
        None
    };
    let admin_token = ensure_admin_token(&p.admin_token_file)?.then(|| p.admin_token_file.clone());
    let service = Provisioning::open(config, Metrics::unregistered()).await?;
    let crl = service.publish_crl().await?;
    Ok(FleetInit {
        ca_written,
        ca_cert: p.ca_cert.clone(),
        ca_key: p.ca_key.clone(),
        server_cert,
        admin_token,
        crl_number: crl.number,
    })
}
