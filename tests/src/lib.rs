//! `gatehouse-tests` is the test harness shared by every end-to-end test:
//! a PKI fixture builder ([`pki::Pki`]) that makes a fleet CA, a broker
//! certificate, good operational and bootstrap clients and the bad ones
//! (expired, not yet valid, signed by another CA, wrong OU, revoked), plus
//! CRLs (current, expired, corrupt), all written to a private temporary
//! directory. Nothing here is checked in as an opaque blob: every certificate
//! is generated on the fly.
//!
//! [`broker::BrokerProcess`] runs a private `gatehouse serve` on free ports;
//! [`mqtt::Client`] is the rumqttc MQTT 3.1.1/5 client over mTLS that waits
//! for exactly the packet a test needs; [`raw::Raw`] sends and reads raw
//! MQTT bytes over mTLS.
//! [`postgres::Postgres`] runs a private PostgreSQL cluster (initdb in a
//! temporary directory, random port on 127.0.0.1) that tests can stop and
//! start again. [`mosquitto::Mosquitto`] runs a private Mosquitto with the
//! Gatehouse plugin; [`acl_cases`] is the
//! admission/ACL case table shared by both broker shapes.
//! [`provisioning::Harness`] runs the provisioning sidecar in
//! a private directory with real HTTPS clients.

#![forbid(unsafe_code)]

pub mod acl_cases;
pub mod broker;
pub mod mosquitto;
pub mod mqtt;
pub mod pki;
pub mod ports;
pub mod postgres;
pub mod provisioning;
pub mod raw;
pub mod ws;
