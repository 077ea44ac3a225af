//! Decision tests: the shipped defaults, placeholder injection, subscribe
//! coverage, `$` topics, and large rule sets checked against a naive
//! reference matcher.

use gatehouse_auth::Kind;
use gatehouse_config::rule::RuleSyntaxError;
use gatehouse_config::{AclSettings, Config, KindRules};

use super::*;
use crate::topic::topic_matches_filter;

fn defaults() -> Acl {
    Acl::new(&Config::defaults().acl).unwrap()
}

fn rules(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// An ACL whose operational rules for every action are `list`.
fn operational(list: &[&str]) -> Acl {
    let mut settings = Config::defaults().acl;
    settings.operational = KindRules {
        publish: rules(list),
        subscribe: rules(list),
        receive: rules(list),
        shared_subscriptions: false,
    };
    Acl::new(&settings).unwrap()
}

const GW: Subject<'static> = Subject {
    kind: Kind::Operational,
    cn: "GW1-EEFF",
    client_id: "GW1-EEFF",
};

const BOOT: Subject<'static> = Subject {
    kind: Kind::Bootstrap,
    cn: "bootstrap-2024",
    client_id: "aa:bb:cc:dd:ee:ff",
};

const ALL: [Action; 3] = [Action::Publish, Action::Subscribe, Action::Receive];

#[test]
fn action_names() {
    assert_eq!(Action::Publish.as_str(), "publish");
    assert_eq!(Action::Subscribe.as_str(), "subscribe");
    assert_eq!(Action::Receive.to_string(), "receive");
}

#[test]
fn decision_accessors() {
    let allow = Decision::Allow { rule: 3 };
    assert!(allow.is_allowed());
    assert_eq!(allow.rule(), Some(3));
    assert_eq!(allow.deny_reason(), None);
    let deny = Decision::Deny(DenyReason::NoMatchingRule);
    assert!(!deny.is_allowed());
    assert_eq!(deny.rule(), None);
    assert_eq!(deny.deny_reason(), Some(DenyReason::NoMatchingRule));
}

#[test]
fn defaults_operational_may_use_its_own_telemetry_tree() {
    let acl = defaults();
    for action in [Action::Publish, Action::Receive] {
        assert_eq!(
            acl.decide(&GW, action, "telemetry/GW1-EEFF/data"),
            Decision::Allow { rule: 0 }
        );
        assert!(
            acl.decide(&GW, action, "telemetry/GW1-EEFF").is_allowed(),
            "# matches the parent"
        );
        assert!(
            acl.decide(&GW, action, "telemetry/GW1-EEFF/a/b/c")
                .is_allowed()
        );
    }
    for filter in [
        "telemetry/GW1-EEFF/data",
        "telemetry/GW1-EEFF/#",
        "telemetry/GW1-EEFF/+",
        "telemetry/GW1-EEFF/+/x",
        "telemetry/GW1-EEFF",
    ] {
        assert_eq!(
            acl.decide(&GW, Action::Subscribe, filter),
            Decision::Allow { rule: 0 },
            "{filter}"
        );
    }
}

#[test]
fn defaults_operational_may_not_leave_its_tree() {
    let acl = defaults();
    let deny = Decision::Deny(DenyReason::NoMatchingRule);
    for action in [Action::Publish, Action::Receive] {
        for topic in [
            "telemetry/GW2-0001/data",
            "telemetry/GW1-EEFF2/data",
            "telemetry/gw1-eeff/data",
            "telemetry",
            "tds/provision/aa:bb:cc:dd:ee:ff/req",
            "other/GW1-EEFF/data",
            "GW1-EEFF",
        ] {
            assert_eq!(acl.decide(&GW, action, topic), deny, "{action} {topic}");
        }
    }
    for filter in [
        "telemetry/GW2-0001/data",
        "telemetry/#",
        "telemetry/+/data",
        "telemetry/+/#",
        "#",
        "+/#",
        "+",
        "+/+",
        "tds/provision/#",
        "tds/provision/aa:bb:cc:dd:ee:ff/#",
    ] {
        assert_eq!(acl.decide(&GW, Action::Subscribe, filter), deny, "{filter}");
    }
}

