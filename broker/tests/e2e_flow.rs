//! Flow control of `gatehouse serve` (`mqtt.max_queued_messages`): a
//! subscriber that stops reading makes the sessions publishing to it stop
//! reading in turn, nothing acknowledged is lost, publishers on other
//! topics go on, and what is dropped is counted. Every client is a raw
//! MQTT connection over real mTLS; the stalled subscriber is one that
//! simply does not read its socket.

mod common;

use std::time::Duration;

use common::{ANY_CLIENT_ID, LONG, SHORT, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Raw, kind};

/// Large enough that a few dozen fill the socket buffers between the
/// broker and a subscriber that does not read.
const PAYLOAD: usize = 64 * 1024;

async fn client(b: &BrokerProcess, pki: &Pki, client_id: &str) -> Raw {
    Raw::connect(
        b.mqtt,
        pki,
        &pki.operational,
        &ConnectOpts::new(4, client_id),
    )
    .await
}

async fn subscriber(b: &BrokerProcess, pki: &Pki, client_id: &str, filter: &str, qos: u8) -> Raw {
    let mut s = client(b, pki, client_id).await;
    s.send(&raw::subscribe(4, 1, &[(filter, qos)])).await;
    s.expect(kind::SUBACK, LONG).await;
    s
}

/// A payload that carries its sequence number.
fn numbered(n: u32) -> Vec<u8> {
    let mut p = vec![b'x'; PAYLOAD];
    p[..4].copy_from_slice(&n.to_be_bytes());
    p
}

/// Sends message `n` on `topic` (QoS 1 packet ids wrap below 60,001).
async fn publish_numbered(c: &mut Raw, topic: &str, qos: u8, n: u32) {
    let pkid = if qos > 0 { (n % 60_000 + 1) as u16 } else { 0 };
    c.send(&raw::publish(
        4,
        topic.as_bytes(),
        qos,
        false,
        pkid,
        &numbered(n),
    ))
    .await;
}

/// Publishes numbered QoS 1 messages on `topic`, one at a time, until one
/// is not acknowledged within `wait`: the last acknowledged number and the
/// one left waiting.
async fn publish_until_unacknowledged(c: &mut Raw, topic: &str, wait: Duration) -> (u32, u32) {
    const MAX: u32 = 2000;
    let mut acked = 0;
    for n in 1..=MAX {
        publish_numbered(c, topic, 1, n).await;
        match c.next(wait).await {
            Some(f) if f.kind == kind::PUBACK => acked = n,
            Some(f) => panic!("unexpected {f:?}"),
            None => return (acked, n),
        }
    }
    panic!("all {MAX} PUBLISHes were acknowledged with nobody reading them")
}

/// Reads `s` until `count` PUBLISHes arrived (acknowledging QoS 1 ones);
/// their sequence numbers in arrival order.
async fn drain(s: &mut Raw, count: usize) -> Vec<u32> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let Some(f) = s.next(LONG).await else {
            panic!("only {} of {count} messages arrived: {seen:?}", seen.len());
        };
        if f.kind != kind::PUBLISH {
            continue;
        }
        if let Some(pkid) = f.pkid().filter(|_| f.qos() > 0) {
            s.send(&raw::ack(kind::PUBACK, pkid)).await;
        }
        let (_, payload) = f.publish(false).expect("a PUBLISH");
        seen.push(u32::from_be_bytes(
            payload[..4].try_into().expect("numbered"),
        ));
    }
    seen
}

