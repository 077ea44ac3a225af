//! Client-id policy: which MQTT client id a certificate may connect with.

use gatehouse_auth::Kind;
use gatehouse_config::{BootstrapClientId, IdentitySettings, OperationalClientId};

use crate::error::ClientIdError;

/// `identity.operational_client_id` and `identity.bootstrap_client_id`.
///
/// ```
/// use gatehouse_acl::{ClientIdPolicy, Kind};
/// let policy = ClientIdPolicy::new(&gatehouse_config::Config::defaults().identity);
/// assert!(policy.check(Kind::Operational, "GW1-EEFF", "GW1-EEFF").is_ok());
/// assert!(policy.check(Kind::Bootstrap, "bootstrap", "aa:bb:cc:dd:ee:ff").is_ok());
/// assert!(policy.check(Kind::Bootstrap, "bootstrap", "gw-1").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdPolicy {
    operational: OperationalClientId,
    bootstrap: BootstrapClientId,
}

impl ClientIdPolicy {
    pub fn new(settings: &IdentitySettings) -> ClientIdPolicy {
        ClientIdPolicy {
            operational: settings.operational_client_id,
            bootstrap: settings.bootstrap_client_id,
        }
    }

    /// Checks the CONNECT client id against the certificate's kind and CN.
    /// Whatever the settings, a client id must be [`topic_safe`].
    pub fn check(&self, kind: Kind, cn: &str, client_id: &str) -> Result<(), ClientIdError> {
        if !topic_safe(client_id) {
            return Err(ClientIdError::Unsafe {
                client_id: client_id.to_string(),
            });
        }
        match kind {
            Kind::Operational => match self.operational {
                OperationalClientId::MustEqualCn if client_id != cn => Err(ClientIdError::NotCn {
                    client_id: client_id.to_string(),
                    cn: cn.to_string(),
                }),
                OperationalClientId::MustEqualCn | OperationalClientId::Any => Ok(()),
            },
            Kind::Bootstrap => match self.bootstrap {
                BootstrapClientId::MustBeMac if !is_mac(client_id) => Err(ClientIdError::NotMac {
                    client_id: client_id.to_string(),
                }),
                BootstrapClientId::MustBeMac | BootstrapClientId::Any => Ok(()),
            },
        }
    }
}

/// The one charset rule for values that end up inside topics: a client id
/// (whatever `[identity]` allows) and a `{cn}` / `{client_id}` placeholder
/// value. Non-empty, and none of `/` (it would add levels), `+` `#` (it would
/// turn a rule into a wildcard), `$` (a leading one makes a `$SYS`-style
/// topic) or NUL.
///
/// ```
/// use gatehouse_acl::topic_safe;
/// assert!(topic_safe("GW0001-EEFF"));
/// assert!(topic_safe("aa:bb:cc:dd:ee:ff"));
/// for bad in ["", "a+b", "a#", "a/b", "$SYS", "a\0b"] {
///     assert!(!topic_safe(bad), "{bad:?}");
/// }
/// ```
pub fn topic_safe(value: &str) -> bool {
    !value.is_empty()
        && !value
            .bytes()
            .any(|b| matches!(b, b'/' | b'+' | b'#' | b'$' | 0))
}

