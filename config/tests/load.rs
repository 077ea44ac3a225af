//! Loading gatehouse.toml: defaults, the example file, and errors that name
//! file, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_config::{
    BootstrapClientId, Classification, Config, ConfigError, EXAMPLE_TOML, OperationalClientId,
};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("/etc/gatehouse"))
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("config should be refused")
}

#[test]
fn example_file_parses_and_equals_the_builtin_defaults() {
    let example = Config::parse(EXAMPLE_TOML, "gatehouse.example.toml", Path::new(".")).unwrap();
    assert_eq!(example, Config::defaults());
}

#[test]
fn example_file_on_disk_is_the_embedded_one() {
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/gatehouse.example.toml"
    ))
    .unwrap();
    assert_eq!(on_disk, EXAMPLE_TOML);
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::defaults();
    assert_eq!(c.data_dir, PathBuf::from("./gatehouse-data"));
    assert_eq!(c.tls.ca, PathBuf::from("./gatehouse-data/ca.crt"));
    assert_eq!(c.tls.crl, Some(PathBuf::from("./gatehouse-data/ca.crl")));
    assert_eq!(c.tls.crl_poll_interval, Duration::from_millis(250));
    assert_eq!(c.tls.handshake_timeout, Duration::from_secs(10));
    assert!(!c.tls.crl_fail_closed);
    assert_eq!(
        c.identity.classify,
        Classification::SubjectOu {
            bootstrap_ou: "bootstrap".into(),
            operational_ou: "gateway".into()
        }
    );
    assert_eq!(
        c.identity.operational_client_id,
        OperationalClientId::MustEqualCn
    );
    assert_eq!(c.identity.bootstrap_client_id, BootstrapClientId::MustBeMac);
    assert_eq!(
        c.acl.operational.publish,
        vec!["telemetry/{cn}/#".to_string()]
    );
    assert_eq!(
        c.acl.operational.receive,
        vec!["telemetry/{cn}/#".to_string()]
    );
    assert_eq!(
        c.acl.bootstrap.subscribe,
        vec!["tds/provision/{client_id}/#".to_string()]
    );
}

#[test]
fn relative_paths_resolve_against_the_config_file_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(
        &file,
        "data_dir = \"state\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"/abs/server.pem\"\n",
    )
    .unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(c.source.as_deref(), Some(file.as_path()));
    assert_eq!(c.data_dir, dir.path().join("state"));
    assert_eq!(c.tls.ca, dir.path().join("pki/ca.pem"));
    assert_eq!(c.tls.cert, PathBuf::from("/abs/server.pem"));
    // Unset paths follow data_dir.
    assert_eq!(c.tls.key, dir.path().join("state/server.key"));
    assert_eq!(c.tls.crl, Some(dir.path().join("state/ca.crl")));
}

#[test]
fn missing_file_error_names_the_path() {
    let e = Config::load(Path::new("/nonexistent/gatehouse.toml")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(msg.contains("/nonexistent/gatehouse.toml"), "{msg}");
    assert!(msg.contains("--config"), "{msg}");
}

#[test]
fn unknown_top_level_key_names_line_and_key() {
    let e = err("data_dir = \"x\"\n\nlisten = 1\n");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.key(), Some("listen"));
    let msg = e.to_string();
    assert!(msg.starts_with("test.toml:3: key `listen`"), "{msg}");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn unknown_key_inside_a_section_names_the_section() {
    let e = err("[tls]\nca = \"a\"\nhandshake_timout = \"5s\"\n");
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.key(), Some("tls.handshake_timout"));
    assert!(e.to_string().contains("expected one of"), "{e}");
}

#[test]
fn unknown_key_in_nested_acl_table() {
    let e = err(
        "[acl]\nmax_topic_length = 100\n\n[acl.operational]\npublish = [\"a\"]\npublsh = [\"b\"]\n",
    );
    assert_eq!(e.line(), Some(6));
    assert_eq!(e.key(), Some("acl.operational.publsh"));
}

#[test]
fn unknown_section_is_refused() {
    let e = err("[tsl]\nca = \"a\"\n");
    assert_eq!(e.line(), Some(1));
    assert!(e.to_string().contains("tsl"), "{e}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let e = err("[tls]\n\ncrl_fail_closed = \"yes\"\n");
    assert!(matches!(e, ConfigError::Syntax { .. }));
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.key(), Some("tls.crl_fail_closed"));
}

#[test]
fn malformed_toml_reports_its_line() {
    let e = err("[tls]\nca = \"unterminated\n");
    assert!(matches!(e, ConfigError::Syntax { .. }));
    assert_eq!(e.line(), Some(2));
}

