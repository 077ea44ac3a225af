//! Seed inputs, generated in code (EC keys only: RSA key generation is slow,
//! RSA CSRs are built around a synthetic public key instead).

use gatehouse_auth::Serial;
use gatehouse_ca::{Ca, CaOptions, CrlSpec, RevocationReason, RevokedEntry};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::{CRL_RESIGN, FUZZ_CA_NAME, Target, der, fuzz_ca};

/// The seed inputs of `target`.
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    match target {
        Target::CsrRegistration => csr_registration(),
        Target::Crl => crl(),
        Target::Config => config(),
        Target::ClientStream => mqtt_frames(),
    }
}

// ---------------------------------------------------------------------------
// csr_registration

fn csr(key: &impl SigningKey, cn: &str) -> (String, Vec<u8>) {
    let mut params = CertificateParams::new(vec!["device.example".to_string()]).expect("SAN");
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "bootstrap");
    let req = params.serialize_request(key).expect("CSR");
    (req.pem().expect("CSR PEM"), req.der().to_vec())
}

/// A public RSA key of `bits` bits that cannot sign: its CSRs carry a junk
/// signature, which still exercises the RSA key policy (it runs first).
#[derive(Debug)]
struct SyntheticRsa {
    pkcs1: Vec<u8>,
    bits: usize,
}

impl SyntheticRsa {
    fn new(bits: usize) -> SyntheticRsa {
        let mut n = vec![0xc5u8; bits / 8];
        n[0] = 0xd1;
        let last = n.len() - 1;
        n[last] |= 1;
        let mut int = vec![0u8];
        int.extend_from_slice(&n);
        let mut content = der::tlv(0x02, &int);
        content.extend_from_slice(&der::tlv(0x02, &[0x01, 0x00, 0x01]));
        SyntheticRsa {
            pkcs1: der::tlv(0x30, &content),
            bits,
        }
    }
}

impl PublicKeyData for SyntheticRsa {
    fn der_bytes(&self) -> &[u8] {
        &self.pkcs1
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl SigningKey for SyntheticRsa {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(vec![0x5a; self.bits / 8])
    }
}

fn pem_of(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

fn csr_registration() -> Vec<Vec<u8>> {
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    let (p256_pem, p256_der) = csr(&p256, "TDS-AABB");
    let (p384_pem, p384_der) = csr(&p384, "TDS-AABB");
    let (ed_pem, ed_der) = csr(&ed25519, "TDS-AABB");
    let (rsa_pem, rsa_der) = csr(&SyntheticRsa::new(2048), "legacy");
    let (rsa_small_pem, _) = csr(&SyntheticRsa::new(1024), "legacy");
    let (_, rsa_huge_der) = csr(&SyntheticRsa::new(16384), "legacy");
    let mut tampered = p256_der.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let tampered_pem = pem_of("CERTIFICATE REQUEST", &tampered);
    let fp = "AB".repeat(32);
    let fp_colons = vec!["ab"; 32].join(":");

    let mut bodies = vec![
        json!({"mac": "AA:BB:CC:DD:EE:FF", "serial": "SN-0001", "modelo": "TDS-1",
               "fw_version": "1.2.3", "bootstrap_fingerprint": fp, "csr_pem": p256_pem}),
        json!({"mac": "aa-bb-cc-dd-ee-ff", "csr_pem": p256_pem}),
        json!({"mac": "aa:bb:cc:dd:ee:ff"}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "serial": null, "modelo": "", "fw_version": "  "}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "bootstrap_fingerprint": fp_colons}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "bootstrap_fingerprint": "zz"}),
        json!({"mac": "aa:bb:cc:dd:ee:f", "serial": "x"}),
        json!({"mac": "aa:bb:cc:dd:ee:ff:00"}),
        json!({"mac": 42}),
        json!({"serial": "no mac"}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "serial": "x".repeat(65)}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "modelo": "tab\there"}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "fw_version": ["1"]}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": p384_pem}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": ed_pem}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": rsa_pem}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": rsa_small_pem}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": tampered_pem}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": p256_pem.replace("CERTIFICATE REQUEST", "CERTIFICATE")}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": p256_pem.replace('M', "!")}),
        json!({"mac": "aa:bb:cc:dd:ee:ff", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"}),
    ]
    .into_iter()
    .map(|v| v.to_string().into_bytes())
    .collect::<Vec<_>>();
    bodies.extend(
        [
            &b""[..],
            b"{}",
            b"[]",
            b"null",
            b"{\"mac\": \"aa:bb:cc:dd:ee:ff\"",
            b"{\"mac\": \"\\ud800\"}",
            b"{\"mac\": \"aa:bb:cc:dd:ee:ff\", \"mac\": 1}",
        ]
        .iter()
        .map(|b| b.to_vec()),
    );
    // DER mode (first byte 0x30): the CSR alone.
    bodies.extend([p256_der, p384_der, ed_der, rsa_der, rsa_huge_der, tampered]);
    bodies
}

