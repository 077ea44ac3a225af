//! The provisioning sidecar inside `gatehouse serve`, end to end: a device
//! registers over HTTPS, an admin allocates it through the admin API, the
//! certificate it gets verifies against the fleet CA and connects to the
//! same process's broker, confined to its own telemetry topics; revoking it
//! through the admin API lands in the CRL the broker watches, which refuses
//! the certificate and kicks the live session within a second. Presence is
//! written to the registry (`is_online` / `last_seen`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{LONG, exe};
use gatehouse_auth::{CrlVerifier, RevocationSet, Serial};
use gatehouse_tests::broker::{BrokerProcess, free_port};
use gatehouse_tests::mqtt::V5;
use gatehouse_tests::pki::Pki;
use gatehouse_tests::postgres::Postgres;
use gatehouse_tests::provisioning::{csr_p256, https_client, tls_client_config, unzip};
use rumqttc::v5::ConnectionError;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet, PubAckReason};
use serde_json::{Value, json};

const TOKEN: &str = "e2e-admin-token-0123456789abcdef";

struct Fleet {
    broker: BrokerProcess,
    pki: Pki,
    device: String,
    admin: String,
    http: reqwest::Client,
    /// Presents a bootstrap certificate issued through the admin API.
    device_http: tokio::sync::OnceCell<reqwest::Client>,
    ca_pem: String,
    crl_path: PathBuf,
}

/// `gatehouse serve` with the sidecar on free ports, signing with the
/// fixture PKI's CA (the one the broker trusts).
fn start() -> Fleet {
    start_with("")
}

/// [`start`] with more `[provisioning]` keys.
fn start_with(provisioning: &str) -> Fleet {
    let pki = Pki::generate();
    let ca_cert = pki.dir().join("fleet-ca.crt");
    let ca_key = pki.dir().join("fleet-ca.key");
    pki.ca.write_files(&ca_cert, &ca_key).unwrap();
    let token = pki.dir().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let device = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "[provisioning]\nlisten = \"{device}\"\nadmin_listen = \"{admin}\"\n\
         admin_token_file = {token:?}\nca_key = {ca_key:?}\n{provisioning}\n"
    );
    let broker = BrokerProcess::start(exe(), &pki, &extra);
    let ca_pem = std::fs::read_to_string(&pki.ca_path).unwrap();
    Fleet {
        http: https_client(&ca_pem, None),
        device_http: tokio::sync::OnceCell::new(),
        crl_path: pki.crl_path.clone(),
        broker,
        pki,
        device,
        admin,
        ca_pem,
    }
}

impl Fleet {
    /// An HTTPS client presenting a bootstrap certificate of this fleet
    /// (issued and downloaded once through the admin API), as devices do.
    async fn device_client(&self) -> &reqwest::Client {
        self.device_http
            .get_or_init(|| async {
                let resp = self
                    .admin(reqwest::Method::POST, "/api/bootstrap")
                    .json(&json!({"label": "e2e batch"}))
                    .send()
                    .await
                    .expect("issue bootstrap");
                assert_eq!(resp.status(), 201);
                let id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
                let zip = self
                    .admin(reqwest::Method::GET, &format!("/api/bootstrap/{id}/bundle"))
                    .send()
                    .await
                    .expect("bootstrap bundle")
                    .bytes()
                    .await
                    .unwrap();
                let files = unzip(&zip);
                https_client(
                    &self.ca_pem,
                    Some((&files["bootstrap.crt"], &files["bootstrap.key"])),
                )
            })
            .await
    }

