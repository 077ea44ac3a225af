//! Hostile clients against a real `gatehouse serve` over mTLS: packets only
//! a server may send, topics the router cannot take, pipelined packets,
//! slow senders, per-client limits, forged log lines, and the operator
//! traps around the open-files limit. Each test names the behaviour it
//! proves; each failed on the broker before the hostile-input fixes.

mod common;

use std::time::{Duration, Instant};

use common::{ANY_CLIENT_ID, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Raw, kind};

const WAIT: Duration = Duration::from_secs(5);

fn data_topic() -> String {
    format!("telemetry/{GATEWAY_CODE}/data")
}

/// A v5 raw subscriber on `filter` (QoS 0), SUBACK checked.
async fn subscriber(b: &BrokerProcess, pki: &Pki, id: &str, filter: &str) -> Raw {
    let mut s = Raw::connect(b.mqtt, pki, &pki.operational, &ConnectOpts::new(5, id)).await;
    s.send(&raw::subscribe(5, 1, &[(filter, 0)])).await;
    let ack = s.expect(kind::SUBACK, WAIT).await;
    assert_eq!(ack.body.last(), Some(&0), "SUBACK grants QoS 0: {ack:?}");
    s
}

/// The next PUBLISH payload `s` receives on `topic`.
async fn received(s: &mut Raw, topic: &str) -> Vec<u8> {
    let f = s.expect(kind::PUBLISH, WAIT).await;
    let (t, payload) = f.publish(s.level == 5).expect("a PUBLISH");
    assert_eq!(t, topic);
    payload
}

