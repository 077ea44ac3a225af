//! `gatehouse-auth` turns a client certificate into an [`Identity`], keeps the
//! live set of revoked serials, and performs the fleet CA's operations.
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
//! * **CA** — [`Ca`] generates or loads the fleet CA, issues server,
//!   bootstrap and operational certificates ([`LeafSpec`], [`IssuedCert`]),
//!   signs device CSRs after verifying them ([`validate_csr`]) and signs
//!   CRLs ([`CrlSpec`]). Private keys only ever travel as [`PrivateKeyPem`],
//!   which redacts itself in `Debug` and is zeroed on drop.
//!
//! # Example
//!
//! ```
//! use gatehouse_auth::*;
//! use time::{Duration, OffsetDateTime};
//!
//! let ca = Ca::generate(CaOptions::default())?;
//! let classifier = Classifier::subject_ou("bootstrap", "operational")?;
//!
//! // A legacy gateway gets a server-generated key (a CSR is the normal path).
//! let cert = ca.issue_operational_legacy("GW-0001-ABCD", "operational", 3650)?;
//! let id = classifier.identify(&cert.cert_der)?;
//! assert_eq!(id.kind, Kind::Operational);
//! assert_eq!(id.gateway_code(), Some("GW-0001-ABCD"));
//!
//! // Revoke it and check the serial the way the broker does.
//! let now = OffsetDateTime::now_utc();
//! let crl_pem = ca.crl(&CrlSpec {
//!     number: 1,
//!     this_update: now,
//!     next_update: now + Duration::days(7),
//!     entries: vec![RevokedEntry {
//!         serial: id.serial,
//!         revoked_at: now,
//!         reason: RevocationReason::KeyCompromise,
//!     }],
//! })?;
//! let verifier = CrlVerifier::from_ca_pem(ca.cert_pem())?;
//! let set = RevocationSet::from_crl_bytes(crl_pem.as_bytes(), &verifier)?;
//! let handle = RevocationHandle::fixed(set);
//! assert!(matches!(handle.check(&id.serial), Err(RevocationError::Revoked { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crypto
//!
//! ring only (through rcgen and x509-parser); the `rsa` crate is used solely
//! to generate RSA keys for legacy devices, which ring cannot do.

#![forbid(unsafe_code)]

mod ca;
mod classify;
mod crl;
mod csr;
mod der;
mod identity;
mod keys;
mod pemdec;
mod secret;
mod serial;
#[cfg(test)]
mod testutil;
mod watcher;

pub use ca::{
    Ca, CaError, CaOptions, CrlSpec, IssuedCert, KeySource, LeafSpec, RevocationReason,
    RevokedEntry, San, Usage,
};
pub use classify::Classifier;
pub use crl::{CrlError, CrlRollback, CrlRollbackKind, CrlVerifier, RevocationSet};
pub use csr::{CsrInfo, MAX_RSA_BITS, MIN_RSA_BITS, VerifiedCsr, validate_csr};
pub use identity::{Identity, IdentityError, Kind};
pub use keys::KeyAlgorithm;
pub use secret::PrivateKeyPem;
pub use serial::{Fingerprint, FingerprintError, MAX_SERIAL_OCTETS, Serial, SerialError};
pub use watcher::{
    CrlStatusSnapshot, CrlWatcher, RevocationError, RevocationHandle, RevocationUpdate,
    WatchOptions,
};