#[test]
fn defaults_operational_has_no_dollar_topics() {
    let acl = defaults();
    let deny = Decision::Deny(DenyReason::DollarTopic);
    assert_eq!(acl.decide(&GW, Action::Subscribe, "$SYS/#"), deny);
    assert_eq!(
        acl.decide(&GW, Action::Subscribe, "$SYS/broker/uptime"),
        deny
    );
    assert_eq!(
        acl.decide(&GW, Action::Subscribe, "$share/g/telemetry/GW1-EEFF/#"),
        deny
    );
    assert_eq!(acl.decide(&GW, Action::Publish, "$SYS/broker/uptime"), deny);
    assert_eq!(acl.decide(&GW, Action::Receive, "$SYS/broker/uptime"), deny);
    assert_eq!(acl.decide(&GW, Action::Publish, "$foo"), deny);
}

#[test]
fn defaults_bootstrap_may_use_its_own_provisioning_tree() {
    let acl = defaults();
    for action in ALL {
        assert_eq!(
            acl.decide(&BOOT, action, "tds/provision/aa:bb:cc:dd:ee:ff/req"),
            Decision::Allow { rule: 0 },
            "{action}"
        );
    }
    assert!(
        acl.decide(
            &BOOT,
            Action::Subscribe,
            "tds/provision/aa:bb:cc:dd:ee:ff/#"
        )
        .is_allowed()
    );
    assert!(
        acl.decide(
            &BOOT,
            Action::Subscribe,
            "tds/provision/aa:bb:cc:dd:ee:ff/+"
        )
        .is_allowed()
    );
    assert!(
        acl.decide(
            &BOOT,
            Action::Receive,
            "tds/provision/aa:bb:cc:dd:ee:ff/resp/cert"
        )
        .is_allowed()
    );
}

#[test]
fn defaults_bootstrap_may_not_leave_its_mac_tree() {
    let acl = defaults();
    for action in [Action::Publish, Action::Receive] {
        for topic in [
            "tds/provision/11:22:33:44:55:66/req",
            "tds/provision/AA:BB:CC:DD:EE:FF/req",
            "tds/provision",
            "telemetry/GW1-EEFF/data",
            "telemetry/aa:bb:cc:dd:ee:ff/data",
        ] {
            assert!(
                !acl.decide(&BOOT, action, topic).is_allowed(),
                "{action} {topic}"
            );
        }
    }
    for filter in [
        "tds/provision/#",
        "tds/provision/+/req",
        "tds/provision/+/#",
        "tds/#",
        "#",
        "telemetry/#",
        "tds/provision/11:22:33:44:55:66/#",
        "$SYS/#",
    ] {
        assert!(
            !acl.decide(&BOOT, Action::Subscribe, filter).is_allowed(),
            "{filter}"
        );
    }
}

#[test]
fn kinds_do_not_share_rules() {
    let acl = defaults();
    // A bootstrap cert whose CN happens to be a gateway code gets nothing under telemetry.
    let boot = Subject::new(Kind::Bootstrap, "GW1-EEFF", "GW1-EEFF");
    assert!(
        !acl.decide(&boot, Action::Publish, "telemetry/GW1-EEFF/data")
            .is_allowed()
    );
    // An operational cert whose client id is a MAC gets nothing under provisioning.
    let op = Subject::new(Kind::Operational, "GW1-EEFF", "aa:bb:cc:dd:ee:ff");
    assert!(
        !acl.decide(&op, Action::Publish, "tds/provision/aa:bb:cc:dd:ee:ff/req")
            .is_allowed()
    );
}

#[test]
fn actions_use_their_own_lists() {
    let mut settings: AclSettings = Config::defaults().acl;
    settings.operational.publish = rules(&["up/{cn}"]);
    settings.operational.subscribe = rules(&["down/{cn}/#"]);
    settings.operational.receive = rules(&["down/{cn}/+"]);
    let acl = Acl::new(&settings).unwrap();
    assert!(acl.decide(&GW, Action::Publish, "up/GW1-EEFF").is_allowed());
    assert!(
        !acl.decide(&GW, Action::Publish, "down/GW1-EEFF/x")
            .is_allowed()
    );
    assert!(
        acl.decide(&GW, Action::Subscribe, "down/GW1-EEFF/#")
            .is_allowed()
    );
    assert!(
        !acl.decide(&GW, Action::Subscribe, "up/GW1-EEFF")
            .is_allowed()
    );
    assert!(
        acl.decide(&GW, Action::Receive, "down/GW1-EEFF/x")
            .is_allowed()
    );
    assert!(
        !acl.decide(&GW, Action::Receive, "down/GW1-EEFF/x/y")
            .is_allowed()
    );
}

