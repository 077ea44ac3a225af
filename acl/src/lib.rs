//! `gatehouse-acl` decides what a connected device may do, from the identity
//! it already has. It owns:
//!
//! * **MQTT topic rules** — validation of PUBLISH topic names and SUBSCRIBE
//!   topic filters ([`validate_topic`], [`validate_filter`]), spec matching
//!   ([`topic_matches_filter`]), and the `[acl]` allow-rules per certificate
//!   kind and action, with the placeholders `{cn}`, `{client_id}`,
//!   `{gateway_code}`, compiled once into tries ([`Acl`]) and decided
//!   without allocating ([`Acl::decide`], [`Acl::explain`] for logs).
//!   Default deny; subscriptions must be covered by a single rule; `$`
//!   topics are never reachable through wildcards or placeholders.
//! * **Client-id policy** — which MQTT client id a certificate may connect
//!   with ([`ClientIdPolicy`], [`is_mac`]).
//!
//! It does not own identity extraction (certificate → kind, CN: that is
//! `gatehouse-auth`) nor enforcement (refusing the packet, disconnecting:
//! the embedded broker and the Mosquitto plugin, which both call this
//! crate). It performs no I/O and holds no `unsafe`.

#![forbid(unsafe_code)]

mod decision;
mod error;
mod explain;
mod policy;
mod rules;
mod topic;

pub use decision::{Acl, Action, Decision, DenyReason, Subject};
pub use error::{ClientIdError, RuleError, TopicError};
pub use gatehouse_auth::Kind;
pub use policy::{ClientIdPolicy, is_mac, topic_safe};
pub use topic::{
    Limits, topic_matches_filter, validate_filter, validate_filter_bytes, validate_topic,
    validate_topic_bytes,
};