// ---------------------------------------------------------------------------
// crl

fn serial(i: u64) -> Serial {
    let mut b = [0u8; 16];
    b[0] = if i % 2 == 1 { 0x80 } else { 0x40 };
    b[8..].copy_from_slice(&i.to_be_bytes());
    Serial::from_bytes(&b).expect("16 octets")
}

fn spec(number: u64, entries: u64) -> CrlSpec {
    let t0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
    let reasons = [
        RevocationReason::KeyCompromise,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];
    CrlSpec {
        number,
        this_update: t0,
        next_update: t0 + Duration::days(7),
        entries: (0..entries)
            .map(|i| RevokedEntry {
                serial: serial(i),
                revoked_at: t0 - Duration::minutes(i as i64),
                reason: reasons[i as usize % reasons.len()],
            })
            .collect(),
    }
}

fn crl() -> Vec<Vec<u8>> {
    let ca = &fuzz_ca().ca;
    let ders: Vec<Vec<u8>> = [(1, 0), (2, 1), (3, 3), (u64::MAX >> 1, 40)]
        .iter()
        .map(|&(n, e)| ca.crl_der(&spec(n, e)).expect("sign CRL"))
        .collect();
    let pem = |d: &[u8]| pem_of("X509 CRL", d).into_bytes();
    let mut out = Vec::new();
    for d in &ders {
        out.push(d.clone());
        out.push(pem(d));
        let tbs = der::crl_tbs(d).expect("CRL has a tbsCertList");
        let mut resign = vec![CRL_RESIGN];
        resign.extend_from_slice(tbs);
        out.push(resign);
    }
    let valid = &ders[2];
    // Several blocks, and a non-CRL block beside them.
    let mut multi = pem(&ders[0]);
    multi.extend(pem(&ders[3]));
    out.push(multi);
    let mut mixed = ca.cert_pem().as_bytes().to_vec();
    mixed.extend(pem(valid));
    out.push(mixed);
    out.push(ca.cert_pem().as_bytes().to_vec());
    // Slightly broken: truncated, flipped signature / tbs byte, bad base64,
    // unterminated PEM, trailing garbage.
    out.push(valid[..valid.len() / 2].to_vec());
    let mut sig_flip = valid.clone();
    let last = sig_flip.len() - 1;
    sig_flip[last] ^= 0x01;
    out.push(sig_flip);
    let mut tbs_flip = valid.clone();
    tbs_flip[valid.len() / 3] ^= 0x10;
    out.push(tbs_flip);
    let mut trailing = valid.clone();
    trailing.extend_from_slice(&[0, 0]);
    out.push(trailing);
    let text = String::from_utf8(pem(valid)).expect("PEM is text");
    out.push(text.replacen('A', "*", 1).into_bytes());
    out.push(text.replace("-----END X509 CRL-----", "").into_bytes());
    out.push(text.replace("X509 CRL", "CRL").into_bytes());
    // Signed by other CAs: another name, and the same name with another key.
    for name in ["Other CA", FUZZ_CA_NAME] {
        let other = Ca::generate(CaOptions {
            common_name: name.into(),
            organization: Some("Gatehouse Fuzz".into()),
            validity_days: 1,
            ..CaOptions::default()
        })
        .expect("generate CA");
        out.push(other.crl_der(&spec(9, 2)).expect("sign CRL"));
    }
    out.extend([
        Vec::new(),
        b"   \n".to_vec(),
        b"not a CRL".to_vec(),
        vec![0x30, 0x80],
    ]);
    out
}

// ---------------------------------------------------------------------------
// config

const EXAMPLE: &str = include_str!("../../config/gatehouse.example.toml");