fn healthz(b: &BrokerProcess) -> Option<String> {
    b.http_get("/healthz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_packets_close_with_protocol_error_and_release_every_slot() {
    let pki = Pki::generate();
    // Fewer connection slots than hostile sessions: a leaked slot would
    // lock later clients out.
    let b = BrokerProcess::start_with_limit(exe(), &pki, 6, ANY_CLIENT_ID);
    let will_topic = format!("telemetry/{GATEWAY_CODE}/will");
    let mut watcher = subscriber(&b, &pki, "watcher", &will_topic).await;
    // CONNACK, SUBACK, UNSUBACK, PINGRESP with a body; 3.1.1 and 5.
    let types = [0x20u8, 0x90, 0xB0, 0xD0];
    for round in 0..16 {
        let first = types[round % types.len()];
        let level = if round % 2 == 0 { 5 } else { 4 };
        let id = format!("hostile-{round}");
        let mut o = ConnectOpts::new(level, &id);
        o.will = Some((&will_topic, b"gone", 0));
        let mut c = Raw::connect(b.mqtt, &pki, &pki.operational, &o).await;
        c.send(&raw::frame(first, &[0x00, 0x00])).await;
        let closed = c
            .closed_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("type {first:#04x} (v{level}): connection still open"));
        if level == 5 {
            assert_eq!(
                closed.disconnect(),
                Some(0x82),
                "type {first:#04x}: DISCONNECT 0x82 Protocol Error"
            );
        }
        assert_eq!(
            received(&mut watcher, &will_topic).await,
            b"gone",
            "the will of a session closed for a protocol error is published"
        );
    }
    b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
        v == 1.0
    });
    b.wait_metric("gatehouse_connections_open", |v| v == 1.0);
    assert_eq!(b.metric("gatehouse_session_panics_total"), 0.0);
    assert!(b.metric("gatehouse_protocol_errors_total{reason=\"server_only_packet\"}") >= 16.0);
    assert_eq!(healthz(&b).as_deref(), Some("ok\n"));
    // Every slot is free again: a full house of new clients gets in.
    let mut fresh = Vec::new();
    for i in 0..5 {
        fresh.push(
            Raw::connect(
                b.mqtt,
                &pki,
                &pki.operational,
                &ConnectOpts::new(5, &format!("after-{i}")),
            )
            .await,
        );
    }
    assert!(
        !b.log().contains("panicked"),
        "no panic in the log:\n{}",
        b.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_the_router_cannot_take_is_refused_and_routing_goes_on() {
    let pki = Pki::generate();
    // A rule beginning with a wildcard is what lets such a topic through
    // the ACL; it is also the rule that draws a warning at start.
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}\n[acl.operational]\npublish = [\"#\"]\n"),
    );
    assert!(
        b.log().contains("acl.operational.publish grants \"#\""),
        "a rule granting '#' is warned about at start:\n{}",
        b.log()
    );
    let topic = data_topic();
    let mut sub = subscriber(&b, &pki, "sub", &format!("telemetry/{GATEWAY_CODE}/#")).await;
    for bad in ["é/x".as_bytes(), "\u{feff}telemetry/x".as_bytes()] {
        let mut p = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(5, "pub")).await;
        p.send(&raw::publish(5, bad, 1, false, 1, b"x")).await;
        let closed = p.closed_within(WAIT).await.expect("publisher closed");
        assert_eq!(closed.disconnect(), Some(0x90), "Topic Name invalid");
    }
    // The router is alive: the subscriber still gets messages, new clients
    // still get in, health is fine.
    let mut p = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(4, "pub2")).await;
    p.send(&raw::publish(
        4,
        topic.as_bytes(),
        0,
        false,
        0,
        b"still routing",
    ))
    .await;
    assert_eq!(received(&mut sub, &topic).await, b"still routing");
    assert_eq!(healthz(&b).as_deref(), Some("ok\n"));
    assert_eq!(b.metric("gatehouse_router_failures_total"), 0.0);
    assert_eq!(
        b.metric("gatehouse_protocol_errors_total{reason=\"topic_unroutable\"}"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_sent_with_the_connect_are_handled_at_once() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = data_topic();
    let will_topic = format!("telemetry/{GATEWAY_CODE}/will");
    let mut sub = subscriber(&b, &pki, "sub", &format!("telemetry/{GATEWAY_CODE}/#")).await;

    // CONNECT + PUBLISH + DISCONNECT in one write: stored, no will.
    let mut o = ConnectOpts::new(4, "pipelined");
    o.will = Some((&will_topic, b"will", 0));
    let mut bytes = raw::connect(&o);
    bytes.extend(raw::publish(4, topic.as_bytes(), 1, false, 7, b"one write"));
    bytes.extend(raw::frame(0xE0, &[]));
    let mut c = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    c.send(&bytes).await;
    let closed = c
        .closed_within(WAIT)
        .await
        .expect("closed after DISCONNECT");
    assert_eq!(
        closed.frames.first().map(|f| f.kind),
        Some(kind::CONNACK),
        "CONNACK first: {:?}",
        closed.frames
    );
    assert_eq!(received(&mut sub, &topic).await, b"one write");
    assert!(
        sub.next(Duration::from_millis(700)).await.is_none(),
        "a normal DISCONNECT publishes no will"
    );

    // CONNECT + PUBLISH and nothing more: handled without waiting for
    // further bytes.
    let mut bytes = raw::connect(&ConnectOpts::new(5, "eager"));
    bytes.extend(raw::publish(
        5,
        topic.as_bytes(),
        1,
        false,
        9,
        b"no more bytes",
    ));
    let mut c = Raw::open(b.mqtt, &pki, &pki.operational, 5).await;
    let sent = Instant::now();
    c.send(&bytes).await;
    assert_eq!(received(&mut sub, &topic).await, b"no more bytes");
    assert!(sent.elapsed() < Duration::from_secs(2));
    c.expect(kind::PUBACK, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_dripped_byte_by_byte_is_cut_at_the_packet_timeout() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}\n[mqtt]\npacket_timeout = \"1s\"\n"),
    );
    let mut c = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(5, "drip")).await;
    let packet = raw::publish(5, data_topic().as_bytes(), 0, false, 0, &[b'x'; 200]);
    let started = Instant::now();
    for byte in &packet[..20] {
        if c.try_send(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let closed = c.closed_within(WAIT).await.expect("dripper cut off");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(closed.disconnect(), Some(0x8D), "no progress in time");
    assert_eq!(
        b.metric("gatehouse_protocol_errors_total{reason=\"packet_timeout\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_counts_whole_packets_not_bytes() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}\n[mqtt]\npacket_timeout = \"60s\"\n"),
    );
    let mut o = ConnectOpts::new(5, "slow");
    o.keepalive = 1; // cut after 1.5 s without a whole packet
    let mut c = Raw::connect(b.mqtt, &pki, &pki.operational, &o).await;
    let packet = raw::publish(5, data_topic().as_bytes(), 0, false, 0, &[b'x'; 200]);
    let started = Instant::now();
    for byte in &packet[..30] {
        if c.try_send(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = c.closed_within(WAIT).await.expect("cut off by keepalive");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(closed.disconnect(), Some(0x8D), "Keep Alive timeout");
    assert_eq!(
        b.metric("gatehouse_protocol_errors_total{reason=\"packet_timeout\"}"),
        0.0,
        "the keepalive, not the packet timeout, ended it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_held_in_partial_packets_are_bounded_over_all_sessions() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}\n[mqtt]\nmax_partial_bytes = 100000\npacket_timeout = \"30s\"\n"),
    );
    // 90 kB: fits the budget alone, not twice.
    let big = raw::publish(5, data_topic().as_bytes(), 0, false, 0, &vec![b'x'; 90_000]);
    let mut first = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(5, "a")).await;
    first.send(&big[..70_000]).await;
    b.wait_metric("gatehouse_partial_packet_bytes", |v| v >= 70_000.0);
    let mut second = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(5, "b")).await;
    let _ = second.try_send(&big[..70_000]).await;
    let closed = second
        .closed_within(WAIT)
        .await
        .expect("second held too much");
    assert_eq!(closed.disconnect(), Some(0x97), "Quota exceeded");
    assert_eq!(
        b.metric("gatehouse_quota_exceeded_total{quota=\"partial_bytes\"}"),
        1.0
    );
    // The first goes on and completes its packet; the budget empties.
    first.send(&big[70_000..]).await;
    first.send(&raw::frame(0xC0, &[])).await;
    first.expect(kind::PINGRESP, WAIT).await;
    b.wait_metric("gatehouse_partial_packet_bytes", |v| v == 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_create_unbounded_topics_subscriptions_or_retained_messages() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!(
            "{ANY_CLIENT_ID}\n[mqtt]\nmax_new_topics_per_minute = 5\nmax_subscriptions_per_client = 3\nmax_retained_per_client = 2\n"
        ),
    );
    let t = |n: usize| format!("telemetry/{GATEWAY_CODE}/t{n}");

    // MQTT 5 QoS 1: PUBACK 0x97 past the limit, the session goes on.
    let mut c = Raw::connect(
        b.mqtt,
        &pki,
        &pki.operational,
        &ConnectOpts::new(5, "topics"),
    )
    .await;
    for n in 0..7u16 {
        c.send(&raw::publish(
            5,
            t(n as usize % 6).as_bytes(),
            1,
            false,
            n + 1,
            b"x",
        ))
        .await;
        let ack = c.expect(kind::PUBACK, WAIT).await;
        let want = if n == 5 { 0x97 } else { 0x00 };
        assert_eq!(ack.reason(), want, "publish #{n}");
    }
    // QoS 0 past the limit cannot be refused alone: DISCONNECT 0x97.
    c.send(&raw::publish(5, t(99).as_bytes(), 0, false, 0, b"x"))
        .await;
    assert_eq!(
        c.closed_within(WAIT).await.unwrap().disconnect(),
        Some(0x97)
    );
    assert_eq!(
        b.metric("gatehouse_quota_exceeded_total{quota=\"new_topics_per_minute\"}"),
        2.0
    );

    // Subscriptions: the fourth distinct filter gets 0x97.
    let mut s = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(5, "subs")).await;
    let filters = [t(1), t(2), t(3), t(4)];
    let list: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 0)).collect();
    s.send(&raw::subscribe(5, 1, &list)).await;
    let ack = s.expect(kind::SUBACK, WAIT).await;
    assert_eq!(&ack.body[ack.body.len() - 4..], &[0, 0, 0, 0x97]);

    // Retained: the third retained topic gets 0x97; clearing one makes room.
    let mut r = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(5, "ret")).await;
    let retain = |n: usize, payload: &'static [u8], pkid: u16| {
        raw::publish(5, t(n).as_bytes(), 1, true, pkid, payload)
    };
    for (n, payload, want) in [
        (1, &b"a"[..], 0x00),
        (2, b"b", 0x00),
        (3, b"c", 0x97),
        (1, b"", 0x00),
        (3, b"c", 0x00),
    ] {
        r.send(&retain(n, payload, 1)).await;
        assert_eq!(
            r.expect(kind::PUBACK, WAIT).await.reason(),
            want,
            "retain t{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_supplied_strings_cannot_forge_log_lines() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let id = "x\nFORGED admin logged in";
    let mut c = Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(4, id)).await;
    // A denied publish logs the client id.
    c.send(&raw::publish(4, b"elsewhere/x", 0, false, 0, b"x"))
        .await;
    c.send(&raw::frame(0xE0, &[])).await;
    let _ = c.closed_within(WAIT).await;
    b.wait_metric(
        "gatehouse_acl_denials_total{action=\"publish\",kind=\"operational\"}",
        |v| v >= 1.0,
    );
    let log = b.log();
    assert!(log.contains("x\\nFORGED"), "client id escaped:\n{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "no forged line:\n{log}"
    );
}

