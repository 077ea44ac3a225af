//! The provisioning sidecar over real HTTPS (rustls on 127.0.0.1): every
//! answer of the reference's self-registration contract, rate limiting,
//! idempotency, bad input, the CSR and legacy allocation paths, revocation
//! and the CRL, bootstrap certificates, admin authentication, renewal watch
//! and presence. Each scenario runs against SQLite and against a private
//! PostgreSQL (`gatehouse_tests::postgres`).

use gatehouse_auth::{Classifier, CrlVerifier, Kind, RevocationSet, Serial};
use gatehouse_tests::postgres::Postgres;
use gatehouse_tests::provisioning::{
    DeviceKey, Harness, StoreKind, csr_bad_signature, csr_p256, csr_rsa1024, csr_rsa2048, unzip,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const REGISTER: &str = "/api/provision/register/";

async fn post(
    h: &Harness,
    client: &reqwest::Client,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let resp = client
        .post(h.device_url(REGISTER))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON answer");
    (status, body)
}

/// Registers as a device does: presenting the fleet's bootstrap certificate.
async fn register(h: &Harness, body: Value) -> (StatusCode, Value) {
    post(h, &h.device_client().await, body.to_string()).await
}

fn admin(h: &Harness, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    h.client(None)
        .request(method, h.admin_url(path))
        .bearer_auth(&h.token)
}

async fn admin_json(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = admin(h, method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin request");
    (resp.status(), resp.json().await.expect("JSON answer"))
}

async fn allocate(h: &Harness, id: i64, device_id: &str) -> reqwest::Response {
    admin(
        h,
        reqwest::Method::POST,
        &format!("/api/registrations/{id}/allocate"),
    )
    .json(&json!({"tenant": "acme", "device_id": device_id, "name": "Pump house"}))
    .send()
    .await
    .expect("allocate")
}

fn invalid(message_part: &str, body: &Value) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["code"], "invalid_request", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains(message_part),
        "message should mention {message_part:?}: {body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "only status/code/message: {body}"
    );
}

fn verify_against_ca(
    cert_pem: &str,
    ca_pem: &str,
) -> x509_parser::certificate::X509Certificate<'static> {
    use x509_parser::prelude::*;
    let cert_der = ::pem::parse(cert_pem).unwrap().into_contents().leak();
    let ca_der = ::pem::parse(ca_pem).unwrap().into_contents().leak();
    let (_, ca) = X509Certificate::from_der(ca_der).unwrap();
    let (_, cert) = X509Certificate::from_der(cert_der).unwrap();
    cert.verify_signature(Some(ca.public_key()))
        .expect("issued certificate verifies against the fleet CA");
    cert
}

// ---- the contract -----------------------------------------------------------

async fn register_contract(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000").await;
    let (s, b) = register(
        &h,
        json!({"mac": "AA:BB:CC:DD:EE:01", "serial": "DCU-8210-001234", "modelo": "DCU-8210", "fw_version": "4.0.1"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let id = b["registro_id"]
        .as_i64()
        .expect("registro_id is an integer");
    assert_eq!(
        b,
        json!({"status": "ok", "code": "registered",
               "message": "Device registrado. Aguardando alocação pelo administrador.",
               "registro_id": id})
    );
    // Same MAC (other spelling, other path): the existing record.
    let resp = h
        .device_client()
        .await
        .post(h.device_url("/tds_new/api/provision/register/"))
        .body(json!({"mac": "aa:bb:cc:dd:ee:01"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": "ok", "code": "already_registered",
               "message": "Device já registrado. Status: PENDENTE",
               "registro_status": "PENDENTE", "registro_id": id})
    );
    // The record holds what the device sent, MAC normalised, source IP.
    let (s, list) = admin_json(
        &h,
        reqwest::Method::GET,
        "/api/registrations?status=PENDENTE",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["mac"], "aa:bb:cc:dd:ee:01");
    assert_eq!(list[0]["serial"], "DCU-8210-001234");
    assert_eq!(list[0]["model"], "DCU-8210");
    assert_eq!(list[0]["fw_version"], "4.0.1");
    assert_eq!(list[0]["source_ip"], "127.0.0.1");
    assert_eq!(list[0]["has_csr"], false);
    h.stop().await;
}

async fn bad_input(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000\nmax_body_bytes = 4096").await;
    let c = h.device_client().await;
    let cases: Vec<(String, &str)> = vec![
        ("{}".into(), "`mac` is required"),
        (json!({"mac": null}).to_string(), "`mac` is required"),
        (json!({"mac": "aa:bb:cc:dd:ee"}).to_string(), "MAC address"),
        (
            json!({"mac": "aa:bb:cc:dd:ee:gg"}).to_string(),
            "MAC address",
        ),
        (json!({"mac": "aabbccddeeff"}).to_string(), "MAC address"),
        (json!({"mac": 12345}).to_string(), "`mac` must be a string"),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "serial": 7}).to_string(),
            "`serial` must be a string",
        ),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "modelo": ["x"]}).to_string(),
            "`modelo` must be a string",
        ),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "fw_version": {"a": 1}}).to_string(),
            "`fw_version` must be a string",
        ),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "serial": "x".repeat(65)}).to_string(),
            "longer than 64",
        ),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "bootstrap_fingerprint": "zz"}).to_string(),
            "SHA-256 fingerprint",
        ),
        ("{\"mac\": \"aa:bb:cc:dd:ee:02\"".into(), "not valid JSON"),
        ("not json at all".into(), "not valid JSON"),
        ("[1,2,3]".into(), "JSON object"),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "csr_pem": "garbage"}).to_string(),
            "`csr_pem` refused",
        ),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "csr_pem": csr_rsa1024()}).to_string(),
            "too weak",
        ),
        (
            json!({"mac": "aa:bb:cc:dd:ee:02", "csr_pem": csr_bad_signature()}).to_string(),
            "self-signature",
        ),
    ];
    for (body, part) in &cases {
        let (s, b) = post(&h, &c, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {b}");
        invalid(part, &b);
    }
    // Oversized body: 413 with the same JSON shape.
    let big = json!({"mac": "aa:bb:cc:dd:ee:02", "serial": "x".repeat(5000)}).to_string();
    let (s, b) = post(&h, &c, big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    invalid("larger than 4096 bytes", &b);
    // Nothing was recorded for any of them, and the server still serves.
    let (_, list) = admin_json(&h, reqwest::Method::GET, "/api/registrations", None).await;
    assert_eq!(list, json!([]));
    let (s, b) = register(&h, json!({"mac": "aa:bb:cc:dd:ee:02"})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::OK, Some("registered"))
    );
    let counted = h
        .metrics
        .register_requests
        .with_label_values(&["invalid_request"])
        .get();
    assert_eq!(counted, cases.len() as u64 + 1);
    h.stop().await;
}

