//! Rules compiled into a trie of levels, one trie per kind × action.
//!
//! A rule is an MQTT topic filter whose levels may contain the placeholders
//! `{cn}`, `{client_id}` and `{gateway_code}`. Each trie node has
//!
//! * literal children in an `FxHashMap` keyed by the level text,
//! * one `+` child,
//! * a `#` terminal (the lowest rule index ending in `#` there),
//! * an end terminal (the lowest rule index ending exactly there),
//! * a short list of template children for levels with placeholders,
//!   compared against a topic level using the subject's values in place,
//!   without building the substituted string.
//!
//! A lookup walks the levels of the topic (or filter) through the trie and
//! returns the lowest index of a rule that matches (or covers) it. Nothing is
//! allocated during a lookup.

use rustc_hash::FxHashMap;

use gatehouse_config::rule::{self as config_rule, Placeholder, RuleLevel, RulePiece};

use crate::error::RuleError;
use crate::topic::split_level;

/// The subject's placeholder values, `None` when a value may not be used
/// (empty, or contains `/`, `+`, `#` or NUL): rules using it then match
/// nothing, so a crafted CN or client id can never widen a rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Values<'a> {
    pub(crate) cn: Option<&'a str>,
    pub(crate) client_id: Option<&'a str>,
}

impl<'a> Values<'a> {
    pub(crate) fn new(cn: &'a str, client_id: &'a str) -> Values<'a> {
        Values {
            cn: usable(cn).then_some(cn),
            client_id: usable(client_id).then_some(client_id),
        }
    }
}

/// Whether `value` may fill a placeholder: the same rule as for client ids
/// ([`topic_safe`](crate::topic_safe)).
pub(crate) fn usable(value: &str) -> bool {
    crate::policy::topic_safe(value)
}

/// One piece of a templated level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Box<str>),
    /// `{cn}` or `{gateway_code}` (the operational CN is the gateway code).
    Cn,
    ClientId,
}

/// A level containing at least one placeholder, e.g. `{cn}` or `dev-{cn}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    pieces: Box<[Piece]>,
}

impl Template {
    /// Whether `level` equals this template with the subject's values filled
    /// in. Never allocates.
    #[inline]
    fn matches(&self, level: &str, values: &Values<'_>) -> bool {
        let mut rest = level;
        for piece in self.pieces.iter() {
            let text = match piece {
                Piece::Lit(s) => s,
                Piece::Cn => match values.cn {
                    Some(v) => v,
                    None => return false,
                },
                Piece::ClientId => match values.client_id {
                    Some(v) => v,
                    None => return false,
                },
            };
            match rest.strip_prefix(text) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

/// One level of a parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    Plus,
    Hash,
    Template(Template),
}

/// What a parsed rule needs from the subject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Uses {
    pub(crate) cn: bool,
    pub(crate) client_id: bool,
}

/// Parses one rule (with `gatehouse-config`'s parser, the one owner of the
/// rule syntax) and lowers it to trie levels. `key` names it in errors
/// (`acl.operational.publish[0]`).
fn parse_rule(rule: &str, key: &str, max_levels: usize) -> Result<(Vec<Level>, Uses), RuleError> {
    let parsed = config_rule::parse_rule(rule).map_err(|source| RuleError::Syntax {
        key: key.to_string(),
        rule: rule.to_string(),
        source,
    })?;
    if config_rule::significant_levels(&parsed) > max_levels {
        return Err(RuleError::TooManyLevels {
            key: key.to_string(),
            rule: rule.to_string(),
            levels: parsed.len(),
            max: max_levels,
        });
    }
    let mut uses = Uses::default();
    let levels = parsed
        .into_iter()
        .map(|level| match level {
            RuleLevel::Literal(text) => Level::Literal(text.into()),
            RuleLevel::Plus => Level::Plus,
            RuleLevel::Hash => Level::Hash,
            RuleLevel::Template(pieces) => Level::Template(Template {
                pieces: pieces
                    .into_iter()
                    .map(|piece| match piece {
                        RulePiece::Literal(text) => Piece::Lit(text.into()),
                        RulePiece::Placeholder(Placeholder::Cn | Placeholder::GatewayCode) => {
                            uses.cn = true;
                            Piece::Cn
                        }
                        RulePiece::Placeholder(Placeholder::ClientId) => {
                            uses.client_id = true;
                            Piece::ClientId
                        }
                    })
                    .collect(),
            }),
        })
        .collect();
    Ok((levels, uses))
}

type NodeId = u32;

#[derive(Debug, Default)]
struct Node {
    literals: FxHashMap<Box<str>, NodeId>,
    plus: Option<NodeId>,
    templates: Vec<(Template, NodeId)>,
    /// Lowest rule index whose last level is this node.
    end: Option<usize>,
    /// Lowest rule index ending in `#` right below this node.
    hash: Option<usize>,
    /// Lowest rule index anywhere at or below this node (for pruning).
    min_rule: usize,
}

/// The compiled rules of one kind × action.
#[derive(Debug)]
pub(crate) struct Trie {
    nodes: Vec<Node>,
}

const ROOT: usize = 0;

fn lower(slot: &mut Option<usize>, index: usize) {
    *slot = Some(slot.map_or(index, |old| old.min(index)));
}

impl Trie {
    /// Compiles `rules`; `key` is the config key of the list
    /// (`acl.operational.publish`), used in errors.
    pub(crate) fn compile(
        rules: &[String],
        key: &str,
        max_levels: usize,
    ) -> Result<(Trie, Uses), RuleError> {
        let mut trie = Trie {
            nodes: vec![Node {
                min_rule: usize::MAX,
                ..Node::default()
            }],
        };
        let mut uses = Uses::default();
        for (index, rule) in rules.iter().enumerate() {
            let (levels, u) = parse_rule(rule, &format!("{key}[{index}]"), max_levels)?;
            uses.cn |= u.cn;
            uses.client_id |= u.client_id;
            trie.insert(index, levels);
        }
        Ok((trie, uses))
    }

