//! Runs the README's "Provisioning a fleet" walkthrough line by line in a
//! fresh directory: `gatehouse …` lines through the real clap commands
//! (in-process; `provisioning serve` starts the sidecar on 127.0.0.1:0),
//! every other line through bash (openssl, jq, curl, unzip do what a device
//! and an operator would). Then checks what each step must have produced.
//! The broker step ("device connects") is not a command line here.

use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;

use clap::Parser;
use gatehouse_auth::{Classifier, CrlVerifier, Kind, RevocationSet};
use gatehouse_config::Config;
use gatehouse_provisioning::metrics::Metrics;
use gatehouse_provisioning::{Provisioning, Sidecar, cli};
use gatehouse_tests::provisioning::unzip;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "gatehouse")]
struct Gatehouse {
    #[command(subcommand)]
    command: cli::Command,
}

/// Splits a command line the way the shell would for these simple lines.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_runs() {
    let dir = tempfile::tempdir().unwrap();
    // Only this test lives in this binary, so changing directory is safe.
    std::env::set_current_dir(dir.path()).unwrap();
    std::fs::write(
        "gatehouse.toml",
        "[provisioning]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let config = Config::load(Path::new("gatehouse.toml")).unwrap();
    let lines = walkthrough_lines();
    assert!(lines.len() >= 10, "{lines:?}");
    let mut sidecar: Option<Sidecar> = None;
    let mut outputs = Vec::new();
    for line in &lines {
        if line.starts_with("gatehouse provisioning serve") {
            let svc = Provisioning::open(&config, Metrics::unregistered())
                .await
                .unwrap();
            sidecar = Some(Sidecar::start(&config, Arc::new(svc)).await.unwrap());
            continue;
        }
        if line.starts_with("gatehouse ") {
            let cmd = Gatehouse::try_parse_from(words(line))
                .unwrap_or_else(|e| panic!("README line does not parse: {line}\n{e}"))
                .command;
            cli::run(cmd, &config)
                .await
                .unwrap_or_else(|e| panic!("README line failed: {line}\n{e:#}"));
            continue;
        }
        let addr = sidecar.as_ref().map(|s| s.device_addr.to_string());
        let line = match &addr {
            Some(a) => line.replace("127.0.0.1:8443", a),
            None => line.clone(),
        };
        let out = Process::new("bash")
            .args(["-euo", "pipefail", "-c", &line])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "README line failed: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let sidecar = sidecar.expect("the walkthrough starts the sidecar");

    // Step 4: the device got the reference's answer.
    let answer: Value = outputs
        .iter()
        .find_map(|o| serde_json::from_str(o).ok())
        .expect("the register call printed JSON");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["code"], "registered");
    assert_eq!(answer["registro_id"], 1);
    let reg = sidecar
        .service
        .store()
        .registration(1)
        .await
        .unwrap()
        .unwrap();
    assert!(
        reg.bootstrap_id.is_some(),
        "bootstrap cert taken from the TLS session"
    );
    // Step 2: the bootstrap key is gone from the server.
    let boots = sidecar.service.store().bootstraps().await.unwrap();
    assert!(!boots[0].key_available);
    // Step 5: the bundle, signed from the device's own key.
    let files = unzip(&std::fs::read("GW0001-EEFF.zip").unwrap());
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
    std::fs::write("issued.crt", &files["device.crt"]).unwrap();
    let verify = Process::new("openssl")
        .args(["verify", "-CAfile", "ca.crt", "issued.crt"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let key_pub = Process::new("openssl")
        .args(["pkey", "-in", "device.key", "-pubout"])
        .output()
        .unwrap();
    let cert_pub = Process::new("openssl")
        .args(["x509", "-in", "issued.crt", "-pubkey", "-noout"])
        .output()
        .unwrap();
    assert_eq!(
        key_pub.stdout, cert_pub.stdout,
        "certificate holds the device's key"
    );
    // Step 7: the CRL on disk and the one served hold the serial.
    let verifier = CrlVerifier::from_ca_file("ca.crt").unwrap();
    let on_disk =
        RevocationSet::from_crl_file(config.tls.crl.as_ref().unwrap(), &verifier).unwrap();
    assert!(on_disk.contains(&id.serial));
    let served = RevocationSet::from_crl_file("current.crl", &verifier).unwrap();
    assert!(served.contains(&id.serial));
    sidecar.stop().await;
}
