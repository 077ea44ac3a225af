//! Generated PKI fixtures, written to a temporary directory.

use std::path::{Path, PathBuf};

use gatehouse_auth::Serial;
use gatehouse_ca::{
    Ca, CaOptions, CrlSpec, IssuedCert, KeyAlgorithm, KeySource, LeafSpec, RevocationReason,
    RevokedEntry, Usage,
};
use time::{Duration, OffsetDateTime};

/// OU of operational certificates with the default config.
pub const OPERATIONAL_OU: &str = "gateway";
/// OU of bootstrap certificates with the default config.
pub const BOOTSTRAP_OU: &str = "bootstrap";
/// Gateway code (= CN) of the good operational client.
pub const GATEWAY_CODE: &str = "GW0001-EEFF";
/// Gateway code of the client that is revoked in the fixture CRL.
pub const REVOKED_GATEWAY_CODE: &str = "GW0666-0666";
/// MAC address the bootstrap client connects as.
pub const BOOTSTRAP_MAC: &str = "aa:bb:cc:dd:ee:ff";

/// One client certificate and its key, on disk.
#[derive(Debug)]
pub struct Client {
    /// What this client is for, e.g. `"operational"`, `"expired"`.
    pub name: &'static str,
    /// The MQTT client id it should connect with.
    pub client_id: String,
    pub cert: IssuedCert,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// A complete fleet PKI for tests.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca: Ca,
    /// A CA the broker does not trust.
    pub other_ca: Ca,
    pub ca_path: PathBuf,
    pub other_ca_path: PathBuf,
    pub server: Client,
    pub operational: Client,
    pub bootstrap: Client,
    /// Operational, valid until yesterday.
    pub expired: Client,
    /// Operational, valid from tomorrow.
    pub not_yet_valid: Client,
    /// Operational-looking, signed by `other_ca`.
    pub wrong_ca: Client,
    /// Signed by the fleet CA with OU `intruder`.
    pub wrong_ou: Client,
    /// Operational, listed in `crl_path`.
    pub revoked: Client,
    /// Current CRL (next update in 7 days) listing `revoked`.
    pub crl_path: PathBuf,
    /// CRL listing `revoked` whose nextUpdate was yesterday.
    pub expired_crl_path: PathBuf,
    /// A CRL with a flipped byte in its signed part.
    pub corrupt_crl_path: PathBuf,
    /// CRL signed by `other_ca`.
    pub foreign_crl_path: PathBuf,
    crl_number: u64,
    revoked_entries: Vec<RevokedEntry>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Pki {
    /// Generates everything (ECDSA P-256) into a fresh temporary directory.
    pub fn generate() -> Pki {
        let ca = Ca::generate(&CaOptions {
            common_name: "Gatehouse Test Fleet CA".into(),
            organization: Some("Gatehouse tests".into()),
            validity_days: 3650,
            key: KeyAlgorithm::EcdsaP256,
        })
        .expect("fleet CA");
        Self::with_fleet_ca(ca)
    }

    /// Like [`Pki::generate`], but signed by an existing fleet CA (the
    /// benchmarks keep one on disk so their gateway certificates can be
    /// cached between runs).
    pub fn with_fleet_ca(ca: Ca) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pki-")
            .tempdir()
            .expect("temp dir");
        let other_ca = Ca::generate(&CaOptions {
            common_name: "Somebody Else's CA".into(),
            organization: None,
            validity_days: 3650,
            key: KeyAlgorithm::EcdsaP256,
        })
        .expect("other CA");
        let ca_path = dir.path().join("ca.crt");
        let other_ca_path = dir.path().join("other-ca.crt");
        write(&ca_path, ca.cert_pem().as_bytes());
        write(&other_ca_path, other_ca.cert_pem().as_bytes());

        let d = dir.path();
        let server_cert = ca
            .issue_server(&["localhost".to_string(), "127.0.0.1".to_string()], 365)
            .expect("server cert");
        let server = save(d, "server", "server", server_cert);

        let op = |cn: &str, ou: &str, from: OffsetDateTime, to: OffsetDateTime| LeafSpec {
            common_name: cn.to_string(),
            organizational_unit: Some(ou.to_string()),
            organization: None,
            sans: Vec::new(),
            usage: Usage::ClientAuth,
            not_before: from,
            not_after: to,
            key: KeySource::Generate(KeyAlgorithm::EcdsaP256),
        };
        let t = now();
        let valid = (t - Duration::hours(1), t + Duration::days(3650));

        let operational = save(
            d,
            "operational",
            GATEWAY_CODE,
            issue(&ca, &op(GATEWAY_CODE, OPERATIONAL_OU, valid.0, valid.1)),
        );
        let bootstrap = save(
            d,
            "bootstrap",
            BOOTSTRAP_MAC,
            ca.issue_bootstrap("factory-batch-1", BOOTSTRAP_OU, 3650)
                .expect("bootstrap cert"),
        );
        let expired = save(
            d,
            "expired",
            "GW0002-0002",
            issue(
                &ca,
                &op(
                    "GW0002-0002",
                    OPERATIONAL_OU,
                    t - Duration::days(30),
                    t - Duration::days(1),
                ),
            ),
        );
        let not_yet_valid = save(
            d,
            "not_yet_valid",
            "GW0003-0003",
            issue(
                &ca,
                &op(
                    "GW0003-0003",
                    OPERATIONAL_OU,
                    t + Duration::days(1),
                    t + Duration::days(30),
                ),
            ),
        );
        let wrong_ca = save(
            d,
            "wrong_ca",
            "GW0004-0004",
            issue(
                &other_ca,
                &op("GW0004-0004", OPERATIONAL_OU, valid.0, valid.1),
            ),
        );
        let wrong_ou = save(
            d,
            "wrong_ou",
            "GW0005-0005",
            issue(&ca, &op("GW0005-0005", "intruder", valid.0, valid.1)),
        );
        let revoked = save(
            d,
            "revoked",
            REVOKED_GATEWAY_CODE,
            issue(
                &ca,
                &op(REVOKED_GATEWAY_CODE, OPERATIONAL_OU, valid.0, valid.1),
            ),
        );

        let revoked_entries = vec![RevokedEntry {
            serial: revoked.cert.serial,
            revoked_at: t - Duration::minutes(5),
            reason: RevocationReason::KeyCompromise,
        }];
        let crl = |ca: &Ca, number: u64, this: OffsetDateTime, next: OffsetDateTime| {
            ca.crl(&CrlSpec {
                number,
                this_update: this,
                next_update: next,
                entries: revoked_entries.clone(),
            })
            .expect("CRL")
        };
        let crl_path = d.join("ca.crl");
        write(
            &crl_path,
            crl(&ca, 1, t - Duration::minutes(1), t + Duration::days(7)).as_bytes(),
        );
        let expired_crl_path = d.join("expired.crl");
        write(
            &expired_crl_path,
            crl(&ca, 1, t - Duration::days(8), t - Duration::days(1)).as_bytes(),
        );
        let foreign_crl_path = d.join("foreign.crl");
        write(
            &foreign_crl_path,
            crl(
                &other_ca,
                1,
                t - Duration::minutes(1),
                t + Duration::days(7),
            )
            .as_bytes(),
        );
        let corrupt_crl_path = d.join("corrupt.crl");
        write(
            &corrupt_crl_path,
            &corrupt_pem(&crl(&ca, 1, t, t + Duration::days(7)), &revoked.cert.serial),
        );

        Pki {
            dir,
            ca,
            other_ca,
            ca_path,
            other_ca_path,
            server,
            operational,
            bootstrap,
            expired,
            not_yet_valid,
            wrong_ca,
            wrong_ou,
            revoked,
            crl_path,
            expired_crl_path,
            corrupt_crl_path,
            foreign_crl_path,
            crl_number: 1,
            revoked_entries,
        }
    }