#[test]
fn invalid_topics_and_filters_are_denied_before_rules() {
    let acl = operational(&["#"]);
    let inv = |e| Decision::Deny(DenyReason::InvalidTopic(e));
    assert_eq!(acl.decide(&GW, Action::Publish, ""), inv(TopicError::Empty));
    assert_eq!(
        acl.decide(&GW, Action::Publish, "a/+"),
        inv(TopicError::WildcardInTopic)
    );
    assert_eq!(
        acl.decide(&GW, Action::Receive, "a/#"),
        inv(TopicError::WildcardInTopic)
    );
    assert_eq!(
        acl.decide(&GW, Action::Publish, "a\0"),
        inv(TopicError::Nul)
    );
    assert_eq!(
        acl.decide(&GW, Action::Subscribe, "a/#/b"),
        inv(TopicError::MisplacedHash)
    );
    assert_eq!(
        acl.decide(&GW, Action::Subscribe, "a+"),
        inv(TopicError::MisplacedPlus)
    );
    let long = "x".repeat(1025);
    assert_eq!(
        acl.decide(&GW, Action::Publish, &long),
        inv(TopicError::TooLong {
            len: 1025,
            max: 1024
        })
    );
    let deep = vec!["x"; 17].join("/");
    assert_eq!(
        acl.decide(&GW, Action::Subscribe, &deep),
        inv(TopicError::TooManyLevels {
            levels: 17,
            max: 16
        })
    );
    assert_eq!(
        acl.decide_bytes(&GW, Action::Publish, b"a/\xfe"),
        inv(TopicError::InvalidUtf8 { valid_up_to: 2 })
    );
    assert_eq!(
        acl.decide_bytes(&GW, Action::Publish, b"a/b"),
        Decision::Allow { rule: 0 }
    );
}

#[test]
fn placeholder_values_that_could_widen_a_rule_match_nothing() {
    let acl = defaults();
    for cn in ["a/#", "#", "+", "a/b", "", "x\0", "a+", "b#"] {
        let evil = Subject::new(Kind::Operational, cn, cn);
        for filter in [
            "telemetry/#",
            "telemetry/+/#",
            "telemetry/a/#",
            "telemetry/+",
            "telemetry//#",
            "telemetry/a/b/#",
            "telemetry/#/#",
        ] {
            assert!(
                !acl.decide(&evil, Action::Subscribe, filter).is_allowed(),
                "cn {cn:?} filter {filter:?}"
            );
        }
        for topic in [
            "telemetry/a/b",
            "telemetry//x",
            "telemetry/a/b/c",
            "telemetry/x",
        ] {
            assert!(
                !acl.decide(&evil, Action::Publish, topic).is_allowed(),
                "cn {cn:?} topic {topic:?}"
            );
        }
    }
    for client_id in ["+", "#", "", "aa/bb", "aa:bb:cc:dd:ee:ff/#"] {
        let evil = Subject::new(Kind::Bootstrap, "boot", client_id);
        for filter in [
            "tds/provision/+/#",
            "tds/provision/#",
            "tds/provision//#",
            "tds/provision/aa/bb/#",
        ] {
            assert!(
                !acl.decide(&evil, Action::Subscribe, filter).is_allowed(),
                "client_id {client_id:?} {filter:?}"
            );
        }
        assert!(
            !acl.decide(&evil, Action::Publish, "tds/provision/aa/bb/req")
                .is_allowed()
        );
        assert!(
            !acl.decide(&evil, Action::Publish, "tds/provision//req")
                .is_allowed()
        );
    }
}

