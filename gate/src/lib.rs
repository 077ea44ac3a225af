//! What both shapes — the embedded broker and the Mosquitto plugin — decide
//! the same way, defined once so they cannot drift:
//!
//! * the ordered admission ([`Policy::identify`], [`Policy::check_revocation`],
//!   [`Policy::check_client_id`], or [`Policy::admit`] for all three) and its
//!   [`Refusal`], which maps itself to a metric label;
//! * [`Handshake`]: the outcome of checking a client's certificate (chain,
//!   identity, validity, revocation), the `result` label of
//!   `gatehouse_handshakes_total`, with one mapping from `auth`'s errors;
//! * [`ConnectRefusal`]: why a CONNECT with a good certificate was refused,
//!   the `reason` label of `gatehouse_connect_refused_total`;
//! * [`Policy`] / [`PolicyHandle`]: `[identity]` and `[acl]` compiled once
//!   and swapped as a whole on reload (SIGHUP in both shapes); a broken file
//!   keeps the rules in force;
//! * [`start_revocation`]: the CRL watcher set up once for both shapes;
//! * [`SessionIndex`]: open sessions by serial and which of them a CRL
//!   change cuts ([`CrlEvent`]: newly revoked serials, or a rescan after
//!   missed updates);
//! * [`TelemetryTap`]: which accepted PUBLISHes become ingest records;
//! * [`GateMetrics`]: every metric both shapes expose, with names, help and
//!   label values registered in one place (all label values visible from
//!   the start), and [`render`], the one `/metrics` body encoder;
//! * the events ([`Refused`], [`RevokedSessionCut`], [`RulesInForce`],
//!   [`ReloadRefused`], [`CertificateAccepted`]): each counts itself and
//!   writes its one log line, so both shapes say the same thing the same
//!   way ([`GateMetrics::emit`]).
//!
//! No async runtime, no sockets, no unsafe: the shapes own the network and
//! their threads. (`PolicyHandle::reload` reads the config file, and
//! `start_revocation` starts `auth`'s CRL watcher thread.)

mod admission;
mod events;
mod metrics;
mod outcome;
mod policy;
mod revocation;
mod sessions;
mod tap;

pub use admission::Refusal;
pub use events::{
    CertificateAccepted, GateEvent, Refused, ReloadRefused, RevokedSessionCut, RulesInForce, Stage,
    Why,
};
pub use metrics::{CONTENT_TYPE, GateMetrics, SHARED_METRICS, render};
pub use outcome::{ConnectRefusal, Handshake};
pub use policy::{Policy, PolicyError, PolicyHandle, whole_tree_warnings};
pub use revocation::start_revocation;
pub use sessions::{CrlEvent, SessionIndex};
pub use tap::TelemetryTap;