#[test]
fn bad_duration_says_what_is_expected() {
    let e = err("[tls]\nca = \"a\"\nhandshake_timeout = \"ten seconds\"\n");
    assert!(matches!(e, ConfigError::Invalid { .. }));
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.key(), Some("tls.handshake_timeout"));
    assert!(e.to_string().contains("\"10s\""), "{e}");
    let zero = err("[tls]\ncrl_poll_interval = \"0s\"\n");
    assert_eq!(zero.key(), Some("tls.crl_poll_interval"));
    assert!(zero.to_string().contains("greater than zero"));
}

#[test]
fn empty_crl_disables_revocation_but_not_with_fail_closed() {
    let c = parse("[tls]\ncrl = \"\"\n").unwrap();
    assert_eq!(c.tls.crl, None);
    let e = err("[tls]\ncrl = \"\"\ncrl_fail_closed = true\n");
    assert_eq!(e.key(), Some("tls.crl_fail_closed"));
    assert_eq!(e.line(), Some(3));
}

#[test]
fn empty_path_is_refused() {
    let e = err("[tls]\ncert = \"  \"\n");
    assert_eq!(e.key(), Some("tls.cert"));
    assert_eq!(e.line(), Some(2));
}

#[test]
fn bad_rule_points_at_the_array_element() {
    let e =
        err("[acl.operational]\npublish = [\n  \"telemetry/{cn}/#\",\n  \"telemetry/#/x\",\n]\n");
    assert!(matches!(e, ConfigError::Invalid { .. }));
    assert_eq!(e.key(), Some("acl.operational.publish[1]"));
    assert_eq!(e.line(), Some(4));
    assert!(e.to_string().contains("last"), "{e}");
}

#[test]
fn unknown_placeholder_is_refused() {
    let e = err("[acl.bootstrap]\nsubscribe = [\"tds/{mac}/#\"]\n");
    assert_eq!(e.key(), Some("acl.bootstrap.subscribe[0]"));
    assert!(e.to_string().contains("{mac}"), "{e}");
}

#[test]
fn empty_rule_list_is_allowed_and_means_deny_all() {
    let c = parse("[acl.bootstrap]\npublish = []\n").unwrap();
    assert!(c.acl.bootstrap.publish.is_empty());
    assert_eq!(
        c.acl.bootstrap.subscribe.len(),
        1,
        "other actions keep their defaults"
    );
}

#[test]
fn topic_limits_are_range_checked() {
    let e = err("[acl]\nmax_topic_length = 0\n");
    assert_eq!(e.key(), Some("acl.max_topic_length"));
    assert_eq!(e.line(), Some(2));
    let e = err("[acl]\nmax_topic_length = 70000\n");
    assert!(e.to_string().contains("65535"), "{e}");
    let c = parse("[acl]\nmax_topic_levels = 4\n").unwrap();
    assert_eq!(c.acl.max_topic_levels, 4);
}

#[test]
fn unknown_classification_mode() {
    let e = err("[identity]\nclassify = \"ou\"\n");
    assert_eq!(e.key(), Some("identity.classify"));
    assert_eq!(e.line(), Some(2));
    assert!(e.to_string().contains("\"subject_ou\""), "{e}");
    let e = err("[identity]\nclassify = \"ou\"\n");
    assert_eq!(
        e.to_string(),
        "test.toml:2: key `identity.classify`: expected \"subject_ou\", \"issuer\" or \"fingerprint\", got \"ou\""
    );
    // The other keys of a mode are checked once classify names one.
    let e = err("[identity]\nclassify = \"fingerprint\"\nbootstrap_ou = \"x\"\n");
    assert_eq!(e.key(), Some("identity.bootstrap_ou"));
    assert!(
        e.to_string()
            .contains("not used with classify = \"fingerprint\""),
        "{e}"
    );
}

#[test]
fn same_ou_for_both_kinds_is_refused() {
    let e = err("[identity]\nbootstrap_ou = \"gateway\"\n");
    assert_eq!(e.key(), Some("identity.operational_ou"));
}

#[test]
fn issuer_mode_needs_both_cas() {
    let e = err("[identity]\nclassify = \"issuer\"\nbootstrap_ca = \"boot.pem\"\n");
    assert!(e.to_string().contains("operational_ca"), "{e}");
    let c = parse("[identity]\nclassify = \"issuer\"\nbootstrap_ca = \"boot.pem\"\noperational_ca = \"dev.pem\"\n").unwrap();
    assert_eq!(
        c.identity.classify,
        Classification::Issuer {
            bootstrap_ca: PathBuf::from("/etc/gatehouse/boot.pem"),
            operational_ca: PathBuf::from("/etc/gatehouse/dev.pem"),
        }
    );
    let e = err(
        "[identity]\nclassify = \"issuer\"\nbootstrap_ca = \"a.pem\"\noperational_ca = \"a.pem\"\n",
    );
    assert_eq!(e.key(), Some("identity.operational_ca"));
}