#[test]
fn a_placeholder_value_must_be_a_safe_client_id() {
    // One charset for client ids and placeholder values: what the client-id
    // check refuses cannot fill a rule either.
    let acl = operational(&["telemetry/{client_id}/#"]);
    for id in ["GW$1", "$GW1"] {
        let s = Subject::new(Kind::Operational, "GW1", id);
        let topic = format!("telemetry/{id}/x");
        assert!(
            !acl.decide(&s, Action::Publish, &topic).is_allowed(),
            "{id}"
        );
    }
    let good = Subject::new(Kind::Operational, "GW1", "GW1");
    assert!(
        acl.decide(&good, Action::Publish, "telemetry/GW1/x")
            .is_allowed()
    );
}

#[test]
fn partial_level_placeholders_match_the_whole_level_only() {
    let acl = operational(&["dev-{cn}/x", "{cn}-{client_id}/y", "g/{gateway_code}"]);
    let s = Subject::new(Kind::Operational, "GW1", "c1");
    assert_eq!(
        acl.decide(&s, Action::Publish, "dev-GW1/x"),
        Decision::Allow { rule: 0 }
    );
    assert!(!acl.decide(&s, Action::Publish, "dev-GW1x/x").is_allowed());
    assert!(!acl.decide(&s, Action::Publish, "dev-/x").is_allowed());
    assert!(!acl.decide(&s, Action::Publish, "GW1/x").is_allowed());
    assert_eq!(
        acl.decide(&s, Action::Publish, "GW1-c1/y"),
        Decision::Allow { rule: 1 }
    );
    assert_eq!(
        acl.decide(&s, Action::Publish, "g/GW1"),
        Decision::Allow { rule: 2 }
    );
    assert!(
        !acl.decide(&s, Action::Subscribe, "dev-+/x").is_allowed(),
        "`dev-+` is not a valid filter anyway"
    );
    assert!(!acl.decide(&s, Action::Subscribe, "+/x").is_allowed());
    // An empty value must not turn "dev-{cn}" into "dev-".
    let empty = Subject::new(Kind::Operational, "", "c1");
    assert!(!acl.decide(&empty, Action::Publish, "dev-/x").is_allowed());
    assert!(!acl.decide(&empty, Action::Publish, "-c1/y").is_allowed());
    // A bad value disables only the rules that use it.
    let bad_cid = Subject::new(Kind::Operational, "GW1", "+");
    assert!(
        acl.decide(&bad_cid, Action::Publish, "dev-GW1/x")
            .is_allowed()
    );
    assert!(
        !acl.decide(&bad_cid, Action::Publish, "GW1-+/y")
            .is_allowed()
    );
}

#[test]
fn subscribe_needs_a_single_covering_rule() {
    let acl = operational(&["telemetry/gw1/#"]);
    let sub = |f| acl.decide(&GW, Action::Subscribe, f).is_allowed();
    assert!(sub("telemetry/gw1/#"));
    assert!(sub("telemetry/gw1/+/x"));
    assert!(sub("telemetry/gw1/+"));
    assert!(sub("telemetry/gw1"));
    assert!(sub("telemetry/gw1/a/b/#"));
    assert!(!sub("telemetry/#"));
    assert!(!sub("telemetry/+/data"));
    assert!(!sub("telemetry/+"));
    assert!(!sub("#"));
    assert!(!sub("+/+"));
    assert!(!sub("+/gw1/#"));

    // Two rules that together would cover a filter do not: one rule must.
    let acl = operational(&["a/x", "a/+/y"]);
    assert!(!acl.decide(&GW, Action::Subscribe, "a/+").is_allowed());
}

#[test]
fn subscribe_hash_also_means_the_parent_level() {
    // `a/#` matches `a` itself, which `a/+/#` does not.
    let acl = operational(&["a/+/#"]);
    assert!(!acl.decide(&GW, Action::Subscribe, "a/#").is_allowed());
    assert!(acl.decide(&GW, Action::Subscribe, "a/+/#").is_allowed());
    assert!(acl.decide(&GW, Action::Subscribe, "a/b/#").is_allowed());
    assert!(acl.decide(&GW, Action::Subscribe, "a/b").is_allowed());
    assert!(!acl.decide(&GW, Action::Subscribe, "a").is_allowed());
    // `a/#` does cover `a`.
    let acl = operational(&["a/#"]);
    assert!(acl.decide(&GW, Action::Subscribe, "a").is_allowed());
    // A plain rule does not cover `#` below it.
    let acl = operational(&["a/b"]);
    assert!(!acl.decide(&GW, Action::Subscribe, "a/b/#").is_allowed());
    assert!(acl.decide(&GW, Action::Subscribe, "a/b").is_allowed());
}

