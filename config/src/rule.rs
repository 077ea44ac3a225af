//! The syntax of an `[acl]` rule: an MQTT topic filter whose levels may hold
//! the placeholders `{cn}`, `{client_id}` and `{gateway_code}`.
//!
//! This is the one parser of that syntax: config validation uses it to
//! refuse bad rules with file and line, and `gatehouse-acl` compiles the
//! levels it returns.

/// A placeholder inside a rule level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `{cn}`: the certificate's subject CN.
    Cn,
    /// `{client_id}`: the MQTT client id.
    ClientId,
    /// `{gateway_code}`: the gateway code, which is the operational CN.
    GatewayCode,
}

/// One piece of a level that contains placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RulePiece {
    Literal(String),
    Placeholder(Placeholder),
}

/// One level of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleLevel {
    /// Plain text, no wildcard or placeholder.
    Literal(String),
    /// `+`
    Plus,
    /// `#` (always the last level)
    Hash,
    /// Text with at least one placeholder, e.g. `{cn}` or `dev-{cn}`.
    /// Adjacent literal text is merged into one piece.
    Template(Vec<RulePiece>),
}

/// Why a rule is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSyntaxError {
    #[error("empty rule; write a topic filter such as \"telemetry/{{cn}}/#\"")]
    Empty,
    #[error("contains a NUL character")]
    Nul,
    #[error("`#` must be a whole level and the last one")]
    MisplacedHash,
    #[error("`+` must be a whole level")]
    MisplacedPlus,
    #[error("unknown placeholder {{{name}}}; use {{cn}}, {{client_id}} or {{gateway_code}}")]
    UnknownPlaceholder { name: String },
    #[error("unclosed `{{`; placeholders are {{cn}}, {{client_id}}, {{gateway_code}}")]
    UnclosedPlaceholder,
    #[error("stray `}}`")]
    StrayBrace,
}

/// Parses a rule into its levels.
pub fn parse_rule(rule: &str) -> Result<Vec<RuleLevel>, RuleSyntaxError> {
    if rule.is_empty() {
        return Err(RuleSyntaxError::Empty);
    }
    if rule.contains('\0') {
        return Err(RuleSyntaxError::Nul);
    }
    let count = rule.split('/').count();
    rule.split('/')
        .enumerate()
        .map(|(i, text)| match text {
            "#" if i + 1 == count => Ok(RuleLevel::Hash),
            "+" => Ok(RuleLevel::Plus),
            _ if text.contains('#') => Err(RuleSyntaxError::MisplacedHash),
            _ if text.contains('+') => Err(RuleSyntaxError::MisplacedPlus),
            _ => parse_level(text),
        })
        .collect()
}

/// Number of levels a rule needs a topic to have (a trailing `#` also
/// matches the parent level, so it does not count).
pub fn significant_levels(levels: &[RuleLevel]) -> usize {
    levels.len() - usize::from(levels.last() == Some(&RuleLevel::Hash))
}

fn parse_level(text: &str) -> Result<RuleLevel, RuleSyntaxError> {
    if !text.contains('{') {
        if text.contains('}') {
            return Err(RuleSyntaxError::StrayBrace);
        }
        return Ok(RuleLevel::Literal(text.to_string()));
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        push_literal(&mut pieces, &rest[..open])?;
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or(RuleSyntaxError::UnclosedPlaceholder)?;
        let placeholder = match &after[..close] {
            "cn" => Placeholder::Cn,
            "client_id" => Placeholder::ClientId,
            "gateway_code" => Placeholder::GatewayCode,
            name => {
                return Err(RuleSyntaxError::UnknownPlaceholder {
                    name: name.to_string(),
                });
            }
        };
        pieces.push(RulePiece::Placeholder(placeholder));
        rest = &after[close + 1..];
    }
    push_literal(&mut pieces, rest)?;
    Ok(RuleLevel::Template(pieces))
}

fn push_literal(pieces: &mut Vec<RulePiece>, text: &str) -> Result<(), RuleSyntaxError> {
    if text.contains('}') {
        return Err(RuleSyntaxError::StrayBrace);
    }
    if !text.is_empty() {
        pieces.push(RulePiece::Literal(text.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RuleLevel::*;

    #[test]
    fn parses_levels_and_placeholders() {
        assert_eq!(
            parse_rule("telemetry/{cn}/#").unwrap(),
            vec![
                Literal("telemetry".into()),
                Template(vec![RulePiece::Placeholder(Placeholder::Cn)]),
                Hash
            ]
        );
        assert_eq!(
            parse_rule("dev-{client_id}-x/+").unwrap(),
            vec![
                Template(vec![
                    RulePiece::Literal("dev-".into()),
                    RulePiece::Placeholder(Placeholder::ClientId),
                    RulePiece::Literal("-x".into())
                ]),
                Plus
            ]
        );
        assert_eq!(
            parse_rule("{gateway_code}").unwrap(),
            vec![Template(vec![RulePiece::Placeholder(
                Placeholder::GatewayCode
            )])]
        );
    }

    #[test]
    fn refuses_every_malformed_rule() {
        use RuleSyntaxError as E;
        assert_eq!(parse_rule(""), Err(E::Empty));
        assert_eq!(parse_rule("a/\0"), Err(E::Nul));
        assert_eq!(parse_rule("a/#/b"), Err(E::MisplacedHash));
        assert_eq!(parse_rule("#/a"), Err(E::MisplacedHash));
        assert_eq!(parse_rule("a/b#"), Err(E::MisplacedHash));
        assert_eq!(parse_rule("a/b+"), Err(E::MisplacedPlus));
        assert_eq!(
            parse_rule("a/{nope}"),
            Err(E::UnknownPlaceholder {
                name: "nope".into()
            })
        );
        assert_eq!(parse_rule("a/{cn"), Err(E::UnclosedPlaceholder));
        assert_eq!(parse_rule("a/cn}"), Err(E::StrayBrace));
        assert_eq!(parse_rule("a/}{cn}"), Err(E::StrayBrace));
        assert_eq!(parse_rule("a/{cn}}"), Err(E::StrayBrace));
    }

    #[test]
    fn trailing_hash_does_not_count_as_a_level() {
        assert_eq!(significant_levels(&parse_rule("a/b/#").unwrap()), 2);
        assert_eq!(significant_levels(&parse_rule("a/+/c").unwrap()), 3);
        assert_eq!(significant_levels(&parse_rule("#").unwrap()), 0);
    }
}
