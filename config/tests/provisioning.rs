//! `[provisioning]`: defaults and the errors for each bad value.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gatehouse_config::{Config, ConfigError, ProvisioningStore};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "gatehouse.toml", Path::new("/etc/gatehouse"))
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("should be refused")
}

#[test]
fn defaults_are_the_documented_ones() {
    let p = parse("").unwrap().provisioning;
    assert!(p.enabled);
    assert_eq!(p.listen, "127.0.0.1:8443".parse::<SocketAddr>().unwrap());
    assert_eq!(
        p.admin_listen,
        "127.0.0.1:8444".parse::<SocketAddr>().unwrap()
    );
    let data = Path::new("/etc/gatehouse/gatehouse-data");
    assert_eq!(p.admin_token_file, data.join("admin.token"));
    assert_eq!(
        p.store,
        ProvisioningStore::Sqlite(data.join("provisioning.db"))
    );
    assert_eq!(p.ca_cert, data.join("ca.crt"));
    assert_eq!(p.ca_key, data.join("ca.key"));
    assert_eq!(p.cert, data.join("server.crt"));
    assert_eq!(p.key, data.join("server.key"));
    assert_eq!(p.rate_limit, 10);
    assert_eq!(p.rate_limit_window, Duration::from_secs(3600));
    assert!(p.trusted_proxies.is_empty());
    assert_eq!(p.max_body_bytes, 65536);
    assert_eq!(p.validity_days, 3650);
    assert_eq!(p.renewal_window_days, 730);
    assert_eq!(p.crl_validity, Duration::from_secs(7 * 86400));
    assert_eq!(p.header_read_timeout, Duration::from_secs(10));
    assert_eq!(p.body_read_timeout, Duration::from_secs(10));
    assert_eq!(p.max_connections, 512);
    assert_eq!(p.max_connections_per_source, 16);
    assert!(p.require_bootstrap_cert);
}

#[test]
fn connection_limits_timeouts_and_bootstrap_requirement() {
    let p = parse(
        "[provisioning]\nheader_read_timeout = \"3s\"\nbody_read_timeout = \"2s\"\n\
         max_connections = 64\nmax_connections_per_source = 4\nrequire_bootstrap_cert = false\n",
    )
    .unwrap()
    .provisioning;
    assert_eq!(p.header_read_timeout, Duration::from_secs(3));
    assert_eq!(p.body_read_timeout, Duration::from_secs(2));
    assert_eq!(p.max_connections, 64);
    assert_eq!(p.max_connections_per_source, 4);
    assert!(!p.require_bootstrap_cert);
    let e = err("[provisioning]\nbody_read_timeout = \"0s\"\n");
    assert_eq!(e.key(), Some("provisioning.body_read_timeout"));
    let e = err("[provisioning]\nheader_read_timeout = \"soon\"\n");
    assert_eq!(e.key(), Some("provisioning.header_read_timeout"));
    let e = err("[provisioning]\nmax_connections_per_source = 0\n");
    assert_eq!(e.key(), Some("provisioning.max_connections_per_source"));
    let e = err("[provisioning]\nmax_connections = 8\nmax_connections_per_source = 9\n");
    assert_eq!(e.key(), Some("provisioning.max_connections_per_source"));
    assert!(e.to_string().contains("max_connections"), "{e}");
}

#[test]
fn postgres_and_sqlite_urls() {
    let p = parse("[provisioning]\ndatabase_url = \"postgres://gh@db/gh\"\n").unwrap();
    assert_eq!(
        p.provisioning.store,
        ProvisioningStore::Postgres("postgres://gh@db/gh".into())
    );
    let p = parse("[provisioning]\ndatabase_url = \"sqlite://reg.db\"\n").unwrap();
    assert_eq!(
        p.provisioning.store,
        ProvisioningStore::Sqlite("/etc/gatehouse/reg.db".into())
    );
    let e = err("[provisioning]\ndatabase_url = \"mysql://x\"\n");
    assert_eq!(e.key(), Some("provisioning.database_url"));
    assert_eq!(e.line(), Some(2));
    assert!(e.to_string().contains("postgres://"), "{e}");
    let e = err("[provisioning]\ndatabase_url = \"sqlite://\"\n");
    assert_eq!(e.key(), Some("provisioning.database_url"));
}

#[test]
fn bad_addresses_are_named() {
    let e = err("[provisioning]\nlisten = \"localhost\"\n");
    assert_eq!(e.key(), Some("provisioning.listen"));
    assert_eq!(e.line(), Some(2));
    let e = err("[provisioning]\nlisten = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"\n");
    assert_eq!(e.key(), Some("provisioning.admin_listen"));
    assert_eq!(e.line(), Some(3));
}

#[test]
fn bad_numbers_and_proxies_are_named() {
    let e = err("[provisioning]\nrate_limit = 0\n");
    assert_eq!(e.key(), Some("provisioning.rate_limit"));
    let e = err("[provisioning]\nvalidity_days = -1\n");
    assert_eq!(e.key(), Some("provisioning.validity_days"));
    let e = err("[provisioning]\nrate_limit_window = \"soon\"\n");
    assert_eq!(e.key(), Some("provisioning.rate_limit_window"));
    let e = err("[provisioning]\ntrusted_proxies = [\"10.0.0.1\", \"proxy\"]\n");
    assert_eq!(e.key(), Some("provisioning.trusted_proxies[1]"));
    assert_eq!(e.line(), Some(2));
    let e = err("[provisioning]\nadmin_token_file = \"\"\n");
    assert_eq!(e.key(), Some("provisioning.admin_token_file"));
    let e = err("[provisioning]\nlisten_port = 1\n");
    assert_eq!(e.key(), Some("provisioning.listen_port"));
}