#[test]
fn subscribe_plus_is_covered_by_plus_or_hash_only() {
    let acl = operational(&["a/+/c", "b/#"]);
    let sub = |f| acl.decide(&GW, Action::Subscribe, f).is_allowed();
    assert!(sub("a/+/c"));
    assert!(sub("a/x/c"));
    assert!(!sub("a/+/+"));
    assert!(!sub("a/+/c/#"));
    assert!(sub("b/+/+"));
    let acl = operational(&["a/{cn}/c"]);
    assert!(!acl.decide(&GW, Action::Subscribe, "a/+/c").is_allowed());
}

#[test]
fn subscribe_to_everything_needs_rule_hash() {
    for rule in ["+/#", "+", "+/+/#", "a/#"] {
        let acl = operational(&[rule]);
        assert!(
            !acl.decide(&GW, Action::Subscribe, "#").is_allowed(),
            "{rule}"
        );
    }
    let acl = operational(&["#"]);
    assert!(acl.decide(&GW, Action::Subscribe, "#").is_allowed());
    assert!(acl.decide(&GW, Action::Subscribe, "+/+").is_allowed());
}

#[test]
fn dollar_topics_need_a_literal_dollar_rule() {
    let acl = operational(&["#", "+/#", "+", "{cn}/#"]);
    let dollar_cn = Subject::new(Kind::Operational, "$SYS", "$SYS");
    for s in [GW, dollar_cn] {
        for f in ["$SYS/#", "$SYS/broker/uptime", "$share/g/x", "$foo", "$SYS"] {
            assert_eq!(
                acl.decide(&s, Action::Subscribe, f),
                Decision::Deny(DenyReason::DollarTopic),
                "{f}"
            );
        }
        for t in ["$SYS/broker/uptime", "$foo", "$SYS"] {
            assert_eq!(
                acl.decide(&s, Action::Publish, t),
                Decision::Deny(DenyReason::DollarTopic),
                "{t}"
            );
            assert_eq!(
                acl.decide(&s, Action::Receive, t),
                Decision::Deny(DenyReason::DollarTopic),
                "{t}"
            );
        }
    }
    // ... while non-$ topics are wide open under those rules.
    assert!(acl.decide(&GW, Action::Subscribe, "#").is_allowed());
    assert!(acl.decide(&GW, Action::Publish, "a/$SYS").is_allowed());

    let acl = operational(&["$SYS/broker/+", "$share/g/{cn}/#"]);
    assert_eq!(
        acl.decide(&GW, Action::Receive, "$SYS/broker/uptime"),
        Decision::Allow { rule: 0 }
    );
    assert!(
        acl.decide(&GW, Action::Subscribe, "$SYS/broker/+")
            .is_allowed()
    );
    assert!(!acl.decide(&GW, Action::Subscribe, "$SYS/#").is_allowed());
    assert!(
        !acl.decide(&GW, Action::Subscribe, "$SYS/broker/#")
            .is_allowed()
    );
    assert!(
        acl.decide(&GW, Action::Subscribe, "$share/g/GW1-EEFF/#")
            .is_allowed()
    );
    assert!(
        !acl.decide(&GW, Action::Subscribe, "$SHARE/g/GW1-EEFF/#")
            .is_allowed()
    );
}

#[test]
fn lowest_rule_index_is_reported() {
    let acl = operational(&["a/b/c", "a/#", "a/+/c", "#"]);
    assert_eq!(
        acl.decide(&GW, Action::Publish, "a/b/c"),
        Decision::Allow { rule: 0 }
    );
    assert_eq!(
        acl.decide(&GW, Action::Publish, "a/x/c"),
        Decision::Allow { rule: 1 }
    );
    assert_eq!(
        acl.decide(&GW, Action::Publish, "z"),
        Decision::Allow { rule: 3 }
    );
    assert_eq!(
        acl.decide(&GW, Action::Subscribe, "a/+/c"),
        Decision::Allow { rule: 1 }
    );
}