    async fn register(&self, body: Value) -> Value {
        let resp = self
            .device_client()
            .await
            .post(format!("https://{}/api/provision/register/", self.device))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "registered", "{v}");
        v
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("https://{}{path}", self.admin))
            .bearer_auth(TOKEN)
    }

    /// Allocates registration `id`; (certificate id, serial, bundle files).
    async fn allocate(
        &self,
        id: i64,
        device_id: &str,
    ) -> (i64, Serial, std::collections::BTreeMap<String, String>) {
        let resp = self
            .admin(
                reqwest::Method::POST,
                &format!("/api/registrations/{id}/allocate"),
            )
            .json(&json!({"tenant": "acme", "device_id": device_id, "name": "Pump house"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let header = |h: &str| resp.headers()[h].to_str().unwrap().to_owned();
        let cert_id = header("x-gatehouse-certificate-id").parse().unwrap();
        let serial = header("x-gatehouse-serial").parse().unwrap();
        let files = unzip(&resp.bytes().await.unwrap());
        (cert_id, serial, files)
    }

    async fn gateway(&self, code: &str) -> Value {
        let list: Value = self
            .admin(reqwest::Method::GET, "/api/gateways")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let all = list.as_array().cloned().unwrap_or_else(|| {
            list["gateways"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| panic!("gateway list: {list}"))
        });
        all.into_iter()
            .find(|g| g["gateway_code"] == code)
            .unwrap_or_else(|| panic!("{code} not among {list}"))
    }

    /// Polls the registry until `code`'s is_online is `online` (10 s).
    async fn wait_online(&self, code: &str, online: bool) -> Value {
        let deadline = Instant::now() + LONG;
        loop {
            let g = self.gateway(code).await;
            if g["is_online"] == online {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "{code} is_online never became {online}: {g}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(&self, cert: &str, key: &str, id: &str) -> Result<V5, ConnectionError> {
        let tls = tls_client_config(&self.ca_pem, Some((cert, key)));
        V5::open("localhost", self.broker.mqtt.port(), tls, id, |_| {}).await
    }

    fn crl(&self) -> RevocationSet {
        let verifier = CrlVerifier::from_ca_file(&self.pki.ca_path).unwrap();
        RevocationSet::from_crl_file(&self.crl_path, &verifier).expect("CRL verifies")
    }
}

/// Publishes QoS 1 on its own data topic and reads it back through its own
/// subscription; then a publish on another gateway's topic gets PUBACK 0x87.
async fn confined_to_own_topics(mut v5: V5, code: &str) {
    let own = format!("telemetry/{code}/#");
    v5.client.subscribe(&own, QoS::AtLeastOnce).await.unwrap();
    v5.wait_for(LONG, |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await
        .unwrap()
        .expect("SUBACK");
    let topic = format!("telemetry/{code}/data");
    v5.client
        .publish(&topic, QoS::AtLeastOnce, false, br#"{"v":1}"#.to_vec())
        .await
        .unwrap();
    let got = v5.next_publish(LONG).await.expect("own publish delivered");
    assert_eq!(got.topic, topic.as_bytes());
    v5.client
        .publish(
            "telemetry/GW0001-EEFF/data",
            QoS::AtLeastOnce,
            false,
            b"spoof".to_vec(),
        )
        .await
        .unwrap();
    let reason = v5.next_puback_reason(LONG).await;
    assert!(
        matches!(reason, Ok(Some(PubAckReason::NotAuthorized))),
        "expected PUBACK 0x87 on another gateway's topic, got {reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_path_register_allocate_connect_revoke_kick() {
    let f = start();
    // The device makes its key and CSR and registers (no key leaves it).
    let key = csr_p256();
    let reg = f
        .register(
            json!({"mac": "aa:bb:cc:dd:01:01", "serial": "DCU-1", "modelo": "DCU-8210",
                         "fw_version": "4.1.0", "csr_pem": key.csr_pem}),
        )
        .await;
    let (cert_id, serial, files) = f
        .allocate(reg["registro_id"].as_i64().unwrap(), "GW0101")
        .await;
    assert!(
        !files.contains_key("device.key"),
        "CSR path: no key in the bundle"
    );
    assert_eq!(files["ca.crt"].trim(), f.ca_pem.trim());
    assert!(files.contains_key("README_nvs.txt"));
    let cert_pem = &files["device.crt"];

    // The certificate verifies against the fleet CA, carries the device's key
    // and is named after the gateway code.
    let ca_der = pem::parse(&f.ca_pem).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der.contents()).unwrap();
    let der = pem::parse(cert_pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the fleet CA");
    assert_eq!(cert.public_key().raw, key.spki_der.as_slice());
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(cn, "GW0101-0101");
    assert_eq!(Serial::from_bytes(cert.raw_serial()).unwrap(), serial);

    // It connects to the broker and stays inside telemetry/GW0101-0101/#.
    let v5 = f.connect(cert_pem, &key.key_pem, cn).await.unwrap();
    let online = f.wait_online(cn, true).await;
    assert!(online["last_seen"].is_string(), "{online}");
    confined_to_own_topics(v5, cn).await;

    // Revoke through the admin API while a session is open.
    let mut live = f.connect(cert_pem, &key.key_pem, cn).await.unwrap();
    assert!(!f.crl().contains(&serial));
    let started = Instant::now();
    let resp = f
        .admin(
            reqwest::Method::POST,
            &format!("/api/certificates/{cert_id}/revoke"),
        )
        .json(&json!({"reason": "keyCompromise", "notes": "e2e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reason = live.server_disconnect(Duration::from_secs(5)).await;
    let kicked_after = started.elapsed();
    println!("revocation via the admin API -> live session kicked after {kicked_after:?}");
    assert_eq!(reason, Some(DisconnectReasonCode::NotAuthorized));
    assert!(
        kicked_after < Duration::from_secs(1),
        "kick took {kicked_after:?}"
    );
    assert!(f.crl().contains(&serial), "CRL file holds the serial");
    let published = f
        .http
        .get(format!("https://{}/crl.pem", f.device))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let verifier = CrlVerifier::from_ca_file(&f.pki.ca_path).unwrap();
    assert!(
        RevocationSet::from_crl_bytes(published.as_bytes(), &verifier)
            .unwrap()
            .contains(&serial)
    );
    // A new connection with it is refused at the handshake.
    assert!(f.connect(cert_pem, &key.key_pem, cn).await.is_err());
    f.broker
        .wait_metric("gatehouse_revocation_kicks_total", |v| v == 1.0);
    let offline = f.wait_online(cn, false).await;
    assert!(offline["last_seen"].is_string(), "{offline}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_path_server_generated_key_connects() {
    let f = start();
    let reg = f
        .register(json!({"mac": "aa:bb:cc:dd:02:0a", "modelo": "DCU-1800"}))
        .await;
    let (_, serial, files) = f
        .allocate(reg["registro_id"].as_i64().unwrap(), "GW0102")
        .await;
    let key = files
        .get("device.key")
        .expect("legacy path: the bundle holds the server-generated key");
    let cert_pem = &files["device.crt"];
    let der = pem::parse(cert_pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
    assert_eq!(Serial::from_bytes(cert.raw_serial()).unwrap(), serial);
    let v5 = f.connect(cert_pem, key, "GW0102-020A").await.unwrap();
    f.wait_online("GW0102-020A", true).await;
    confined_to_own_topics(v5, "GW0102-020A").await;
    assert!(
        f.broker.log().contains("presence: online"),
        "{}",
        f.broker.log()
    );
}

/// Two nodes share a PostgreSQL registry. Node B (another sidecar, writing
/// its CRL to its own file) revokes a certificate; node A's `gatehouse
/// serve` learns it only through `NOTIFY gatehouse_crl`, rewrites its own
/// `[tls] crl` from the database and kicks the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_another_node_arrives_through_notify() {
    let pg = Postgres::start();
    let url = pg.database_url();
    let f = start_with(&format!("database_url = {url:?}"));
    let key = csr_p256();
    let reg = f
        .register(json!({"mac": "aa:bb:cc:dd:03:03", "csr_pem": key.csr_pem}))
        .await;
    let (cert_id, serial, files) = f
        .allocate(reg["registro_id"].as_i64().unwrap(), "GW0103")
        .await;
    let cert_pem = &files["device.crt"];
    let mut live = f
        .connect(cert_pem, &key.key_pem, "GW0103-0303")
        .await
        .unwrap();
    f.wait_online("GW0103-0303", true).await;

    // Node B: same CA and database, its own CRL file.
    let b_dir = tempfile::tempdir().unwrap();
    let b_crl = b_dir.path().join("node-b.crl");
    let b_toml = b_dir.path().join("gatehouse.toml");
    std::fs::write(
        &b_toml,
        format!(
            "data_dir = {data:?}\n[tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\ncrl = {b_crl:?}\n\
             [provisioning]\ndatabase_url = {url:?}\nca_key = {ca_key:?}\n",
            data = b_dir.path(),
            ca = f.pki.ca_path,
            cert = f.pki.server.cert_path,
            key = f.pki.server.key_path,
            ca_key = f.pki.dir().join("fleet-ca.key"),
        ),
    )
    .unwrap();
    let b_config = gatehouse_config::Config::load(&b_toml).unwrap();
    let node_b = gatehouse_provisioning::Provisioning::open(
        &b_config,
        gatehouse_provisioning::metrics::Metrics::unregistered(),
    )
    .await
    .unwrap();
    let before = std::fs::read(&f.crl_path).unwrap();

    let started = Instant::now();
    node_b
        .revoke(
            gatehouse_provisioning::service::RevokeTarget::Certificate(cert_id),
            gatehouse_ca::RevocationReason::KeyCompromise,
            Some("node B"),
            "e2e",
        )
        .await
        .unwrap();
    let reason = live.server_disconnect(Duration::from_secs(5)).await;
    let kicked_after = started.elapsed();
    println!("revocation on node B -> NOTIFY -> node A kicked the session after {kicked_after:?}");
    assert_eq!(reason, Some(DisconnectReasonCode::NotAuthorized));
    assert!(
        kicked_after < Duration::from_secs(1),
        "kick took {kicked_after:?}"
    );
    // Node B wrote only its own file; node A's file was rewritten by node A.
    let verifier = CrlVerifier::from_ca_file(&f.pki.ca_path).unwrap();
    assert!(
        RevocationSet::from_crl_file(&b_crl, &verifier)
            .unwrap()
            .contains(&serial)
    );
    assert_ne!(std::fs::read(&f.crl_path).unwrap(), before);
    assert!(f.crl().contains(&serial), "node A's CRL holds the serial");
    assert!(
        f.broker
            .log()
            .contains("CRL rewritten from the database after NOTIFY gatehouse_crl"),
        "{}",
        f.broker.log()
    );
    assert!(
        f.connect(cert_pem, &key.key_pem, "GW0103-0303")
            .await
            .is_err()
    );
}

/// `gatehouse provisioning serve`: the sidecar alone (next to Mosquitto),
/// after `gatehouse ca init`, on the same store the CLI reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_runs_alone_for_mosquitto_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let device = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let toml = dir.path().join("gatehouse.toml");
    std::fs::write(
        &toml,
        format!(
            "[listeners]\nmetrics = \"{metrics}\"\n\n[provisioning]\nlisten = \"{device}\"\nadmin_listen = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let gatehouse = |args: &[&str]| {
        let out = std::process::Command::new(exe())
            .args(args)
            .arg("--config")
            .arg(&toml)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gatehouse {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let init = gatehouse(&["ca", "init"]);
    assert!(init.contains("admin token: wrote"), "{init}");
    let mut sidecar = std::process::Command::new(exe())
        .args(["provisioning", "serve", "--config"])
        .arg(&toml)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LONG;
    while std::net::TcpStream::connect(&device).is_err() {
        assert!(
            Instant::now() < deadline,
            "sidecar not listening on {device}"
        );
        assert!(sidecar.try_wait().unwrap().is_none(), "sidecar exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ca_pem = std::fs::read_to_string(dir.path().join("gatehouse-data/ca.crt")).unwrap();
    // Without a bootstrap certificate: refused; with the batch's: registered.
    let resp = https_client(&ca_pem, None)
        .post(format!("https://{device}/api/provision/register/"))
        .json(&json!({"mac": "aa:bb:cc:dd:04:04"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    gatehouse(&[
        "bootstrap",
        "issue",
        "--label",
        "batch",
        "--out",
        "batch.zip",
    ]);
    let batch = unzip(&std::fs::read(dir.path().join("batch.zip")).unwrap());
    let resp = https_client(
        &ca_pem,
        Some((&batch["bootstrap.crt"], &batch["bootstrap.key"])),
    )
    .post(format!("https://{device}/api/provision/register/"))
    .json(&json!({"mac": "aa:bb:cc:dd:04:04"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    // Its metrics are served on [listeners] metrics.
    let text = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&metrics).expect("metrics listener");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(
        text.contains("gatehouse_provisioning_register_requests_total{outcome=\"registered\"} 1"),
        "{text}"
    );
    let listed: Value =
        serde_json::from_str(&gatehouse(&["registrations", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["mac"], "aa:bb:cc:dd:04:04", "{listed}");
    assert_eq!(listed[0]["status"], "PENDENTE", "{listed}");
    let table = gatehouse(&["registrations", "list"]);
    assert!(
        table.contains("aa:bb:cc:dd:04:04") && table.contains("PENDENTE"),
        "{table}"
    );
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(sidecar.id().to_string())
        .status()
        .unwrap();
    assert!(sidecar.wait().unwrap().success());
}

/// With a config file and no CA key, serve refuses to start and says how to
/// fix it (one line, no duplicated causes).
#[test]
fn serve_without_the_ca_key_says_what_to_do() {
    let pki = Pki::generate();
    let toml = pki.dir().join("gatehouse.toml");
    std::fs::write(
        &toml,
        format!(
            "data_dir = {data:?}\n[tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\ncrl = {crl:?}\n\
             [listeners]\nmqtt = \"127.0.0.1:{mqtt}\"\nmetrics = \"\"\n\
             [provisioning]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
            data = pki.dir().join("data"),
            ca = pki.ca_path,
            cert = pki.server.cert_path,
            key = pki.server.key_path,
            crl = pki.crl_path,
            mqtt = free_port(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(exe())
        .args(["serve", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("gatehouse: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("gatehouse ca init"), "{line}");
    assert!(line.contains("enabled = false"), "{line}");
    assert!(line.contains("ca.key"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_watch_counts_due_certificates_on_the_broker_metrics() {
    // 100-day certificates are inside the 730-day renewal window at once.
    let f = start_with("validity_days = 100\nrenewal_check_interval = \"200ms\"");
    let sample = "gatehouse_provisioning_certificates_renewal_due";
    assert!(
        f.broker
            .http_get("/metrics")
            .is_some_and(|m| m.contains(sample)),
        "{sample} is not on the broker's /metrics"
    );
    assert_eq!(f.broker.metric(sample), 0.0);
    let key = csr_p256();
    let reg = f
        .register(json!({"mac": "aa:bb:cc:dd:05:05", "csr_pem": key.csr_pem}))
        .await;
    f.allocate(reg["registro_id"].as_i64().unwrap(), "GW0505")
        .await;
    assert_eq!(f.broker.wait_metric(sample, |v| v >= 1.0), 1.0);
}
