//! MQTT topic names and topic filters: validation and matching, as the MQTT
//! 3.1.1 / 5.0 specifications define them.

use gatehouse_config::AclSettings;

use crate::error::TopicError;

/// Size limits applied to every topic name and topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest topic or filter accepted, in bytes.
    pub max_length: usize,
    /// Most levels (`/`-separated parts) a topic or filter may have.
    pub max_levels: usize,
}

impl Limits {
    /// The protocol's own ceiling: 65,535 bytes, hence at most 32,768 levels.
    pub const MQTT: Limits = Limits {
        max_length: 65_535,
        max_levels: 32_768,
    };

    /// `acl.max_topic_length` and `acl.max_topic_levels`.
    pub fn from_settings(settings: &AclSettings) -> Limits {
        Limits {
            max_length: settings.max_topic_length,
            max_levels: settings.max_topic_levels,
        }
    }
}

impl From<&AclSettings> for Limits {
    fn from(settings: &AclSettings) -> Limits {
        Limits::from_settings(settings)
    }
}

fn check_length(s: &str, limits: &Limits) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > limits.max_length {
        return Err(TopicError::TooLong {
            len: s.len(),
            max: limits.max_length,
        });
    }
    Ok(())
}

fn check_levels(levels: usize, limits: &Limits) -> Result<(), TopicError> {
    if levels > limits.max_levels {
        return Err(TopicError::TooManyLevels {
            levels,
            max: limits.max_levels,
        });
    }
    Ok(())
}

/// Checks a PUBLISH topic name: non-empty, within `limits`, no NUL, no
/// wildcard characters. Empty levels (`a//b`, `/a`) are legal MQTT.
///
/// ```
/// use gatehouse_acl::{Limits, TopicError, validate_topic};
/// assert!(validate_topic("telemetry/GW1-EEFF/data", &Limits::MQTT).is_ok());
/// assert_eq!(validate_topic("telemetry/+/data", &Limits::MQTT), Err(TopicError::WildcardInTopic));
/// ```
pub fn validate_topic(topic: &str, limits: &Limits) -> Result<(), TopicError> {
    check_length(topic, limits)?;
    let mut levels = 1;
    let mut wildcard = false;
    for &b in topic.as_bytes() {
        match b {
            b'/' => levels += 1,
            0 => return Err(TopicError::Nul),
            b'+' | b'#' => wildcard = true,
            _ => {}
        }
    }
    if wildcard {
        return Err(TopicError::WildcardInTopic);
    }
    check_levels(levels, limits)
}

/// Checks a SUBSCRIBE topic filter: like [`validate_topic`], but `+` is
/// allowed as a whole level and `#` as the whole last level.
///
/// ```
/// use gatehouse_acl::{Limits, TopicError, validate_filter};
/// assert!(validate_filter("telemetry/+/#", &Limits::MQTT).is_ok());
/// assert_eq!(validate_filter("telemetry/#/x", &Limits::MQTT), Err(TopicError::MisplacedHash));
/// assert_eq!(validate_filter("telemetry/a+", &Limits::MQTT), Err(TopicError::MisplacedPlus));
/// ```
pub fn validate_filter(filter: &str, limits: &Limits) -> Result<(), TopicError> {
    check_length(filter, limits)?;
    let bytes = filter.as_bytes();
    let mut levels = 1;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => levels += 1,
            0 => return Err(TopicError::Nul),
            b'+' => {
                let starts = i == 0 || bytes[i - 1] == b'/';
                let ends = i + 1 == bytes.len() || bytes[i + 1] == b'/';
                if !(starts && ends) {
                    return Err(TopicError::MisplacedPlus);
                }
            }
            b'#' => {
                let starts = i == 0 || bytes[i - 1] == b'/';
                if !(starts && i + 1 == bytes.len()) {
                    return Err(TopicError::MisplacedHash);
                }
            }
            _ => {}
        }
    }
    check_levels(levels, limits)
}

/// [`validate_topic`] for raw bytes off the wire: invalid UTF-8 is refused.
pub fn validate_topic_bytes<'a>(topic: &'a [u8], limits: &Limits) -> Result<&'a str, TopicError> {
    let s = utf8(topic)?;
    validate_topic(s, limits).map(|()| s)
}

