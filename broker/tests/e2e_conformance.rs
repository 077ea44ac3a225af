//! MQTT conformance of `gatehouse serve`, one test per normative statement,
//! named by its id (`mqtt_3_3_1_3` is [MQTT-3.3.1-3] of MQTT 5.0 unless the
//! name says 3.1.1). Every byte is sent and read raw over real mTLS, so
//! nothing between the test and the broker fixes or hides a frame.

mod common;

use common::{ANY_CLIENT_ID, LONG, SHORT, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Raw, kind};

/// The subscriber's client id next to the gateway's own (under
/// `ANY_CLIENT_ID`, one operational certificate may use several ids).
const MONITOR: &str = "GW0001-EEFF-mon";

/// A connected operational client of `level` named `client_id`.
async fn operational(b: &BrokerProcess, pki: &Pki, level: u8, client_id: &str) -> Raw {
    Raw::connect(
        b.mqtt,
        pki,
        &pki.operational,
        &ConnectOpts::new(level, client_id),
    )
    .await
}

/// The CONNACK of a connection the broker refused and closed.
async fn refused_connack(c: &mut Raw) -> raw::Frame {
    let closed = c.closed_within(LONG).await.expect("connection closed");
    closed
        .frames
        .into_iter()
        .find(|f| f.kind == kind::CONNACK)
        .expect("a CONNACK before the close")
}

/// [MQTT-3.3.1-3]: the DUP flag of an outgoing PUBLISH says only whether
/// *that* PUBLISH is a retransmission; a subscriber never sees the
/// publisher's DUP. (rumqttd forwarded it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_3_dup_is_not_forwarded_to_subscribers() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    for level in [4u8, 5] {
        let mut sub = operational(&b, &pki, level, MONITOR).await;
        sub.send(&raw::subscribe(level, 1, &[(topic.as_str(), 1)]))
            .await;
        sub.expect(kind::SUBACK, LONG).await;
        let mut publisher = operational(&b, &pki, level, GATEWAY_CODE).await;
        // A QoS 1 PUBLISH sent again after a lost PUBACK: DUP = 1.
        let mut again = raw::publish(level, topic.as_bytes(), 1, false, 7, b"{\"t\":1}");
        again[0] |= 0x08;
        publisher.send(&again).await;
        let ack = publisher.expect(kind::PUBACK, LONG).await;
        assert_eq!(ack.body[..2], 7u16.to_be_bytes(), "v{level}: {ack:?}");
        let got = sub.expect(kind::PUBLISH, LONG).await;
        assert_eq!(
            got.publish(level == 5),
            Some((topic.clone(), b"{\"t\":1}".to_vec())),
            "v{level}"
        );
        assert_eq!(
            got.flags & 0x08,
            0,
            "v{level}: first delivery to the subscriber carries DUP = 0: {got:?}"
        );
    }
}

/// [MQTT-3.11.3-2]: UNSUBACK has one reason code per filter; 0x11 "No
/// subscription existed" for a filter the session was not subscribed to.
/// 3.1.1's UNSUBACK carries only the packet identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_11_3_2_unsuback_says_which_subscriptions_did_not_exist() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let held = format!("telemetry/{GATEWAY_CODE}/#");
    let never = format!("telemetry/{GATEWAY_CODE}/never");
    for level in [5u8, 4] {
        let mut c = operational(&b, &pki, level, GATEWAY_CODE).await;
        c.send(&raw::subscribe(level, 1, &[(held.as_str(), 1)]))
            .await;
        c.expect(kind::SUBACK, LONG).await;
        c.send(&raw::unsubscribe(level, 2, &[&held, &never])).await;
        let ack = c.expect(kind::UNSUBACK, LONG).await;
        if level == 5 {
            // pkid, properties length 0, one code per filter.
            assert_eq!(ack.body, [0, 2, 0, 0x00, 0x11], "{ack:?}");
        } else {
            assert_eq!(ack.body, [0, 2], "{ack:?}");
        }
        // Unsubscribed means gone: the second time neither existed.
        c.send(&raw::unsubscribe(level, 3, &[&held])).await;
        let ack = c.expect(kind::UNSUBACK, LONG).await;
        if level == 5 {
            assert_eq!(ack.body, [0, 3, 0, 0x11], "{ack:?}");
        }
        // And nothing arrives on it any more.
        c.send(&raw::publish(
            level,
            format!("telemetry/{GATEWAY_CODE}/x").as_bytes(),
            0,
            false,
            0,
            b"{}",
        ))
        .await;
        assert_eq!(
            c.next(SHORT).await,
            None,
            "v{level}: no delivery after UNSUBSCRIBE"
        );
    }
}