#[test]
fn empty_rule_lists_deny_everything() {
    let mut settings = Config::defaults().acl;
    settings.operational = KindRules {
        publish: vec![],
        subscribe: vec![],
        receive: vec![],
        shared_subscriptions: false,
    };
    let acl = Acl::new(&settings).unwrap();
    for action in ALL {
        assert_eq!(
            acl.decide(&GW, action, "telemetry/GW1-EEFF/data"),
            Decision::Deny(DenyReason::NoMatchingRule)
        );
    }
}

#[test]
fn bad_hand_built_rules_are_errors() {
    let mut settings = Config::defaults().acl;
    settings.bootstrap.receive = rules(&["ok/{cn}", "x/{nope}"]);
    let err = Acl::new(&settings).unwrap_err();
    assert!(matches!(
        err,
        RuleError::Syntax {
            source: RuleSyntaxError::UnknownPlaceholder { .. },
            ..
        }
    ));
    assert!(
        err.to_string().contains("acl.bootstrap.receive[1]"),
        "{err}"
    );
    settings.bootstrap.receive = rules(&["a/#/b"]);
    assert!(matches!(
        Acl::new(&settings).unwrap_err(),
        RuleError::Syntax {
            source: RuleSyntaxError::MisplacedHash,
            ..
        }
    ));
}

#[test]
fn acl_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Acl>();
}

// ---------------------------------------------------------------------------
// Reference implementation: substitute placeholders into each rule, then test
// rules one by one in order. Slow and obviously correct(er).
// ---------------------------------------------------------------------------

/// Rule text with placeholders filled in, or `None` when a used value is unusable.
fn substitute(rule: &str, subject: &Subject<'_>) -> Option<String> {
    let ok = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#', '$', '\0']);
    let mut out = rule.to_string();
    for (name, value) in [
        ("{cn}", subject.cn),
        ("{gateway_code}", subject.cn),
        ("{client_id}", subject.client_id),
    ] {
        if out.contains(name) {
            if !ok(value) {
                return None;
            }
            out = out.replace(name, value);
        }
    }
    Some(out)
}

/// Whether the rule's first level is plain text (no wildcard, no placeholder).
fn literal_first_level(rule: &str) -> bool {
    let first = rule.split('/').next().unwrap_or("");
    first != "+" && first != "#" && !first.contains('{')
}

/// Structural coverage, level by level (see `Trie::find`).
fn covers_levels(rule: &[&str], filter: &[&str]) -> bool {
    match (rule.first(), filter.first()) {
        (Some(&"#"), _) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(&r), Some(&f)) => {
            let level_ok = match f {
                "#" => false,
                "+" => r == "+",
                _ => r == "+" || r == f,
            };
            level_ok && covers_levels(&rule[1..], &filter[1..])
        }
    }
}

fn reference_covers(rule: &str, filter: &str) -> bool {
    if filter.starts_with('$') && !literal_first_level(rule) {
        return false;
    }
    let r: Vec<&str> = rule.split('/').collect();
    let f: Vec<&str> = filter.split('/').collect();
    covers_levels(&r, &f)
}

fn reference_decide(
    list: &[String],
    subject: &Subject<'_>,
    action: Action,
    topic: &str,
    limits: &Limits,
) -> Decision {
    let valid = match action {
        Action::Subscribe => validate_filter(topic, limits),
        _ => validate_topic(topic, limits),
    };
    if let Err(e) = valid {
        return Decision::Deny(DenyReason::InvalidTopic(e));
    }
    for (i, rule) in list.iter().enumerate() {
        let Some(r) = substitute(rule, subject) else {
            continue;
        };
        // `$` is judged on the rule as written: a placeholder never reaches it.
        let dollar_ok = !topic.starts_with('$') || literal_first_level(rule);
        let hit = dollar_ok
            && match action {
                Action::Subscribe => reference_covers(&r, topic),
                _ => topic_matches_filter(topic, &r),
            };
        if hit {
            return Decision::Allow { rule: i };
        }
    }
    if topic.starts_with('$') {
        Decision::Deny(DenyReason::DollarTopic)
    } else {
        Decision::Deny(DenyReason::NoMatchingRule)
    }
}

