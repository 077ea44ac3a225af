//! Every default in one place. `gatehouse.example.toml` repeats them and a
//! test checks that the two agree.

pub(crate) const DATA_DIR: &str = "gatehouse-data";
pub(crate) const TLS_CA: &str = "ca.crt";
pub(crate) const TLS_CERT: &str = "server.crt";
pub(crate) const TLS_KEY: &str = "server.key";
pub(crate) const TLS_CRL: &str = "ca.crl";
pub(crate) const CRL_POLL_INTERVAL: &str = "250ms";
pub(crate) const HANDSHAKE_TIMEOUT: &str = "10s";

pub(crate) const BOOTSTRAP_OU: &str = "bootstrap";
pub(crate) const OPERATIONAL_OU: &str = "gateway";

pub(crate) const MAX_TOPIC_LENGTH: usize = 1024;
pub(crate) const MAX_TOPIC_LEVELS: usize = 16;

pub(crate) const OPERATIONAL_RULE: &str = "telemetry/{cn}/#";
pub(crate) const BOOTSTRAP_RULE: &str = "tds/provision/{client_id}/#";