/// The Assigned Client Identifier of an operational client's CONNACK.
fn assigned_client_id(connack: &raw::Frame) -> Option<String> {
    raw::connack_properties(&connack.body)
        .expect("well-formed CONNACK properties")
        .into_iter()
        .find(|(id, _)| *id == 0x12)
        .map(|(_, v)| String::from_utf8(v).expect("UTF-8 client id"))
}

/// [MQTT-3.1.3-6] / [MQTT-3.1.3-7]: a zero-length client id is accepted
/// for an operational certificate, which is assigned its CN and told so in
/// the CONNACK; the session then is that client id's (rules with
/// `{client_id}` see the CN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_7_an_empty_client_id_is_assigned_the_cn() {
    let pki = Pki::generate();
    // The default policy: an operational client id must equal the CN.
    let b = BrokerProcess::start(exe(), &pki, "");
    for clean in [true, false] {
        let mut c = Raw::open(b.mqtt, &pki, &pki.operational, 5).await;
        c.send(&raw::connect(&ConnectOpts {
            clean,
            ..ConnectOpts::new(5, "")
        }))
        .await;
        let ack = c.expect(kind::CONNACK, LONG).await;
        assert_eq!(ack.reason(), 0x00, "clean={clean}: accepted: {ack:?}");
        assert_eq!(
            assigned_client_id(&ack).as_deref(),
            Some(GATEWAY_CODE),
            "clean={clean}: {ack:?}"
        );
        let topic = format!("telemetry/{GATEWAY_CODE}/data");
        c.send(&raw::subscribe(5, 1, &[(topic.as_str(), 0)])).await;
        c.expect(kind::SUBACK, LONG).await;
        c.send(&raw::publish(5, topic.as_bytes(), 0, false, 0, b"{}"))
            .await;
        let got = c.expect(kind::PUBLISH, LONG).await;
        assert_eq!(got.publish(true).map(|(t, _)| t), Some(topic));
    }
    // A client that names itself gets no assigned id.
    let mut c = Raw::open(b.mqtt, &pki, &pki.operational, 5).await;
    c.send(&raw::connect(&ConnectOpts::new(5, GATEWAY_CODE)))
        .await;
    let ack = c.expect(kind::CONNACK, LONG).await;
    assert_eq!((ack.reason(), assigned_client_id(&ack)), (0x00, None));
}

/// 3.1.1 [MQTT-3.1.3-6]: a zero-byte client id with CleanSession = 1 is
/// accepted (the operational client becomes its CN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_3_1_3_6_an_empty_client_id_with_a_clean_session_is_accepted() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let mut c = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    c.send(&raw::connect(&ConnectOpts::new(4, ""))).await;
    let ack = c.expect(kind::CONNACK, LONG).await;
    assert_eq!(ack.body, [0, 0], "{ack:?}");
    // Its own telemetry subtree is open to it as to GW0001-EEFF.
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    c.send(&raw::publish(4, topic.as_bytes(), 1, false, 1, b"{}"))
        .await;
    let ack = c.expect(kind::PUBACK, LONG).await;
    assert_eq!(ack.body, [0, 1]);
}

/// 3.1.1 [MQTT-3.1.3-8]: a zero-byte client id with CleanSession = 0 is
/// refused with return code 0x02 and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_3_1_3_8_an_empty_client_id_with_a_persistent_session_is_refused() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let mut c = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    c.send(&raw::connect(&ConnectOpts {
        clean: false,
        ..ConnectOpts::new(4, "")
    }))
    .await;
    let ack = refused_connack(&mut c).await;
    assert_eq!(ack.body, [0, 0x02], "{ack:?}");
}

/// A bootstrap certificate must connect as its MAC: an empty client id is
/// not assigned anything but refused (v5 0x85 Client Identifier not valid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_client_without_a_client_id_is_refused() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let mut c = Raw::open(b.mqtt, &pki, &pki.bootstrap, 5).await;
    c.send(&raw::connect(&ConnectOpts::new(5, ""))).await;
    let ack = refused_connack(&mut c).await;
    assert_eq!(ack.reason(), 0x85, "{ack:?}");
    assert_eq!(
        b.metric("gatehouse_connect_refused_total{reason=\"client_id\"}"),
        1.0
    );
}

