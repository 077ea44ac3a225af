//! The ACL itself: compiled per-kind rules and the allow / deny decision.

use gatehouse_auth::Kind;
use gatehouse_config::{AclSettings, KindRules};
use thiserror::Error;

use crate::error::{RuleError, TopicError};
use crate::rules::{Trie, Uses, Values};
use crate::topic::{Limits, utf8, validate_filter, validate_topic};

/// Who is asking: the certificate kind and the values the placeholders take.
///
/// `{cn}` and `{gateway_code}` are replaced by `cn` (an operational
/// certificate's CN is its gateway code), `{client_id}` by `client_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    pub kind: Kind,
    /// The certificate subject CN.
    pub cn: &'a str,
    /// The MQTT client id from CONNECT.
    pub client_id: &'a str,
}

impl<'a> Subject<'a> {
    pub fn new(kind: Kind, cn: &'a str, client_id: &'a str) -> Subject<'a> {
        Subject {
            kind,
            cn,
            client_id,
        }
    }
}

/// What the client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// PUBLISH to a topic name (also: a CONNECT will topic).
    Publish,
    /// SUBSCRIBE with a topic filter.
    Subscribe,
    /// Be delivered a message published on a topic name.
    Receive,
}

impl Action {
    /// Lower-case name, as in the config keys (`acl.operational.publish`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Receive => "receive",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DenyReason {
    /// The topic name (publish, receive) or filter (subscribe) is malformed.
    #[error("invalid topic: {0}")]
    InvalidTopic(TopicError),
    /// The first level starts with `$` and no rule begins with that literal level.
    #[error("$-topics are not reachable by devices")]
    DollarTopic,
    /// Default deny: no rule of this kind and action matches (publish,
    /// receive) or covers (subscribe) it.
    #[error("no rule matches")]
    NoMatchingRule,
    /// The client's certificate was revoked after it connected: everything
    /// is refused until the session is cut (decided by `gatehouse-gate`,
    /// never by the rules themselves).
    #[error("the client's certificate is revoked")]
    Revoked,
}

/// The answer for one request. Default deny.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the rule at this index of the kind × action list
    /// (`acl.<kind>.<action>[rule]`); the lowest such index.
    Allow {
        rule: usize,
    },
    Deny(DenyReason),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The allowing rule's index, if allowed.
    pub fn rule(&self) -> Option<usize> {
        match *self {
            Decision::Allow { rule } => Some(rule),
            Decision::Deny(_) => None,
        }
    }

    /// The reason, if denied.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        match *self {
            Decision::Allow { .. } => None,
            Decision::Deny(reason) => Some(reason),
        }
    }
}

/// The rules of one kind × action, compiled, plus their source text for
/// [`Acl::explain`].
#[derive(Debug)]
pub(crate) struct RuleSet {
    pub(crate) key: String,
    pub(crate) rules: Vec<String>,
    pub(crate) uses: Uses,
    trie: Trie,
}

impl RuleSet {
    fn compile(
        kind: Kind,
        action: Action,
        rules: &[String],
        limits: &Limits,
    ) -> Result<RuleSet, RuleError> {
        let key = format!("acl.{}.{}", kind.as_str(), action.as_str());
        let (trie, uses) = Trie::compile(rules, &key, limits.max_levels)?;
        Ok(RuleSet {
            key,
            rules: rules.to_vec(),
            uses,
            trie,
        })
    }
}

const ACTIONS: [Action; 3] = [Action::Publish, Action::Subscribe, Action::Receive];

/// The compiled `[acl]` section: default-deny allow-rules per certificate
/// kind and action. Built once, then shared (`Send + Sync`, read-only).
///
/// ```
/// use gatehouse_acl::{Acl, Action, Kind, Subject};
/// let acl = Acl::new(&gatehouse_config::Config::defaults().acl).unwrap();
/// let gw = Subject::new(Kind::Operational, "GW1-EEFF", "GW1-EEFF");
/// assert!(acl.decide(&gw, Action::Publish, "telemetry/GW1-EEFF/data").is_allowed());
/// assert!(!acl.decide(&gw, Action::Subscribe, "telemetry/#").is_allowed());
/// ```
#[derive(Debug)]
pub struct Acl {
    limits: Limits,
    /// Index: `Kind::index * 3 + action_index`.
    sets: Vec<RuleSet>,
    /// Shared subscriptions allowed, by `Kind::index`.
    shared: [bool; 2],
}

