//! `[listeners]`: where the embedded broker listens and how many connections
//! it holds at once.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::load::Validator;

pub(crate) const MQTT: &str = "127.0.0.1:8883";
pub(crate) const METRICS: &str = "127.0.0.1:9090";
pub(crate) const MAX_CONNECTIONS: usize = 10_000;
pub(crate) const DRAIN_TIMEOUT: &str = "5s";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListeners {
    pub mqtt: Option<String>,
    /// `""` disables the metrics listener.
    pub metrics: Option<String>,
    pub max_connections: Option<i64>,
    pub drain_timeout: Option<String>,
    /// `""` or absent: no WebSocket listener.
    pub websocket: Option<String>,
}

/// `[listeners]`: sockets of the embedded broker (`gatehouse serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// MQTT over TLS (mTLS required).
    pub mqtt: SocketAddr,
    /// Plain HTTP `/metrics` and `/healthz`; `None` when disabled.
    pub metrics: Option<SocketAddr>,
    /// Most open connections (handshaking or connected). Connections past
    /// it are closed at accept and counted.
    pub max_connections: usize,
    /// On SIGINT/SIGTERM, how long open sessions get to drain before the
    /// process exits anyway.
    pub drain_timeout: Duration,
    /// MQTT over WebSocket on TLS (`wss`, the same client certificates and
    /// rules, subprotocol `mqtt`); `None` (the default) when off.
    pub websocket: Option<SocketAddr>,
}

impl Validator<'_> {
    pub(crate) fn listeners(&self, raw: RawListeners) -> Result<ListenerSettings, ConfigError> {
        let addr = |key: &str, text: &str| -> Result<SocketAddr, ConfigError> {
            text.parse().map_err(|_| {
                self.invalid(
                    key,
                    format!("expected an IP address and port such as \"127.0.0.1:8883\" or \"[::]:8883\", got {text:?}"),
                )
            })
        };
        let mqtt = addr("listeners.mqtt", raw.mqtt.as_deref().unwrap_or(MQTT))?;
        let metrics = match raw.metrics.as_deref() {
            None => Some(addr("listeners.metrics", METRICS)?),
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(addr("listeners.metrics", v)?),
        };
        if metrics == Some(mqtt) {
            return Err(self.invalid(
                "listeners.metrics",
                "the metrics listener must use another address than listeners.mqtt",
            ));
        }
        let websocket = match raw.websocket.as_deref() {
            None => None,
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(addr("listeners.websocket", v)?),
        };
        if websocket.is_some() && (websocket == Some(mqtt) || websocket == metrics) {
            return Err(self.invalid(
                "listeners.websocket",
                "the WebSocket listener must use another address than listeners.mqtt and listeners.metrics",
            ));
        }
        Ok(ListenerSettings {
            mqtt,
            metrics,
            websocket,
            max_connections: self.positive(
                "listeners.max_connections",
                raw.max_connections,
                MAX_CONNECTIONS,
                1_000_000,
            )?,
            drain_timeout: self.duration(
                "listeners.drain_timeout",
                raw.drain_timeout,
                DRAIN_TIMEOUT,
            )?,
        })
    }
}
