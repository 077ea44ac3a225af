//! Mosquitto 2.0 + libgatehouse_mosquitto.so, driven with real MQTT clients
//! over real mTLS: the shared case table in both listener shapes, live
//! revocation, the command-line clients, and a broken plugin config.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::acl_cases::{self, ACL_TOML, Fixtures, Refusal, Target, Who};
use gatehouse_tests::mosquitto::{Mosquitto, Options, render_conf};
use gatehouse_tests::mqtt::Conn;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};

fn shared_options(use_identity_as_username: bool) -> Options {
    Options {
        use_identity_as_username,
        gatehouse_extra: ACL_TOML.to_string(),
        gatehouse_toml: None,
        plain_acl_file: None,
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
        mosq.wait_log("was revoked", Duration::from_secs(2)),
        "{}",
        mosq.log()
    );

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
