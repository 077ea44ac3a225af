//! Reading a file, parsing it into [`RawConfig`], and validating that into
//! [`Config`], with every error pointing at file, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::defaults as d;
use crate::error::{ConfigError, Location};
use crate::raw::{ClassifyMode, RawConfig, RawKindRules};
use crate::rule::{parse_rule, significant_levels};
use crate::settings::*;

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "GATEHOUSE_CONFIG";

/// The config file to use: `--config` first, then `GATEHOUSE_CONFIG`
/// (ignored when empty), else none (built-in defaults).
pub fn resolve_path(cli: Option<&Path>) -> Option<PathBuf> {
    choose_path(cli, std::env::var_os(CONFIG_ENV))
}

fn choose_path(cli: Option<&Path>, env: Option<std::ffi::OsString>) -> Option<PathBuf> {
    match cli {
        Some(p) => Some(p.to_path_buf()),
        None => env.filter(|v| !v.is_empty()).map(PathBuf::from),
    }
}

impl Config {
    /// Reads and validates the file at `path`. Relative paths inside it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut cfg = Self::parse(&text, &path.display().to_string(), base)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// `--config` / `GATEHOUSE_CONFIG` if given, else built-in defaults.
    pub fn load_or_default(cli: Option<&Path>) -> Result<Config, ConfigError> {
        match resolve_path(cli) {
            Some(path) => Self::load(&path),
            None => Ok(Self::defaults()),
        }
    }

    /// Built-in defaults, paths relative to the current directory.
    pub fn defaults() -> Config {
        Self::parse("", "<defaults>", Path::new(".")).expect("built-in defaults are valid")
    }

    /// Parses TOML text. `origin` names it in errors; `base` resolves relative paths.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(text, origin, &e))?;
        Validator { text, origin, base }.config(raw)
    }
}

fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let (line, key) = match e.span() {
        Some(span) => (Some(line_of(text, span.start)), key_at(text, span.start)),
        None => (None, None),
    };
    let message = e.message().trim().to_string();
    let message = if message.starts_with("unknown field") {
        format!("{message} (remove or rename it; config/gatehouse.example.toml lists every key)")
    } else if let Some(meaning) = key.as_deref().and_then(choices_meaning) {
        format!("{message} ({meaning})")
    } else {
        message
    };
    ConfigError::Syntax {
        at: Location {
            file: origin.to_string(),
            line,
            key,
        },
        message,
    }
}

