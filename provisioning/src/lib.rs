//! `gatehouse-provisioning` is the provisioning sidecar: it owns the fleet
//! registry and everything that turns a factory-fresh device into a
//! gateway with its own certificate.
//!
//! * [`store`] — the registry (gateways, operational and bootstrap
//!   certificates, self-registrations, append-only audit log) on SQLite or
//!   PostgreSQL, with migrations for both; presence updates
//!   ([`store::Store::mark_online`] / [`store::Store::mark_offline`]).
//! * [`service`] — the operations: registration (idempotent per MAC),
//!   allocation (certificate from the device CSR, or server-generated for
//!   legacy firmware, and the ZIP [`bundle`]), rejection, revocation with
//!   CRL publication (atomic file write + `NOTIFY gatehouse_crl`), bootstrap
//!   certificates with a one-time key download, the renewal watch.
//! * [`http`] — the device API (HTTPS, wire-compatible with the reference
//!   backend's `POST /api/provision/register/`) and the admin API (bearer
//!   token), run together by [`sidecar::Sidecar`].
//! * [`notify`] — `LISTEN gatehouse_crl`: nodes sharing a PostgreSQL
//!   registry follow CRLs published elsewhere.
//! * [`init`] — setting up a fleet's files (CA, server certificate, admin
//!   token, first CRL), reported back for `gatehouse ca init` to print.
//!
//! The `gatehouse ca|bootstrap|registrations|certs|crl|provisioning`
//! commands themselves live in the binary (`broker/src/provisioning_cli.rs`).
//!
//! It does not verify MQTT sessions, watch CRL files or kick revoked
//! clients: brokers do that from the CRL this crate publishes. Signing
//! certificates and CRLs is `gatehouse-ca`'s, checking them `gatehouse-auth`'s.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod error;
pub mod http;
pub mod init;
pub mod mac;
pub mod metrics;
pub mod notify;
pub mod service;
pub mod sidecar;
pub mod store;

pub use error::{ProvisioningError, StoreError};
pub use init::{FleetInit, ensure_admin_token, init_fleet};
pub use service::Provisioning;
pub use sidecar::Sidecar;
pub use store::Store;