/// The subscriber on `…/bulk` stops reading. The QoS 1 publisher on that
/// topic is no longer read (no PUBACK) once the subscriber's queue is
/// full, while a publisher on `…/status` and its own subscriber go on; when
/// the subscriber reads again it gets every message, in order, and the
/// publisher goes on. (Before flow control the router acknowledged every
/// PUBLISH at once and dropped what the subscriber's log could not hold.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_blocks_its_publishers_only_and_loses_nothing_acknowledged() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nmax_queued_messages = 8\n"),
    );
    let bulk = format!("telemetry/{GATEWAY_CODE}/bulk");
    let status = format!("telemetry/{GATEWAY_CODE}/status");
    let mut slow = subscriber(&b, &pki, "GW0001-EEFF-slow", &bulk, 1).await;
    let mut fast = subscriber(&b, &pki, "GW0001-EEFF-fast", &status, 1).await;
    let mut publisher = client(&b, &pki, GATEWAY_CODE).await;
    let mut other = client(&b, &pki, "GW0001-EEFF-other").await;

    let (acked, blocked) =
        publish_until_unacknowledged(&mut publisher, &bulk, Duration::from_secs(2)).await;
    assert!(
        b.metric("gatehouse_publish_waits_total") >= 1.0,
        "the wait is counted"
    );
    // Still blocked a while later: the broker is not reading the publisher.
    assert!(
        publisher.next(Duration::from_secs(1)).await.is_none(),
        "no PUBACK while the subscriber does not read"
    );

    // An unrelated topic is not held up.
    for n in 1..=5u32 {
        publish_numbered(&mut other, &status, 1, n).await;
        let ack = other.expect(kind::PUBACK, SHORT).await;
        assert_eq!(ack.pkid(), Some((n % 60_000 + 1) as u16));
    }
    assert_eq!(drain(&mut fast, 5).await, vec![1, 2, 3, 4, 5]);

    // The subscriber reads again: the waiting PUBLISH goes on and is
    // acknowledged; every message up to it arrives, in order, once.
    let reader = tokio::spawn(async move {
        let seen = drain(&mut slow, blocked as usize + 20).await;
        (slow, seen)
    });
    let ack = publisher.expect(kind::PUBACK, LONG).await;
    assert_eq!(ack.pkid(), Some((blocked % 60_000 + 1) as u16));
    for n in blocked + 1..=blocked + 20 {
        publish_numbered(&mut publisher, &bulk, 1, n).await;
        publisher.expect(kind::PUBACK, LONG).await;
    }
    let (_slow, seen) = reader.await.expect("reader");
    let expected: Vec<u32> = (1..=blocked + 20).collect();
    assert_eq!(seen, expected, "acknowledged before the stall: {acked}");
    assert_eq!(
        b.metric("gatehouse_messages_dropped_total{qos=\"1\",reason=\"subscriber_full\"}"),
        0.0
    );
}

/// A QoS 0 PUBLISH for a subscriber whose queue stays full waits 5 s, then
/// is dropped: counted, logged once, the publisher goes on, and what the
/// subscriber gets plus what was dropped is exactly what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_message_for_a_full_subscriber_is_dropped_after_5s_and_counted() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nmax_queued_messages = 4\n"),
    );
    let bulk = format!("telemetry/{GATEWAY_CODE}/bulk");
    let mut slow = subscriber(&b, &pki, "GW0001-EEFF-slow", &bulk, 0).await;
    let mut publisher = client(&b, &pki, GATEWAY_CODE).await;

    // QoS 0 has no acknowledgement: a PINGREQ behind each PUBLISH shows
    // whether the broker still reads the publisher.
    let mut waited = None;
    for n in 1..=2000u32 {
        publish_numbered(&mut publisher, &bulk, 0, n).await;
        publisher.send(&[0xC0, 0x00]).await;
        if publisher.next(Duration::from_secs(2)).await.is_none() {
            waited = Some(n);
            break;
        }
    }
    let waited = waited.expect("a QoS 0 publisher is held back by a full subscriber");
    let dropped = "gatehouse_messages_dropped_total{qos=\"0\",reason=\"subscriber_full\"}";
    assert_eq!(b.metric(dropped), 0.0, "not dropped before 5 s");
    // After 5 s the message is dropped and the PINGREQ behind it answered.
    let pong = publisher
        .next(Duration::from_secs(6))
        .await
        .expect("PINGRESP");
    assert_eq!(pong.kind, kind::PINGRESP);
    assert_eq!(b.metric(dropped), 1.0);
    assert!(
        b.wait_log("QoS 0 message dropped", 1, LONG),
        "the drop is logged\n{}",
        b.log()
    );

    // The subscriber reads again; two more messages follow.
    let reader = tokio::spawn(async move { drain(&mut slow, waited as usize + 1).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in waited + 1..=waited + 2 {
        publish_numbered(&mut publisher, &bulk, 0, n).await;
    }
    let seen = reader.await.expect("reader");
    let mut expected: Vec<u32> = (1..=waited + 2).collect();
    expected.retain(|&n| n != waited);
    assert_eq!(
        seen, expected,
        "everything but the dropped message, in order"
    );
    assert_eq!(b.metric(dropped), 1.0, "one drop, counted once");
}

/// A publisher held back longer than `mqtt.packet_timeout`, with the start
/// of its next packet already read, is not cut for "dripping" that packet:
/// the broker was the one not reading. Each PUBLISH goes in two halves
/// 100 ms apart, so the one that waits was an incomplete packet before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_publisher_is_not_timed_out_for_the_packet_behind_it() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nmax_queued_messages = 4\npacket_timeout = \"1s\"\n"),
    );
    let bulk = format!("telemetry/{GATEWAY_CODE}/bulk");
    let mut slow = subscriber(&b, &pki, "GW0001-EEFF-slow", &bulk, 1).await;
    let mut publisher = client(&b, &pki, GATEWAY_CODE).await;
    let mut blocked = None;
    for n in 1..=2000u32 {
        let frame = raw::publish(
            4,
            bulk.as_bytes(),
            1,
            false,
            (n % 60_000 + 1) as u16,
            &numbered(n),
        );
        let (head, tail) = frame.split_at(frame.len() / 2);
        publisher.send(head).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        publisher.send(tail).await;
        if publisher.next(Duration::from_secs(2)).await.is_none() {
            blocked = Some(n);
            break;
        }
    }
    let blocked = blocked.expect("the publisher is held back");
    // Three packet timeouts later the publisher is still connected...
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        b.metric("gatehouse_protocol_errors_total{reason=\"packet_timeout\"}"),
        0.0,
        "{}",
        b.log()
    );
    // ...and goes on once the subscriber reads.
    let reader = tokio::spawn(async move { drain(&mut slow, blocked as usize).await });
    let ack = publisher.expect(kind::PUBACK, LONG).await;
    assert_eq!(ack.pkid(), Some((blocked % 60_000 + 1) as u16));
    let seen = reader.await.expect("reader");
    assert_eq!(seen, (1..=blocked).collect::<Vec<u32>>());
}