/// What the values of an enumerated key mean, where their names alone do not
/// say; added to any error about that key (e.g. an unknown value).
fn choices_meaning(key: &str) -> Option<&'static str> {
    match key {
        "identity.operational_client_id" => {
            Some("\"cn\": the client id must equal the certificate CN")
        }
        "identity.bootstrap_client_id" => Some("\"mac\": the client id must be aa:bb:cc:dd:ee:ff"),
        _ => None,
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The dotted key path of the deepest key or value containing `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    walk_to(doc.get_ref(), offset, &mut path);
    (!path.is_empty()).then(|| path.join("."))
}

fn walk_to(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) {
    for (k, v) in table {
        if k.span().contains(&offset) {
            path.push(k.get_ref().to_string());
            return;
        }
        if v.span().contains(&offset) || table_contains(v.get_ref(), offset) {
            path.push(k.get_ref().to_string());
            if let DeValue::Table(t) = v.get_ref() {
                walk_to(t, offset, path);
            }
            return;
        }
    }
}

/// Tables declared with `[header]` have spans only on their children.
fn table_contains(v: &DeValue<'_>, offset: usize) -> bool {
    match v {
        DeValue::Table(t) => t.iter().any(|(k, v)| {
            k.span().contains(&offset)
                || v.span().contains(&offset)
                || table_contains(v.get_ref(), offset)
        }),
        _ => false,
    }
}

/// Span of the key at a dotted path (array elements by index: the element),
/// or of the nearest existing ancestor key.
fn span_of(text: &str, path: &[&str]) -> Option<std::ops::Range<usize>> {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut table: &DeTable<'_> = doc.get_ref();
    let mut found = None;
    let mut segs = path.iter();
    while let Some(seg) = segs.next() {
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == seg) else {
            return found;
        };
        found = Some(k.span());
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            DeValue::Array(items) => {
                let item = segs
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| items.get(i));
                return item.map(|it| it.span()).or(found);
            }
            _ => return found,
        }
    }
    found
}

/// Turns raw sections into typed settings. Sections added later live in
/// their own module (`config/src/<section>.rs`: raw struct, typed settings and
/// an `impl Validator` method) and use these helpers, so every error names
/// file, line and key the same way.
pub(crate) struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
    base: &'a Path,
}

impl Validator<'_> {
    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let path: Vec<&str> = key.split('.').collect();
        let line = span_of(self.text, &path).map(|s| line_of(self.text, s.start));
        // Array elements are addressed `acl.operational.publish.1` internally;
        // show them as `acl.operational.publish[1]`.
        let shown = match path.split_last() {
            Some((last, rest)) if last.parse::<usize>().is_ok() => {
                format!("{}[{last}]", rest.join("."))
            }
            _ => key.to_string(),
        };
        ConfigError::Invalid {
            at: Location {
                file: self.origin.to_string(),
                line,
                key: Some(shown),
            },
            message: message.into(),
        }
    }

    pub(crate) fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(crate) fn non_empty_path(
        &self,
        key: &str,
        value: Option<String>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        match value {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => {
                Err(self.invalid(key, "expected a file path, got an empty string"))
            }
            Some(v) => Ok(Some(self.path(&v))),
        }
    }

    pub(crate) fn duration(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let text = value.as_deref().unwrap_or(default);
        let parsed = humantime::parse_duration(text).map_err(|e| {
            self.invalid(
                key,
                format!("expected a duration such as \"10s\" or \"250ms\", got {text:?} ({e})"),
            )
        })?;
        if parsed.is_zero() {
            return Err(self.invalid(key, "expected a duration greater than zero"));
        }
        Ok(parsed)
    }

    pub(crate) fn positive(
        &self,
        key: &str,
        value: Option<i64>,
        default: usize,
        max: usize,
    ) -> Result<usize, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if v >= 1 && (v as u64) <= max as u64 => Ok(v as usize),
            Some(v) => Err(self.invalid(
                key,
                format!("expected a whole number from 1 to {max}, got {v}"),
            )),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let data_dir = match self.non_empty_path("data_dir", raw.data_dir)? {
            Some(p) => p,
            None => self.path(d::DATA_DIR),
        };
        let tls = self.tls(raw.tls, &data_dir)?;
        Ok(Config {
            source: None,
            provisioning: self.provisioning(raw.provisioning, &data_dir, &tls)?,
            tls,
            identity: self.identity(raw.identity)?,
            acl: self.acl(raw.acl)?,
            listeners: self.listeners(raw.listeners)?,
            mqtt: self.mqtt(raw.mqtt)?,
            ingest: self.ingest(raw.ingest, &data_dir)?,
            plugin: self.plugin(raw.plugin)?,
            data_dir,
        })
    }

    fn tls(&self, raw: crate::raw::RawTls, data_dir: &Path) -> Result<TlsSettings, ConfigError> {
        let ca = self
            .non_empty_path("tls.ca", raw.ca)?
            .unwrap_or_else(|| data_dir.join(d::TLS_CA));
        let cert = self
            .non_empty_path("tls.cert", raw.cert)?
            .unwrap_or_else(|| data_dir.join(d::TLS_CERT));
        let key = self
            .non_empty_path("tls.key", raw.key)?
            .unwrap_or_else(|| data_dir.join(d::TLS_KEY));
        let crl = match raw.crl {
            None => Some(data_dir.join(d::TLS_CRL)),
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(self.path(&v)),
        };
        let crl_fail_closed = raw.crl_fail_closed.unwrap_or(false);
        if crl.is_none() && crl_fail_closed {
            return Err(self.invalid(
                "tls.crl_fail_closed",
                "crl_fail_closed = true needs a CRL: set tls.crl to a file, or drop crl_fail_closed",
            ));
        }
        Ok(TlsSettings {
            ca,
            cert,
            key,
            crl,
            crl_poll_interval: self.duration(
                "tls.crl_poll_interval",
                raw.crl_poll_interval,
                d::CRL_POLL_INTERVAL,
            )?,
            crl_fail_closed,
            handshake_timeout: self.duration(
                "tls.handshake_timeout",
                raw.handshake_timeout,
                d::HANDSHAKE_TIMEOUT,
            )?,
        })
    }

    fn identity(&self, raw: crate::raw::RawIdentity) -> Result<IdentitySettings, ConfigError> {
        let mode = raw.classify.unwrap_or(ClassifyMode::SubjectOu);
        // Keys that belong to another mode are a mistake worth naming.
        let stray = |key: &str, present: bool| -> Result<(), ConfigError> {
            if present {
                Err(self.invalid(
                    &format!("identity.{key}"),
                    format!(
                        "`{key}` is not used with classify = \"{}\"; remove it or change classify",
                        mode.name()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let classify = match mode {
            ClassifyMode::SubjectOu => {
                stray("bootstrap_ca", raw.bootstrap_ca.is_some())?;
                stray("operational_ca", raw.operational_ca.is_some())?;
                stray(
                    "bootstrap_fingerprints",
                    raw.bootstrap_fingerprints.is_some(),
                )?;
                let bootstrap_ou =
                    self.ou("identity.bootstrap_ou", raw.bootstrap_ou, d::BOOTSTRAP_OU)?;
                let operational_ou = self.ou(
                    "identity.operational_ou",
                    raw.operational_ou,
                    d::OPERATIONAL_OU,
                )?;
                if bootstrap_ou == operational_ou {
                    return Err(self.invalid(
                        "identity.operational_ou",
                        format!("bootstrap_ou and operational_ou are both {bootstrap_ou:?}; they must differ"),
                    ));
                }
                Classification::SubjectOu {
                    bootstrap_ou,
                    operational_ou,
                }
            }
            ClassifyMode::Issuer => {
                stray("bootstrap_ou", raw.bootstrap_ou.is_some())?;
                stray("operational_ou", raw.operational_ou.is_some())?;
                stray(
                    "bootstrap_fingerprints",
                    raw.bootstrap_fingerprints.is_some(),
                )?;
                let need = |key: &str, v: Option<String>| -> Result<PathBuf, ConfigError> {
                    self.non_empty_path(&format!("identity.{key}"), v)?.ok_or_else(|| {
                        self.invalid(
                            "identity.classify",
                            format!("classify = \"issuer\" needs identity.{key} (PEM file of that CA)"),
                        )
                    })
                };
                let bootstrap_ca = need("bootstrap_ca", raw.bootstrap_ca)?;
                let operational_ca = need("operational_ca", raw.operational_ca)?;
                if bootstrap_ca == operational_ca {
                    return Err(self.invalid(
                        "identity.operational_ca",
                        "bootstrap_ca and operational_ca are the same file; issuer classification needs two CAs",
                    ));
                }
                Classification::Issuer {
                    bootstrap_ca,
                    operational_ca,
                }
            }
            ClassifyMode::Fingerprint => {
                stray("bootstrap_ou", raw.bootstrap_ou.is_some())?;
                stray("operational_ou", raw.operational_ou.is_some())?;
                stray("bootstrap_ca", raw.bootstrap_ca.is_some())?;
                stray("operational_ca", raw.operational_ca.is_some())?;
                let list = raw.bootstrap_fingerprints.unwrap_or_default();
                if list.is_empty() {
                    return Err(self.invalid(
                        "identity.classify",
                        "classify = \"fingerprint\" needs identity.bootstrap_fingerprints: a non-empty list of SHA-256 fingerprints",
                    ));
                }
                let mut fps = Vec::with_capacity(list.len());
                for (i, s) in list.iter().enumerate() {
                    let fp = parse_fingerprint(s).ok_or_else(|| {
                        self.invalid(
                            &format!("identity.bootstrap_fingerprints.{i}"),
                            format!("expected a SHA-256 fingerprint (64 hex digits, colons optional), got {s:?}"),
                        )
                    })?;
                    fps.push(fp);
                }
                Classification::Fingerprint {
                    bootstrap_fingerprints: fps,
                }
            }
        };
        Ok(IdentitySettings {
            classify,
            operational_client_id: raw
                .operational_client_id
                .unwrap_or(OperationalClientId::MustEqualCn),
            bootstrap_client_id: raw
                .bootstrap_client_id
                .unwrap_or(BootstrapClientId::MustBeMac),
        })
    }

    fn ou(&self, key: &str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
        let v = value.unwrap_or_else(|| default.to_string());
        if v.trim().is_empty() {
            return Err(self.invalid(key, "expected a non-empty organisational unit name"));
        }
        Ok(v)
    }

    fn acl(&self, raw: crate::raw::RawAcl) -> Result<AclSettings, ConfigError> {
        let max_topic_length = self.positive(
            "acl.max_topic_length",
            raw.max_topic_length,
            d::MAX_TOPIC_LENGTH,
            65_535,
        )?;
        let max_topic_levels = self.positive(
            "acl.max_topic_levels",
            raw.max_topic_levels,
            d::MAX_TOPIC_LEVELS,
            1024,
        )?;
        Ok(AclSettings {
            max_topic_length,
            max_topic_levels,
            operational: self.kind_rules(
                "acl.operational",
                raw.operational,
                d::OPERATIONAL_RULE,
                max_topic_levels,
            )?,
            bootstrap: self.kind_rules(
                "acl.bootstrap",
                raw.bootstrap,
                d::BOOTSTRAP_RULE,
                max_topic_levels,
            )?,
        })
    }

    fn kind_rules(
        &self,
        section: &str,
        raw: RawKindRules,
        default: &str,
        max_levels: usize,
    ) -> Result<KindRules, ConfigError> {
        let list = |action: &str, v: Option<Vec<String>>| -> Result<Vec<String>, ConfigError> {
            let rules = v.unwrap_or_else(|| vec![default.to_string()]);
            for (i, rule) in rules.iter().enumerate() {
                let key = format!("{section}.{action}.{i}");
                let levels = parse_rule(rule)
                    .map_err(|why| self.invalid(&key, format!("rule {rule:?}: {why}")))?;
                if significant_levels(&levels) > max_levels {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "rule {rule:?} has more levels than acl.max_topic_levels ({max_levels}), \
                             so it could never match"
                        ),
                    ));
                }
            }
            Ok(rules)
        };
        Ok(KindRules {
            publish: list("publish", raw.publish)?,
            subscribe: list("subscribe", raw.subscribe)?,
            receive: list("receive", raw.receive)?,
            shared_subscriptions: raw.shared_subscriptions.unwrap_or(false),
        })
    }
}

/// `AA:BB:…` or plain hex, either case, 32 bytes.
pub(crate) fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_path_wins_over_environment() {
        let env = Some("/etc/from-env.toml".into());
        assert_eq!(
            choose_path(Some(Path::new("cli.toml")), env),
            Some(PathBuf::from("cli.toml"))
        );
    }

    #[test]
    fn environment_used_when_no_cli_and_empty_ignored() {
        assert_eq!(
            choose_path(None, Some("/etc/g.toml".into())),
            Some(PathBuf::from("/etc/g.toml"))
        );
        assert_eq!(choose_path(None, Some("".into())), None);
        assert_eq!(choose_path(None, None), None);
    }

    #[test]
    fn line_of_counts_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&plain), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&colons), Some([0xab; 32]));
        assert_eq!(parse_fingerprint("abcd"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }
}
