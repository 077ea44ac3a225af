//! The file as written: every field optional, unknown keys refused.
//! Enumerated settings are read straight into their enums with [`choice`].

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, value::StrDeserializer};

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
    #[serde(default, deserialize_with = "choice")]
    pub classify: Option<ClassifyMode>,
    pub bootstrap_ou: Option<String>,
    pub operational_ou: Option<String>,
    pub bootstrap_ca: Option<String>,
    pub operational_ca: Option<String>,
    pub bootstrap_fingerprints: Option<Vec<String>>,
    #[serde(default, deserialize_with = "choice")]
    pub operational_client_id: Option<crate::OperationalClientId>,
    #[serde(default, deserialize_with = "choice")]
    pub bootstrap_client_id: Option<crate::BootstrapClientId>,
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
    pub shared_subscriptions: Option<bool>,
}

/// `identity.classify` as written; the keys that go with it make it a
/// [`crate::Classification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClassifyMode {
    SubjectOu,
    Issuer,
    Fingerprint,
}

impl ClassifyMode {
    /// The value as written in the file, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClassifyMode::SubjectOu => "subject_ou",
            ClassifyMode::Issuer => "issuer",
            ClassifyMode::Fingerprint => "fingerprint",
        }
    }
}

/// Reads an enumerated setting (`#[serde(default, deserialize_with = "choice")]`):
/// a string naming one variant of `T`, as its derived `Deserialize` spells
/// them. Any other string is refused with `expected "a", "b" or "c", got "x"`
/// (names written as in TOML); a value that is not a string gets serde's
/// usual "invalid type: …, expected a string", so TOML's enum-as-table form
/// (`key = { a = {} }`) is not a second spelling.
pub(crate) fn choice<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    T::deserialize(StrDeserializer::<BadChoice>::new(&text))
        .map(Some)
        .map_err(|BadChoice(message)| de::Error::custom(message))
}

/// Why a string named none of an enum's variants.
#[derive(Debug)]
struct BadChoice(String);

impl de::Error for BadChoice {
    fn custom<M: fmt::Display>(message: M) -> Self {
        BadChoice(message.to_string())
    }

    fn unknown_variant(got: &str, expected: &'static [&'static str]) -> Self {
        let quoted: Vec<String> = expected.iter().map(|name| format!("{name:?}")).collect();
        let list = match quoted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => quoted.concat(),
        };
        BadChoice(format!("expected {list}, got {got:?}"))
    }
}

impl fmt::Display for BadChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadChoice {}
