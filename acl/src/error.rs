//! The crate's error types: why a topic or filter is malformed, why a rule
//! cannot be compiled, why a client id is refused.

use gatehouse_config::rule::RuleSyntaxError;
use thiserror::Error;

/// Why a PUBLISH topic name or a SUBSCRIBE topic filter is not acceptable.
///
/// Small and `Copy`: it travels inside a [`Decision`](crate::Decision) on the
/// hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("empty topic (MQTT requires at least one character)")]
    Empty,
    #[error("topic is {len} bytes long; the limit is {max} (acl.max_topic_length)")]
    TooLong { len: usize, max: usize },
    #[error("topic has {levels} levels; the limit is {max} (acl.max_topic_levels)")]
    TooManyLevels { levels: usize, max: usize },
    #[error("topic contains a NUL character")]
    Nul,
    #[error("topic is not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("a PUBLISH topic name may not contain the wildcards `+` or `#`")]
    WildcardInTopic,
    #[error("`#` must be a whole level and the last one (as in \"a/b/#\")")]
    MisplacedHash,
    #[error("`+` must be a whole level (as in \"a/+/c\")")]
    MisplacedPlus,
}

/// Why an ACL rule from `[acl]` could not be compiled. `gatehouse-config`
/// already refuses these, so seeing one means the settings were built by
/// hand.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    #[error("{key}: rule {rule:?}: {source}")]
    Syntax {
        key: String,
        rule: String,
        #[source]
        source: RuleSyntaxError,
    },
    #[error(
        "{key}: rule {rule:?} has {levels} levels but acl.max_topic_levels is {max}, so it could never match"
    )]
    TooManyLevels {
        key: String,
        rule: String,
        levels: usize,
        max: usize,
    },
}

/// Why a CONNECT's client id does not fit the certificate it came with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientIdError {
    #[error(
        "client id {client_id:?} is empty or contains '/', '+', '#', '$' or NUL; such an id would \
         change the meaning of topic rules, so it is refused whatever [identity] allows"
    )]
    Unsafe { client_id: String },
    #[error(
        "client id {client_id:?} must equal the certificate CN {cn:?} (identity.operational_client_id = \"cn\")"
    )]
    NotCn { client_id: String, cn: String },
    #[error(
        "bootstrap client id {client_id:?} is not a MAC address like aa:bb:cc:dd:ee:ff (identity.bootstrap_client_id = \"mac\")"
    )]
    NotMac { client_id: String },
}
