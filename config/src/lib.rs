//! `gatehouse-config` owns `gatehouse.toml`: its schema, every default, and the
//! validation that turns raw TOML into typed settings. Errors name the file,
//! the line and the key, and say what is expected.
//!
//! It does not open sockets, read certificates or interpret rules: it only
//! guarantees that what it hands out is well-formed.
//!
//! Relative paths in a config file are resolved against the directory of that
//! file; with no file, against the current directory.

#![forbid(unsafe_code)]

mod defaults;
mod error;
mod ingest;
mod listeners;
mod load;
mod mqtt;
mod plugin;
mod provisioning;
mod raw;
pub mod rule;
pub mod secure_fs;
mod settings;

pub use error::ConfigError;
pub use ingest::{
    AckMode, IngestDatabase, IngestSettings, TimeFormat, WhenFull, WhenSpoolFull, redact_url,
};
pub use listeners::ListenerSettings;
pub use load::{CONFIG_ENV, resolve_path};
pub use mqtt::MqttSettings;
pub use plugin::PluginSettings;
pub use provisioning::{ProvisioningSettings, ProvisioningStore};
pub use settings::{
    AclSettings, BootstrapClientId, Classification, Config, IdentitySettings, KindRules,
    OperationalClientId, TlsSettings,
};

/// The documented example config, every key with its default.
pub const EXAMPLE_TOML: &str = include_str!("../gatehouse.example.toml");