    /// The directory holding every file of this PKI.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues another good operational client with the given gateway code.
    pub fn issue_operational(&self, gateway_code: &str) -> Client {
        let t = now();
        let spec = LeafSpec {
            common_name: gateway_code.to_string(),
            organizational_unit: Some(OPERATIONAL_OU.to_string()),
            organization: None,
            sans: Vec::new(),
            usage: Usage::ClientAuth,
            not_before: t - Duration::hours(1),
            not_after: t + Duration::days(3650),
            key: KeySource::Generate(KeyAlgorithm::EcdsaP256),
        };
        let file = format!("op-{}", sanitize(gateway_code));
        save_named(
            self.dir.path(),
            "operational",
            &file,
            gateway_code,
            issue(&self.ca, &spec),
        )
    }

    /// Adds `serial` to the CRL at `crl_path` and rewrites it atomically
    /// (write temp + rename, as the provisioning service does).
    pub fn revoke(&mut self, serial: Serial) {
        self.crl_number += 1;
        self.revoked_entries.push(RevokedEntry {
            serial,
            revoked_at: now(),
            reason: RevocationReason::Superseded,
        });
        let pem = self
            .ca
            .crl(&CrlSpec {
                number: self.crl_number,
                this_update: now() - Duration::minutes(1),
                next_update: now() + Duration::days(7),
                entries: self.revoked_entries.clone(),
            })
            .expect("CRL");
        let tmp = self.crl_path.with_extension("crl.tmp");
        write(&tmp, pem.as_bytes());
        std::fs::rename(&tmp, &self.crl_path).expect("rename CRL into place");
    }
}

fn issue(ca: &Ca, spec: &LeafSpec) -> IssuedCert {
    ca.issue(spec)
        .unwrap_or_else(|e| panic!("issuing {}: {e}", spec.common_name))
}

fn save(dir: &Path, name: &'static str, client_id: &str, cert: IssuedCert) -> Client {
    save_named(dir, name, name, client_id, cert)
}

fn save_named(
    dir: &Path,
    name: &'static str,
    file: &str,
    client_id: &str,
    cert: IssuedCert,
) -> Client {
    let cert_path = dir.join(format!("{file}.crt"));
    let key_path = dir.join(format!("{file}.key"));
    write(&cert_path, cert.cert_pem.as_bytes());
    if let Some(key) = &cert.key_pem {
        write(&key_path, key.expose().as_bytes());
    }
    Client {
        name,
        client_id: client_id.to_string(),
        cert,
        cert_path,
        key_path,
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Flips one bit of the revoked serial inside the signed part of a PEM CRL.
/// The result is still well-formed PEM and DER with the right issuer, so only
/// the signature check can catch it.
fn corrupt_pem(pem_text: &str, serial: &Serial) -> Vec<u8> {
    let mut block = pem::parse(pem_text).expect("CRL PEM");
    let needle = serial.as_bytes();
    let mut der = block.contents().to_vec();
    let at = der
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("serial present in CRL DER");
    der[at + needle.len() / 2] ^= 0x01;
    block = pem::Pem::new(block.tag().to_string(), der);
    pem::encode(&block).into_bytes()
}