    fn new_node(&mut self) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).expect("fewer than 2^32 trie nodes");
        self.nodes.push(Node {
            min_rule: usize::MAX,
            ..Node::default()
        });
        id
    }

    fn insert(&mut self, index: usize, levels: Vec<Level>) {
        let mut at = ROOT;
        for level in levels {
            let node = &mut self.nodes[at];
            node.min_rule = node.min_rule.min(index);
            let next = match level {
                Level::Hash => {
                    lower(&mut node.hash, index);
                    return;
                }
                Level::Plus => match node.plus {
                    Some(id) => id,
                    None => {
                        let id = self.new_node();
                        self.nodes[at].plus = Some(id);
                        id
                    }
                },
                Level::Literal(text) => match node.literals.get(&text) {
                    Some(&id) => id,
                    None => {
                        let id = self.new_node();
                        self.nodes[at].literals.insert(text, id);
                        id
                    }
                },
                Level::Template(t) => match node.templates.iter().find(|(have, _)| *have == t) {
                    Some(&(_, id)) => id,
                    None => {
                        let id = self.new_node();
                        self.nodes[at].templates.push((t, id));
                        id
                    }
                },
            };
            at = next as usize;
        }
        let node = &mut self.nodes[at];
        node.min_rule = node.min_rule.min(index);
        lower(&mut node.end, index);
    }

    /// The lowest index of a rule that covers `filter` (for a topic name:
    /// matches it), or `None`.
    ///
    /// A rule covers a filter when every topic the filter can match is
    /// matched by the rule. Decided level by level: a rule level `#` covers
    /// the rest; a filter level `#` is covered only by `#`; a filter level
    /// `+` only by `+` (or `#`); a literal level by an equal literal, an equal
    /// template, or `+`. Exact, except that filter `#` is covered only by
    /// rule `#` (never by the equivalent `+/#`) — a conservative choice.
    ///
    /// A first level starting with `$` is reached only through a literal
    /// first rule level: never through `+`, `#`, or a placeholder.
    pub(crate) fn find(&self, filter: &str, values: &Values<'_>) -> Option<usize> {
        let mut best = usize::MAX;
        if filter.starts_with('$') {
            let (first, rest) = split_level(filter);
            if let Some(&child) = self.nodes[ROOT].literals.get(first) {
                self.walk(child as usize, rest, values, &mut best);
            }
        } else {
            self.walk(ROOT, Some(filter), values, &mut best);
        }
        (best != usize::MAX).then_some(best)
    }

    fn walk(&self, at: usize, rest: Option<&str>, values: &Values<'_>, best: &mut usize) {
        let node = &self.nodes[at];
        if node.min_rule >= *best {
            return;
        }
        if let Some(r) = node.hash {
            *best = (*best).min(r);
        }
        let Some(rest) = rest else {
            if let Some(r) = node.end {
                *best = (*best).min(r);
            }
            return;
        };
        let (level, next) = split_level(rest);
        if level == "#" {
            return;
        }
        if let Some(child) = node.plus {
            self.walk(child as usize, next, values, best);
        }
        if level == "+" {
            return;
        }
        if !node.literals.is_empty() {
            if let Some(&child) = node.literals.get(level) {
                self.walk(child as usize, next, values, best);
            }
        }
        for (template, child) in &node.templates {
            if template.matches(level, values) {
                self.walk(*child as usize, next, values, best);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::rule::RuleSyntaxError;

    fn trie(rules: &[&str]) -> Trie {
        let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
        Trie::compile(&rules, "acl.test.publish", 16).unwrap().0
    }

    const V: Values<'static> = Values {
        cn: Some("GW1-EEFF"),
        client_id: Some("aa:bb:cc:dd:ee:ff"),
    };

    #[test]
    fn usable_refuses_empty_and_wildcards() {
        assert!(usable("GW1-EEFF"));
        // The client-id charset (`topic_safe`): `$` is refused too.
        for bad in ["", "a/b", "+", "#", "a+", "x#", "a\0", "$x", "GW$1"] {
            assert!(!usable(bad), "{bad:?}");
        }
        let v = Values::new("a/#", "+");
        assert_eq!((v.cn, v.client_id), (None, None));
    }

    #[test]
    fn templates_parse_into_pieces_and_gateway_code_is_cn() {
        let (levels, uses) = parse_rule("dev-{cn}-{client_id}x/{gateway_code}", "k", 16).unwrap();
        assert_eq!(
            uses,
            Uses {
                cn: true,
                client_id: true
            }
        );
        assert_eq!(
            levels,
            vec![
                Level::Template(Template {
                    pieces: vec![
                        Piece::Lit("dev-".into()),
                        Piece::Cn,
                        Piece::Lit("-".into()),
                        Piece::ClientId,
                        Piece::Lit("x".into())
                    ]
                    .into()
                }),
                Level::Template(Template {
                    pieces: vec![Piece::Cn].into()
                }),
            ]
        );
    }

    #[test]
    fn template_matches_whole_level_only() {
        let (levels, _) = parse_rule("dev-{cn}", "k", 16).unwrap();
        let [Level::Template(t)] = &levels[..] else {
            panic!("template expected");
        };
        assert!(t.matches("dev-GW1-EEFF", &V));
        assert!(!t.matches("dev-GW1-EEFFx", &V));
        assert!(!t.matches("dev-GW1", &V));
        assert!(!t.matches("GW1-EEFF", &V));
        let none = Values {
            cn: None,
            client_id: None,
        };
        assert!(!t.matches("dev-", &none));
    }

    #[test]
    fn bad_rules_are_errors_not_panics() {
        let compile = |r: &str| {
            Trie::compile(&[r.to_string()], "acl.k.publish", 4)
                .map(|_| ())
                .unwrap_err()
        };
        // The syntax itself is gatehouse-config's (tested there); a bad rule
        // built by hand surfaces as a Syntax error naming key and rule.
        for (rule, want) in [
            ("", RuleSyntaxError::Empty),
            ("a/\0", RuleSyntaxError::Nul),
            ("#/a", RuleSyntaxError::MisplacedHash),
            ("a+", RuleSyntaxError::MisplacedPlus),
            ("a/{cn", RuleSyntaxError::UnclosedPlaceholder),
            ("a/cn}", RuleSyntaxError::StrayBrace),
        ] {
            match compile(rule) {
                RuleError::Syntax { source, .. } => assert_eq!(source, want, "{rule:?}"),
                other => panic!("{rule:?}: {other:?}"),
            }
        }
        assert!(matches!(
            compile("a/b/c/d/e"),
            RuleError::TooManyLevels {
                levels: 5,
                max: 4,
                ..
            }
        ));
        // A trailing `#` does not count against the limit.
        assert!(Trie::compile(&["a/b/c/d/#".to_string()], "k", 4).is_ok());
        let msg = compile("a/{x}").to_string();
        assert!(
            msg.contains("acl.k.publish[0]") && msg.contains("{x}"),
            "{msg}"
        );
    }

    #[test]
    fn lowest_matching_rule_index_wins() {
        let t = trie(&["x/#", "a/+", "a/#", "a/b"]);
        assert_eq!(t.find("a/b", &V), Some(1));
        assert_eq!(t.find("a", &V), Some(2));
        assert_eq!(t.find("a/b/c", &V), Some(2));
        assert_eq!(t.find("b", &V), None);
    }

    #[test]
    fn identical_templates_share_a_node() {
        let t = trie(&["f/{cn}/s1", "f/{gateway_code}/s2", "f/{cn}/s3"]);
        // root, f, {cn}, s1, s2, s3
        assert_eq!(t.nodes.len(), 6);
        assert_eq!(t.find("f/GW1-EEFF/s3", &V), Some(2));
    }

    #[test]
    fn dollar_first_level_only_through_a_literal() {
        let t = trie(&["#", "+/x", "{cn}/x", "$SYS/broker/+"]);
        let dollar = Values {
            cn: Some("$SYS"),
            client_id: None,
        };
        assert_eq!(t.find("$SYS/x", &dollar), None);
        assert_eq!(t.find("$SYS/broker/uptime", &V), Some(3));
        assert_eq!(t.find("a/x", &V), Some(0));
    }
}