/// The structural coverage above agrees with the definition "every topic the
/// filter matches, the rule matches", checked by enumerating every topic over
/// a small alphabet (with a fresh level `z` standing for any other text);
/// the only difference is the documented conservative case `#` vs `+/#`.
#[test]
fn reference_coverage_agrees_with_its_definition() {
    let levels = ["a", "$s", "+", "#"];
    let mut filters = Vec::new();
    let mut stack: Vec<Vec<&str>> = vec![vec![]];
    while let Some(prefix) = stack.pop() {
        if prefix.len() == 3 {
            continue;
        }
        for l in levels {
            if prefix.last() == Some(&"#") {
                break;
            }
            let mut f = prefix.clone();
            f.push(l);
            filters.push(f.join("/"));
            stack.push(f);
        }
    }
    let mut topics = Vec::new();
    let mut stack: Vec<Vec<&str>> = vec![vec![]];
    while let Some(prefix) = stack.pop() {
        if prefix.len() == 4 {
            continue;
        }
        for l in ["a", "$s", "z"] {
            let mut t = prefix.clone();
            t.push(l);
            topics.push(t.join("/"));
            stack.push(t);
        }
    }
    assert!(filters.len() > 50 && topics.len() > 100);
    let mut checked = 0;
    for rule in &filters {
        for filter in &filters {
            let semantic = topics
                .iter()
                .all(|t| !topic_matches_filter(t, filter) || topic_matches_filter(t, rule));
            let structural = reference_covers(rule, filter);
            if filter == "#" && rule == "+/#" {
                assert!(semantic && !structural);
            } else {
                assert_eq!(structural, semantic, "rule {rule:?} filter {filter:?}");
            }
            checked += 1;
        }
    }
    assert!(checked > 2500);
}

/// xorshift64*: a fixed-seed PRNG, enough for generating test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const SUBJECT_VALUES: &[&str] = &[
    "GW1", "GW2", "a", "x-GW1", "", "a/#", "+", "#", "$s", "aa:bb",
];
const TOPIC_LEVELS: &[&str] = &[
    "a",
    "b",
    "c",
    "GW1",
    "GW2",
    "x-GW1",
    "aa:bb",
    "GW1-aa:bb",
    "site",
    "fleet",
    "data",
    "sensor7",
    "7",
    "42",
    "",
    "$s",
    "g1",
    "g2",
];

/// A random rule over a small alphabet, so rules overlap a lot. With
/// `groups > 0` most rules start with one of `groups` literal levels `g<k>`,
/// which keeps a large set from allowing nearly everything.
fn random_rule(rng: &mut Rng, groups: usize) -> String {
    const RULE_LEVELS: &[&str] = &[
        "a",
        "b",
        "c",
        "GW1",
        "data",
        "7",
        "+",
        "{cn}",
        "x-{cn}",
        "{client_id}",
        "{cn}-{client_id}",
        "{gateway_code}",
        "",
    ];
    let n = 1 + rng.below(4);
    let mut levels: Vec<String> = Vec::new();
    for i in 0..n {
        if i == 0 && groups > 0 && rng.chance(90) {
            levels.push(format!("g{}", rng.below(groups)));
        } else if i == 0 && rng.chance(5) {
            levels.push("$s".into());
        } else {
            levels.push(rng.pick(RULE_LEVELS).into());
        }
    }
    if rng.chance(35) {
        levels.push("#".into());
    }
    let rule = levels.join("/");
    if rule.is_empty() {
        "a".to_string()
    } else {
        rule
    }
}

/// The structured rules the benchmark uses.
fn bench_rules(count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            if n % 2 == 0 {
                format!("site/{n}/{{cn}}/+/data")
            } else {
                format!("fleet/{{cn}}/sensor{n}/#")
            }
        })
        .collect()
}

