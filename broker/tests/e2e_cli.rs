//! The real `mosquitto_pub` / `mosquitto_sub` command-line clients against
//! `gatehouse serve`, including the commands the first run prints.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ANY_CLIENT_ID, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::pki::{Client, GATEWAY_CODE, Pki};

fn mosquitto(tool: &str, args: &[String]) -> Output {
    Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}); scripts/test.sh installs mosquitto-clients")
    })
}

fn tls_args(b: &BrokerProcess, pki: &Pki, client: &Client, id: &str) -> Vec<String> {
    [
        "-h",
        "localhost",
        "-p",
        &b.mqtt.port().to_string(),
        "--cafile",
        &pki.ca_path.display().to_string(),
        "--cert",
        &client.cert_path.display().to_string(),
        "--key",
        &client.key_path.display().to_string(),
        "-i",
        id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn mosquitto_clients_publish_and_subscribe_over_mtls() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    for version in ["mqttv311", "mqttv5"] {
        let mut sub_args = tls_args(
            &b,
            &pki,
            &pki.operational,
            &format!("{GATEWAY_CODE}-sub-{version}"),
        );
        sub_args.extend(
            [
                "-V", version, "-t", &topic, "-C", "1", "-W", "10", "-q", "1",
            ]
            .map(String::from),
        );
        let sub = Command::new("mosquitto_sub")
            .args(&sub_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
            v >= 1.0
        });
        // Give the SUBSCRIBE a moment to reach the router.
        std::thread::sleep(Duration::from_millis(300));
        let mut pub_args = tls_args(
            &b,
            &pki,
            &pki.operational,
            &format!("{GATEWAY_CODE}-pub-{version}"),
        );
        pub_args.extend(
            [
                "-V",
                version,
                "-t",
                &topic,
                "-q",
                "1",
                "-m",
                &format!("hello {version}"),
            ]
            .map(String::from),
        );
        let out = mosquitto("mosquitto_pub", &pub_args);
        assert!(
            out.status.success(),
            "mosquitto_pub {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = sub.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_sub {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("hello {version}")
        );
        b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
            v == 0.0
        });
    }

    // Refused: another gateway's topic (v5 reports the PUBACK reason) ...
    let mut args = tls_args(&b, &pki, &pki.operational, GATEWAY_CODE);
    args.extend(
        [
            "-V",
            "mqttv5",
            "-t",
            "telemetry/GW0002-0002/data",
            "-q",
            "1",
            "-m",
            "x",
        ]
        .map(String::from),
    );
    let out = mosquitto("mosquitto_pub", &args);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Not authorized"),
        "{out:?}"
    );
    // ... `#` ...
    let mut args = tls_args(&b, &pki, &pki.operational, GATEWAY_CODE);
    args.extend(["-V", "mqttv5", "-t", "#", "-C", "1", "-W", "3"].map(String::from));
    let out = mosquitto("mosquitto_sub", &args);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{out:?}"
    );
    // ... and a client without a certificate.
    let args: Vec<String> = [
        "-h",
        "localhost",
        "-p",
        &b.mqtt.port().to_string(),
        "--cafile",
        &pki.ca_path.display().to_string(),
        "-i",
        GATEWAY_CODE,
        "-t",
        "x",
        "-m",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = mosquitto("mosquitto_pub", &args);
    assert!(!out.status.success(), "no certificate, no session");
    b.wait_metric("gatehouse_handshakes_total{result=\"no_cert\"}", |v| {
        v >= 1.0
    });
}

/// `gatehouse serve` with no config: creates the dev PKI, prints commands
/// that work. Uses the default ports 8883 / 9090 / 8443 / 8444.
#[test]
fn first_run_creates_a_dev_pki_and_prints_working_commands() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(exe())
        .arg("serve")
        .current_dir(cwd.path())
        .env_remove("GATEHOUSE_CONFIG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.trim_start().starts_with("curl ") {
            break;
        }
    }
    let data = cwd.path().join("gatehouse-data");
    for key in [
        "ca.key",
        "server.key",
        "admin.token",
        "clients/GW0001-EEFF.key",
        "clients/bootstrap.key",
    ] {
        let mode = std::fs::metadata(data.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key} mode");
    }
    for file in [
        "ca.crt",
        "server.crt",
        "ca.crl",
        "clients/GW0001-EEFF.crt",
        "clients/bootstrap.crt",
    ] {
        assert!(data.join(file).is_file(), "{file} created");
    }
    assert!(!printed.contains("PRIVATE KEY"), "keys are never printed");
    assert!(printed.contains("127.0.0.1:8883"), "{printed}");
    // The provisioning sidecar runs inside serve, on the same CA.
    assert!(
        printed.contains("https://127.0.0.1:8443/api/provision/register/"),
        "{printed}"
    );
    assert!(printed.contains("gatehouse-data/admin.token"), "{printed}");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    assert!(
        !printed.contains(token.trim()),
        "the admin token itself is never printed"
    );
    assert!(
        data.join("provisioning.db").is_file(),
        "SQLite store created"
    );
    // Wait until the listener is up, then run every printed command.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect("127.0.0.1:8883").is_err() {
        assert!(
            Instant::now() < deadline,
            "broker not listening on 8883:\n{printed}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let commands: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("mosquitto_pub") || l.starts_with("mosquitto_sub"))
        .collect();
    assert_eq!(commands.len(), 3, "{printed}");
    for cmd in &commands {
        let cmd = cmd.replace("mosquitto_sub ", "mosquitto_sub -W 10 ");
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(cwd.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if cmd.starts_with("mosquitto_sub") {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "telemetry/GW0001-EEFF/status online"
            );
        }
    }
    // The printed admin API command works (bearer token from the file).
    let curl = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("curl "))
        .expect("admin API command printed");
    let out = Command::new("sh")
        .arg("-c")
        .arg(curl)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{curl}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]", "{curl}");
    // SIGTERM: clean exit.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("PRIVATE KEY"), "keys are never logged");
}
