//! Typed, validated settings. Everything here has already been checked:
//! consumers never re-validate and never see raw strings where a type fits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole validated configuration, shared by the embedded broker and the
/// Mosquitto plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this was read from; `None` when running on built-in defaults.
    pub source: Option<PathBuf>,
    /// Directory for generated and runtime state (dev CA, stores, spool).
    pub data_dir: PathBuf,
    pub tls: TlsSettings,
    pub identity: IdentitySettings,
    pub acl: AclSettings,
    pub listeners: crate::ListenerSettings,
    pub mqtt: crate::MqttSettings,
    pub ingest: crate::ingest::IngestSettings,
    /// `[plugin]`: read only by the Mosquitto plugin.
    pub plugin: crate::PluginSettings,
    pub provisioning: crate::provisioning::ProvisioningSettings,
}

/// `[tls]`: what the MQTT front door presents and verifies against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM bundle of the CA(s) client certificates must chain to.
    pub ca: PathBuf,
    /// PEM server certificate chain presented to clients.
    pub cert: PathBuf,
    /// PEM private key for `cert`.
    pub key: PathBuf,
    /// CRL file (PEM or DER, one or more CRLs) watched for live revocation.
    /// `None` disables revocation checks (logged loudly at start-up).
    pub crl: Option<PathBuf>,
    /// How often the CRL file is checked for changes.
    pub crl_poll_interval: Duration,
    /// Refuse every client while the CRL is past its nextUpdate (default: keep
    /// serving with the last good set and warn).
    pub crl_fail_closed: bool,
    /// Deadline for a TLS handshake plus the MQTT CONNECT packet.
    pub handshake_timeout: Duration,
}

/// `[identity]`: how a client certificate becomes a bootstrap or operational identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    pub classify: Classification,
    pub operational_client_id: OperationalClientId,
    pub bootstrap_client_id: BootstrapClientId,
}

/// How to tell a bootstrap certificate from an operational one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// By the subject's organisational unit (OU). Any other OU is rejected.
    SubjectOu {
        bootstrap_ou: String,
        operational_ou: String,
    },
    /// By the issuing CA: separate bootstrap and device CAs (PEM files).
    Issuer {
        bootstrap_ca: PathBuf,
        operational_ca: PathBuf,
    },
    /// Certificates whose SHA-256 fingerprint is listed are bootstrap; every
    /// other certificate of the fleet CA is operational.
    Fingerprint {
        bootstrap_fingerprints: Vec<[u8; 32]>,
    },
}

impl Classification {
    /// The OUs to write into issued certificates, (bootstrap, operational):
    /// those `subject_ou` classification checks, else the defaults
    /// `bootstrap` / `gateway` (the other modes do not read the OU).
    pub fn issued_ous(&self) -> (String, String) {
        match self {
            Classification::SubjectOu {
                bootstrap_ou,
                operational_ou,
            } => (bootstrap_ou.clone(), operational_ou.clone()),
            _ => ("bootstrap".to_owned(), "gateway".to_owned()),
        }
    }
}

/// Client-id rule for operational certificates (`identity.operational_client_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OperationalClientId {
    /// `"cn"`: the MQTT client id must equal the certificate's subject CN (default).
    #[serde(rename = "cn")]
    MustEqualCn,
    /// `"any"`: any client id (ACLs still use the CN).
    #[serde(rename = "any")]
    Any,
}

/// Client-id rule for bootstrap certificates (`identity.bootstrap_client_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BootstrapClientId {
    /// `"mac"`: the client id must be a MAC address `aa:bb:cc:dd:ee:ff` (default).
    #[serde(rename = "mac")]
    MustBeMac,
    /// `"any"`: any client id.
    #[serde(rename = "any")]
    Any,
}

/// `[acl]`: default-deny topic rules per certificate kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSettings {
    /// Longest topic or filter accepted, in bytes (MQTT's own limit is 65535).
    pub max_topic_length: usize,
    /// Most levels a topic or filter may have.
    pub max_topic_levels: usize,
    pub operational: KindRules,
    pub bootstrap: KindRules,
}

/// Allow-rules for one certificate kind. Each entry is an MQTT topic filter
/// that may contain the placeholders `{cn}`, `{client_id}`, `{gateway_code}`.
/// Entries were checked to be valid filters with known placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindRules {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub receive: Vec<String>,
    /// Embedded broker: whether clients of this kind may use MQTT 5 shared
    /// subscriptions (`$share/{group}/{filter}`; the ACL checks the inner
    /// filter). Off by default.
    pub shared_subscriptions: bool,
}

impl AclSettings {
    /// Rules that grant the whole topic tree (`#`): `(key, rule)` pairs such
    /// as `("acl.operational.subscribe", "#")`. Legal, but it lets every
    /// client of that kind reach every other client's topics, so both shapes
    /// warn about them at start.
    pub fn whole_tree_grants(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for (kind, rules) in [
            ("operational", &self.operational),
            ("bootstrap", &self.bootstrap),
        ] {
            for (action, list) in [
                ("publish", &rules.publish),
                ("subscribe", &rules.subscribe),
                ("receive", &rules.receive),
            ] {
                for rule in list.iter().filter(|r| r.as_str() == "#") {
                    out.push((format!("acl.{kind}.{action}"), rule.as_str()));
                }
            }
        }
        out
    }
}
