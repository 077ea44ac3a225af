//! Runs the README's "Provisioning a fleet" walkthrough line by line in a
//! fresh directory against the real `gatehouse` binary (on `PATH`, with a
//! `gatehouse.toml` that only moves the listeners to free ports, which the
//! lines are rewritten to use). `gatehouse serve &` is started as a child
//! process; every other line runs in bash (openssl, jq, curl, unzip and
//! mosquitto_pub do what a device and an operator would). Then checks what
//! each step must have produced.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::exe;
use gatehouse_auth::{Classifier, CrlVerifier, Kind, RevocationSet};
use gatehouse_provisioning::Store;
use gatehouse_tests::broker::free_port;
use gatehouse_tests::provisioning::unzip;
use serde_json::Value;

fn walkthrough_lines() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Provisioning a fleet")
        .nth(1)
        .expect("README has the walkthrough section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("walkthrough code block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(addr: &str, serve: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = serve.try_wait() {
            panic!(
                "gatehouse serve exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_runs_against_the_gatehouse_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mqtt = free_port();
    let device = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        cwd.join("gatehouse.toml"),
        format!(
            "[listeners]\nmqtt = \"127.0.0.1:{mqtt}\"\nmetrics = \"127.0.0.1:{}\"\n\n\
             [provisioning]\nlisten = \"{device}\"\nadmin_listen = \"127.0.0.1:{}\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let bin_dir = exe().parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = cwd.join("serve.log");
    let lines = walkthrough_lines();
    assert!(lines.len() >= 12, "{lines:?}");
    let mut serve: Option<Serve> = None;
    let mut outputs = Vec::new();
    for line in &lines {
        if line.starts_with("gatehouse serve") {
            let mut child = Command::new(exe())
                .arg("serve")
                .current_dir(cwd)
                .env("GATEHOUSE_CONFIG", cwd.join("gatehouse.toml"))
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            wait_listening(&format!("127.0.0.1:{mqtt}"), &mut child, &log);
            wait_listening(&device, &mut child, &log);
            serve = Some(Serve(child));
            continue;
        }
        let line_run = line
            .replace("127.0.0.1:8443", &device)
            .replace("-p 8883", &format!("-p {mqtt}"));
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &line_run])
            .current_dir(cwd)
            .env("PATH", &path)
            .env("GATEHOUSE_CONFIG", cwd.join("gatehouse.toml"))
            .env("NO_COLOR", "1")
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "README line failed: {line_run}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut serve = serve.expect("the walkthrough starts gatehouse serve");
    let data = cwd.join("gatehouse-data");
    let store = Store::open_sqlite(&data.join("provisioning.db"))
        .await
        .unwrap();

    // Step 3: the sidecar ran inside serve.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("provisioning sidecar listening"),
        "{logged}"
    );
    // Step 4: the device got the reference's answer.
    let answer: Value = outputs
        .iter()
        .find_map(|o| serde_json::from_str(o).ok())
        .expect("the register call printed JSON");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["code"], "registered");
    assert_eq!(answer["registro_id"], 1);
    let reg = store.registration(1).await.unwrap().unwrap();
    assert!(
        reg.bootstrap_id.is_some(),
        "bootstrap cert taken from the TLS session"
    );
    // Step 2: the bootstrap key is gone from the server.
    let boots = store.bootstraps().await.unwrap();
    assert!(!boots[0].key_available);
    // Step 5: the bundle, signed from the device's own key by the broker's CA.
    let files = unzip(&std::fs::read(cwd.join("GW0001-EEFF.zip")).unwrap());
    assert!(
        !files.contains_key("device.key"),
        "the key never left the device"
    );
    let der = pem::parse(&files["device.crt"]).unwrap().into_contents();
    let id = Classifier::subject_ou("bootstrap", "gateway")
        .unwrap()
        .identify(&der)
        .unwrap();
    assert_eq!(id.kind, Kind::Operational);
    assert_eq!(id.gateway_code(), Some("GW0001-EEFF"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    };
    openssl(&["verify", "-CAfile", "ca.crt", "device.crt"]);
    assert_eq!(
        openssl(&["pkey", "-in", "device.key", "-pubout"]),
        openssl(&["x509", "-in", "device.crt", "-pubkey", "-noout"]),
        "certificate holds the device's key"
    );
    // Step 6: the broker admitted it and presence reached the registry.
    let gw = store.gateway_by_code("GW0001-EEFF").await.unwrap().unwrap();
    assert!(gw.last_seen.is_some(), "{gw:?}");
    assert!(logged.contains("presence: online"), "{logged}");
    // Step 7: the CRL the broker watches and the one served hold the serial
    // (and the last line proved the broker refuses the certificate).
    let verifier = CrlVerifier::from_ca_file(cwd.join("ca.crt")).unwrap();
    let on_disk = RevocationSet::from_crl_file(data.join("ca.crl"), &verifier).unwrap();
    assert!(on_disk.contains(&id.serial));
    let served = RevocationSet::from_crl_file(cwd.join("current.crl"), &verifier).unwrap();
    assert!(served.contains(&id.serial));
    assert!(
        logged
            .lines()
            .any(|l| l.contains("refused a client at the TLS handshake") && l.contains("revoked")),
        "{logged}"
    );

    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(serve.0.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let status = serve.0.wait().unwrap();
    assert!(status.success(), "gatehouse serve after SIGTERM: {status}");
}
