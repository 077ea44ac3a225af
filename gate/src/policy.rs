//! The rules in force — who a certificate is (`[identity]`), which client
//! id it may use, what it may publish, subscribe to and receive (`[acl]`) —
//! built once from the config and swapped as a whole on reload, in both
//! shapes.

use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use gatehouse_acl::{Acl, Action, ClientIdPolicy, Decision, DenyReason, RuleError, Subject};
use gatehouse_auth::{Classifier, IdentityError, RevocationHandle, Serial};
use gatehouse_config::{Config, ConfigError};

/// Why rules could not be built (at start, or on reload: then the old ones
/// stay in force).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("[identity]: {0}")]
    Identity(#[from] IdentityError),
    #[error("[acl]: {0}")]
    Acl(#[from] RuleError),
}

/// `[identity]` and `[acl]`, compiled.
#[derive(Debug)]
pub struct Policy {
    /// Certificate → identity (kind, CN, serial).
    pub classifier: Classifier,
    /// Which client id a certificate may connect with.
    pub client_id: ClientIdPolicy,
    /// Per-kind topic rules.
    pub acl: Acl,
}

impl Policy {
    /// Compiles the rules of `config` (issuer-mode classification reads its
    /// CA files now).
    pub fn from_config(config: &Config) -> Result<Policy, PolicyError> {
        Ok(Policy {
            classifier: Classifier::from_settings(&config.identity)?,
            client_id: ClientIdPolicy::new(&config.identity),
            acl: Acl::new(&config.acl)?,
        })
    }
}

impl Policy {
    /// One request of an admitted client (`subject`, certificate `serial`):
    /// the same in both shapes. A certificate revoked since it connected is
    /// refused everything, even before the kick that cuts its session
    /// lands; then the topic rules decide.
    pub fn decide(
        &self,
        revocation: &RevocationHandle,
        subject: &Subject<'_>,
        serial: &Serial,
        action: Action,
        topic: &[u8],
    ) -> Decision {
        if revocation.is_revoked(serial) {
            return Decision::Deny(DenyReason::Revoked);
        }
        self.acl.decide_bytes(subject, action, topic)
    }
}

/// The policy in force, shared by every connection and swapped as a whole:
/// a decision sees either the old rules or the new ones, never a mix.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwap<Policy>>,
}

impl PolicyHandle {
    pub fn new(policy: Policy) -> PolicyHandle {
        PolicyHandle {
            current: Arc::new(ArcSwap::from_pointee(policy)),
        }
    }

    /// The policy in force (cheap; do not hold it across an `.await`).
    pub fn load(&self) -> Guard<Arc<Policy>> {
        self.current.load()
    }

    /// The policy in force as an `Arc`, to keep one policy across several
    /// steps (an admission sees one set of rules even if a reload lands).
    pub fn load_full(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Re-reads `path` and, when it and its rules are valid, puts its
    /// `[identity]` and `[acl]` in force; returns the new config so the
    /// shape can say which of its other settings would need a restart. On
    /// error the policy in force is untouched.
    pub fn reload(&self, path: &Path) -> Result<Config, PolicyError> {
        let config = Config::load(path)?;
        let policy = Policy::from_config(&config)?;
        self.current.store(Arc::new(policy));
        Ok(config)
    }
}

/// One warning line per rule that grants the whole tree (`#`): legal, but
/// every client of that kind then reaches every other client's topics. Both
/// shapes log these at start and on reload.
pub fn whole_tree_warnings(config: &Config) -> Vec<String> {
    config
        .acl
        .whole_tree_grants()
        .into_iter()
        .map(|(key, rule)| {
            format!(
                "{key} grants {rule:?}: every client of that kind can reach every other client's \
                 topics. Narrow it (e.g. \"telemetry/{{cn}}/#\") unless that is really meant"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use gatehouse_acl::{Action, Kind, Subject};

    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("gatehouse.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    #[test]
    fn reload_swaps_the_rules_and_a_bad_file_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = PolicyHandle::new(Policy::from_config(&Config::defaults()).expect("defaults"));
        let gw = Subject::new(Kind::Operational, "GW1", "GW1");
        let allowed = |h: &PolicyHandle| {
            h.load()
                .acl
                .decide(&gw, Action::Subscribe, "news/#")
                .is_allowed()
        };
        assert!(!allowed(&handle));

        let path = write(
            dir.path(),
            "[acl.operational]\nsubscribe = [\"telemetry/{cn}/#\", \"news/#\"]\n",
        );
        let held = Guard::into_inner(handle.load());
        handle.reload(&path).expect("valid file");
        assert!(allowed(&handle), "new rules in force");
        // A decision already under way keeps the rules it started with.
        assert!(
            !held
                .acl
                .decide(&gw, Action::Subscribe, "news/#")
                .is_allowed()
        );

        let path = write(dir.path(), "[acl]\nbogus = 1\n");
        let err = handle.reload(&path).unwrap_err();
        assert!(err.to_string().contains("acl.bogus"), "{err}");
        assert!(allowed(&handle), "old rules kept");

        let path = write(dir.path(), "[identity]\noperational_client_id = \"nope\"\n");
        assert!(handle.reload(&path).is_err());
        assert!(allowed(&handle), "old rules kept");
        assert!(handle.reload(&dir.path().join("missing.toml")).is_err());
        assert!(allowed(&handle), "old rules kept");
    }

    #[test]
    fn a_revoked_certificate_is_refused_everything_its_rules_allow() {
        let policy = Policy::from_config(&Config::defaults()).expect("defaults");
        let gw = Subject::new(Kind::Operational, "GW1", "GW1");
        let (good, bad) = (Serial::from_u64(7), Serial::from_u64(8));
        let set = gatehouse_auth::RevocationSet::from_serials([bad]);
        let revocation = RevocationHandle::fixed(set);
        let topic = b"telemetry/GW1/x";
        for action in [Action::Publish, Action::Subscribe, Action::Receive] {
            assert!(
                policy
                    .decide(&revocation, &gw, &good, action, topic)
                    .is_allowed(),
                "{action}"
            );
            assert_eq!(
                policy.decide(&revocation, &gw, &bad, action, topic),
                Decision::Deny(DenyReason::Revoked),
                "{action}"
            );
        }
        let line = policy.acl.explain_decision(
            &gw,
            Action::Publish,
            "telemetry/GW1/x",
            Decision::Deny(DenyReason::Revoked),
        );
        assert!(line.contains("revoked"), "{line}");
    }

    #[test]
    fn whole_tree_grants_are_warned_about_by_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "[acl.bootstrap]\nsubscribe = [\"#\"]\n");
        let config = Config::load(&path).expect("valid");
        let lines = whole_tree_warnings(&config);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("acl.bootstrap.subscribe grants \"#\""),
            "{lines:?}"
        );
        assert!(whole_tree_warnings(&Config::defaults()).is_empty());
    }
}
