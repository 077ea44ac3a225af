//! `gatehouse-auth` CHECKS certificates: it turns a client certificate into
//! an [`Identity`] and keeps the live set of revoked serials.
//!
//! It issues nothing: generating the fleet CA, keys and certificates,
//! validating and signing device CSRs and signing CRLs belong to
//! `gatehouse-ca`, which depends on this crate (never the reverse). So the
//! consumers that only check — the broker's front door, `gatehouse-acl` and
//! the Mosquitto plugin — link no signer (no rcgen, no `rsa`).
//!
//! It does no network I/O (it reads certificate and CRL files) and holds no
//! `unsafe`. TLS chain verification belongs to the caller's TLS stack
//! (rustls in the broker, OpenSSL in Mosquitto); this crate classifies and
//! checks what that stack accepted.
//!
//! # Pieces
//!
//! * **Identity** — [`Classifier::identify`] parses the leaf DER into an
//!   [`Identity`] (kind, CN, [`Serial`], SHA-256 [`Fingerprint`], validity,
//!   issuer/subject) and classifies it as [`Kind::Bootstrap`] or
//!   [`Kind::Operational`] by subject OU, by issuing CA, or by a list of
//!   bootstrap fingerprints (`[identity] classify`). Client-id policy lives
//!   in `gatehouse-acl`.
//! * **Revocation** — [`RevocationSet::from_crl_bytes`] verifies CRLs
//!   against the CA certificates of a [`CrlVerifier`] and keeps the revoked
//!   serials in a hash set; a million-entry CRL loads without per-entry
//!   allocations. [`CrlWatcher`] polls the CRL file on its own thread,
//!   publishes new sets lock-free and broadcasts newly revoked serials
//!   ([`RevocationUpdate`]) so open sessions can be cut. Callers check
//!   serials through a [`RevocationHandle`].
//! * **Encodings** — [`Serial`] and [`Fingerprint`] (parse, display, compare)
//!   and the small DER/PEM decoders the CRL loader runs on.
//!
//! # Example
//!
//! ```
//! use gatehouse_auth::*;
//!
//! // Any certificate will do here (gatehouse-ca issues the real ones).
//! let mut params = rcgen::CertificateParams::default();
//! params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, "operational");
//! params.distinguished_name.push(rcgen::DnType::CommonName, "GW-0001-ABCD");
//! let cert = params.self_signed(&rcgen::KeyPair::generate()?)?;
//!
//! let classifier = Classifier::subject_ou("bootstrap", "operational")?;
//! let id = classifier.identify(cert.der())?;
//! assert_eq!(id.kind, Kind::Operational);
//! assert_eq!(id.gateway_code(), Some("GW-0001-ABCD"));
//!
//! // Check the serial the way the broker does (a signed CRL would be loaded
//! // with `RevocationSet::from_crl_bytes` and a `CrlVerifier`).
//! let handle = RevocationHandle::fixed(RevocationSet::from_serials([id.serial]));
//! assert!(matches!(handle.check(&id.serial), Err(RevocationError::Revoked { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crypto
//!
//! ring only (directly and through x509-parser): SHA-256 fingerprints,
//! CRL and issuer signature verification, random serials.

#![forbid(unsafe_code)]

mod classify;
mod crl;
mod der;
mod identity;
mod pemdec;
mod serial;
#[cfg(test)]
mod testutil;
mod watcher;

pub use classify::Classifier;
pub use crl::{CrlError, CrlRollback, CrlRollbackKind, CrlVerifier, RevocationSet};
pub use identity::{Identity, IdentityError, Kind};
pub use serial::{Fingerprint, FingerprintError, MAX_SERIAL_OCTETS, Serial, SerialError};
pub use watcher::{
    CrlStatusSnapshot, CrlWatcher, RevocationError, RevocationHandle, RevocationUpdate,
    WatchOptions,
};