/// A wrapper that runs `gatehouse` under `prlimit --nofile=SOFT:HARD`.
fn limited_exe(dir: &std::path::Path, soft: u64, hard: u64) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("gatehouse-nofile-{soft}-{hard}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec prlimit --nofile={soft}:{hard} {} \"$@\"\n",
            exe().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_files_limit_is_raised_warned_about_and_accept_errors_counted() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();

    let raised = BrokerProcess::start(&limited_exe(dir.path(), 256, 4096), &pki, "");
    assert!(
        raised
            .log()
            .contains("open-files limit raised to the hard limit")
            && raised.log().contains("from=256 to=4096"),
        "soft limit raised:\n{}",
        raised.log()
    );
    drop(raised);

    // Hard limit 100 under max_connections 2000: warned, and accept errors
    // are counted once the descriptors run out.
    let low = BrokerProcess::start(&limited_exe(dir.path(), 100, 100), &pki, "");
    assert!(
        low.log()
            .contains("open-files limit 100 is below listeners.max_connections (2000)"),
        "{}",
        low.log()
    );
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(s) = std::net::TcpStream::connect(low.mqtt) {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    // The handshake timeout (2 s) frees the descriptors again.
    low.wait_metric("gatehouse_accept_errors_total", |v| v >= 1.0);
}

#[test]
fn a_key_that_does_not_match_its_certificate_names_both_files() {
    let pki = Pki::generate();
    let mut b = BrokerProcess::start(exe(), &pki, "");
    assert!(b.terminate(Duration::from_secs(10)).success());
    let config = std::fs::read_to_string(&b.config_path).unwrap();
    let server_key = format!("{:?}", pki.server.key_path);
    let wrong_key = format!("{:?}", pki.operational.key_path);
    assert!(config.contains(&server_key));
    std::fs::write(&b.config_path, config.replace(&server_key, &wrong_key)).unwrap();
    let out = std::process::Command::new(exe())
        .arg("serve")
        .arg("--config")
        .arg(&b.config_path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not belong to the server certificate")
            && stderr.contains(&pki.operational.key_path.display().to_string())
            && stderr.contains(&pki.server.cert_path.display().to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

/// A v5 PUBLISH (QoS 0) with raw property bytes.
fn publish_v5_props(topic: &[u8], props: &[u8]) -> Vec<u8> {
    let mut body = raw::string(topic);
    body.extend(raw::remaining_length(props.len()));
    body.extend_from_slice(props);
    body.extend_from_slice(b"payload");
    raw::frame(0x30, &body)
}

/// A v5 CONNECT (client id "m") with raw connect flags and properties.
fn connect_v5_raw(flags: u8, props: &[u8]) -> Vec<u8> {
    let mut body = raw::string(b"MQTT");
    body.extend_from_slice(&[5, flags, 0, 30]);
    body.extend(raw::remaining_length(props.len()));
    body.extend_from_slice(props);
    body.extend(raw::string(b"m"));
    raw::frame(0x10, &body)
}

/// (name, level, sent after a good CONNECT?, bytes, v5 reason, label)
type Case = (&'static str, u8, bool, Vec<u8>, u8, &'static str);

/// Malformed packets and protocol errors of MQTT 3.1.1 / 5.0 that the broker
/// used to accept silently: each closes the connection (v5: DISCONNECT, or
/// CONNACK for a CONNECT, with the spec's reason code) and is counted in
/// `gatehouse_protocol_errors_total{reason}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_the_connection_with_the_specs_reason() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = data_topic();
    let t = topic.as_bytes();
    let cases: Vec<Case> = vec![
        (
            "CONNECT reserved flag",
            5,
            false,
            connect_v5_raw(0x03, &[]),
            0x81,
            "connect_reserved_flag",
        ),
        (
            "Receive Maximum 0",
            5,
            false,
            connect_v5_raw(0x02, &[0x21, 0, 0]),
            0x82,
            "property_value",
        ),
        (
            "Maximum Packet Size 0",
            5,
            false,
            connect_v5_raw(0x02, &[0x27, 0, 0, 0, 0]),
            0x82,
            "property_value",
        ),
        (
            "password without username (3.1.1)",
            4,
            false,
            {
                let mut body = raw::string(b"MQTT");
                body.extend_from_slice(&[4, 0x42, 0, 30]);
                body.extend(raw::string(b"m"));
                body.extend(raw::string(b"secret"));
                raw::frame(0x10, &body)
            },
            0,
            "password_without_username",
        ),
        (
            "duplicated property",
            5,
            true,
            publish_v5_props(t, &[0x01, 0, 0x01, 0]),
            0x82,
            "property_duplicate",
        ),
        (
            "invalid UTF-8 topic",
            5,
            true,
            raw::publish(5, &[b'a', 0xff, 0xfe], 0, false, 0, b"x"),
            0x90,
            "topic_not_utf8",
        ),
        (
            "wildcard in Response Topic",
            5,
            true,
            publish_v5_props(t, &[0x08, 0, 3, b'a', b'/', b'#']),
            0x82,
            "response_topic",
        ),
        (
            "PUBLISH to an empty topic",
            5,
            true,
            raw::publish(5, b"", 0, false, 0, b"x"),
            0x82,
            "topic_empty",
        ),
        (
            "PUBLISH to an empty topic (3.1.1)",
            4,
            true,
            raw::publish(4, b"", 0, false, 0, b"x"),
            0,
            "topic_empty",
        ),
        (
            "PUBLISH to a NUL topic",
            5,
            true,
            raw::publish(5, b"telemetry/\0", 0, false, 0, b"x"),
            0x90,
            "topic_nul",
        ),
        (
            "PUBLISH to a wildcard topic",
            5,
            true,
            raw::publish(5, b"telemetry/+/data", 1, false, 1, b"x"),
            0x90,
            "topic_wildcard",
        ),
        (
            "QoS 0 PUBLISH with DUP",
            5,
            true,
            {
                let mut p = raw::publish(5, t, 0, false, 0, b"x");
                p[0] |= 0x08;
                p
            },
            0x81,
            "publish_dup_qos0",
        ),
        (
            "PUBLISH QoS 1 with packet id 0",
            4,
            true,
            raw::publish(4, t, 1, false, 0, b"x"),
            0,
            "packet_id_zero",
        ),
        (
            "SUBSCRIBE with wrong fixed-header flags",
            5,
            true,
            {
                let mut p = raw::subscribe(5, 1, &[(topic.as_str(), 0)]);
                p[0] = 0x80;
                p
            },
            0x81,
            "reserved_flags",
        ),
        (
            "UNSUBSCRIBE with wrong fixed-header flags",
            4,
            true,
            {
                let mut body = 1u16.to_be_bytes().to_vec();
                body.extend(raw::string(t));
                raw::frame(0xA0, &body)
            },
            0,
            "reserved_flags",
        ),
        (
            "reserved subscription-option bits",
            5,
            true,
            raw::subscribe(5, 1, &[(topic.as_str(), 0xC0)]),
            0x81,
            "subscription_options",
        ),
        (
            "reserved subscription-option bits (3.1.1)",
            4,
            true,
            raw::subscribe(4, 1, &[(topic.as_str(), 0x04)]),
            0,
            "subscription_options",
        ),
        (
            "SUBSCRIBE packet id 0",
            5,
            true,
            raw::subscribe(5, 0, &[(topic.as_str(), 0)]),
            0x82,
            "packet_id_zero",
        ),
        (
            "UNSUBSCRIBE without filters",
            5,
            true,
            raw::frame(0xA2, &[0, 1, 0]),
            0x82,
            "no_filters",
        ),
        (
            "PINGREQ with a body",
            5,
            true,
            raw::frame(0xC0, &[0]),
            0x81,
            "invalid_length",
        ),
        (
            "invalid subscription filter",
            5,
            true,
            raw::subscribe(5, 1, &[("telemetry/#/x", 0)]),
            0x8F,
            "filter_wildcard",
        ),
        (
            "remaining length over 4 bytes",
            5,
            true,
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            0x81,
            "remaining_length",
        ),
    ];
    for (name, level, after_connect, bytes, code, label) in cases {
        let sample = format!("gatehouse_protocol_errors_total{{reason=\"{label}\"}}");
        let before = b.metric(&sample);
        let mut c = if after_connect {
            Raw::connect(
                b.mqtt,
                &pki,
                &pki.operational,
                &ConnectOpts::new(level, "m"),
            )
            .await
        } else {
            Raw::open(b.mqtt, &pki, &pki.operational, level).await
        };
        let _ = c.try_send(&bytes).await;
        let closed = c
            .closed_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("{name}: connection still open"));
        if level == 5 {
            let got = if after_connect {
                closed.disconnect()
            } else {
                closed
                    .frames
                    .first()
                    .filter(|f| f.kind == kind::CONNACK)
                    .map(|f| f.reason())
            };
            assert_eq!(
                got,
                Some(code),
                "{name}: reason code; frames {:?}",
                closed.frames
            );
        } else {
            assert!(
                closed
                    .frames
                    .iter()
                    .all(|f| f.kind != kind::CONNACK || after_connect),
                "{name}: 3.1.1 gets no CONNACK for a broken CONNECT"
            );
        }
        b.wait_metric(&sample, |v| v >= before + 1.0);
    }
    assert_eq!(b.metric("gatehouse_session_panics_total"), 0.0);
}

#[test]
fn a_sigterm_right_after_start_is_a_clean_stop() {
    // The signal handlers used to be installed only once the accept loop
    // first ran: a SIGTERM just after /healthz answered killed the process
    // (exit 143) about once in 30 starts.
    let pki = Pki::generate();
    for round in 0..20 {
        let mut b = BrokerProcess::start(exe(), &pki, "");
        let status = b.terminate(Duration::from_secs(10));
        assert!(status.success(), "round {round}: {status}\n{}", b.log());
    }
}
