//! One human-readable line per decision, for logs and `--explain` tooling.

use std::fmt::Write as _;

use crate::decision::{Acl, Action, Decision, DenyReason, RuleSet, Subject};
use crate::rules::usable;

/// How many rules a deny line lists before summarising the rest.
const LISTED_RULES: usize = 5;
/// Longest topic quoted in a line, in bytes (longer ones are cut).
const SHOWN_TOPIC: usize = 200;

impl Acl {
    /// Decides and describes the decision in one line, e.g.
    /// `allow operational publish "telemetry/GW1-EEFF/data" by rule acl.operational.publish[0] "telemetry/{cn}/#"`.
    /// Allocates: meant for logs, not for the hot path (use
    /// [`Acl::explain_decision`] to describe a decision already made).
    ///
    /// ```
    /// use gatehouse_acl::{Acl, Action, Kind, Subject};
    /// let acl = Acl::new(&gatehouse_config::Config::defaults().acl).unwrap();
    /// let boot = Subject::new(Kind::Bootstrap, "bootstrap-2024", "aa:bb:cc:dd:ee:ff");
    /// assert_eq!(
    ///     acl.explain(&boot, Action::Subscribe, "#"),
    ///     r##"deny bootstrap subscribe "#": no acl.bootstrap.subscribe rule covers it (rules: "tds/provision/{client_id}/#")"##
    /// );
    /// ```
    pub fn explain(&self, subject: &Subject<'_>, action: Action, topic_or_filter: &str) -> String {
        let decision = self.decide(subject, action, topic_or_filter);
        self.explain_decision(subject, action, topic_or_filter, decision)
    }

    /// Describes `decision`, which [`Acl::decide`] returned for these arguments.
    pub fn explain_decision(
        &self,
        subject: &Subject<'_>,
        action: Action,
        topic_or_filter: &str,
        decision: Decision,
    ) -> String {
        let set = self.set(subject.kind, action);
        let mut line = String::with_capacity(160);
        let verdict = if decision.is_allowed() {
            "allow"
        } else {
            "deny"
        };
        let _ = write!(
            line,
            "{verdict} {} {action} {}",
            subject.kind.as_str(),
            Shown(topic_or_filter)
        );
        match decision {
            Decision::Allow { rule } => {
                let text = set.rules.get(rule).map(String::as_str).unwrap_or("?");
                let _ = write!(line, " by rule {}[{rule}] {text:?}", set.key);
            }
            Decision::Deny(DenyReason::InvalidTopic(e)) => {
                let what = if action == Action::Subscribe {
                    "filter"
                } else {
                    "topic"
                };
                let _ = write!(line, ": invalid {what}: {e}");
            }
            Decision::Deny(DenyReason::DollarTopic) => {
                let (first, _) = crate::topic::split_level(topic_or_filter);
                let _ = write!(
                    line,
                    ": $-topics are not reachable by devices (no {} rule begins with {first:?})",
                    set.key
                );
            }
            Decision::Deny(DenyReason::Revoked) => {
                line.push_str(": the certificate is revoked (CRL in force); the session is being disconnected");
            }
            Decision::Deny(DenyReason::NoMatchingRule) => {
                let verb = if action == Action::Subscribe {
                    "covers"
                } else {
                    "matches"
                };
                let _ = write!(line, ": no {} rule {verb} it (", set.key);
                list_rules(&mut line, set);
                line.push(')');
                placeholder_notes(&mut line, set, subject);
            }
        }
        line
    }
}

fn list_rules(line: &mut String, set: &RuleSet) {
    if set.rules.is_empty() {
        line.push_str("no rules configured");
        return;
    }
    line.push_str("rules: ");
    for (i, rule) in set.rules.iter().take(LISTED_RULES).enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        let _ = write!(line, "{rule:?}");
    }
    if set.rules.len() > LISTED_RULES {
        let _ = write!(line, " and {} more", set.rules.len() - LISTED_RULES);
    }
}

/// Says so when a placeholder value was unusable, the usual reason a rule
/// that looks right does not apply.
fn placeholder_notes(line: &mut String, set: &RuleSet, subject: &Subject<'_>) {
    let why = "is empty or contains '/', '+', '#', '$' or NUL, so rules using it match nothing";
    if set.uses.cn && !usable(subject.cn) {
        let _ = write!(line, "; cn {} {why}", Shown(subject.cn));
    }
    if set.uses.client_id && !usable(subject.client_id) {
        let _ = write!(line, "; client_id {} {why}", Shown(subject.client_id));
    }
}