#[test]
fn keys_of_another_mode_are_refused() {
    let e = err(
        "[identity]\nclassify = \"issuer\"\nbootstrap_ou = \"x\"\nbootstrap_ca = \"a\"\noperational_ca = \"b\"\n",
    );
    assert_eq!(e.key(), Some("identity.bootstrap_ou"));
    assert_eq!(e.line(), Some(3));
    assert!(e.to_string().contains("not used with classify"), "{e}");
}

#[test]
fn fingerprint_mode_parses_fingerprints_and_points_at_bad_ones() {
    let good = vec!["0A"; 32].join(":");
    let c = parse(&format!(
        "[identity]\nclassify = \"fingerprint\"\nbootstrap_fingerprints = [\"{good}\"]\n"
    ))
    .unwrap();
    assert_eq!(
        c.identity.classify,
        Classification::Fingerprint {
            bootstrap_fingerprints: vec![[0x0a; 32]]
        }
    );
    let e = err(&format!(
        "[identity]\nclassify = \"fingerprint\"\nbootstrap_fingerprints = [\n  \"{good}\",\n  \"AA:BB\",\n]\n"
    ));
    assert_eq!(e.key(), Some("identity.bootstrap_fingerprints[1]"));
    assert_eq!(e.line(), Some(5));
    let e = err("[identity]\nclassify = \"fingerprint\"\n");
    assert!(e.to_string().contains("bootstrap_fingerprints"), "{e}");
}

#[test]
fn client_id_policies() {
    let c = parse("[identity]\noperational_client_id = \"any\"\nbootstrap_client_id = \"any\"\n")
        .unwrap();
    assert_eq!(c.identity.operational_client_id, OperationalClientId::Any);
    assert_eq!(c.identity.bootstrap_client_id, BootstrapClientId::Any);
    let e = err("[identity]\nbootstrap_client_id = \"serial\"\n");
    assert_eq!(e.key(), Some("identity.bootstrap_client_id"));
    assert_eq!(e.line(), Some(2));
    let msg = e.to_string();
    assert!(
        msg.contains("expected \"mac\" or \"any\", got \"serial\""),
        "{msg}"
    );
    assert!(msg.contains("aa:bb:cc:dd:ee:ff"), "{msg}");
    let e = err("[identity]\n\noperational_client_id = \"CN\"\n");
    assert_eq!(e.key(), Some("identity.operational_client_id"));
    assert_eq!(e.line(), Some(3));
    assert!(e.to_string().contains("certificate CN"), "{e}");
    let c = parse("[identity]\noperational_client_id = \"cn\"\nbootstrap_client_id = \"mac\"\n")
        .unwrap();
    assert_eq!(
        c.identity.operational_client_id,
        OperationalClientId::MustEqualCn
    );
    assert_eq!(c.identity.bootstrap_client_id, BootstrapClientId::MustBeMac);
}

#[test]
fn rule_deeper_than_max_topic_levels_is_refused() {
    let e = err("[acl]\nmax_topic_levels = 3\n\n[acl.operational]\npublish = [\"a/b/c/d\"]\n");
    assert_eq!(e.key(), Some("acl.operational.publish[0]"));
    assert_eq!(e.line(), Some(5));
    assert!(e.to_string().contains("could never match"), "{e}");
    // A trailing `#` also matches the parent, so it does not count.
    parse("[acl]\nmax_topic_levels = 3\n\n[acl.operational]\npublish = [\"a/b/c/#\"]\nsubscribe = []\nreceive = []\n\n[acl.bootstrap]\npublish = []\nsubscribe = []\nreceive = []\n").unwrap();
}

