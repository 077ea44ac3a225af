//! The admission vocabulary: one label per outcome, one mapping from the
//! errors of `auth`.

use gatehouse_auth::{IdentityError, RevocationError};

/// Outcome of checking a client's certificate: the `result` label of
/// `gatehouse_handshakes_total` in both shapes.
///
/// In the embedded broker this is the TLS handshake plus identity and
/// revocation; in Mosquitto (which terminates TLS itself) it is the plugin's
/// check of the certificate Mosquitto hands over at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handshake {
    Ok,
    /// The client presented no certificate.
    NoCert,
    /// The certificate does not chain to the fleet CA or cannot be read
    /// (unknown issuer, bad signature, wrong key usage, malformed, no CN, ...).
    BadChain,
    /// Past its notAfter.
    Expired,
    /// Before its notBefore.
    NotYetValid,
    /// Listed in the CRL in force.
    Revoked,
    /// The CRL is past its nextUpdate and `[tls] crl_fail_closed` is set.
    CrlExpired,
    /// Chains to the fleet CA but is neither bootstrap nor operational.
    UnknownKind,
    /// No complete handshake within `[tls] handshake_timeout` (broker only:
    /// Mosquitto does not report it).
    Timeout,
    /// Any other failure: not TLS at all, protocol error, aborted.
    Failed,
}

impl Handshake {
    /// Every outcome, in label order.
    pub const ALL: [Handshake; 10] = [
        Handshake::Ok,
        Handshake::NoCert,
        Handshake::BadChain,
        Handshake::Expired,
        Handshake::NotYetValid,
        Handshake::Revoked,
        Handshake::CrlExpired,
        Handshake::UnknownKind,
        Handshake::Timeout,
        Handshake::Failed,
    ];

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::NoCert => "no_cert",
            Handshake::BadChain => "bad_chain",
            Handshake::Expired => "expired",
            Handshake::NotYetValid => "not_yet_valid",
            Handshake::Revoked => "revoked",
            Handshake::CrlExpired => "crl_expired",
            Handshake::UnknownKind => "unknown_kind",
            Handshake::Timeout => "timeout",
            Handshake::Failed => "failed",
        }
    }

    /// The outcome an identity error stands for.
    pub fn of_identity(e: &IdentityError) -> Handshake {
        match e {
            IdentityError::Expired { .. } => Handshake::Expired,
            IdentityError::NotYetValid { .. } => Handshake::NotYetValid,
            IdentityError::UnknownKind { .. } | IdentityError::AmbiguousKind { .. } => {
                Handshake::UnknownKind
            }
            _ => Handshake::BadChain,
        }
    }

    /// The outcome a revocation error stands for.
    pub fn of_revocation(e: &RevocationError) -> Handshake {
        match e {
            RevocationError::Revoked { .. } => Handshake::Revoked,
            RevocationError::CrlExpired { .. } => Handshake::CrlExpired,
        }
    }
}

/// Why a CONNECT was refused after the certificate was accepted: the
/// `reason` label of `gatehouse_connect_refused_total` in both shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectRefusal {
    /// The client id is not allowed for this certificate
    /// (`[identity] operational_client_id` / `bootstrap_client_id`, or it
    /// is empty or holds `/ + # $` or NUL).
    ClientId,
    /// The will topic is not one the certificate may publish to.
    WillAcl,
    /// MQTT 5 enhanced authentication was asked for (not supported).
    AuthMethod,
    /// The router refused the session (full or gone).
    Router,
    /// A 3.1.1 persistent session past its kind's limit
    /// (`mqtt.max_persistent_sessions_*`, embedded broker).
    PersistentSessions,
    /// The broker could not complete the admission (e.g. Mosquitto could not
    /// set the username).
    Internal,
}

impl ConnectRefusal {
    /// Every reason, in label order.
    pub const ALL: [ConnectRefusal; 6] = [
        ConnectRefusal::ClientId,
        ConnectRefusal::WillAcl,
        ConnectRefusal::AuthMethod,
        ConnectRefusal::Router,
        ConnectRefusal::PersistentSessions,
        ConnectRefusal::Internal,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            ConnectRefusal::ClientId => "client_id",
            ConnectRefusal::WillAcl => "will_acl",
            ConnectRefusal::AuthMethod => "auth_method",
            ConnectRefusal::Router => "router",
            ConnectRefusal::PersistentSessions => "persistent_sessions",
            ConnectRefusal::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use gatehouse_auth::Serial;

    use super::*;

    #[test]
    fn labels_are_distinct_and_listed_once() {
        let h: HashSet<_> = Handshake::ALL.iter().map(|h| h.label()).collect();
        assert_eq!(h.len(), Handshake::ALL.len());
        let c: HashSet<_> = ConnectRefusal::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(c.len(), ConnectRefusal::ALL.len());
        for l in h.iter().chain(&c) {
            assert!(
                l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{l}"
            );
        }
    }

    #[test]
    fn auth_errors_map_to_their_outcome() {
        let t = time::OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            Handshake::of_identity(&IdentityError::Expired { not_after: t }),
            Handshake::Expired
        );
        assert_eq!(
            Handshake::of_identity(&IdentityError::NotYetValid { not_before: t }),
            Handshake::NotYetValid
        );
        assert_eq!(
            Handshake::of_identity(&IdentityError::UnknownKind { ou: vec![] }),
            Handshake::UnknownKind
        );
        assert_eq!(
            Handshake::of_identity(&IdentityError::AmbiguousKind { ou: vec![] }),
            Handshake::UnknownKind
        );
        assert_eq!(
            Handshake::of_identity(&IdentityError::Malformed { reason: "x".into() }),
            Handshake::BadChain
        );
        let serial = Serial::from_u64(1);
        assert_eq!(
            Handshake::of_revocation(&RevocationError::Revoked { serial }),
            Handshake::Revoked
        );
        assert_eq!(
            Handshake::of_revocation(&RevocationError::CrlExpired { next_update: t }),
            Handshake::CrlExpired
        );
    }
}