/// A quoted, escaped, length-capped string for log lines.
struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() <= SHOWN_TOPIC {
            return write!(f, "{:?}", self.0);
        }
        let mut cut = SHOWN_TOPIC;
        while !self.0.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_auth::Kind;
    use gatehouse_config::{AclSettings, Config};

    use super::*;

    fn acl() -> Acl {
        Acl::new(&Config::defaults().acl).unwrap()
    }

    const GW: Subject<'static> = Subject {
        kind: Kind::Operational,
        cn: "GW-1-AABB",
        client_id: "GW-1-AABB",
    };
    const BOOT: Subject<'static> = Subject {
        kind: Kind::Bootstrap,
        cn: "bootstrap-2024",
        client_id: "aa:bb:cc:dd:ee:ff",
    };

    #[test]
    fn allow_names_the_rule_and_its_text() {
        assert_eq!(
            acl().explain(&GW, Action::Publish, "telemetry/GW-1-AABB/data"),
            r##"allow operational publish "telemetry/GW-1-AABB/data" by rule acl.operational.publish[0] "telemetry/{cn}/#""##
        );
    }

    #[test]
    fn deny_subscribe_says_no_rule_covers_and_lists_rules() {
        assert_eq!(
            acl().explain(&BOOT, Action::Subscribe, "#"),
            r##"deny bootstrap subscribe "#": no acl.bootstrap.subscribe rule covers it (rules: "tds/provision/{client_id}/#")"##
        );
    }

    #[test]
    fn deny_publish_says_no_rule_matches() {
        let line = acl().explain(&GW, Action::Publish, "telemetry/GW2-0001/data");
        assert!(line.starts_with(r##"deny operational publish "telemetry/GW2-0001/data": no acl.operational.publish rule matches it"##), "{line}");
    }

    #[test]
    fn deny_invalid_names_topic_or_filter_and_the_problem() {
        let line = acl().explain(&GW, Action::Publish, "telemetry/+/data");
        assert!(
            line.contains("invalid topic") && line.contains("wildcards"),
            "{line}"
        );
        let line = acl().explain(&GW, Action::Subscribe, "telemetry/#/data");
        assert!(
            line.contains("invalid filter") && line.contains("`#`"),
            "{line}"
        );
    }

    #[test]
    fn deny_dollar_says_so() {
        let line = acl().explain(&GW, Action::Subscribe, "$SYS/#");
        assert_eq!(
            line,
            r##"deny operational subscribe "$SYS/#": $-topics are not reachable by devices (no acl.operational.subscribe rule begins with "$SYS")"##
        );
    }

    #[test]
    fn deny_mentions_unusable_placeholder_value() {
        let evil = Subject::new(Kind::Operational, "a/#", "a/#");
        let line = acl().explain(&evil, Action::Subscribe, "telemetry/a/#");
        assert!(
            line.contains(r##"cn "a/#" is empty or contains"##),
            "{line}"
        );
        assert!(
            !line.contains("client_id"),
            "default operational rules do not use it: {line}"
        );
    }

    #[test]
    fn long_rule_lists_and_topics_are_cut() {
        let mut settings: AclSettings = Config::defaults().acl;
        settings.operational.publish = (0..12).map(|n| format!("r/{n}")).collect();
        let acl = Acl::new(&settings).unwrap();
        let line = acl.explain(&GW, Action::Publish, "x");
        assert!(line.contains(r##""r/4" and 7 more"##), "{line}");
        assert!(!line.contains("r/5"), "{line}");

        let long = "é".repeat(600);
        let line = acl.explain(&GW, Action::Publish, &long);
        assert!(
            line.contains("(1200 bytes)") && line.contains("1200 bytes long"),
            "{line}"
        );
        assert!(line.len() < 600, "{}", line.len());
    }

    #[test]
    fn no_rules_configured_is_said() {
        let mut settings: AclSettings = Config::defaults().acl;
        settings.bootstrap.receive.clear();
        let line = Acl::new(&settings).unwrap().explain(
            &BOOT,
            Action::Receive,
            "tds/provision/aa:bb:cc:dd:ee:ff/x",
        );
        assert!(line.ends_with("(no rules configured)"), "{line}");
    }
}
