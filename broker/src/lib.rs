//! `gatehouse-broker` is the embedded edge broker, the `gatehouse` binary:
//! gateways connect over MQTT (3.1.1 or 5.0) on TLS with their client
//! certificate, and can only do what their certificate kind allows.
//!
//! It owns the **front door** (tokio + rustls with the ring provider: accept
//! loop bounded by `listeners.max_connections`, each handshake on its own
//! task under `tls.handshake_timeout`, client certificate required and
//! chained to the fleet CA, live reload of CA / server certificate / CRL),
//! **enforcement** (identity and revocation at handshake, client-id policy
//! and will ACL at CONNECT, the topic ACL on every PUBLISH, SUBSCRIBE and
//! delivered message), **live revocation kicks**, **presence** events,
//! **telemetry ingest** (allowed PUBLISHes on `ingest.topic_filter` handed to
//! `gatehouse-ingest` straight from the front door; with
//! `ingest.ack = "durable"`, QoS 1 PUBACKs held until the row is durable),
//! **Prometheus metrics** and **graceful shutdown**, plus the first-run
//! **dev PKI** that makes `gatehouse serve` useful with no config at all.
//!
//! It does not own MQTT routing: subscriptions, retained messages, QoS 1
//! delivery and persistent sessions are rumqttd's router, reached only
//! through `rumqttd::local` links (never rumqttd's own listeners). Identity
//! extraction and the CRL live in `gatehouse-auth`, the rules in
//! `gatehouse-acl`, the config schema in `gatehouse-config`; the dev PKI
//! is issued with `gatehouse-ca`.

#![forbid(unsafe_code)]

mod admission;
mod afterlife;
pub mod devpki;
mod error;
pub mod fleet;
mod flow;
mod guard;
mod health;
pub mod limits;
pub mod metrics;
pub mod presence;
mod quota;
mod registry;
mod reload;
mod router;
mod server;
mod session;
mod telemetry;
pub mod tls;
pub mod validate;
mod websocket;
mod wire;

pub use error::BrokerError;
pub use guard::install_panic_hook;
pub use presence::{DisconnectReason, LogPresence, PresenceEvent, PresenceSink};
pub use server::{Listeners, run};
pub use wire::Version;
