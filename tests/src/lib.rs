//! `gatehouse-tests` is the test harness shared by every end-to-end test:
//! a PKI fixture builder ([`pki::Pki`]) that makes a fleet CA, a broker
//! certificate, good operational and bootstrap clients and the bad ones
//! (expired, not yet valid, signed by another CA, wrong OU, revoked), plus
//! CRLs (current, expired, corrupt), all written to a private temporary
//! directory. Nothing here is checked in as an opaque blob: every certificate
//! is generated on the fly.
//!
//! It also starts a private Mosquitto with the Gatehouse plugin
//! ([`mosquitto::Mosquitto`]), has MQTT v5 mTLS test clients ([`mqtt::Conn`])
//! and the admission/ACL case table shared by both broker shapes
//! ([`acl_cases`]).

#![forbid(unsafe_code)]

pub mod acl_cases;
pub mod mosquitto;
pub mod mqtt;
pub mod pki;