/// [`validate_filter`] for raw bytes off the wire: invalid UTF-8 is refused.
pub fn validate_filter_bytes<'a>(filter: &'a [u8], limits: &Limits) -> Result<&'a str, TopicError> {
    let s = utf8(filter)?;
    validate_filter(s, limits).map(|()| s)
}

pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, TopicError> {
    std::str::from_utf8(bytes).map_err(|e| TopicError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// Splits off the first level: `("a", Some("b/c"))` for `"a/b/c"`, `("c", None)` for `"c"`.
#[inline]
pub(crate) fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (s, None),
    }
}

/// Whether the topic name `topic` is matched by the topic filter `filter`,
/// with the specification's semantics: `+` matches exactly one level (also an
/// empty one), `#` matches the parent level and any number of levels below
/// it (`sport/#` matches `sport`), and a filter whose first level is a
/// wildcard never matches a topic whose first level starts with `$`.
///
/// Both arguments are expected to be valid (see [`validate_topic`],
/// [`validate_filter`]); on invalid input the answer is unspecified but the
/// function does not panic.
///
/// ```
/// use gatehouse_acl::topic_matches_filter;
/// assert!(topic_matches_filter("sport/tennis/player1", "sport/#"));
/// assert!(topic_matches_filter("sport", "sport/#"));
/// assert!(topic_matches_filter("sport/", "sport/+"));
/// assert!(!topic_matches_filter("$SYS/uptime", "#"));
/// assert!(topic_matches_filter("$SYS/uptime", "$SYS/#"));
/// ```
pub fn topic_matches_filter(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = Some(topic);
    let mut f = Some(filter);
    loop {
        match (t, f) {
            (None, None) => return true,
            (_, Some("#")) => return true,
            (None, Some(fs)) => {
                // Only "x/#" may outlive the topic ("#" matches the parent level).
                return fs == "#";
            }
            (Some(_), None) => return false,
            (Some(ts), Some(fs)) => {
                let (tl, tr) = split_level(ts);
                let (fl, fr) = split_level(fs);
                if fl == "#" {
                    return true;
                }
                if fl != "+" && fl != tl {
                    return false;
                }
                t = tr;
                f = fr;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_length: 32,
        max_levels: 4,
    };

    #[test]
    fn limits_come_from_acl_settings() {
        let acl = gatehouse_config::Config::defaults().acl;
        let limits = Limits::from(&acl);
        assert_eq!(limits.max_length, acl.max_topic_length);
        assert_eq!(limits.max_levels, acl.max_topic_levels);
    }

    #[test]
    fn valid_topics_are_accepted() {
        for t in [
            "a", "a/b/c/d", "/", "a//b", "/a", "a/", "$SYS/x", "dev-ü/x", " ",
        ] {
            assert_eq!(validate_topic(t, &L), Ok(()), "{t:?}");
        }
        // Exactly at the limits.
        assert_eq!(validate_topic(&"x".repeat(32), &L), Ok(()));
        assert_eq!(validate_topic("a/b/c/d", &L), Ok(()));
    }

    #[test]
    fn empty_topic_and_filter_are_refused() {
        assert_eq!(validate_topic("", &L), Err(TopicError::Empty));
        assert_eq!(validate_filter("", &L), Err(TopicError::Empty));
    }

    #[test]
    fn too_long_topic_and_filter_are_refused_with_length() {
        let long = "x".repeat(33);
        let want = Err(TopicError::TooLong { len: 33, max: 32 });
        assert_eq!(validate_topic(&long, &L), want);
        assert_eq!(validate_filter(&long, &L), want);
    }

    #[test]
    fn too_many_levels_are_refused_with_count() {
        let want = Err(TopicError::TooManyLevels { levels: 5, max: 4 });
        assert_eq!(validate_topic("a/b/c/d/e", &L), want);
        assert_eq!(validate_filter("a/b/c/d/#", &L), want);
        assert_eq!(validate_topic("////", &L), want);
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(validate_topic("a/\0/b", &L), Err(TopicError::Nul));
        assert_eq!(validate_filter("a/\0", &L), Err(TopicError::Nul));
    }

    #[test]
    fn wildcards_in_a_publish_topic_are_refused() {
        for t in ["#", "+", "a/#", "a/+/b", "a+", "a#b"] {
            assert_eq!(
                validate_topic(t, &L),
                Err(TopicError::WildcardInTopic),
                "{t:?}"
            );
        }
    }

    #[test]
    fn valid_filters_are_accepted() {
        for f in [
            "#", "+", "+/+", "a/#", "a/+/b", "+/#", "/#", "a//+", "$SYS/#", "a/b/c/d",
        ] {
            assert_eq!(validate_filter(f, &L), Ok(()), "{f:?}");
        }
    }

    #[test]
    fn misplaced_hash_is_refused() {
        for f in ["#/a", "a/#/b", "a#", "a/b#", "#a", "a/#b", "##"] {
            assert_eq!(
                validate_filter(f, &L),
                Err(TopicError::MisplacedHash),
                "{f:?}"
            );
        }
    }

    #[test]
    fn misplaced_plus_is_refused() {
        for f in ["+a", "a+", "a/+b", "a/b+/c", "++"] {
            assert_eq!(
                validate_filter(f, &L),
                Err(TopicError::MisplacedPlus),
                "{f:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_bytes_are_refused() {
        let bad = b"a/\xff/b";
        assert_eq!(
            validate_topic_bytes(bad, &L),
            Err(TopicError::InvalidUtf8 { valid_up_to: 2 })
        );
        assert_eq!(
            validate_filter_bytes(b"\xc3(", &L),
            Err(TopicError::InvalidUtf8 { valid_up_to: 0 })
        );
    }

    #[test]
    fn byte_variants_return_the_str_and_still_validate() {
        assert_eq!(validate_topic_bytes(b"a/b", &L), Ok("a/b"));
        assert_eq!(validate_filter_bytes(b"a/+", &L), Ok("a/+"));
        assert_eq!(
            validate_topic_bytes(b"a/+", &L),
            Err(TopicError::WildcardInTopic)
        );
        assert_eq!(validate_filter_bytes(b"", &L), Err(TopicError::Empty));
    }

    #[test]
    fn error_messages_name_the_setting() {
        let msg = TopicError::TooLong { len: 33, max: 32 }.to_string();
        assert!(msg.contains("33") && msg.contains("32") && msg.contains("acl.max_topic_length"));
        let msg = TopicError::TooManyLevels { levels: 5, max: 4 }.to_string();
        assert!(msg.contains("acl.max_topic_levels"));
    }

    #[test]
    fn matching_table() {
        let table: &[(&str, &str, bool)] = &[
            ("sport/tennis/player1", "sport/tennis/player1", true),
            ("sport/tennis/player1", "sport/tennis/player2", false),
            ("sport/tennis/player1", "sport/#", true),
            (
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/#",
                true,
            ),
            ("sport/tennis/player1", "sport/tennis/player1/#", true),
            ("sport", "sport/#", true),
            ("sports", "sport/#", false),
            ("sport/tennis", "sport/+", true),
            ("sport/tennis/x", "sport/+", false),
            ("sport", "sport/+", false),
            ("sport/", "sport/+", true),
            ("/finance", "+/+", true),
            ("/finance", "/+", true),
            ("/finance", "+", false),
            ("a", "#", true),
            ("/", "#", true),
            ("a", "+", true),
            ("a/b", "+/+/#", true),
            ("a", "+/+/#", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a//b", "a/+/b", true),
            ("a//b", "a//b", true),
            // $-topics: not reachable through a leading wildcard.
            ("$SYS/monitor/Clients", "#", false),
            ("$SYS/monitor/Clients", "+/monitor/Clients", false),
            ("$SYS/monitor/Clients", "$SYS/#", true),
            ("$SYS/monitor/Clients", "$SYS/monitor/+", true),
            ("$SYS", "$SYS/#", true),
            ("$foo", "+", false),
            ("a/$SYS", "a/+", true),
            ("a/$SYS", "a/#", true),
        ];
        for &(topic, filter, want) in table {
            assert_eq!(
                topic_matches_filter(topic, filter),
                want,
                "{topic:?} vs {filter:?}"
            );
        }
    }

    #[test]
    fn split_level_splits_once() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("a"), ("a", None));
        assert_eq!(split_level("/"), ("", Some("")));
        assert_eq!(split_level("a/"), ("a", Some("")));
    }
}
