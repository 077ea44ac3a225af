//! The two HTTPS listeners: the device API ([`device`]) and the admin API
//! ([`admin`]), served by one TLS accept loop ([`server`]).

// Handlers' helpers return the finished error `Response` as their `Err`;
// it is built once per failed request, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod device;
pub mod ratelimit;
pub mod server;
pub mod tls;

use std::sync::Arc;

use crate::service::Provisioning;

/// What the accept loop knows about a connection, handed to handlers as an
/// axum `Extension`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// DER of the client certificate the peer presented (device listener,
    /// optional client auth), already verified against the fleet CA.
    pub client_cert: Option<Arc<Vec<u8>>>,
}

/// Shared state of both APIs.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<Provisioning>,
}