/// Whether `s` is a MAC address written `aa:bb:cc:dd:ee:ff`: six groups of
/// two hex digits (either case) separated by colons, nothing else.
///
/// ```
/// use gatehouse_acl::is_mac;
/// assert!(is_mac("aa:bb:cc:dd:ee:ff"));
/// assert!(is_mac("AA:BB:CC:00:11:9f"));
/// assert!(!is_mac("aa-bb-cc-dd-ee-ff"));
/// ```
pub fn is_mac(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use gatehouse_config::Config;

    use super::*;

    fn policy(op: OperationalClientId, boot: BootstrapClientId) -> ClientIdPolicy {
        let mut identity = Config::defaults().identity;
        identity.operational_client_id = op;
        identity.bootstrap_client_id = boot;
        ClientIdPolicy::new(&identity)
    }

    #[test]
    fn macs_in_either_case_are_macs() {
        for ok in [
            "aa:bb:cc:dd:ee:ff",
            "AA:BB:CC:DD:EE:FF",
            "00:1a:2B:3c:4D:5e",
            "09:00:00:00:00:00",
        ] {
            assert!(is_mac(ok), "{ok:?}");
        }
    }

    #[test]
    fn non_macs_are_refused() {
        for bad in [
            "",
            "aa-bb-cc-dd-ee-ff",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:ff ",
            " aa:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:fg",
            "aabbccddeeff",
            "aa:bb:cc:dd:eeff:",
            "a:bb:cc:dd:ee:fff",
            "aa:bb:cc:dd:ee:f",
            "aa::bb:cc:dd:ee:f",
            "aa:bb:cc:dd:ee:ff/#",
            "+",
            "ａa:bb:cc:dd:ee:f", // full-width letter, 17+ bytes
        ] {
            assert!(!is_mac(bad), "{bad:?}");
        }
    }

    #[test]
    fn operational_client_id_must_equal_cn_by_default() {
        let p = ClientIdPolicy::new(&Config::defaults().identity);
        assert_eq!(p.check(Kind::Operational, "GW1-EEFF", "GW1-EEFF"), Ok(()));
        let err = p
            .check(Kind::Operational, "GW1-EEFF", "GW2-0001")
            .unwrap_err();
        assert_eq!(
            err,
            ClientIdError::NotCn {
                client_id: "GW2-0001".into(),
                cn: "GW1-EEFF".into()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("GW2-0001")
                && msg.contains("GW1-EEFF")
                && msg.contains("operational_client_id"),
            "{msg}"
        );
        // Case matters and so does emptiness.
        assert!(p.check(Kind::Operational, "GW1-EEFF", "gw1-eeff").is_err());
        assert!(p.check(Kind::Operational, "GW1-EEFF", "").is_err());
    }

    #[test]
    fn operational_any_accepts_any_topic_safe_client_id() {
        let p = policy(OperationalClientId::Any, BootstrapClientId::MustBeMac);
        assert_eq!(p.check(Kind::Operational, "GW1-EEFF", "whatever"), Ok(()));
        assert_eq!(p.check(Kind::Operational, "GW1-EEFF", "tool 2:x"), Ok(()));
        // The bootstrap rule is independent.
        assert!(p.check(Kind::Bootstrap, "boot", "whatever").is_err());
    }

    #[test]
    fn no_setting_admits_a_client_id_that_is_not_topic_safe() {
        for (op, boot) in [
            (OperationalClientId::Any, BootstrapClientId::Any),
            (
                OperationalClientId::MustEqualCn,
                BootstrapClientId::MustBeMac,
            ),
        ] {
            let p = policy(op, boot);
            for bad in ["", "a+b", "a#", "GW/1", "$GW1", "GW\0"] {
                for kind in [Kind::Operational, Kind::Bootstrap] {
                    // Even a CN holding the same characters does not make it safe.
                    let err = p.check(kind, bad, bad).unwrap_err();
                    assert_eq!(
                        err,
                        ClientIdError::Unsafe {
                            client_id: bad.into()
                        },
                        "{kind:?} {bad:?}"
                    );
                    let msg = err.to_string();
                    assert!(msg.contains("'$'") && msg.contains("empty"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn bootstrap_client_id_must_be_a_mac_by_default() {
        let p = ClientIdPolicy::new(&Config::defaults().identity);
        assert_eq!(
            p.check(Kind::Bootstrap, "bootstrap", "aa:bb:cc:dd:ee:ff"),
            Ok(())
        );
        assert_eq!(
            p.check(Kind::Bootstrap, "bootstrap", "AA:BB:CC:DD:EE:FF"),
            Ok(())
        );
        let err = p
            .check(Kind::Bootstrap, "bootstrap", "aa-bb-cc-dd-ee-ff")
            .unwrap_err();
        assert_eq!(
            err,
            ClientIdError::NotMac {
                client_id: "aa-bb-cc-dd-ee-ff".into()
            }
        );
        assert!(
            err.to_string().contains("aa:bb:cc:dd:ee:ff")
                && err.to_string().contains("bootstrap_client_id")
        );
        assert!(p.check(Kind::Bootstrap, "bootstrap", "").is_err());
        // A bootstrap cert does not get the CN rule: CN == client id is not enough.
        assert!(p.check(Kind::Bootstrap, "boot", "boot").is_err());
    }

    #[test]
    fn bootstrap_any_accepts_any_client_id() {
        let p = policy(OperationalClientId::MustEqualCn, BootstrapClientId::Any);
        assert_eq!(p.check(Kind::Bootstrap, "bootstrap", "not-a-mac"), Ok(()));
        assert!(p.check(Kind::Operational, "GW1", "GW2").is_err());
    }
}
