//! Admission: every bad certificate is refused at the TLS handshake with
//! the right `gatehouse_handshakes_total` label; a certificate revoked while
//! connected is cut off within a second; takeover, keepalive and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{ANY_CLIENT_ID, LONG, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mqtt::{connect_v4, connect_v5};
use gatehouse_tests::pki::{Client, GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Frame, Raw, kind};
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;

async fn refused(b: &BrokerProcess, pki: &Pki, cert: Option<&Client>, id: &str, label: &str) {
    let sample = format!("gatehouse_handshakes_total{{result=\"{label}\"}}");
    let before = b.metric(&sample);
    // MQTT 3.1.1 and 5 both: the handshake (or the first read after a TLS
    // 1.3 handshake the server refused) fails; no CONNACK ever comes.
    assert!(
        connect_v4(b.mqtt, pki, cert, id, |_| {}).await.is_err(),
        "{label}: v3.1.1 client must be refused"
    );
    assert!(
        connect_v5(b.mqtt, pki, cert, id, |_| {}).await.is_err(),
        "{label}: v5 client must be refused"
    );
    b.wait_metric(&sample, |v| v >= before + 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_at_the_handshake() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    refused(&b, &pki, None, GATEWAY_CODE, "no_cert").await;
    refused(
        &b,
        &pki,
        Some(&pki.wrong_ca),
        &pki.wrong_ca.client_id,
        "bad_chain",
    )
    .await;
    refused(
        &b,
        &pki,
        Some(&pki.expired),
        &pki.expired.client_id,
        "expired",
    )
    .await;
    refused(
        &b,
        &pki,
        Some(&pki.not_yet_valid),
        &pki.not_yet_valid.client_id,
        "not_yet_valid",
    )
    .await;
    refused(
        &b,
        &pki,
        Some(&pki.wrong_ou),
        &pki.wrong_ou.client_id,
        "unknown_kind",
    )
    .await;
    refused(
        &b,
        &pki,
        Some(&pki.revoked),
        &pki.revoked.client_id,
        "revoked",
    )
    .await;
    assert_eq!(
        b.metric("gatehouse_sessions_active{kind=\"operational\"}"),
        0.0
    );
    assert_eq!(b.metric("gatehouse_handshakes_total{result=\"ok\"}"), 0.0);
    // The good one still gets in.
    connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .unwrap();
    assert_eq!(b.metric("gatehouse_handshakes_total{result=\"ok\"}"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_while_connected_is_kicked_within_a_second() {
    let mut pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let gw = pki.issue_operational("GW0100-0100");
    let mut v5 = connect_v5(b.mqtt, &pki, Some(&gw), "GW0100-0100", |_| {})
        .await
        .unwrap();
    let gw2 = pki.issue_operational("GW0101-0101");
    let mut v4 = connect_v4(b.mqtt, &pki, Some(&gw2), "GW0101-0101", |_| {})
        .await
        .unwrap();
    let bystander = pki.issue_operational("GW0102-0102");
    let mut other = connect_v4(b.mqtt, &pki, Some(&bystander), "GW0102-0102", |_| {})
        .await
        .unwrap();

    let started = Instant::now();
    pki.revoke(gw.cert.serial);
    let reason = v5.server_disconnect(Duration::from_secs(5)).await;
    let kicked_after = started.elapsed();
    println!("revoked v5 session kicked {kicked_after:?} after the CRL was rewritten");
    assert!(
        reason == Some(DisconnectReasonCode::NotAuthorized),
        "expected DISCONNECT 0x87, got {reason:?}"
    );
    assert!(
        kicked_after < Duration::from_secs(2),
        "kick took {kicked_after:?}"
    );

    let started = Instant::now();
    pki.revoke(gw2.cert.serial);
    assert!(
        v4.closed(Duration::from_secs(5)).await.is_some(),
        "v3.1.1 session closed"
    );
    let kicked_after = started.elapsed();
    println!("revoked v3.1.1 session closed {kicked_after:?} after the CRL was rewritten");
    assert!(
        kicked_after < Duration::from_secs(2),
        "kick took {kicked_after:?}"
    );
    b.wait_metric("gatehouse_revocation_kicks_total", |v| v == 2.0);

    // The bystander is untouched; the revoked one cannot come back.
    assert!(other.closed(Duration::from_millis(300)).await.is_none());
    assert!(
        connect_v5(b.mqtt, &pki, Some(&gw), "GW0100-0100", |_| {})
            .await
            .is_err()
    );
    let log = b.log();
    assert!(
        log.lines().any(
            |l| l.contains("disconnected client \"GW0100-0100\": certificate serial")
                && l.contains("was revoked")
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_crl_written_over_a_newer_one_does_not_unrevoke() {
    let mut pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    // CRL number 1, as the fleet CA signed it: kept to replay later.
    let older = std::fs::read(&pki.crl_path).unwrap();
    let gw = pki.issue_operational("GW0110-0110");
    connect_v4(b.mqtt, &pki, Some(&gw), "GW0110-0110", |_| {})
        .await
        .unwrap();
    pki.revoke(gw.cert.serial); // CRL number 2
    b.wait_metric("gatehouse_crl_reloads_total{result=\"ok\"}", |v| v >= 2.0);
    assert!(
        connect_v4(b.mqtt, &pki, Some(&gw), "GW0110-0110", |_| {})
            .await
            .is_err()
    );

    // The validly signed older CRL replayed over the file.
    let reloads = |b: &BrokerProcess| {
        b.metric("gatehouse_crl_reloads_total{result=\"ok\"}")
            + b.metric("gatehouse_crl_reloads_total{result=\"rollback\"}")
    };
    let before = reloads(&b);
    let tmp = pki.crl_path.with_extension("crl.replay");
    std::fs::write(&tmp, &older).unwrap();
    std::fs::rename(&tmp, &pki.crl_path).unwrap();
    let deadline = Instant::now() + LONG;
    while reloads(&b) < before + 1.0 {
        assert!(Instant::now() < deadline, "the CRL change was never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        connect_v4(b.mqtt, &pki, Some(&gw), "GW0110-0110", |_| {})
            .await
            .is_err(),
        "revoked certificate admitted after an older CRL replaced the newer one"
    );
    assert_eq!(
        b.metric("gatehouse_crl_reloads_total{result=\"rollback\"}"),
        1.0
    );
    assert_eq!(b.metric("gatehouse_crl_reloads_total{result=\"ok\"}"), 2.0);
    let log = b.log();
    let line = log
        .lines()
        .find(|l| l.contains("CRL rollback refused"))
        .unwrap_or_else(|| panic!("no rollback warning in the log:\n{log}"));
    assert!(
        line.contains("CRL number 1 ")
            && line.contains("CRL number 2 in force")
            && line.contains(&pki.crl_path.display().to_string()),
        "{line}"
    );
    // A newer CRL is still taken.
    let gw2 = pki.issue_operational("GW0111-0111");
    pki.revoke(gw2.cert.serial); // CRL number 3
    b.wait_metric("gatehouse_crl_reloads_total{result=\"ok\"}", |v| v >= 3.0);
    assert!(
        connect_v4(b.mqtt, &pki, Some(&gw2), "GW0111-0111", |_| {})
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_client_id_takes_the_session_over() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let mut first = connect_v5(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .unwrap();
    let _second = connect_v5(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .unwrap();
    let reason = first.server_disconnect(LONG).await;
    assert!(
        reason == Some(DisconnectReasonCode::SessionTakenOver),
        "got {reason:?}"
    );
    b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
        v == 1.0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_is_enforced() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let mut raw = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    raw.send(&raw::connect(&ConnectOpts {
        keepalive: 1,
        ..ConnectOpts::new(4, GATEWAY_CODE)
    }))
    .await;
    let started = Instant::now();
    let got = raw
        .closed_within(Duration::from_secs(5))
        .await
        .expect("silent client closed");
    assert_eq!(
        got.frames.first(),
        Some(&Frame {
            kind: kind::CONNACK,
            flags: 0,
            body: vec![0x00, 0x00]
        }),
        "CONNACK accepted first"
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1400) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_sessions_and_exits_zero() {
    let pki = Pki::generate();
    let mut b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let mut v5 = connect_v5(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-a",
        |_| {},
    )
    .await
    .unwrap();
    let mut v4 = connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-b",
        |_| {},
    )
    .await
    .unwrap();
    let status = b.terminate(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
    let reason = v5.server_disconnect(LONG).await;
    assert!(
        reason == Some(DisconnectReasonCode::ServerShuttingDown),
        "got {reason:?}"
    );
    assert!(v4.closed(LONG).await.is_some());
}

fn replace(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-replace");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_bundle_and_server_certificate_reload_live() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let wrong = &pki.wrong_ca;
    assert!(
        connect_v4(b.mqtt, &pki, Some(wrong), &wrong.client_id, |_| {})
            .await
            .is_err()
    );

    // A broken server certificate file is refused; the old one keeps serving.
    let good_cert = std::fs::read(&pki.server.cert_path).unwrap();
    replace(
        &pki.server.cert_path,
        b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    );
    b.wait_metric("gatehouse_tls_reloads_total{result=\"failed\"}", |v| {
        v >= 1.0
    });
    connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .expect("old config still serves");
    replace(&pki.server.cert_path, &good_cert);

    // Trust a second CA: its clients get in without a restart.
    let mut bundle = std::fs::read(&pki.ca_path).unwrap();
    bundle.extend_from_slice(pki.other_ca.cert_pem().as_bytes());
    replace(&pki.ca_path, &bundle);
    let ok_before = b.metric("gatehouse_tls_reloads_total{result=\"ok\"}");
    b.wait_metric("gatehouse_tls_reloads_total{result=\"ok\"}", |v| {
        v > ok_before
    });
    connect_v4(b.mqtt, &pki, Some(wrong), &wrong.client_id, |_| {})
        .await
        .expect("client of the newly trusted CA admitted");

    // A new server certificate is presented to new connections.
    let fresh = pki.ca.issue_server(&["localhost".to_string()], 30).unwrap();
    replace(
        &pki.server.key_path,
        fresh.key_pem.as_ref().unwrap().expose().as_bytes(),
    );
    replace(&pki.server.cert_path, fresh.cert_pem.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raw = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
        let served = raw.stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        if served == fresh.cert_der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new server certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
