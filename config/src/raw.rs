//! The file as written: every field optional, unknown keys refused.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub data_dir: Option<String>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub acl: RawAcl,
    #[serde(default)]
    pub listeners: crate::listeners::RawListeners,
    #[serde(default)]
    pub mqtt: crate::mqtt::RawMqtt,
    #[serde(default)]
    pub ingest: crate::ingest::RawIngest,
    #[serde(default)]
    pub plugin: crate::plugin::RawPlugin,
    #[serde(default)]
    pub provisioning: crate::provisioning::RawProvisioning,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `""` disables revocation checking.
    pub crl: Option<String>,
    pub crl_poll_interval: Option<String>,
    pub crl_fail_closed: Option<bool>,
    pub handshake_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    pub classify: Option<String>,
    pub bootstrap_ou: Option<String>,
    pub operational_ou: Option<String>,
    pub bootstrap_ca: Option<String>,
    pub operational_ca: Option<String>,
    pub bootstrap_fingerprints: Option<Vec<String>>,
    pub operational_client_id: Option<String>,
    pub bootstrap_client_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcl {
    pub max_topic_length: Option<i64>,
    pub max_topic_levels: Option<i64>,
    #[serde(default)]
    pub operational: RawKindRules,
    #[serde(default)]
    pub bootstrap: RawKindRules,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKindRules {
    pub publish: Option<Vec<String>>,
    pub subscribe: Option<Vec<String>>,
    pub receive: Option<Vec<String>>,
}