/// A subscriber (`MONITOR`) on `topic` at `qos`, its SUBACK checked.
async fn subscriber(b: &BrokerProcess, pki: &Pki, level: u8, topic: &str, qos: u8) -> Raw {
    let mut sub = operational(b, pki, level, MONITOR).await;
    sub.send(&raw::subscribe(level, 1, &[(topic, qos)])).await;
    let ack = sub.expect(kind::SUBACK, LONG).await;
    let granted = *ack.body.last().expect("a SUBACK code");
    assert_eq!(granted, qos, "v{level}: QoS {qos} granted: {ack:?}");
    sub
}

/// [MQTT-4.3.3-8] / [MQTT-4.3.3-10]: the broker answers a QoS 2 PUBLISH
/// with PUBREC, and until the PUBREL it answers the same packet id again
/// with PUBREC only: the message reaches the subscriber once. The
/// subscriber gets it at QoS 2 with DUP = 0 [MQTT-4.3.3-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_10_a_qos2_retransmission_is_not_delivered_again() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    for level in [5u8, 4] {
        let mut sub = subscriber(&b, &pki, level, &topic, 2).await;
        let mut publisher = operational(&b, &pki, level, GATEWAY_CODE).await;
        let message = raw::publish(level, topic.as_bytes(), 2, false, 7, b"{\"t\":2}");
        publisher.send(&message).await;
        let rec = publisher.expect(kind::PUBREC, LONG).await;
        assert_eq!(
            (rec.pkid(), rec.reason()),
            (Some(7), 0x00),
            "v{level}: {rec:?}"
        );
        let got = sub.expect(kind::PUBLISH, LONG).await;
        assert_eq!(
            got.publish(level == 5),
            Some((topic.clone(), b"{\"t\":2}".to_vec()))
        );
        assert_eq!(got.qos(), 2, "v{level}: delivered at QoS 2: {got:?}");
        assert_eq!(got.flags & 0x08, 0, "v{level}: DUP = 0: {got:?}");
        // PUBREC lost: the publisher sends the PUBLISH again, DUP = 1.
        let mut again = message.clone();
        again[0] |= 0x08;
        publisher.send(&again).await;
        let rec = publisher.expect(kind::PUBREC, LONG).await;
        assert_eq!(rec.pkid(), Some(7), "v{level}: PUBREC again: {rec:?}");
        assert_eq!(
            sub.next(SHORT).await,
            None,
            "v{level}: the retransmission is not delivered again"
        );
        publisher.send(&raw::ack(kind::PUBREL, 7)).await;
        let comp = publisher.expect(kind::PUBCOMP, LONG).await;
        assert_eq!((comp.pkid(), comp.reason()), (Some(7), 0x00));
    }
}

/// [MQTT-4.3.3-11] / [MQTT-4.3.3-12]: a PUBREL is answered by a PUBCOMP
/// with its packet id; after the PUBCOMP the same packet id starts a new
/// message. A PUBREL for no open exchange still gets its PUBCOMP (v5:
/// reason 0x92 Packet Identifier not found).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_12_after_pubcomp_the_packet_id_starts_a_new_message() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    for level in [5u8, 4] {
        let mut sub = subscriber(&b, &pki, level, &topic, 1).await;
        let mut publisher = operational(&b, &pki, level, GATEWAY_CODE).await;
        for n in 0..2u8 {
            publisher
                .send(&raw::publish(level, topic.as_bytes(), 2, false, 9, &[n]))
                .await;
            publisher.expect(kind::PUBREC, LONG).await;
            publisher.send(&raw::ack(kind::PUBREL, 9)).await;
            let comp = publisher.expect(kind::PUBCOMP, LONG).await;
            assert_eq!((comp.pkid(), comp.reason()), (Some(9), 0x00), "{comp:?}");
            let got = sub.expect(kind::PUBLISH, LONG).await;
            assert_eq!(got.publish(level == 5).map(|(_, p)| p), Some(vec![n]));
            sub.send(&raw::ack(kind::PUBACK, got.pkid().expect("pkid")))
                .await;
        }
        publisher.send(&raw::ack(kind::PUBREL, 9)).await;
        let comp = publisher.expect(kind::PUBCOMP, LONG).await;
        assert_eq!(comp.pkid(), Some(9), "v{level}: {comp:?}");
        if level == 5 {
            assert_eq!(comp.reason(), 0x92, "{comp:?}");
        } else {
            assert_eq!(comp.body, [0, 9], "{comp:?}");
        }
    }
}