fn action_index(action: Action) -> usize {
    match action {
        Action::Publish => 0,
        Action::Subscribe => 1,
        Action::Receive => 2,
    }
}

impl Acl {
    /// Compiles every rule list once. Rules from `gatehouse-config` are
    /// already valid; hand-built settings with a bad rule give a
    /// [`RuleError`] naming the rule.
    pub fn new(settings: &AclSettings) -> Result<Acl, RuleError> {
        let limits = Limits::from_settings(settings);
        let mut sets = Vec::with_capacity(6);
        for (kind, rules) in [
            (Kind::Operational, &settings.operational),
            (Kind::Bootstrap, &settings.bootstrap),
        ] {
            for action in ACTIONS {
                sets.push(RuleSet::compile(
                    kind,
                    action,
                    list(rules, action),
                    &limits,
                )?);
            }
        }
        Ok(Acl {
            limits,
            sets,
            shared: [
                settings.operational.shared_subscriptions,
                settings.bootstrap.shared_subscriptions,
            ],
        })
    }

    /// Whether clients of `kind` may use shared subscriptions (the
    /// subscribe rules then apply to the filter inside `$share/{group}/`).
    pub fn shared_subscriptions(&self, kind: Kind) -> bool {
        self.shared[kind.index()]
    }

    /// The topic limits every request is validated against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn set(&self, kind: Kind, action: Action) -> &RuleSet {
        &self.sets[kind.index() * 3 + action_index(action)]
    }

    /// Decides one request. `topic_or_filter` is a topic name for
    /// [`Action::Publish`] and [`Action::Receive`] and a topic filter for
    /// [`Action::Subscribe`]; it is validated first (invalid → deny).
    ///
    /// Publish / receive are allowed when a rule (placeholders filled in)
    /// matches the topic; subscribe only when a single rule covers the
    /// filter, i.e. matches every topic the filter could match. A topic or
    /// filter whose first level starts with `$` is reachable only through a
    /// rule beginning with that same literal level. Does not allocate.
    pub fn decide(&self, subject: &Subject<'_>, action: Action, topic_or_filter: &str) -> Decision {
        let valid = match action {
            Action::Subscribe => validate_filter(topic_or_filter, &self.limits),
            Action::Publish | Action::Receive => validate_topic(topic_or_filter, &self.limits),
        };
        if let Err(e) = valid {
            return Decision::Deny(DenyReason::InvalidTopic(e));
        }
        let values = Values::new(subject.cn, subject.client_id);
        match self
            .set(subject.kind, action)
            .trie_find(topic_or_filter, &values)
        {
            Some(rule) => Decision::Allow { rule },
            None if topic_or_filter.starts_with('$') => Decision::Deny(DenyReason::DollarTopic),
            None => Decision::Deny(DenyReason::NoMatchingRule),
        }
    }

    /// [`Acl::decide`] for raw bytes off the wire; invalid UTF-8 is denied
    /// as [`TopicError::InvalidUtf8`].
    pub fn decide_bytes(
        &self,
        subject: &Subject<'_>,
        action: Action,
        topic_or_filter: &[u8],
    ) -> Decision {
        match utf8(topic_or_filter) {
            Ok(s) => self.decide(subject, action, s),
            Err(e) => Decision::Deny(DenyReason::InvalidTopic(e)),
        }
    }
}

impl RuleSet {
    #[inline]
    fn trie_find(&self, topic_or_filter: &str, values: &Values<'_>) -> Option<usize> {
        self.trie.find(topic_or_filter, values)
    }
}

fn list(rules: &KindRules, action: Action) -> &[String] {
    match action {
        Action::Publish => &rules.publish,
        Action::Subscribe => &rules.subscribe,
        Action::Receive => &rules.receive,
    }
}

#[cfg(test)]
mod tests;
