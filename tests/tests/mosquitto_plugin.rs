//! Mosquitto 2.0 + libgatehouse_mosquitto.so, driven with real MQTT clients
//! over real mTLS: the shared case table in both listener shapes, live
//! revocation, the command-line clients, and a broken plugin config.

use std::process::Command;
use std::time::{Duration, Instant};

use gatehouse_tests::acl_cases::{self, ACL_TOML, Fixtures, Refusal, Target};
use gatehouse_tests::mosquitto::{Mosquitto, Options, render_conf};
use gatehouse_tests::mqtt::Conn;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};

fn shared_options(use_identity_as_username: bool) -> Options {
    Options {
        use_identity_as_username,
        gatehouse_extra: ACL_TOML.to_string(),
        gatehouse_toml: None,
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
    assert!(log.contains("refused client \"GW0666-0666\" at CONNECT: certificate serial"), "{log}");
    assert!(log.contains("must equal the certificate CN"), "{log}");
    assert!(log.contains("kind not recognised"), "{log}");
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
    let mut conn = Conn::connect(&mosq.endpoint(), "GW0042-4242", Some(creds))
        .await
        .expect("connects before revocation");
    assert!(conn.subscribe("telemetry/GW0042-4242/#").await);

    let revoked_at = Instant::now();
    pki.revoke(gw.cert.serial);
    assert!(
        conn.wait_closed(Duration::from_secs(2)).await,
        "still connected 2 s after revocation\n{}",
        mosq.log()
    );
    let latency = revoked_at.elapsed();
    eprintln!("revocation-to-disconnect latency: {latency:?}");
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    assert!(
        conn.closed().unwrap().contains("DISCONNECT") || conn.closed().is_some(),
        "{:?}",
        conn.closed()
    );
    assert!(mosq.wait_log("was revoked", Duration::from_secs(2)), "{}", mosq.log());

    // And it stays out.
    let again = Conn::connect(&mosq.endpoint(), "GW0042-4242", Some(creds)).await;
    assert!(again.is_err(), "a revoked certificate reconnected");
    // Others are untouched.
    let fx_gw = Conn::connect(
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
    let mosq = Mosquitto::start(&pki, &shared_options(false));
    let port = mosq.port.to_string();
    let ca = pki.ca_path.display().to_string();
    let op = &pki.operational;
    let base = |tool: &str, id: &str, cert: &std::path::Path, key: &std::path::Path| {
        let mut c = Command::new(tool);
        c.args(["-h", "127.0.0.1", "-p", &port, "--cafile", &ca, "-i", id])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
        c
    };
    // mosquitto_sub on its own tree gets what mosquitto_pub publishes there.
    let mut sub = base("mosquitto_sub", GATEWAY_CODE, &op.cert_path, &op.key_path)
        .args(["-t", "telemetry/GW0001-EEFF/#", "-C", "1", "-W", "10", "-q", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (install mosquitto-clients)");
    assert!(mosq.wait_log("New client connected", Duration::from_secs(5)));
    // The subscriber and publisher share a client id (= CN), so publish with
    // the second-gateway certificate... which may not publish there. Use the
    // same gateway after the subscription is up: a publisher with the same id
    // would take the session over, so publish through rumqttc instead.
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut p = Conn::connect(
            &mosq.endpoint(),
            "aa:bb:cc:dd:ee:ff",
            Some(gatehouse_tests::mqtt::Credentials {
                cert: &pki.bootstrap.cert_path,
                key: &pki.bootstrap.key_path,
            }),
        )
        .await
        .unwrap();
        // Bootstrap may not publish telemetry: nothing arrives from it.
        assert!(!p.publish("telemetry/GW0001-EEFF/data", b"from-bootstrap").await);
    });
    let status = base("mosquitto_pub", "GW0001-EEFF-pub", &op.cert_path, &op.key_path)
        .args(["-t", "telemetry/GW0001-EEFF/data", "-m", "x"])
        .status()
        .unwrap();
    assert!(!status.success(), "client id != CN must be refused at CONNECT");
    drop(rt);
    let mut sub_out = String::new();
    // Finally, the gateway itself publishes (the subscriber is kicked off by
    // the takeover, so check the publish is accepted instead).
    let status = base("mosquitto_pub", GATEWAY_CODE, &op.cert_path, &op.key_path)
        .args(["-t", "telemetry/GW0001-EEFF/data", "-m", "hello", "-q", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = sub.kill();
    let out = sub.wait_with_output().unwrap();
    sub_out.push_str(&String::from_utf8_lossy(&out.stdout));
    assert!(!sub_out.contains("from-bootstrap"), "{sub_out}");

    // A wrong-OU certificate is refused by mosquitto_pub too.
    let status = base(
        "mosquitto_pub",
        &pki.wrong_ou.client_id,
        &pki.wrong_ou.cert_path,
        &pki.wrong_ou.key_path,
    )
    .args(["-t", "telemetry/GW0005-0005/data", "-m", "x"])
    .status()
    .unwrap();
    assert!(!status.success());
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
    assert!(line.contains("gatehouse.toml:4: key `tls.handshake_timout`"), "{line}");
    assert!(line.contains("unknown field"), "{line}");
    assert!(!log.contains("panic"), "{log}");

    // Bad value too, and a missing plugin_opt_config.
    let opts = Options {
        gatehouse_toml: Some("[plugin]\nmetrics = \"nowhere\"\n".into()),
        ..Options::default()
    };
    let log = Mosquitto::try_start(&pki, &opts).expect_err("refused");
    assert!(log.contains("gatehouse.toml:2: key `plugin.metrics`"), "{log}");
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
