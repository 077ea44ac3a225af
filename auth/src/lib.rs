//! `gatehouse-auth` turns a client certificate into an [`Identity`], keeps the
//! live set of revoked serials, and performs the fleet CA's operations.
//!
//! It does no network I/O (it reads certificate and CRL files) and holds no
//! `unsafe`. TLS chain verification belongs to the caller's TLS stack
//! (rustls in the broker, OpenSSL in Mosquitto); this crate classifies and
//! checks what that stack accepted.

#![forbid(unsafe_code)]

mod identity;

pub use identity::Kind;
