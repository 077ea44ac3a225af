//! Presence: who is connected. CONNACK and disconnect emit a
//! [`PresenceEvent`] through a [`PresenceSink`], so the provisioning store
//! can keep `is_online` / `last_seen` later. Today's sink logs.

use gatehouse_auth::{Kind, Serial};
use time::OffsetDateTime;

/// Why a session ended (`reason` of a disconnect event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The connection closed or failed without DISCONNECT.
    ConnectionLost,
    /// Silent for 1.5 x the keepalive.
    KeepaliveTimeout,
    /// Broke the protocol (malformed, oversized, unsupported QoS, ...).
    ProtocolError,
    /// Too many denied PUBLISHes.
    AclViolations,
    /// Its certificate was revoked while connected.
    Revoked,
    /// Another connection with the same client id took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
    /// Went past a per-client limit of `[mqtt]`.
    QuotaExceeded,
    /// The session's task failed (a panic, caught and cleaned up).
    InternalError,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientDisconnect => "client_disconnect",
            DisconnectReason::ConnectionLost => "connection_lost",
            DisconnectReason::KeepaliveTimeout => "keepalive_timeout",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::AclViolations => "acl_violations",
            DisconnectReason::Revoked => "revoked",
            DisconnectReason::TakenOver => "taken_over",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::QuotaExceeded => "quota_exceeded",
            DisconnectReason::InternalError => "internal_error",
        }
    }
}

/// One presence change.
#[derive(Debug, Clone)]
pub struct PresenceEvent {
    /// Gateway code (operational certificates only).
    pub gateway: Option<String>,
    /// Certificate subject CN.
    pub cn: String,
    pub client_id: String,
    pub kind: Kind,
    pub serial: Serial,
    pub at: OffsetDateTime,
    /// `None` for connects.
    pub reason: Option<DisconnectReason>,
}

/// Receives presence changes. Called on the session's task: keep it quick
/// (hand off to a channel when it has to do I/O).
pub trait PresenceSink: Send + Sync + std::fmt::Debug {
    fn on_connect(&self, event: &PresenceEvent);
    fn on_disconnect(&self, event: &PresenceEvent);
}

/// Logs presence changes at info level.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogPresence;

impl PresenceSink for LogPresence {
    fn on_connect(&self, e: &PresenceEvent) {
        tracing::info!(
            gateway = e.gateway.as_deref().unwrap_or("-"),
            cn = ?e.cn,
            client_id = ?e.client_id,
            kind = %e.kind,
            serial = %e.serial,
            at = %e.at,
            "presence: online"
        );
    }

    fn on_disconnect(&self, e: &PresenceEvent) {
        tracing::info!(
            gateway = e.gateway.as_deref().unwrap_or("-"),
            cn = ?e.cn,
            client_id = ?e.client_id,
            kind = %e.kind,
            serial = %e.serial,
            at = %e.at,
            reason = e.reason.map_or("-", DisconnectReason::as_str),
            "presence: offline"
        );
    }
}
