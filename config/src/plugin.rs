//! `[plugin]`: settings only the Mosquitto plugin (`libgatehouse_mosquitto.so`)
//! reads. The embedded broker ignores this section.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::load::Validator;

/// The `[plugin]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugin {
    pub metrics: Option<String>,
}

/// `[plugin]`: the Mosquitto plugin's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginSettings {
    /// Address of the plugin's Prometheus `/metrics` listener (plain HTTP,
    /// served from a background thread inside Mosquitto); `None` = off (default).
    pub metrics: Option<SocketAddr>,
}

impl Validator<'_> {
    pub(crate) fn plugin(&self, raw: RawPlugin) -> Result<PluginSettings, ConfigError> {
        let metrics = match raw.metrics.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    "plugin.metrics",
                    format!(
                        "expected an IP address and port such as \"127.0.0.1:9091\" (or \"\" for off), got {text:?}"
                    ),
                )
            })?),
        };
        Ok(PluginSettings { metrics })
    }
}