/// An idle session holds no read buffer: it gives it back when empty and
/// takes one when its socket becomes readable. TLS hands the broker one
/// record per read, so bytes it already took from the socket wait inside
/// TLS where the socket's readiness does not see them: 200 large QoS 1
/// PUBLISHes (several records each), each followed by a PINGREQ and sent
/// without waiting, must all be read and answered. (The first version of
/// the buffer release waited on the socket with records still inside TLS
/// and stopped reading.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_already_inside_tls_are_read_when_the_session_holds_no_read_buffer() {
    const COUNT: u32 = 200;
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let mut c = client(&b, &pki, GATEWAY_CODE).await;
    let topic = format!("telemetry/{GATEWAY_CODE}/bulk");
    // Idle first: the session gives its read buffer back after the CONNACK.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Everything is written first (the broker reads as it comes), then read.
    for n in 1..=COUNT {
        c.send(&raw::publish(
            4,
            topic.as_bytes(),
            1,
            false,
            n as u16,
            &numbered(n),
        ))
        .await;
        c.send(&[0xC0, 0x00]).await;
    }
    let (mut acks, mut pongs) = (0, 0);
    while acks < COUNT || pongs < COUNT {
        let Some(f) = c.next(LONG).await else {
            panic!(
                "{acks} PUBACKs and {pongs} PINGRESPs of {COUNT}, then nothing\n{}",
                b.log()
            );
        };
        match f.kind {
            kind::PUBACK => acks += 1,
            kind::PINGRESP => pongs += 1,
            other => panic!("unexpected packet type {other:#x}"),
        }
    }
    // And after idling again, the next packet is read too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(&[0xC0, 0x00]).await;
    c.expect(kind::PINGRESP, SHORT).await;
}

/// A subscriber that stops reading holds its publishers at most
/// `mqtt.max_subscriber_stall`: then it is disconnected (counted as a
/// quota, logged) and the waiting PUBLISH is acknowledged, as are the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_stalled_past_max_subscriber_stall_is_disconnected_and_its_publishers_go_on() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nmax_queued_messages = 4\nmax_subscriber_stall = \"2s\"\n"),
    );
    let bulk = format!("telemetry/{GATEWAY_CODE}/bulk");
    let mut slow = subscriber(&b, &pki, "GW0001-EEFF-slow", &bulk, 1).await;
    let mut publisher = client(&b, &pki, GATEWAY_CODE).await;
    let stalls = "gatehouse_quota_exceeded_total{quota=\"subscriber_stall\"}";

    let (_, blocked) =
        publish_until_unacknowledged(&mut publisher, &bulk, Duration::from_secs(1)).await;
    assert_eq!(b.metric(stalls), 0.0, "not cut before 2 s\n{}", b.log());
    // The subscriber is cut 2 s after the PUBLISH began to wait; the
    // PUBLISH then goes on (the queue of a gone session takes it).
    let ack = publisher.expect(kind::PUBACK, LONG).await;
    assert_eq!(ack.pkid(), Some((blocked % 60_000 + 1) as u16));
    assert_eq!(b.metric(stalls), 1.0);
    assert!(
        b.wait_log("mqtt.max_subscriber_stall", 1, LONG),
        "the cut is logged\n{}",
        b.log()
    );
    assert!(
        slow.closed_within(LONG).await.is_some(),
        "the stalled subscriber's connection is closed"
    );
    // The publisher goes on.
    publish_numbered(&mut publisher, &bulk, 1, blocked + 1).await;
    publisher.expect(kind::PUBACK, SHORT).await;
}