/// [MQTT-4.3.3-9]: after a PUBREC with an error code (here 0x87, a topic
/// the certificate may not publish to) the same packet id is a new
/// message, without a PUBREL in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_9_after_a_pubrec_error_the_packet_id_starts_a_new_message() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    let mut sub = subscriber(&b, &pki, 5, &topic, 2).await;
    let mut publisher = operational(&b, &pki, 5, GATEWAY_CODE).await;
    publisher
        .send(&raw::publish(5, b"telemetry/OTHER/data", 2, false, 3, b"x"))
        .await;
    let rec = publisher.expect(kind::PUBREC, LONG).await;
    assert_eq!((rec.pkid(), rec.reason()), (Some(3), 0x87), "{rec:?}");
    publisher
        .send(&raw::publish(5, topic.as_bytes(), 2, false, 3, b"y"))
        .await;
    let rec = publisher.expect(kind::PUBREC, LONG).await;
    assert_eq!((rec.pkid(), rec.reason()), (Some(3), 0x00), "{rec:?}");
    let got = sub.expect(kind::PUBLISH, LONG).await;
    assert_eq!(got.publish(true), Some((topic, b"y".to_vec())));
}

/// [MQTT-4.3.3-3..5] with the broker as sender: a QoS 2 delivery is
/// released (PUBREL) after the subscriber's PUBREC and completed by its
/// PUBCOMP; the broker goes on delivering afterwards (its exchanges with
/// the router completed in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_4_a_qos2_delivery_is_released_after_pubrec() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    for level in [5u8, 4] {
        let mut sub = subscriber(&b, &pki, level, &topic, 2).await;
        let mut publisher = operational(&b, &pki, level, GATEWAY_CODE).await;
        for n in 0..3u8 {
            publisher
                .send(&raw::publish(level, topic.as_bytes(), 1, false, 1, &[n]))
                .await;
            publisher.expect(kind::PUBACK, LONG).await;
            let got = sub.expect(kind::PUBLISH, LONG).await;
            assert_eq!(got.publish(level == 5).map(|(_, p)| p), Some(vec![n]));
            let pkid = got.pkid().expect("a QoS 2 delivery has a packet id");
            assert_eq!(sub.next(SHORT).await, None, "no PUBREL before PUBREC");
            sub.send(&raw::ack(kind::PUBREC, pkid)).await;
            let rel = sub.expect(kind::PUBREL, LONG).await;
            assert_eq!(rel.flags, 0x02, "PUBREL flags are 0010: {rel:?}");
            assert_eq!(rel.pkid(), Some(pkid), "v{level}: {rel:?}");
            sub.send(&raw::ack(kind::PUBCOMP, pkid)).await;
        }
    }
}

/// [MQTT-4.4.0-1]: QoS 2 state lives with the session. A publisher that
/// reconnects with a persistent session and sends its unacknowledged
/// PUBLISH again gets a PUBREC and no second delivery, and its PUBREL then
/// completes that exchange (0x00, not 0x92); a subscriber that reconnects
/// gets the unacknowledged PUBREL again with its packet id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_4_0_1_qos2_exchanges_survive_a_reconnect() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    let persistent = |level| ConnectOpts {
        clean: false,
        ..ConnectOpts::new(level, MONITOR)
    };
    for level in [4u8, 5] {
        let mut sub = Raw::connect(b.mqtt, &pki, &pki.operational, &persistent(level)).await;
        sub.send(&raw::subscribe(level, 1, &[(topic.as_str(), 2)]))
            .await;
        sub.expect(kind::SUBACK, LONG).await;
        let publisher_opts = ConnectOpts {
            clean: false,
            ..ConnectOpts::new(level, GATEWAY_CODE)
        };
        let mut publisher = Raw::connect(b.mqtt, &pki, &pki.operational, &publisher_opts).await;
        let message = raw::publish(level, topic.as_bytes(), 2, false, 11, b"once");
        publisher.send(&message).await;
        publisher.expect(kind::PUBREC, LONG).await;
        drop(publisher);
        let got = sub.expect(kind::PUBLISH, LONG).await;
        let pkid = got.pkid().expect("pkid");
        sub.send(&raw::ack(kind::PUBREC, pkid)).await;
        sub.expect(kind::PUBREL, LONG).await;
        drop(sub);
        tokio::time::sleep(SHORT).await;

        let mut publisher = Raw::connect(b.mqtt, &pki, &pki.operational, &publisher_opts).await;
        let mut again = message.clone();
        again[0] |= 0x08;
        publisher.send(&again).await;
        let rec = publisher.expect(kind::PUBREC, LONG).await;
        assert_eq!(rec.pkid(), Some(11), "v{level}: {rec:?}");
        publisher.send(&raw::ack(kind::PUBREL, 11)).await;
        let comp = publisher.expect(kind::PUBCOMP, LONG).await;
        assert_eq!(
            (comp.pkid(), comp.reason()),
            (Some(11), 0x00),
            "v{level}: the exchange was still open: {comp:?}"
        );

        let mut sub = Raw::connect(b.mqtt, &pki, &pki.operational, &persistent(level)).await;
        let rel = sub.expect(kind::PUBREL, LONG).await;
        assert_eq!(
            rel.pkid(),
            Some(pkid),
            "v{level}: PUBREL sent again: {rel:?}"
        );
        sub.send(&raw::ack(kind::PUBCOMP, pkid)).await;
        assert_eq!(
            sub.next(SHORT).await,
            None,
            "v{level}: the message is not delivered a second time"
        );
        // Leave no session behind for the other protocol level.
        drop(sub);
        drop(publisher);
        for id in [MONITOR, GATEWAY_CODE] {
            let c =
                Raw::connect(b.mqtt, &pki, &pki.operational, &ConnectOpts::new(level, id)).await;
            drop(c);
        }
        tokio::time::sleep(SHORT).await;
    }
}

