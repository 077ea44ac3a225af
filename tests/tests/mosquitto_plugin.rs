//! Mosquitto 2.0 + libgatehouse_mosquitto.so, driven with real MQTT clients
//! over real mTLS: the shared case table in both listener shapes, live
//! revocation, the command-line clients, and a broken plugin config.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::acl_cases::{self, ACL_TOML, Fixtures, Refusal, Target, Who};
use gatehouse_tests::mosquitto::{Mosquitto, Options, http_get, render_conf, start_with_metrics};
use gatehouse_tests::mqtt::V5;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};

fn shared_options(use_identity_as_username: bool) -> Options {
    Options {
        use_identity_as_username,
        gatehouse_extra: ACL_TOML.to_string(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_case_table_recommended_listener() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let mosq = Mosquitto::start(&pki, &shared_options(false));
    let target = Target {
        endpoint: mosq.endpoint(),
        refusal: Refusal::AtConnect,
    };
    acl_cases::run_all(&target, &fx).await;
    let log = mosq.log();
    assert!(log.contains("gatehouse: plugin ready"), "{log}");
    // One clear line per refusal at CONNECT, naming the reason.
    assert!(
        log.contains("refused client \"GW0666-0666\" at CONNECT: certificate serial"),
        "{log}"
    );
    assert!(log.contains("must equal the certificate CN"), "{log}");
    assert!(log.contains("kind not recognised"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_charset_cases_recommended_listener() {
    let pki = Pki::generate();
    let mosq = Mosquitto::start(
        &pki,
        &Options {
            gatehouse_extra: acl_cases::ANY_CLIENT_ID_TOML.to_string(),
            ..Options::default()
        },
    );
    let target = Target {
        endpoint: mosq.endpoint(),
        refusal: Refusal::AtConnect,
    };
    acl_cases::run_client_id_cases(&target, &pki).await;
    let log = mosq.log();
    assert!(
        log.contains("refused client \"a+b\" at CONNECT: client id \"a+b\" is empty or contains"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_case_table_use_identity_as_username() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let mosq = Mosquitto::start(&pki, &shared_options(true));
    let target = Target {
        endpoint: mosq.endpoint(),
        refusal: Refusal::AtFirstRequest,
    };
    acl_cases::run_all(&target, &fx).await;
    let log = mosq.log();
    assert!(
        log.contains("refused client \"GW0666-0666\" at its first request"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_while_connected_is_kicked_within_a_second_and_refused_after() {
    let mut pki = Pki::generate();
    let mosq = Mosquitto::start(&pki, &shared_options(false));
    let gw = pki.issue_operational("GW0042-4242");
    let creds = gatehouse_tests::mqtt::Credentials {
        cert: &gw.cert_path,
        key: &gw.key_path,
    };
    let mut conn = V5::connect(&mosq.endpoint(), "GW0042-4242", Some(creds))
        .await
        .expect("connects before revocation");
    assert!(conn.subscribe("telemetry/GW0042-4242/#").await);

    let revoked_at = Instant::now();
    pki.revoke(gw.cert.serial);
    assert!(
        conn.closed(Duration::from_secs(2)).await.is_some(),
        "still connected 2 s after revocation\n{}",
        mosq.log()
    );
    let latency = revoked_at.elapsed();
    eprintln!("revocation-to-disconnect latency: {latency:?}");
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    assert!(
        mosq.wait_log("was revoked", Duration::from_secs(2)),
        "{}",
        mosq.log()
    );

    // And it stays out.
    let again = V5::connect(&mosq.endpoint(), "GW0042-4242", Some(creds)).await;
    assert!(again.is_err(), "a revoked certificate reconnected");
    // Others are untouched.
    let fx_gw = V5::connect(
        &mosq.endpoint(),
        GATEWAY_CODE,
        Some(gatehouse_tests::mqtt::Credentials {
            cert: &pki.operational.cert_path,
            key: &pki.operational.key_path,
        }),
    )
    .await;
    assert!(fx_gw.is_ok());
}

#[test]
fn mosquitto_command_line_clients() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let mosq = Mosquitto::start(&pki, &shared_options(false));
    let port = mosq.port.to_string();
    let ca = pki.ca_path.display().to_string();
    let cli = |tool: &str, who: Who| {
        let (id, creds) = fx.of(who);
        let creds = creds.expect("a certificate");
        let mut c = Command::new(tool);
        c.args(["-h", "127.0.0.1", "-p", &port, "--cafile", &ca, "-i", &id])
            .arg("--cert")
            .arg(creds.cert)
            .arg("--key")
            .arg(creds.key);
        c
    };
    // The gateway listens on the fleet tree (subscribe allowed, receive only
    // fleet/all/+); exits after the first message it is given.
    let sub = cli("mosquitto_sub", Who::Gateway)
        .args(["-t", "fleet/#", "-C", "1", "-W", "10", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (install mosquitto-clients)");
    assert!(
        mosq.wait_log("New client connected", Duration::from_secs(5)),
        "{}",
        mosq.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    let publish = |who: Who, topic: &str, msg: &str| {
        cli("mosquitto_pub", who)
            .args(["-t", topic, "-m", msg, "-q", "1"])
            .output()
            .expect("mosquitto_pub")
    };
    // Not receivable by the gateway: must not be what mosquitto_sub prints.
    assert!(
        publish(Who::OtherGateway, "fleet/secret/GW0002-AABB", "secret")
            .status
            .success()
    );
    assert!(
        publish(Who::OtherGateway, "fleet/all/GW0002-AABB", "hello")
            .status
            .success()
    );
    let out = sub.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        "fleet/all/GW0002-AABB hello",
        "{}",
        mosq.log()
    );

    // Client id != CN and a wrong-OU certificate: refused at CONNECT.
    let out = publish(Who::GatewayWrongClientId, "telemetry/GW0001-EEFF/data", "x");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not authorised"),
        "{out:?}"
    );
    let out = publish(Who::WrongOu, "telemetry/GW0005-0005/data", "x");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not authorised"),
        "{out:?}"
    );
}

#[test]
fn broken_plugin_config_stops_mosquitto_with_one_clear_line() {
    let pki = Pki::generate();
    let opts = Options {
        gatehouse_toml: Some(
            "[tls]\nca = \"ca.crt\"\ncrl = \"ca.crl\"\nhandshake_timout = \"5s\"\n".into(),
        ),
        ..Options::default()
    };
    let log = Mosquitto::try_start(&pki, &opts).expect_err("mosquitto must refuse to start");
    let line = log
        .lines()
        .find(|l| l.contains("gatehouse: cannot start:"))
        .unwrap_or_else(|| panic!("no gatehouse line in:\n{log}"));
    assert!(
        line.contains("gatehouse.toml:4: key `tls.handshake_timout`"),
        "{line}"
    );
    assert!(line.contains("unknown field"), "{line}");
    assert!(!log.contains("panic"), "{log}");

    // Bad value too, and a missing plugin_opt_config.
    let opts = Options {
        gatehouse_toml: Some("[plugin]\nmetrics = \"nowhere\"\n".into()),
        ..Options::default()
    };
    let log = Mosquitto::try_start(&pki, &opts).expect_err("refused");
    assert!(
        log.contains("gatehouse.toml:2: key `plugin.metrics`"),
        "{log}"
    );
}

#[test]
fn readme_shows_the_tested_mosquitto_conf() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block = render_conf(
        "8883",
        "/etc/gatehouse",
        "/usr/lib/gatehouse/libgatehouse_mosquitto.so",
    );
    assert!(
        readme.contains(&block),
        "README's \"Using with Mosquitto\" block must be exactly:\n{block}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_counts_admissions_and_denials() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let (mosq, addr) = start_with_metrics(&pki, "");
    let (id, creds) = fx.of(Who::Gateway);
    let mut gw = V5::connect(&mosq.endpoint(), &id, creds).await.unwrap();
    assert!(!gw.subscribe("#").await);
    let (id, creds) = fx.of(Who::WrongOu);
    assert!(V5::connect(&mosq.endpoint(), &id, creds).await.is_err());
    let (id, creds) = fx.of(Who::Revoked);
    assert!(V5::connect(&mosq.endpoint(), &id, creds).await.is_err());
    // A good certificate with the wrong client id: counted as the broker
    // counts it, a good handshake and a refused CONNECT.
    let (id, creds) = fx.of(Who::GatewayWrongClientId);
    assert!(V5::connect(&mosq.endpoint(), &id, creds).await.is_err());

    let page = http_get(&addr, "/metrics");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for line in [
        "gatehouse_handshakes_total{result=\"ok\"} 2",
        "gatehouse_handshakes_total{result=\"unknown_kind\"} 1",
        "gatehouse_handshakes_total{result=\"revoked\"} 1",
        "gatehouse_connect_refused_total{reason=\"client_id\"} 1",
        "gatehouse_acl_denials_total{action=\"subscribe\",kind=\"operational\"} 1",
        "gatehouse_sessions_active{kind=\"operational\"} 1",
        "gatehouse_crl_entries 1",
        "gatehouse_revocation_kicks_total 0",
    ] {
        assert!(page.contains(line), "missing {line:?} in:\n{page}");
    }
    assert!(http_get(&addr, "/").starts_with("HTTP/1.1 404"));
}

/// Value of one sample on the plugin's `/metrics` page (0 when absent).
fn metric(addr: &str, sample: &str) -> f64 {
    http_get(addr, "/metrics")
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_crl_written_over_a_newer_one_does_not_unrevoke() {
    const OK: &str = "gatehouse_crl_reloads_total{result=\"ok\"}";
    const ROLLBACK: &str = "gatehouse_crl_reloads_total{result=\"rollback\"}";
    let mut pki = Pki::generate();
    let (mosq, addr) = start_with_metrics(&pki, "");
    let wait = |what: &str, pred: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pred() {
            assert!(Instant::now() < deadline, "{what}\n{}", mosq.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // CRL number 1, as the fleet CA signed it: kept to replay later.
    let older = std::fs::read(&pki.crl_path).unwrap();
    let gw = pki.issue_operational("GW0044-4444");
    let creds = gatehouse_tests::mqtt::Credentials {
        cert: &gw.cert_path,
        key: &gw.key_path,
    };
    pki.revoke(gw.cert.serial); // CRL number 2
    wait("CRL number 2 never loaded", &|| metric(&addr, OK) >= 2.0);
    let refused = V5::connect(&mosq.endpoint(), "GW0044-4444", Some(creds)).await;
    assert!(refused.is_err(), "revoked certificate admitted");

    // The validly signed older CRL replayed over the file.
    let tmp = pki.crl_path.with_extension("crl.replay");
    std::fs::write(&tmp, &older).unwrap();
    std::fs::rename(&tmp, &pki.crl_path).unwrap();
    wait("the CRL change was never seen", &|| {
        metric(&addr, OK) + metric(&addr, ROLLBACK) >= 3.0
    });
    let again = V5::connect(&mosq.endpoint(), "GW0044-4444", Some(creds)).await;
    assert!(
        again.is_err(),
        "revoked certificate admitted after an older CRL replaced the newer one"
    );
    assert_eq!(metric(&addr, ROLLBACK), 1.0);
    assert_eq!(metric(&addr, OK), 2.0);
    assert!(
        mosq.wait_log("CRL rollback refused", Duration::from_secs(2)),
        "{}",
        mosq.log()
    );
    let log = mosq.log();
    let line = log
        .lines()
        .find(|l| l.contains("CRL rollback refused"))
        .unwrap();
    assert!(
        line.contains("CRL number 1 ") && line.contains("CRL number 2 in force"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_and_a_bad_file_keeps_the_old_ones() {
    let pki = Pki::generate();
    let fx = Fixtures::new(&pki);
    let (mosq, addr) = start_with_metrics(&pki, "");
    let target = Target {
        endpoint: mosq.endpoint(),
        refusal: Refusal::AtConnect,
    };
    let reloader = acl_cases::Reloader {
        config_path: &mosq.gatehouse_toml,
        sighup: &|| mosq.reload(),
        log: &|| mosq.log(),
    };
    acl_cases::run_reload_case(&target, &fx, &reloader).await;
    assert_eq!(
        metric(&addr, "gatehouse_config_reloads_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        metric(&addr, "gatehouse_config_reloads_total{result=\"failed\"}"),
        1.0
    );
}

#[test]
fn shutdown_runs_cleanup_and_exits_cleanly() {
    let pki = Pki::generate();
    let (mut mosq, addr) = start_with_metrics(&pki, "");
    assert!(http_get(&addr, "/metrics").starts_with("HTTP/1.1 200"));
    let status = mosq.terminate();
    assert!(status.success(), "{status}\n{}", mosq.log());
    // The metrics thread was joined: nothing listens any more.
    assert!(std::net::TcpStream::connect(&addr).is_err());
    let log = mosq.log();
    assert!(
        !log.contains("panic") && !log.contains("unregistering"),
        "{log}"
    );
}

/// Rows in the telemetry table: (count, sum of "v").
fn telemetry_rows(pg: &gatehouse_tests::postgres::Postgres) -> (i64, i64) {
    // Ingest creates the table with its first batch.
    if pg.psql("SELECT to_regclass('telemetry') IS NOT NULL") != "t" {
        return (0, 0);
    }
    let out = pg.psql("SELECT count(*), coalesce(sum((payload->>'v')::bigint), 0) FROM telemetry");
    let (n, sum) = out.split_once('|').expect("two columns");
    (n.parse().unwrap(), sum.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_through_mosquitto_lands_in_postgres_and_is_flushed_at_shutdown() {
    let pg = tokio::task::spawn_blocking(gatehouse_tests::postgres::Postgres::start)
        .await
        .unwrap();
    let pki = Pki::generate();
    // 50 rows make a batch; the rest waits (batch_age 60 s) until shutdown.
    let extra = format!(
        "[ingest]\ndatabase_url = \"{}\"\nbatch_rows = 50\nbatch_age = \"60s\"\n\
         retry_min = \"50ms\"\nretry_max = \"500ms\"\n",
        pg.database_url()
    );
    let mut mosq = Mosquitto::start(
        &pki,
        &Options {
            gatehouse_extra: extra,
            ..Options::default()
        },
    );
    let creds = gatehouse_tests::mqtt::Credentials {
        cert: &pki.operational.cert_path,
        key: &pki.operational.key_path,
    };
    let mut gw = V5::connect(&mosq.endpoint(), GATEWAY_CODE, Some(creds))
        .await
        .expect("operational gateway connects");
    let data = format!("telemetry/{GATEWAY_CODE}/data");
    for v in 1..=50 {
        let payload = format!(r#"{{"ts":1714564800,"v":{v}}}"#);
        assert!(gw.publish(&data, payload.as_bytes()).await, "publish {v}");
    }
    // Outside the ingest filter (allowed by the ACL) and another gateway's
    // topic (denied): neither may reach the table.
    assert!(
        gw.publish(
            &format!("telemetry/{GATEWAY_CODE}/status"),
            br#"{"v":1000}"#
        )
        .await
    );
    assert!(
        !gw.publish("telemetry/GW0002-AABB/data", br#"{"v":1000}"#)
            .await
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while telemetry_rows(&pg) != (50, 1275) {
        assert!(
            Instant::now() < deadline,
            "rows after 10 s: {:?}\n{}",
            telemetry_rows(&pg),
            mosq.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let who = pg.psql("SELECT DISTINCT gateway_code || ' ' || topic FROM telemetry");
    assert_eq!(who, format!("{GATEWAY_CODE} {data}"));

    // 20 more stay queued (half a batch, young) until Mosquitto stops:
    // cleanup flushes them.
    for v in 51..=70 {
        let payload = format!(r#"{{"v":{v}}}"#);
        assert!(gw.publish(&data, payload.as_bytes()).await, "publish {v}");
    }
    drop(gw);
    assert_eq!(
        telemetry_rows(&pg).0,
        50,
        "the half batch was flushed early"
    );
    let status = mosq.terminate();
    assert!(status.success(), "{status}\n{}", mosq.log());
    assert_eq!(telemetry_rows(&pg), (70, (1..=70).sum::<i64>()));
}

#[test]
fn ingest_can_be_turned_off_and_is_on_by_default() {
    // Off: no ingest metrics, nothing written next to gatehouse.toml.
    let pki = Pki::generate();
    let (mut mosq, addr) = start_with_metrics(&pki, "[ingest]\nenabled = false\n");
    let metrics = http_get(&addr, "/metrics");
    assert!(!metrics.contains("gatehouse_ingest_"), "{metrics}");
    assert!(!pki.dir().join("gatehouse-data").exists());
    assert!(mosq.log().contains("enabled = false"), "{}", mosq.log());
    assert!(mosq.log().contains("ingest off"), "{}", mosq.log());
    assert!(mosq.terminate().success());

    // Default: ingest runs (SQLite next to gatehouse.toml) and is measured.
    let pki = Pki::generate();
    let (mut mosq, addr) = start_with_metrics(&pki, "");
    let metrics = http_get(&addr, "/metrics");
    assert!(metrics.contains("gatehouse_ingest_"), "{metrics}");
    assert!(pki.dir().join("gatehouse-data/spool").is_dir());
    assert!(mosq.log().contains("ingest on"), "{}", mosq.log());
    assert!(mosq.terminate().success(), "{}", mosq.log());
}

#[test]
fn a_rule_granting_the_whole_tree_is_warned_about_at_start_and_reload() {
    let pki = Pki::generate();
    let mosq = Mosquitto::start(
        &pki,
        &Options {
            gatehouse_extra: "[acl.operational]\nsubscribe = [\"#\"]\n".into(),
            ..Options::default()
        },
    );
    assert!(
        mosq.wait_log(
            "gatehouse: acl.operational.subscribe grants \"#\"",
            Duration::from_secs(5)
        ),
        "{}",
        mosq.log()
    );
    let base = std::fs::read_to_string(&mosq.gatehouse_toml).unwrap();
    std::fs::write(
        &mosq.gatehouse_toml,
        base.replace("subscribe = [\"#\"]", "receive = [\"#\"]"),
    )
    .unwrap();
    mosq.reload();
    assert!(
        mosq.wait_log(
            "gatehouse: acl.operational.receive grants \"#\"",
            Duration::from_secs(5)
        ),
        "{}",
        mosq.log()
    );
}
