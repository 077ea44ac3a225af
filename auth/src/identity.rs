//! What a client certificate says about the device presenting it.

use std::path::PathBuf;

use time::OffsetDateTime;

use crate::serial::{Fingerprint, Serial};

/// The two kinds of client certificate in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Shared factory certificate: may only touch the provisioning topics.
    Bootstrap,
    /// Per-gateway certificate, CN = gateway_code.
    Operational,
}

impl Kind {
    /// 0 (operational) or 1 (bootstrap): the index of per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            Kind::Operational => 0,
            Kind::Bootstrap => 1,
        }
    }

    /// Lower-case name used in logs, metrics labels and config sections.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bootstrap => "bootstrap",
            Kind::Operational => "operational",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: Kind,
    /// Subject common name (for operational certificates: the gateway code).
    pub cn: String,
    pub serial: Serial,
    /// SHA-256 of the certificate DER.
    pub fingerprint: Fingerprint,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Issuer DN, RFC 4514-style (`CN=Fleet CA, O=Acme`).
    pub issuer: String,
    /// Subject DN, RFC 4514-style.
    pub subject: String,
}

impl Identity {
    /// Checks the validity window against `now`.
    ///
    /// The TLS stack normally enforces this already; the Mosquitto plugin and
    /// the provisioning API call it explicitly.
    pub fn check_validity(&self, now: OffsetDateTime) -> Result<(), IdentityError> {
        if now < self.not_before {
            return Err(IdentityError::NotYetValid {
                not_before: self.not_before,
            });
        }
        if now > self.not_after {
            return Err(IdentityError::Expired {
                not_after: self.not_after,
            });
        }
        Ok(())
    }

    /// The gateway code of an operational certificate (its CN); `None` for a
    /// bootstrap certificate, whose CN names a factory batch, not a gateway.
    pub fn gateway_code(&self) -> Option<&str> {
        match self.kind {
            Kind::Operational => Some(&self.cn),
            Kind::Bootstrap => None,
        }
    }
}

/// Why a certificate could not be turned into an [`Identity`], or why
/// classification could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "client certificate is not valid DER X.509: {reason}; the TLS layer should have \
         rejected it, check what the client sent"
    )]
    Malformed { reason: String },

    #[error(
        "client certificate has no usable subject CN{detail}: every fleet certificate needs \
         CN = gateway code (operational) or the batch name (bootstrap); re-issue it"
    )]
    MissingCommonName { detail: String },

    #[error(
        "client certificate kind not recognised (subject OU: {}): it matches neither the \
         bootstrap nor the operational rule of [identity] classify; re-issue it with the \
         configured OU/CA or fix the configuration",
        describe_ous(.ou)
    )]
    UnknownKind { ou: Vec<String> },

    #[error(
        "client certificate matches both the bootstrap and the operational rule \
         (subject OU: {}); refusing an ambiguous certificate: re-issue it with exactly one kind",
        describe_ous(.ou)
    )]
    AmbiguousKind { ou: Vec<String> },

    #[error("client certificate serial is not usable: {0}")]
    BadSerial(#[from] crate::serial::SerialError),

    #[error("certificate expired at {not_after}; issue the device a new certificate")]
    Expired { not_after: OffsetDateTime },

    #[error(
        "certificate is not valid before {not_before}; check the device's and this host's clocks"
    )]
    NotYetValid { not_before: OffsetDateTime },

    #[error("cannot read CA file {path} for [identity] classify = issuer: {source}")]
    CaFileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "CA file {path} for [identity] classify = issuer is unusable: {reason}; it must hold \
         one or more PEM `CERTIFICATE` blocks"
    )]
    BadCaFile { path: PathBuf, reason: String },

    #[error(
        "the bootstrap and operational CA files contain the same certificate ({subject}); \
         classification by issuer needs two distinct CAs"
    )]
    SameCaForBothKinds { subject: String },

    #[error(
        "[identity] classify = subject_ou needs two different, non-empty OUs \
         (bootstrap_ou = {bootstrap_ou:?}, operational_ou = {operational_ou:?})"
    )]
    BadOuSettings {
        bootstrap_ou: String,
        operational_ou: String,
    },
}

fn describe_ous(ou: &[String]) -> String {
    if ou.is_empty() {
        "none".to_owned()
    } else {
        ou.iter()
            .map(|o| format!("{o:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn identity(not_before: OffsetDateTime, not_after: OffsetDateTime, kind: Kind) -> Identity {
        Identity {
            kind,
            cn: "GW-0001-ABCD".into(),
            serial: Serial::from_u64(1),
            fingerprint: Fingerprint([0; 32]),
            not_before,
            not_after,
            issuer: "CN=CA".into(),
            subject: "CN=GW-0001-ABCD".into(),
        }
    }

    #[test]
    fn check_validity_window() {
        let now = OffsetDateTime::now_utc();
        let ok = identity(
            now - Duration::days(1),
            now + Duration::days(1),
            Kind::Operational,
        );
        ok.check_validity(now).unwrap();

        let expired = identity(
            now - Duration::days(10),
            now - Duration::days(1),
            Kind::Operational,
        );
        match expired.check_validity(now) {
            Err(IdentityError::Expired { not_after }) => assert_eq!(not_after, expired.not_after),
            other => panic!("expected Expired, got {other:?}"),
        }

        let future = identity(
            now + Duration::days(1),
            now + Duration::days(10),
            Kind::Operational,
        );
        match future.check_validity(now) {
            Err(IdentityError::NotYetValid { not_before }) => {
                assert_eq!(not_before, future.not_before)
            }
            other => panic!("expected NotYetValid, got {other:?}"),
        }
    }

    #[test]
    fn gateway_code_only_for_operational() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            identity(now, now, Kind::Operational).gateway_code(),
            Some("GW-0001-ABCD")
        );
        assert_eq!(identity(now, now, Kind::Bootstrap).gateway_code(), None);
        assert_eq!(Kind::Bootstrap.as_str(), "bootstrap");
        assert_eq!(Kind::Operational.to_string(), "operational");
    }

    #[test]
    fn unknown_kind_message_lists_ous() {
        let e = IdentityError::UnknownKind {
            ou: vec!["factory".into()],
        };
        assert!(e.to_string().contains("\"factory\""));
        let e = IdentityError::UnknownKind { ou: vec![] };
        assert!(e.to_string().contains("OU: none"));
    }
}