fn config() -> Vec<Vec<u8>> {
    let mut out: Vec<String> = vec![EXAMPLE.to_owned(), String::new()];
    // Without comments, and each section on its own.
    let bare: String = EXAMPLE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    for section in bare.split("\n[").skip(1) {
        out.push(format!("[{section}\n"));
    }
    out.push(bare.clone());
    let variants: &[(&str, &str)] = &[
        (
            "crl_poll_interval = \"250ms\"",
            "crl_poll_interval = \"0s\"",
        ),
        (
            "crl_poll_interval = \"250ms\"",
            "crl_poll_interval = \"18446744073709551615s\"",
        ),
        ("handshake_timeout = \"10s\"", "handshake_timeout = \"-1s\""),
        ("max_topic_levels = 16", "max_topic_levels = 0"),
        ("max_topic_length = 1024", "max_topic_length = -1"),
        (
            "max_connections = 10000",
            "max_connections = 9223372036854775807",
        ),
        ("mqtt = \"127.0.0.1:8883\"", "mqtt = \"[::1]:0\""),
        ("mqtt = \"127.0.0.1:8883\"", "mqtt = \"localhost\""),
        (
            "publish = [\"telemetry/{cn}/#\"]",
            "publish = [\"#/x\", \"+\", \"{cn\", \"\"]",
        ),
        (
            "publish = [\"telemetry/{cn}/#\"]",
            "publish = [\"telemetry/{unknown}/#\"]",
        ),
        ("classify = \"subject_ou\"", "classify = \"bogus\""),
        (
            "database_url = \"\"",
            "database_url = \"postgres://u:p@db/x\"",
        ),
        ("time_format = \"auto\"", "time_format = \"unix_ms\""),
        ("when_full = \"block\"", "when_full = \"drop\""),
        ("batch_rows = 5000", "batch_rows = 0"),
        ("spool_segment_bytes = 33554432", "spool_segment_bytes = 1"),
        ("retry_max = \"30s\"", "retry_max = \"1ms\""),
        ("rate_limit_window = \"1h\"", "rate_limit_window = \"0s\""),
        (
            "trusted_proxies = []",
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\", \"x\"]",
        ),
        ("validity_days = 3650", "validity_days = 4294967296"),
        ("max_packet_size = 1048576", "max_packet_size = 1.5"),
        ("data_dir = \"gatehouse-data\"", "data_dir = \"\""),
        ("[tls]", "[tls]\nbogus = 1"),
        ("[tls]", "[tls\n"),
    ];
    for (from, to) in variants {
        out.push(bare.replacen(from, to, 1));
    }
    out.extend(
        ["a = ", "[[acl]]\n", "\0", "data_dir = 1\n[tls]\nca = []\n"]
            .iter()
            .map(|s| s.to_string()),
    );
    out.into_iter().map(String::into_bytes).collect()
}

// ---------------------------------------------------------------------------
// MQTT (for the client_stream target, once it is wired)

fn mqtt_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn connect(level: u8, client_id: &str) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.extend_from_slice(&[level, 0x02, 0x00, 0x3c]);
    if level == 5 {
        body.push(0); // properties
    }
    body.extend(mqtt_str(client_id));
    mqtt_packet(0x10, &body)
}

/// Client → broker byte streams for `client_stream`: a mode byte (bit 0:
/// MQTT 5, bit 1: CONNECT already done), then CONNECT (MQTT 3.1.1 and 5)
/// followed by PUBLISH / SUBSCRIBE / UNSUBSCRIBE / PINGREQ / DISCONNECT.
pub fn mqtt_frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for level in [4u8, 5] {
        let mode = level - 4;
        let mut streams: Vec<Vec<u8>> = Vec::new();
        let props: &[u8] = if level == 5 { &[0] } else { &[] };
        let with_props = |mut v: Vec<u8>, tail: &[u8]| {
            v.extend_from_slice(props);
            v.extend_from_slice(tail);
            v
        };
        let connect = connect(level, "TDS-AABB");
        let publish0 = mqtt_packet(
            0x30,
            &with_props(mqtt_str("telemetry/TDS-AABB/data"), br#"{"ts":1,"v":2}"#),
        );
        let mut p1 = mqtt_str("telemetry/TDS-AABB/data");
        p1.extend_from_slice(&[0x00, 0x01]);
        let publish1 = mqtt_packet(0x32, &with_props(p1, b"x"));
        let mut sub = vec![0x00, 0x02];
        sub.extend_from_slice(props);
        sub.extend(mqtt_str("telemetry/TDS-AABB/#"));
        sub.push(0x01);
        let subscribe = mqtt_packet(0x82, &sub);
        let mut unsub = vec![0x00, 0x03];
        unsub.extend_from_slice(props);
        unsub.extend(mqtt_str("telemetry/TDS-AABB/#"));
        let unsubscribe = mqtt_packet(0xa2, &unsub);
        let ping = vec![0xc0, 0x00];
        let disconnect = vec![0xe0, 0x00];
        streams.push(connect.clone());
        streams.push(
            [
                connect.clone(),
                publish0,
                publish1,
                ping.clone(),
                disconnect,
            ]
            .concat(),
        );
        streams.push([connect.clone(), subscribe.clone(), unsubscribe, ping].concat());
        let publish_other = mqtt_packet(0x30, &with_props(mqtt_str("telemetry/OTHER/data"), b"x"));
        streams.push([connect, publish_other.clone()].concat());
        for s in streams {
            out.push([vec![mode], s].concat());
        }
        // Already connected: packets only.
        out.push([vec![mode | 2], subscribe, publish_other].concat());
    }
    out.push(vec![1, 0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    out.push(Vec::new());
    out
}