async fn rate_limit(store: StoreKind) {
    let second_store = another(&store).await;
    let h = Harness::start(store, "rate_limit = 3").await;
    for i in 0..3 {
        let (s, _) = register(&h, json!({"mac": format!("aa:bb:cc:dd:ee:1{i}")})).await;
        assert_eq!(s, StatusCode::OK);
    }
    // Invalid requests count too (the reference limits before validating).
    let (s, b) = register(&h, json!({"mac": "aa:bb:cc:dd:ee:19"})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["status"], "error");
    assert_eq!(b["code"], "rate_limited");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 per 3600s"),
        "{b}"
    );
    // X-Forwarded-For from an untrusted peer is ignored: still limited.
    let resp = h
        .device_client()
        .await
        .post(h.device_url(REGISTER))
        .header("x-forwarded-for", "203.0.113.9")
        .body(json!({"mac": "aa:bb:cc:dd:ee:19"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // Nothing past the limit was stored.
    let (_, list) = admin_json(&h, reqwest::Method::GET, "/api/registrations", None).await;
    assert_eq!(list.as_array().unwrap().len(), 3);
    h.stop().await;

    // Behind a trusted proxy, each forwarded client has its own budget.
    let h = Harness::start(
        second_store,
        "rate_limit = 1\ntrusted_proxies = [\"127.0.0.1\"]",
    )
    .await;
    for (i, ip) in ["203.0.113.1", "203.0.113.2"].iter().enumerate() {
        let resp = h
            .device_client()
            .await
            .post(h.device_url(REGISTER))
            .header("x-forwarded-for", *ip)
            .body(json!({"mac": format!("aa:bb:cc:dd:ee:2{i}")}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{ip}");
    }
    let resp = h
        .device_client()
        .await
        .post(h.device_url(REGISTER))
        .header("x-forwarded-for", "203.0.113.1")
        .body(json!({"mac": "aa:bb:cc:dd:ee:29"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let (_, list) = admin_json(&h, reqwest::Method::GET, "/api/registrations", None).await;
    assert_eq!(list[0]["source_ip"], "203.0.113.1");
    h.stop().await;
}

async fn idempotency_and_states(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000").await;
    let mac = "aa:bb:cc:dd:ee:31";
    let (_, b) = register(&h, json!({"mac": mac})).await;
    let first = b["registro_id"].as_i64().unwrap();
    // Reject it: the next POST opens a new PENDENTE record.
    let (s, r) = admin_json(
        &h,
        reqwest::Method::POST,
        &format!("/api/registrations/{first}/reject"),
        Some(json!({"notes": "unknown unit"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["status"], "REJEITADO");
    assert_eq!(r["notes"], "unknown unit");
    assert_eq!(r["processed_by"], "admin-api");
    let (s, b) = register(&h, json!({"mac": mac})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::OK, Some("registered"))
    );
    let second = b["registro_id"].as_i64().unwrap();
    assert_ne!(second, first);
    // Rejecting twice is a conflict.
    let (s, r) = admin_json(
        &h,
        reqwest::Method::POST,
        &format!("/api/registrations/{first}/reject"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    // Allocate the new one: PROVISIONADO, and the device is told so.
    assert_eq!(
        allocate(&h, second, "GW0031").await.status(),
        StatusCode::OK
    );
    let (s, b) = register(&h, json!({"mac": mac})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"status": "ok", "code": "already_registered",
               "message": "Device já provisionado. Use o certificado individual.",
               "registro_status": "PROVISIONADO", "registro_id": second})
    );
    // Allocating again, or an unknown id, is refused precisely.
    let resp = allocate(&h, second, "GW0031").await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = allocate(&h, 99_999, "GW9999").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Concurrent POSTs for one new MAC make one record.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, url) = (h.device_client().await, h.device_url(REGISTER));
        set.spawn(async move {
            let r = c
                .post(url)
                .body(json!({"mac": "aa:bb:cc:dd:ee:32"}).to_string())
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        });
    }
    let results = set.join_all().await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::OK),
        "{results:?}"
    );
    let ids: std::collections::BTreeSet<i64> = results
        .iter()
        .map(|(_, b)| b["registro_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(
        results
            .iter()
            .filter(|(_, b)| b["code"] == "registered")
            .count(),
        1
    );
    // The audit log holds both admin actions, in order.
    let (_, audit) = admin_json(&h, reqwest::Method::GET, "/api/audit", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        // The harness issued and downloaded the devices' bootstrap certificate.
        .filter(|a| !a.starts_with("bootstrap."))
        .collect();
    assert_eq!(actions, ["registration.reject", "registration.allocate"]);
    // ... and cannot be rewritten.
    let pool = h.sidecar.service.store().pool();
    let upd = sqlx::query("UPDATE audit_log SET actor = 'someone else'")
        .execute(pool)
        .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM audit_log").execute(pool).await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
    h.stop().await;
}

// ---- allocation paths --------------------------------------------------------

async fn csr_path(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000").await;
    let classifier = Classifier::subject_ou("bootstrap", "gateway").unwrap();
    let keys: [(&str, DeviceKey); 2] = [
        ("aa:bb:cc:dd:ee:41", csr_p256()),
        ("aa:bb:cc:dd:ee:42", csr_rsa2048()),
    ];
    for (i, (mac, key)) in keys.iter().enumerate() {
        let (s, b) = register(
            &h,
            json!({"mac": mac, "modelo": "DCU-8210", "csr_pem": key.csr_pem}),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (StatusCode::OK, Some("registered")),
            "{b}"
        );
        let id = b["registro_id"].as_i64().unwrap();
        let device_id = format!("GW004{i}");
        let resp = allocate(&h, id, &device_id).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/zip");
        assert_eq!(resp.headers()["x-gatehouse-mode"], "csr");
        let code = format!("{device_id}-{}", mac[12..].replace(':', "").to_uppercase());
        assert_eq!(resp.headers()["x-gatehouse-gateway-code"], code.as_str());
        let files = unzip(&resp.bytes().await.unwrap());
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["README_nvs.txt", "ca.crt", "device.crt"],
            "no device.key in CSR mode"
        );
        assert_eq!(files["ca.crt"], h.ca_pem());
        assert!(files["README_nvs.txt"].contains("tls/cert    = device.crt"));
        assert!(files["README_nvs.txt"].contains("tls/ca_crt  = ca.crt"));
        assert!(files["README_nvs.txt"].contains(&format!("telemetry/{code}/data")));
        let cert = verify_against_ca(&files["device.crt"], &h.ca_pem());
        assert_eq!(
            cert.public_key().raw,
            key.spki_der.as_slice(),
            "certificate carries the CSR's key"
        );
        let der = pem::parse(&files["device.crt"]).unwrap().into_contents();
        let id = classifier.identify(&der).unwrap();
        assert_eq!(id.kind, Kind::Operational);
        assert_eq!(id.gateway_code(), Some(code.as_str()));
        let days = (id.not_after - time::OffsetDateTime::now_utc()).whole_days();
        assert!(
            (3648..=3650).contains(&days),
            "10-year validity, got {days} days"
        );
    }
    // The registry: gateways, certificates, registrations PROVISIONADO.
    let (_, gws) = admin_json(&h, reqwest::Method::GET, "/api/gateways", None).await;
    assert_eq!(gws.as_array().unwrap().len(), 2);
    assert_eq!(gws[0]["gateway_code"], "GW0040-EE41");
    assert_eq!(gws[0]["tenant"], "acme");
    assert_eq!(gws[0]["model"], "DCU-8210");
    assert_eq!(gws[0]["is_online"], false);
    let (_, certs) = admin_json(&h, reqwest::Method::GET, "/api/certificates", None).await;
    assert_eq!(certs[1]["kind"], "csr");
    assert!(certs.to_string().find("PRIVATE KEY").is_none());
    let (_, regs) = admin_json(
        &h,
        reqwest::Method::GET,
        "/api/registrations?status=PROVISIONADO",
        None,
    )
    .await;
    assert_eq!(regs.as_array().unwrap().len(), 2);
    // Duplicate device_id is refused without consuming the registration.
    let (_, b) = register(
        &h,
        json!({"mac": "aa:bb:cc:dd:ee:43", "csr_pem": csr_p256().csr_pem}),
    )
    .await;
    let id = b["registro_id"].as_i64().unwrap();
    let resp = allocate(&h, id, "GW0040").await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let bad = admin(
        &h,
        reqwest::Method::POST,
        &format!("/api/registrations/{id}/allocate"),
    )
    .json(&json!({"tenant": "acme", "device_id": "bad/id"}))
    .send()
    .await
    .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let (_, r) = admin_json(
        &h,
        reqwest::Method::GET,
        "/api/registrations?status=PENDENTE",
        None,
    )
    .await;
    assert_eq!(r[0]["id"], id);
    h.stop().await;
}

async fn legacy_path(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000").await;
    let (_, b) = register(
        &h,
        json!({"mac": "aa:bb:cc:dd:ee:51", "fw_version": "3.9.0"}),
    )
    .await;
    let id = b["registro_id"].as_i64().unwrap();
    let resp = allocate(&h, id, "GW0051").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-gatehouse-mode"], "legacy");
    let cert_id: i64 = resp.headers()["x-gatehouse-certificate-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let files = unzip(&resp.bytes().await.unwrap());
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["README_nvs.txt", "ca.crt", "device.crt", "device.key"]
    );
    let cert = verify_against_ca(&files["device.crt"], &h.ca_pem());
    let key = rcgen::KeyPair::from_pem(&files["device.key"]).expect("usable device key");
    assert_eq!(
        cert.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice(),
        "key matches certificate"
    );
    assert!(files["README_nvs.txt"].contains("tls/key     = device.key"));
    // Re-download: certificate and CA only; the key was handed out once.
    let again = admin(
        &h,
        reqwest::Method::GET,
        &format!("/api/certificates/{cert_id}/bundle"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let files = unzip(&again.bytes().await.unwrap());
    assert!(!files.contains_key("device.key"));
    assert!(files.contains_key("device.crt"));
    let (s, crl) = admin_json(&h, reqwest::Method::POST, "/api/crl", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(crl["number"].as_u64().unwrap() >= 2, "{crl}");
    let (_, audit) = admin_json(&h, reqwest::Method::GET, "/api/audit", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        // The harness issued and downloaded the devices' bootstrap certificate.
        .filter(|a| !a.starts_with("bootstrap."))
        .collect();
    assert_eq!(
        actions,
        ["registration.allocate", "certificate.bundle", "crl.write"]
    );
    h.stop().await;
}

// ---- revocation and bootstrap -------------------------------------------------

async fn revoke_publishes_crl(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000").await;
    let (_, b) = register(
        &h,
        json!({"mac": "aa:bb:cc:dd:ee:61", "csr_pem": csr_p256().csr_pem}),
    )
    .await;
    let resp = allocate(&h, b["registro_id"].as_i64().unwrap(), "GW0061").await;
    let cert_id: i64 = resp.headers()["x-gatehouse-certificate-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let serial: Serial = resp.headers()["x-gatehouse-serial"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let crl_path = h.config.tls.crl.clone().unwrap();
    let verifier = CrlVerifier::from_ca_file(&h.config.provisioning.ca_cert).unwrap();
    let before = RevocationSet::from_crl_file(&crl_path, &verifier).unwrap();
    assert!(!before.contains(&serial));

    let (s, r) = admin_json(
        &h,
        reqwest::Method::POST,
        &format!("/api/certificates/{cert_id}/revoke"),
        Some(json!({"reason": "keyCompromise", "notes": "stolen"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["crl"]["entries"], 1);
    let after = RevocationSet::from_crl_file(&crl_path, &verifier).expect("CRL on disk verifies");
    assert!(after.contains(&serial), "CRL file holds the revoked serial");
    // No temp files left next to it (written via temp + rename).
    let leftovers: Vec<_> = std::fs::read_dir(crl_path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // GET /crl.pem is public and serves the same CRL.
    let pem = h
        .client(None)
        .get(h.device_url("/crl.pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served = RevocationSet::from_crl_bytes(pem.as_bytes(), &verifier).unwrap();
    assert!(served.contains(&serial));
    let admin_pem = h
        .client(None)
        .get(h.admin_url("/crl.pem"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_pem.status(), StatusCode::OK);
    // Revoking twice is a conflict; a bad reason is a 400.
    let (s, _) = admin_json(
        &h,
        reqwest::Method::POST,
        &format!("/api/certificates/{cert_id}/revoke"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, b) = admin_json(
        &h,
        reqwest::Method::POST,
        &format!("/api/certificates/{cert_id}/revoke"),
        Some(json!({"reason": "bored"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["code"], "invalid_request");
    let (_, certs) = admin_json(&h, reqwest::Method::GET, "/api/certificates", None).await;
    assert_eq!(certs[0]["revoke_reason"], "keyCompromise");
    assert_eq!(certs[0]["revoke_notes"], "stolen");
    h.stop().await;
}

async fn bootstrap_lifecycle(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000").await;
    let (s, first) = admin_json(
        &h,
        reqwest::Method::POST,
        "/api/bootstrap",
        Some(json!({"label": "batch 1"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["is_active"], true);
    assert_eq!(first["key_available"], true);
    assert!(first.to_string().find("PRIVATE KEY").is_none());
    let (_, second) = admin_json(
        &h,
        reqwest::Method::POST,
        "/api/bootstrap",
        Some(json!({"label": "batch 2"})),
    )
    .await;
    let (_, list) = admin_json(&h, reqwest::Method::GET, "/api/bootstrap", None).await;
    assert_eq!(
        list[0]["is_active"], false,
        "issuing deactivates the previous one"
    );
    assert_eq!(list[1]["is_active"], true);
    let id = second["id"].as_i64().unwrap();
    // One-time download.
    let url = format!("/api/bootstrap/{id}/bundle");
    let resp = admin(&h, reqwest::Method::GET, &url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let files = unzip(&resp.bytes().await.unwrap());
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["README_nvs.txt", "bootstrap.crt", "bootstrap.key", "ca.crt"]
    );
    assert!(files["README_nvs.txt"].contains("bootstrap/cert    = bootstrap.crt"));
    let (s, b) = admin_json(&h, reqwest::Method::GET, &url, None).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(b["code"], "gone");
    let (_, list) = admin_json(&h, reqwest::Method::GET, "/api/bootstrap", None).await;
    assert_eq!(list[1]["key_available"], false);
    assert!(list[1]["downloaded_at"].is_string());

    // The device presents the bootstrap certificate over TLS: its
    // fingerprint comes from the session.
    let boot = h.client(Some((&files["bootstrap.crt"], &files["bootstrap.key"])));
    let fp = second["fingerprint"].as_str().unwrap().to_owned();
    let (s, b) = post(&h, &boot, json!({"mac": "aa:bb:cc:dd:ee:71"}).to_string()).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::OK, Some("registered")),
        "{b}"
    );
    let (_, regs) = admin_json(&h, reqwest::Method::GET, "/api/registrations", None).await;
    assert_eq!(regs[0]["bootstrap_id"], id);
    assert_eq!(regs[0]["bootstrap_fingerprint"], fp.as_str());
    // Matching body fingerprint (any spelling) is fine; a different one is refused.
    let (s, _) = post(&h, &boot, json!({"mac": "aa:bb:cc:dd:ee:72", "bootstrap_fingerprint": fp.replace(':', "").to_lowercase()}).to_string()).await;
    assert_eq!(s, StatusCode::OK);
    let other = first["fingerprint"].as_str().unwrap();
    let (s, b) = post(
        &h,
        &boot,
        json!({"mac": "aa:bb:cc:dd:ee:73", "bootstrap_fingerprint": other}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    invalid("does not match the client certificate", &b);

    // Emergency revoke: CRL holds it, its registrations are refused.
    let (s, r) = admin_json(
        &h,
        reqwest::Method::POST,
        &format!("/api/bootstrap/{id}/revoke"),
        Some(json!({"reason": "keyCompromise", "notes": "leaked"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let verifier = CrlVerifier::from_ca_file(&h.config.provisioning.ca_cert).unwrap();
    let set = RevocationSet::from_crl_file(h.config.tls.crl.as_ref().unwrap(), &verifier).unwrap();
    let serial: Serial = second["serial"].as_str().unwrap().parse().unwrap();
    assert!(set.contains(&serial));
    let (s, b) = post(&h, &boot, json!({"mac": "aa:bb:cc:dd:ee:74"}).to_string()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["code"], "forbidden", "{b}");
    assert!(b["message"].as_str().unwrap().contains("revoked"), "{b}");
    // First batch's bundle can no longer... it still can be downloaded once.
    let resp = admin(
        &h,
        reqwest::Method::GET,
        &format!("/api/bootstrap/{}/bundle", first["id"]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    h.stop().await;
}

async fn admin_auth(store: StoreKind) {
    let h = Harness::start(store, "").await;
    let c = h.client(None);
    let paths = [
        "/api/registrations",
        "/api/certificates",
        "/api/bootstrap",
        "/api/gateways",
        "/api/audit",
        "/api/certificates/due",
    ];
    for p in paths {
        for auth in [
            None,
            Some("Bearer wrong-token-0123456789"),
            Some("Basic abc"),
            Some(format!("Bearer {}x", h.token).leak() as &str),
        ] {
            let mut req = c.get(h.admin_url(p));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{p} {auth:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let b: Value = resp.json().await.unwrap();
            assert_eq!(b["code"], "unauthorized");
        }
    }
    // POSTs are refused before the body is looked at; nothing happens.
    let resp = c
        .post(h.admin_url("/api/bootstrap"))
        .json(&json!({"label": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, list) = admin_json(&h, reqwest::Method::GET, "/api/bootstrap", None).await;
    assert_eq!(list, json!([]));
    assert_eq!(
        h.metrics.admin_unauthorized.get(),
        (paths.len() * 4 + 1) as u64
    );
    // The device listener has no admin API.
    let resp = c
        .get(h.device_url("/api/registrations"))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    h.stop().await;
}

async fn renewal_and_presence(store: StoreKind) {
    // 100-day certificates are inside the 730-day renewal window at once.
    let h = Harness::start(store, "rate_limit = 1000\nvalidity_days = 100").await;
    let (_, b) = register(
        &h,
        json!({"mac": "aa:bb:cc:dd:ee:81", "csr_pem": csr_p256().csr_pem}),
    )
    .await;
    assert_eq!(
        allocate(&h, b["registro_id"].as_i64().unwrap(), "GW0081")
            .await
            .status(),
        StatusCode::OK
    );
    let svc = &h.sidecar.service;
    assert_eq!(svc.renewal_check().await.unwrap(), 1);
    assert_eq!(svc.renewal_check().await.unwrap(), 0, "marked once");
    assert_eq!(h.metrics.renewal_due.get(), 1);
    let (_, due) = admin_json(&h, reqwest::Method::GET, "/api/certificates/due", None).await;
    assert_eq!(due.as_array().unwrap().len(), 1);
    assert_eq!(due[0]["gateway_code"], "GW0081-EE81");
    assert_eq!(due[0]["renewal_scheduled"], true);
    assert!(due[0]["renewal_date"].is_string());

    let store = svc.store();
    let t = time::OffsetDateTime::now_utc();
    assert!(store.mark_online("GW0081-EE81", t).await.unwrap());
    assert!(!store.mark_online("NOPE-0000", t).await.unwrap());
    let (_, gws) = admin_json(&h, reqwest::Method::GET, "/api/gateways", None).await;
    assert_eq!(gws[0]["is_online"], true);
    assert_eq!(gws[0]["last_seen"], gatehouse_provisioning::store::ts(t));
    assert!(
        store
            .mark_offline("GW0081-EE81", t + time::Duration::seconds(5))
            .await
            .unwrap()
    );
    let (_, gws) = admin_json(&h, reqwest::Method::GET, "/api/gateways", None).await;
    assert_eq!(gws[0]["is_online"], false);
    assert_eq!(
        gws[0]["last_seen"],
        gatehouse_provisioning::store::ts(t + time::Duration::seconds(5))
    );
    h.stop().await;
}

// ---- device API: who may register --------------------------------------------

fn refused(status: StatusCode, code: &str, part: &str, (s, b): &(StatusCode, Value)) {
    assert_eq!(*s, status, "{b}");
    assert_eq!(b["status"], "error", "{b}");
    assert_eq!(b["code"], code, "{b}");
    assert!(
        b["message"].as_str().unwrap_or("").contains(part),
        "message should mention {part:?}: {b}"
    );
    assert_eq!(b.as_object().unwrap().len(), 3, "{b}");
}

/// MAC squatting: by default nobody registers without a valid, unrevoked
/// bootstrap certificate of this fleet, so an attacker cannot claim a MAC
/// first with their own CSR. `GET /crl.pem` stays public.
async fn bootstrap_cert_required(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000").await;
    h.bootstrap_identity().await;
    let (_, boots) = admin_json(&h, reqwest::Method::GET, "/api/bootstrap", None).await;
    let fp = boots[0]["fingerprint"].as_str().unwrap().to_owned();
    let mac = "aa:bb:cc:dd:ee:a1";
    let attacker = csr_p256();
    let anon = h.client(None);
    for body in [
        json!({"mac": mac, "csr_pem": attacker.csr_pem}),
        // A body fingerprint proves nothing without the certificate.
        json!({"mac": mac, "csr_pem": attacker.csr_pem, "bootstrap_fingerprint": fp}),
    ] {
        let answer = post(&h, &anon, body.to_string()).await;
        refused(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bootstrap certificate",
            &answer,
        );
    }
    let (_, list) = admin_json(&h, reqwest::Method::GET, "/api/registrations", None).await;
    assert_eq!(list, json!([]), "nothing recorded for anonymous callers");
    let crl = anon.get(h.device_url("/crl.pem")).send().await.unwrap();
    assert_eq!(crl.status(), StatusCode::OK);
    assert!(crl.text().await.unwrap().contains("BEGIN X509 CRL"));

    // The real device registers, and allocation signs its own key.
    let device = csr_p256();
    let (s, b) = register(&h, json!({"mac": mac, "csr_pem": device.csr_pem})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::OK, Some("registered")),
        "{b}"
    );
    let resp = allocate(&h, b["registro_id"].as_i64().unwrap(), "GW00A1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let files = unzip(&resp.bytes().await.unwrap());
    let cert = verify_against_ca(&files["device.crt"], &h.ca_pem());
    assert_eq!(cert.public_key().raw, device.spki_der.as_slice());

    // A certificate of this fleet that is no bootstrap certificate (here an
    // operational one) is refused.
    let (_, b) = register(&h, json!({"mac": "aa:bb:cc:dd:ee:a2"})).await;
    let resp = allocate(&h, b["registro_id"].as_i64().unwrap(), "GW00A2").await;
    let legacy = unzip(&resp.bytes().await.unwrap());
    let operational = h.client(Some((&legacy["device.crt"], &legacy["device.key"])));
    let answer = post(
        &h,
        &operational,
        json!({"mac": "aa:bb:cc:dd:ee:a3"}).to_string(),
    )
    .await;
    refused(
        StatusCode::FORBIDDEN,
        "forbidden",
        "not a bootstrap certificate",
        &answer,
    );
    let outcome = |o: &str| h.metrics.register_requests.with_label_values(&[o]).get();
    assert_eq!((outcome("unauthorized"), outcome("forbidden")), (2, 1));
    h.stop().await;
}

/// `require_bootstrap_cert = false` (legacy firmware): anonymous
/// registrations are accepted, a body fingerprint is not believed, and the
/// device presenting the bootstrap certificate later claims the MAC: its CSR
/// replaces the anonymous one (audited).
async fn anonymous_record_is_claimed(store: StoreKind) {
    let h = Harness::start(store, "rate_limit = 1000\nrequire_bootstrap_cert = false").await;
    h.bootstrap_identity().await;
    let (_, boots) = admin_json(&h, reqwest::Method::GET, "/api/bootstrap", None).await;
    let fp = boots[0]["fingerprint"].as_str().unwrap().to_owned();
    let mac = "aa:bb:cc:dd:ee:b1";
    let attacker = csr_p256();
    let anon = h.client(None);
    let (s, b) = post(
        &h,
        &anon,
        json!({"mac": mac, "csr_pem": attacker.csr_pem, "bootstrap_fingerprint": fp}).to_string(),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::OK, Some("registered")),
        "{b}"
    );
    let id = b["registro_id"].as_i64().unwrap();
    let (_, regs) = admin_json(&h, reqwest::Method::GET, "/api/registrations", None).await;
    assert_eq!(regs[0]["bootstrap_id"], Value::Null, "{regs}");
    assert_eq!(regs[0]["bootstrap_fingerprint"], Value::Null, "{regs}");
    // Anonymous again: the existing record, unchanged.
    let (_, b) = post(
        &h,
        &anon,
        json!({"mac": mac, "csr_pem": csr_p256().csr_pem}).to_string(),
    )
    .await;
    assert_eq!(b["code"], "already_registered", "{b}");

    let device = csr_p256();
    let (s, b) = register(&h, json!({"mac": mac, "csr_pem": device.csr_pem})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["code"], "registered", "{b}");
    assert_eq!(b["registro_id"], id, "{b}");
    let (_, regs) = admin_json(&h, reqwest::Method::GET, "/api/registrations", None).await;
    assert_eq!(regs.as_array().unwrap().len(), 1, "{regs}");
    assert_eq!(regs[0]["bootstrap_fingerprint"], fp.as_str(), "{regs}");
    // Once claimed, neither anonymous callers nor a second claim change it.
    let (_, b) = post(
        &h,
        &anon,
        json!({"mac": mac, "csr_pem": attacker.csr_pem}).to_string(),
    )
    .await;
    assert_eq!(b["code"], "already_registered", "{b}");
    let (_, b) = register(&h, json!({"mac": mac, "csr_pem": attacker.csr_pem})).await;
    assert_eq!(b["code"], "already_registered", "{b}");
    let (_, audit) = admin_json(&h, reqwest::Method::GET, "/api/audit", None).await;
    let claims: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "registration.claim")
        .collect();
    assert_eq!(claims.len(), 1, "{audit}");
    let resp = allocate(&h, id, "GW00B1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let files = unzip(&resp.bytes().await.unwrap());
    let cert = verify_against_ca(&files["device.crt"], &h.ca_pem());
    assert_eq!(
        cert.public_key().raw,
        device.spki_der.as_slice(),
        "the device's key is signed, not the squatter's"
    );
    h.stop().await;
}

// ---- device API: slow clients ---------------------------------------------------

/// Many slow-drip connections from one source (127.0.0.1) cannot take the
/// device API away from another client (127.0.0.2), and a slow body is cut
/// after `body_read_timeout` (default 10 s).
async fn slow_clients_cannot_starve(store: StoreKind) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(store, "rate_limit = 1000").await;
    let (cert, key) = h.bootstrap_identity().await.clone();
    let ca = h.ca_pem();
    let addr = h.sidecar.device_addr;
    // More than the whole connection budget of the old server (512).
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..520 {
        let ca = ca.clone();
        tasks.spawn(async move {
            let connect = gatehouse_tests::provisioning::raw_tls(&ca, addr);
            let mut tls = tokio::time::timeout(std::time::Duration::from_secs(3), connect)
                .await
                .ok()??;
            let head = "POST /api/provision/register/ HTTP/1.1\r\nhost: localhost\r\n\
                        content-type: application/json\r\ncontent-length: 100\r\n\r\n{";
            tls.write_all(head.as_bytes()).await.ok()?;
            tls.flush().await.ok()?;
            Some(tls)
        });
    }
    let mut slow = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(c) = r.unwrap() {
            slow.push(c);
        }
    }
    let started = std::time::Instant::now();
    eprintln!("{} slow connections held open", slow.len());
    assert!(!slow.is_empty());
    // One of them keeps dripping a byte a second.
    let mut drip = slow.pop().unwrap();
    let dripper = tokio::spawn(async move {
        let mut answer = Vec::new();
        loop {
            tokio::select! {
                n = drip.read_to_end(&mut answer) => {
                    let _ = n;
                    return (started.elapsed(), String::from_utf8_lossy(&answer).into_owned());
                }
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                    if drip.write_all(b" ").await.is_err() || drip.flush().await.is_err() {
                        return (started.elapsed(), String::from_utf8_lossy(&answer).into_owned());
                    }
                }
            }
        }
    });
    // Another source is served at once.
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let good =
        gatehouse_tests::provisioning::https_client_from(&ca, Some((&cert, &key)), Some(other));
    let deadline = std::time::Duration::from_secs(5);
    let crl = tokio::time::timeout(deadline, good.get(h.device_url("/crl.pem")).send())
        .await
        .expect("GET /crl.pem answered within 5 s despite the slow clients")
        .unwrap();
    assert_eq!(crl.status(), StatusCode::OK);
    let reg = tokio::time::timeout(
        deadline,
        good.post(h.device_url(REGISTER))
            .body(json!({"mac": "aa:bb:cc:dd:ee:c1"}).to_string())
            .send(),
    )
    .await
    .expect("registration answered within 5 s despite the slow clients")
    .unwrap();
    assert_eq!(reg.status(), StatusCode::OK);
    // The dripping body is cut after the body timeout (10 s), with a 408.
    let (after, answer) = tokio::time::timeout(std::time::Duration::from_secs(20), dripper)
        .await
        .expect("slow body cut within 20 s")
        .unwrap();
    assert!(
        after < std::time::Duration::from_secs(16),
        "cut after {after:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    drop(slow);
    h.stop().await;
}

// ---- admin API: errors, auth scheme, Expect -------------------------------------

async fn admin_errors_are_json(store: StoreKind) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(store, "max_body_bytes = 4096").await;
    let json_error = |status: StatusCode, resp: reqwest::Response| async move {
        assert_eq!(resp.status(), status);
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        assert_eq!(ct.as_deref(), Some("application/json"), "{status}: {text}");
        let b: Value = serde_json::from_str(&text).expect("JSON body");
        assert_eq!(b["status"], "error", "{b}");
        assert!(b["code"].is_string() && b["message"].is_string(), "{b}");
        b
    };
    let send = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap() };
    // Unknown path, wrong method, bad path parameter, bad JSON, too large.
    json_error(
        StatusCode::NOT_FOUND,
        send(admin(&h, reqwest::Method::GET, "/nope")).await,
    )
    .await;
    let b = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        send(admin(&h, reqwest::Method::GET, "/api/crl")).await,
    )
    .await;
    assert_eq!(b["code"], "method_not_allowed");
    let b = json_error(
        StatusCode::BAD_REQUEST,
        send(admin(
            &h,
            reqwest::Method::POST,
            "/api/certificates/abc/revoke",
        ))
        .await,
    )
    .await;
    assert_eq!(b["code"], "invalid_request");
    json_error(
        StatusCode::BAD_REQUEST,
        send(admin(&h, reqwest::Method::POST, "/api/bootstrap").body("{nope")).await,
    )
    .await;
    let b = json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        send(admin(&h, reqwest::Method::POST, "/api/bootstrap").body(vec![b' '; 5000])).await,
    )
    .await;
    assert_eq!(b["code"], "payload_too_large");
    // Unauthenticated: still JSON.
    let resp = send(h.client(None).get(h.admin_url("/api/crl"))).await;
    let status = resp.status();
    assert!(
        [StatusCode::UNAUTHORIZED, StatusCode::METHOD_NOT_ALLOWED].contains(&status),
        "{status}"
    );
    json_error(status, resp).await;
    // The auth scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = h
            .client(None)
            .get(h.admin_url("/api/registrations"))
            .header("authorization", format!("{scheme} {}", h.token))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    // Expect: 100-continue with a too large Content-Length: 413 at once,
    // never a 100 Continue.
    let mut tls = gatehouse_tests::provisioning::raw_tls(&h.ca_pem(), h.sidecar.admin_addr)
        .await
        .expect("TLS to the admin API");
    let head = format!(
        "POST /api/bootstrap HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 100000000\r\n\r\n",
        h.token
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    h.stop().await;
}

macro_rules! sqlite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::StoreKind::Sqlite).await
                }
            )*
        }
    };
}

sqlite!(
    register_contract,
    bad_input,
    rate_limit,
    idempotency_and_states,
    csr_path,
    legacy_path,
    revoke_publishes_crl,
    bootstrap_lifecycle,
    admin_auth,
    renewal_and_presence,
    bootstrap_cert_required,
    anonymous_record_is_claimed,
    slow_clients_cannot_starve,
    admin_errors_are_json,
);

/// A fresh, empty database on the shared PostgreSQL server.
async fn fresh_database(server_url: &str) -> String {
    use sqlx::Connection;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "prov_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(server_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let (base, _) = server_url.rsplit_once('/').expect("URL with a database");
    format!("{base}/{name}")
}

/// A second, empty store of the same kind (on the same server).
async fn another(store: &StoreKind) -> StoreKind {
    match store {
        StoreKind::Sqlite => StoreKind::Sqlite,
        StoreKind::Postgres(url) => StoreKind::Postgres(fresh_database(url).await),
    }
}

/// Every scenario against one private PostgreSQL (started once: initdb is
/// the slow part), each in a database of its own.
macro_rules! postgres {
    ($($name:ident),* $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres_scenarios() {
            let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
            let url = pg.database_url();
            $(
                eprintln!("postgres: {}", stringify!($name));
                $name(StoreKind::Postgres(fresh_database(&url).await)).await;
            )*
            postgres_revocation_notifies_listeners(fresh_database(&url).await).await;
            drop(pg);
        }
    };
}

postgres!(
    register_contract,
    bad_input,
    rate_limit,
    idempotency_and_states,
    csr_path,
    legacy_path,
    revoke_publishes_crl,
    bootstrap_lifecycle,
    admin_auth,
    renewal_and_presence,
    bootstrap_cert_required,
    anonymous_record_is_claimed,
);

/// Revocations on PostgreSQL send `NOTIFY gatehouse_crl` with the CRL number,
/// which brokers sharing the database LISTEN for.
async fn postgres_revocation_notifies_listeners(url: String) {
    let h = Harness::start(StoreKind::Postgres(url.clone()), "rate_limit = 1000").await;
    let mut listener = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    listener
        .listen(gatehouse_provisioning::store::CRL_CHANNEL)
        .await
        .unwrap();
    let (_, b) = register(
        &h,
        json!({"mac": "aa:bb:cc:dd:ee:91", "csr_pem": csr_p256().csr_pem}),
    )
    .await;
    let resp = allocate(&h, b["registro_id"].as_i64().unwrap(), "GW0091").await;
    let cert_id = resp.headers()["x-gatehouse-certificate-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (s, r) = admin_json(
        &h,
        reqwest::Method::POST,
        &format!("/api/certificates/{cert_id}/revoke"),
        Some(json!({"reason": "superseded"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("NOTIFY within 5 s")
        .unwrap();
    assert_eq!(n.channel(), "gatehouse_crl");
    assert_eq!(
        n.payload(),
        r["crl"]["number"].as_u64().unwrap().to_string()
    );
    h.stop().await;
}