/// A topic (or, with `filter`, a filter) derived from one of `rules` so that
/// many cases hit, or random levels so that many miss.
fn random_case(rng: &mut Rng, rules: &[String], subject: &Subject<'_>, filter: bool) -> String {
    let mut out: Vec<String> = Vec::new();
    if rng.chance(60) {
        let rule = &rules[rng.below(rules.len())];
        let rule = substitute(rule, subject).unwrap_or_else(|| rule.clone());
        for level in rule.split('/') {
            match level {
                "+" if filter && rng.chance(50) => out.push("+".into()),
                "+" => out.push(rng.pick(TOPIC_LEVELS).into()),
                "#" if filter && rng.chance(50) => out.push("#".into()),
                "#" => {
                    for _ in 0..rng.below(3) {
                        out.push(rng.pick(TOPIC_LEVELS).into());
                    }
                }
                other => out.push(other.into()),
            }
        }
        // Mutate a level now and then.
        if !out.is_empty() && rng.chance(25) {
            let i = rng.below(out.len());
            out[i] = rng.pick(TOPIC_LEVELS).into();
        }
        if rng.chance(10) {
            out.push(rng.pick(TOPIC_LEVELS).into());
        }
    } else {
        for _ in 0..1 + rng.below(5) {
            out.push(rng.pick(TOPIC_LEVELS).into());
        }
    }
    if filter {
        for level in out.iter_mut() {
            if rng.chance(10) {
                *level = "+".into();
            }
        }
        if rng.chance(20) {
            out.push("#".into());
        }
    }
    out.join("/")
}

fn compare_with_reference(rules: Vec<String>, seed: u64, cases: usize) -> [usize; 2] {
    let mut settings: AclSettings = Config::defaults().acl;
    settings.operational = KindRules {
        publish: rules.clone(),
        subscribe: rules.clone(),
        receive: rules.clone(),
        shared_subscriptions: false,
    };
    let acl = Acl::new(&settings).unwrap();
    let limits = *acl.limits();
    let mut rng = Rng(seed);
    let mut tally = [0, 0];
    for _ in 0..cases {
        let subject = Subject::new(
            Kind::Operational,
            rng.pick(SUBJECT_VALUES),
            rng.pick(SUBJECT_VALUES),
        );
        // Mostly usable values, so that placeholder rules get exercised.
        let subject = if rng.chance(70) {
            Subject::new(
                Kind::Operational,
                rng.pick(&["GW1", "GW2", "x-GW1"]),
                rng.pick(&["aa:bb", "GW1"]),
            )
        } else {
            subject
        };
        let action = ALL[rng.below(3)];
        let topic = random_case(&mut rng, &rules, &subject, action == Action::Subscribe);
        let want = reference_decide(&rules, &subject, action, &topic, &limits);
        let got = acl.decide(&subject, action, &topic);
        assert_eq!(
            got, want,
            "{action} {topic:?} for cn {:?} client_id {:?}",
            subject.cn, subject.client_id
        );
        tally[usize::from(got.is_allowed())] += 1;
    }
    tally
}

#[test]
fn thousand_bench_rules_agree_with_the_reference() {
    let [denied, allowed] = compare_with_reference(bench_rules(1000), 0x5EED_0001, 4000);
    assert!(
        allowed > 400 && denied > 400,
        "allowed {allowed}, denied {denied}: cases should hit both ways"
    );
}

#[test]
fn thousand_random_rules_agree_with_the_reference() {
    let mut rng = Rng(0x5EED_0002);
    let rules: Vec<String> = (0..1000).map(|_| random_rule(&mut rng, 200)).collect();
    let [denied, allowed] = compare_with_reference(rules, 0x5EED_0003, 4000);
    assert!(
        allowed > 400 && denied > 400,
        "allowed {allowed}, denied {denied}: cases should hit both ways"
    );
}

#[test]
fn small_random_rule_sets_agree_with_the_reference() {
    let mut rng = Rng(0x5EED_0004);
    for round in 0..200 {
        let n = 1 + rng.below(6);
        let rules: Vec<String> = (0..n).map(|_| random_rule(&mut rng, 0)).collect();
        compare_with_reference(rules, 0x5EED_1000 + round, 50);
    }
}