/// [MQTT-3.2.2-9] and [MQTT-3.3.4-7]: the v5 CONNACK announces no
/// Maximum QoS (QoS 2 is supported) and the Receive Maximum
/// (`mqtt.receive_maximum`); a client with more QoS 2 exchanges open than
/// that is disconnected with 0x93.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_4_7_receive_maximum_is_announced_and_enforced() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nreceive_maximum = 3\n"),
    );
    let mut c = Raw::open(b.mqtt, &pki, &pki.operational, 5).await;
    c.send(&raw::connect(&ConnectOpts::new(5, GATEWAY_CODE)))
        .await;
    let ack = c.expect(kind::CONNACK, LONG).await;
    let props = raw::connack_properties(&ack.body).expect("CONNACK properties");
    assert!(
        !props.iter().any(|(id, _)| *id == 0x24),
        "no Maximum QoS: {props:?}"
    );
    assert!(
        props.contains(&(0x21, 3u16.to_be_bytes().to_vec())),
        "Receive Maximum 3: {props:?}"
    );
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    for pkid in 1..=3 {
        c.send(&raw::publish(5, topic.as_bytes(), 2, false, pkid, b"x"))
            .await;
        c.expect(kind::PUBREC, LONG).await;
    }
    // Completing one makes room for another.
    c.send(&raw::ack(kind::PUBREL, 1)).await;
    c.expect(kind::PUBCOMP, LONG).await;
    c.send(&raw::publish(5, topic.as_bytes(), 2, false, 4, b"x"))
        .await;
    c.expect(kind::PUBREC, LONG).await;
    c.send(&raw::publish(5, topic.as_bytes(), 2, false, 5, b"x"))
        .await;
    let closed = c.closed_within(LONG).await.expect("connection closed");
    assert_eq!(closed.disconnect(), Some(0x93), "{closed:?}");
    assert_eq!(
        b.metric("gatehouse_protocol_errors_total{reason=\"receive_maximum_exceeded\"}"),
        1.0
    );
}

/// [MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]): a will of QoS 2 is accepted and published at QoS 2 to
/// a QoS 2 subscription when the connection is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_12_a_qos2_will_is_accepted_and_published() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/status");
    for level in [5u8, 4] {
        let mut sub = subscriber(&b, &pki, level, &topic, 2).await;
        let c = Raw::connect(
            b.mqtt,
            &pki,
            &pki.operational,
            &ConnectOpts {
                will: Some((topic.as_str(), b"gone", 2)),
                ..ConnectOpts::new(level, GATEWAY_CODE)
            },
        )
        .await;
        drop(c);
        let got = sub.expect(kind::PUBLISH, LONG).await;
        assert_eq!(
            got.publish(level == 5),
            Some((topic.clone(), b"gone".to_vec()))
        );
        assert_eq!(got.qos(), 2, "v{level}: {got:?}");
    }
}
