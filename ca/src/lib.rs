//! `gatehouse-ca` ISSUES: it owns the fleet CA and everything that needs its
//! private key or makes new keys.
//!
//! It owns CA generation and loading ([`Ca::generate`], [`Ca::from_files`]),
//! issuing server, bootstrap and operational certificates ([`LeafSpec`],
//! [`IssuedCert`]), server-side key generation for legacy devices
//! ([`KeyAlgorithm`]), validating and signing device CSRs ([`validate_csr`],
//! [`VerifiedCsr`]) and signing CRLs ([`CrlSpec`], [`RevocationReason`]).
//! Private keys only ever travel as [`PrivateKeyPem`], which redacts itself
//! in `Debug` and is zeroed on drop.
//!
//! It does not check presented certificates: turning a certificate into an
//! `Identity`, loading and verifying CRLs and the live CRL watcher are
//! `gatehouse-auth`'s. This crate depends on `gatehouse-auth` (for
//! [`Serial`](gatehouse_auth::Serial) and
//! [`Fingerprint`](gatehouse_auth::Fingerprint)), never the reverse, so the
//! checking side (broker front door, ACLs, the Mosquitto plugin) links no
//! signer. Users: provisioning, the broker's dev PKI, tests, benches, fuzz.
//! No network I/O and no `unsafe`.
//!
//! # Example
//!
//! ```
//! use gatehouse_auth::{
//!     Classifier, CrlVerifier, Kind, RevocationError, RevocationHandle, RevocationSet,
//! };
//! use gatehouse_ca::*;
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
//! to generate RSA keys for legacy devices (and to load PKCS#1 keys), which
//! ring cannot do.

#![forbid(unsafe_code)]

mod ca;
mod csr;
mod keys;
mod secret;

pub use ca::{
    Ca, CaError, CaOptions, CrlSpec, IssuedCert, KeySource, LeafSpec, RevocationReason,
    RevokedEntry, San, Usage,
};
pub use csr::{CsrInfo, MAX_RSA_BITS, MIN_RSA_BITS, VerifiedCsr, validate_csr};
pub use keys::KeyAlgorithm;
pub use secret::PrivateKeyPem;