#[test]
fn listeners_and_mqtt_defaults() {
    let c = Config::defaults();
    assert_eq!(c.listeners.mqtt.to_string(), "127.0.0.1:8883");
    assert_eq!(c.listeners.metrics.unwrap().to_string(), "127.0.0.1:9090");
    assert_eq!(c.listeners.max_connections, 10_000);
    assert_eq!(c.listeners.drain_timeout, Duration::from_secs(5));
    assert_eq!(c.mqtt.max_packet_size, 1024 * 1024);
    assert_eq!(c.mqtt.max_keepalive, Duration::from_secs(1200));
    assert_eq!(c.mqtt.acl_violations_before_disconnect, 10);
    let off = parse("[listeners]\nmetrics = \"\"\n").unwrap();
    assert_eq!(off.listeners.metrics, None);
    assert_eq!(
        c.listeners.websocket, None,
        "MQTT over WebSocket is off by default"
    );
    let ws = parse("[listeners]\nwebsocket = \"127.0.0.1:8884\"\n").unwrap();
    assert_eq!(
        ws.listeners.websocket.unwrap().to_string(),
        "127.0.0.1:8884"
    );
    assert_eq!(c.mqtt.receive_maximum, 100);
    assert_eq!(c.mqtt.topic_alias_maximum, 10);
    assert_eq!(c.mqtt.max_session_expiry, Duration::from_secs(86_400));
    assert_eq!(c.mqtt.max_persistent_sessions_operational, 10_000);
    assert_eq!(c.mqtt.max_persistent_sessions_bootstrap, 1_000);
    assert_eq!(c.mqtt.max_queued_messages, 1_000);
    assert_eq!(c.mqtt.max_queued_bytes, 256 * 1024);
    assert!(!c.acl.operational.shared_subscriptions && !c.acl.bootstrap.shared_subscriptions);
}

#[test]
fn bad_listen_address_names_line_and_key() {
    let e = err("[listeners]\nmetrics = \"127.0.0.1:9090\"\nmqtt = \"localhost:8883\"\n");
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.key(), Some("listeners.mqtt"));
    assert!(e.to_string().contains("IP address and port"), "{e}");
    let e = err("[listeners]\nmqtt = \"127.0.0.1:1\"\nmetrics = \"127.0.0.1:1\"\n");
    assert_eq!(e.key(), Some("listeners.metrics"));
    let e = err("[listeners]\nmax_connections = 0\n");
    assert_eq!(e.key(), Some("listeners.max_connections"));
    let e = err("[listeners]\nmqtt = \"127.0.0.1:2\"\nwebsocket = \"127.0.0.1:2\"\n");
    assert_eq!(e.key(), Some("listeners.websocket"));
    assert!(e.to_string().contains("another address"), "{e}");
}

#[test]
fn mqtt_limits_are_checked() {
    let e = err("[mqtt]\nmax_packet_size = -1\n");
    assert_eq!(e.key(), Some("mqtt.max_packet_size"));
    let e = err("[mqtt]\nmax_keepalive = \"19h\"\n");
    assert_eq!(e.key(), Some("mqtt.max_keepalive"));
    assert!(e.to_string().contains("65535"), "{e}");
    let e = err("[mqtt]\n\nmax_keepalive = \"1500ms\"\n");
    assert_eq!(e.line(), Some(3));
    let e = err("[mqtt]\nacl_violations_before_disconnect = 0\n");
    assert_eq!(e.key(), Some("mqtt.acl_violations_before_disconnect"));
    let e = err("[mqtt]\nmax_packet_sise = 5\n");
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn plugin_metrics_address() {
    assert_eq!(Config::defaults().plugin.metrics, None);
    assert!(Config::defaults().ingest.enabled);
    assert!(!parse("[ingest]\nenabled = false\n").unwrap().ingest.enabled);
    let e = err("[ingest]\nenabled = \"no\"\n");
    assert_eq!(e.key(), Some("ingest.enabled"));
    let c = parse("[plugin]\nmetrics = \"127.0.0.1:9091\"\n").unwrap();
    assert_eq!(c.plugin.metrics, Some("127.0.0.1:9091".parse().unwrap()));
    assert_eq!(
        parse("[plugin]\nmetrics = \"\"\n").unwrap().plugin.metrics,
        None
    );

    let e = err("# metrics\n[plugin]\nmetrics = \"localhost\"\n");
    assert_eq!(e.key(), Some("plugin.metrics"));
    assert_eq!(e.line(), Some(3));
    assert!(e.to_string().contains("127.0.0.1:9091"), "{e}");
    let e = err("[plugin]\nmetric = \"127.0.0.1:9091\"\n");
    assert_eq!(e.key(), Some("plugin.metric"));
}

#[test]
fn whole_tree_grants_are_listed() {
    let c = parse("").unwrap();
    assert!(
        c.acl.whole_tree_grants().is_empty(),
        "defaults grant no '#'"
    );
    let c = parse("[acl.operational]\nsubscribe = [\"telemetry/{cn}/#\", \"#\"]\n").unwrap();
    assert_eq!(
        c.acl.whole_tree_grants(),
        vec![("acl.operational.subscribe".to_owned(), "#")]
    );
}
