//! MQTT conformance of `gatehouse serve`, one test per normative statement,
//! named by its id (`mqtt_3_3_1_3` is [MQTT-3.3.1-3] of MQTT 5.0 unless the
//! name says 3.1.1). Every byte is sent and read raw over real mTLS, so
//! nothing between the test and the broker fixes or hides a frame.
//!
//! Cases that do not depend on gatehouse's own configuration also run
//! against a plain Mosquitto 2.0.11 (`…_mosquitto_reference`) where
//! Mosquitto meets them; the README's conformance table says which do not
//! and why.

mod common;

use std::net::SocketAddr;

use common::{ANY_CLIENT_ID, LONG, SHORT, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mosquitto::{Mosquitto, Options};
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Raw, kind};

/// Which broker a case runs against: `gatehouse serve`, or — as the
/// reference — a plain Mosquitto 2.0 with the same certificates and the
/// same default rule (`acl_file`: `telemetry/{cn}/#`, the certificate's CN
/// as username; any client id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Gatehouse,
    Mosquitto,
}

/// A running broker of either kind.
enum Running {
    Gatehouse(BrokerProcess),
    Mosquitto(Mosquitto),
}

/// The two tests of a case that also runs against the reference: the
/// first name against gatehouse, the second against Mosquitto 2.0.11.
macro_rules! on_both {
    ($case:ident: $gatehouse:ident, $mosquitto:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $gatehouse() {
            $case(Target::Gatehouse).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $mosquitto() {
            $case(Target::Mosquitto).await;
        }
    };
}

/// Mosquitto's rules equal to the default operational rule.
const MOSQUITTO_ACL: &str = "pattern readwrite telemetry/%u/#\n";

/// Starts `target`; `config` is gatehouse.toml text (Mosquitto has its own
/// defaults and ignores it).
fn start(target: Target, pki: &Pki, config: &str) -> Running {
    match target {
        Target::Gatehouse => Running::Gatehouse(BrokerProcess::start(exe(), pki, config)),
        Target::Mosquitto => Running::Mosquitto(Mosquitto::start(
            pki,
            &Options {
                plain_acl_file: Some(MOSQUITTO_ACL.into()),
                quiet: true,
                ..Options::default()
            },
        )),
    }
}

impl Running {
    fn mqtt(&self) -> SocketAddr {
        match self {
            Running::Gatehouse(b) => b.mqtt,
            Running::Mosquitto(m) => SocketAddr::from(([127, 0, 0, 1], m.port)),
        }
    }

    /// Checks one of gatehouse's metrics (Mosquitto has none to check).
    fn assert_metric(&self, name: &str, expected: f64) {
        if let Running::Gatehouse(b) = self {
            assert_eq!(b.metric(name), expected, "{name}");
        }
    }
}

/// The subscriber's client id next to the gateway's own (under
/// `ANY_CLIENT_ID`, one operational certificate may use several ids).
const MONITOR: &str = "GW0001-EEFF-mon";

/// A connected operational client of `level` named `client_id`.
async fn operational(b: &Running, pki: &Pki, level: u8, client_id: &str) -> Raw {
    Raw::connect(
        b.mqtt(),
        pki,
        &pki.operational,
        &ConnectOpts::new(level, client_id),
    )
    .await
}

/// A connection of the operational certificate that sent `opts`, and the
/// CONNACK it got.
async fn connack(b: &Running, pki: &Pki, opts: &ConnectOpts<'_>) -> (Raw, raw::Frame) {
    let mut c = Raw::open(b.mqtt(), pki, &pki.operational, opts.level).await;
    c.send(&raw::connect(opts)).await;
    let ack = c.expect(kind::CONNACK, LONG).await;
    (c, ack)
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
async fn mqtt_3_3_1_3_dup_is_not_forwarded_to_subscribers_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
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

on_both!(mqtt_3_3_1_3_dup_is_not_forwarded_to_subscribers_on: mqtt_3_3_1_3_dup_is_not_forwarded_to_subscribers, mqtt_3_3_1_3_dup_is_not_forwarded_to_subscribers_mosquitto_reference);

/// [MQTT-3.11.3-2]: UNSUBACK has one reason code per filter; 0x11 "No
/// subscription existed" for a filter the session was not subscribed to.
/// 3.1.1's UNSUBACK carries only the packet identifier.
async fn mqtt_3_11_3_2_unsuback_says_which_subscriptions_did_not_exist_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
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

on_both!(mqtt_3_11_3_2_unsuback_says_which_subscriptions_did_not_exist_on: mqtt_3_11_3_2_unsuback_says_which_subscriptions_did_not_exist, mqtt_3_11_3_2_unsuback_says_which_subscriptions_did_not_exist_mosquitto_reference);

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
    let b = start(Target::Gatehouse, &pki, "");
    for clean in [true, false] {
        let (mut c, ack) = connack(
            &b,
            &pki,
            &ConnectOpts {
                clean,
                ..ConnectOpts::new(5, "")
            },
        )
        .await;
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
    let (_c, ack) = connack(&b, &pki, &ConnectOpts::new(5, GATEWAY_CODE)).await;
    assert_eq!((ack.reason(), assigned_client_id(&ack)), (0x00, None));
}

/// 3.1.1 [MQTT-3.1.3-6]: a zero-byte client id with CleanSession = 1 is
/// accepted (the operational client becomes its CN).
async fn mqtt_3_1_1_3_1_3_6_an_empty_client_id_with_a_clean_session_is_accepted_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, "");
    let (mut c, ack) = connack(&b, &pki, &ConnectOpts::new(4, "")).await;
    assert_eq!(ack.body, [0, 0], "{ack:?}");
    // Its own telemetry subtree is open to it as to GW0001-EEFF.
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    c.send(&raw::publish(4, topic.as_bytes(), 1, false, 1, b"{}"))
        .await;
    let ack = c.expect(kind::PUBACK, LONG).await;
    assert_eq!(ack.body, [0, 1]);
}

on_both!(mqtt_3_1_1_3_1_3_6_an_empty_client_id_with_a_clean_session_is_accepted_on: mqtt_3_1_1_3_1_3_6_an_empty_client_id_with_a_clean_session_is_accepted, mqtt_3_1_1_3_1_3_6_an_empty_client_id_with_a_clean_session_is_accepted_mosquitto_reference);

/// 3.1.1 [MQTT-3.1.3-8]: a zero-byte client id with CleanSession = 0 is
/// refused with return code 0x02 and the connection closed.
async fn mqtt_3_1_1_3_1_3_8_an_empty_client_id_with_a_persistent_session_is_refused_on(
    target: Target,
) {
    let pki = Pki::generate();
    let b = start(target, &pki, "");
    let mut c = Raw::open(b.mqtt(), &pki, &pki.operational, 4).await;
    c.send(&raw::connect(&ConnectOpts {
        clean: false,
        ..ConnectOpts::new(4, "")
    }))
    .await;
    let ack = refused_connack(&mut c).await;
    assert_eq!(ack.body, [0, 0x02], "{ack:?}");
}

on_both!(mqtt_3_1_1_3_1_3_8_an_empty_client_id_with_a_persistent_session_is_refused_on: mqtt_3_1_1_3_1_3_8_an_empty_client_id_with_a_persistent_session_is_refused, mqtt_3_1_1_3_1_3_8_an_empty_client_id_with_a_persistent_session_is_refused_mosquitto_reference);

/// A bootstrap certificate must connect as its MAC: an empty client id is
/// not assigned anything but refused (v5 0x85 Client Identifier not valid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_client_without_a_client_id_is_refused() {
    let pki = Pki::generate();
    let b = start(Target::Gatehouse, &pki, "");
    let mut c = Raw::open(b.mqtt(), &pki, &pki.bootstrap, 5).await;
    c.send(&raw::connect(&ConnectOpts::new(5, ""))).await;
    let ack = refused_connack(&mut c).await;
    assert_eq!(ack.reason(), 0x85, "{ack:?}");
    b.assert_metric("gatehouse_connect_refused_total{reason=\"client_id\"}", 1.0);
}

/// A subscriber (`MONITOR`) on `topic` at `qos`, its SUBACK checked.
async fn subscriber(b: &Running, pki: &Pki, level: u8, topic: &str, qos: u8) -> Raw {
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
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
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
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
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
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
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
async fn mqtt_4_3_3_4_a_qos2_delivery_is_released_after_pubrec_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    for level in [5u8, 4] {
        let mut sub = subscriber(&b, &pki, level, &topic, 2).await;
        let mut publisher = operational(&b, &pki, level, GATEWAY_CODE).await;
        for n in 0..3u8 {
            let id = u16::from(n) + 1;
            publisher
                .send(&raw::publish(level, topic.as_bytes(), 2, false, id, &[n]))
                .await;
            publisher.expect(kind::PUBREC, LONG).await;
            publisher.send(&raw::ack(kind::PUBREL, id)).await;
            publisher.expect(kind::PUBCOMP, LONG).await;
            let got = sub.expect(kind::PUBLISH, LONG).await;
            assert_eq!(got.qos(), 2, "v{level}: {got:?}");
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

on_both!(mqtt_4_3_3_4_a_qos2_delivery_is_released_after_pubrec_on: mqtt_4_3_3_4_a_qos2_delivery_is_released_after_pubrec, mqtt_4_3_3_4_a_qos2_delivery_is_released_after_pubrec_mosquitto_reference);

/// [MQTT-4.4.0-1]: QoS 2 state lives with the session. A publisher that
/// reconnects with a persistent session and sends its unacknowledged
/// PUBLISH again gets a PUBREC and no second delivery, and its PUBREL then
/// completes that exchange (0x00, not 0x92); a subscriber that reconnects
/// gets the unacknowledged PUBREL again with its packet id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_4_0_1_qos2_exchanges_survive_a_reconnect() {
    let pki = Pki::generate();
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    // MQTT 5 keeps a session only with a Session Expiry Interval.
    let expiry = u32_property(0x11, 300);
    let v5_expiry = |level| if level == 5 { &expiry[..] } else { &[][..] };
    let persistent = |level| ConnectOpts {
        clean: false,
        properties: v5_expiry(level),
        ..ConnectOpts::new(level, MONITOR)
    };
    for level in [4u8, 5] {
        let mut sub = Raw::connect(b.mqtt(), &pki, &pki.operational, &persistent(level)).await;
        sub.send(&raw::subscribe(level, 1, &[(topic.as_str(), 2)]))
            .await;
        sub.expect(kind::SUBACK, LONG).await;
        let publisher_opts = ConnectOpts {
            clean: false,
            properties: v5_expiry(level),
            ..ConnectOpts::new(level, GATEWAY_CODE)
        };
        let mut publisher = Raw::connect(b.mqtt(), &pki, &pki.operational, &publisher_opts).await;
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

        let mut publisher = Raw::connect(b.mqtt(), &pki, &pki.operational, &publisher_opts).await;
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

        let mut sub = Raw::connect(b.mqtt(), &pki, &pki.operational, &persistent(level)).await;
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
            let c = Raw::connect(
                b.mqtt(),
                &pki,
                &pki.operational,
                &ConnectOpts::new(level, id),
            )
            .await;
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
    let b = start(
        Target::Gatehouse,
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nreceive_maximum = 3\n"),
    );
    let (mut c, ack) = connack(&b, &pki, &ConnectOpts::new(5, GATEWAY_CODE)).await;
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
    b.assert_metric(
        "gatehouse_protocol_errors_total{reason=\"receive_maximum_exceeded\"}",
        1.0,
    );
}

/// [MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]): a will of QoS 2 is accepted and published at QoS 2 to
/// a QoS 2 subscription when the connection is lost.
async fn mqtt_3_1_2_12_a_qos2_will_is_accepted_and_published_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/status");
    for level in [5u8, 4] {
        let mut sub = subscriber(&b, &pki, level, &topic, 2).await;
        let c = Raw::connect(
            b.mqtt(),
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

on_both!(mqtt_3_1_2_12_a_qos2_will_is_accepted_and_published_on: mqtt_3_1_2_12_a_qos2_will_is_accepted_and_published, mqtt_3_1_2_12_a_qos2_will_is_accepted_and_published_mosquitto_reference);

/// Subscription options byte: QoS, No Local, Retain As Published, Retain
/// Handling.
fn options(qos: u8, no_local: bool, rap: bool, rh: u8) -> u8 {
    qos | (u8::from(no_local) << 2) | (u8::from(rap) << 3) | (rh << 4)
}

/// [MQTT-3.8.4-8]: a message is delivered at the lower of its own QoS and
/// the subscription's — live and retained, 3.1.1 and 5. (rumqttd delivered
/// at the subscription's QoS.)
async fn mqtt_3_8_4_8_delivery_qos_is_the_lower_of_message_and_subscription_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    for level in [4u8, 5] {
        let topic = format!("telemetry/{GATEWAY_CODE}/qos{level}");
        let mut sub = subscriber(&b, &pki, level, &topic, 2).await;
        let mut publisher = operational(&b, &pki, level, GATEWAY_CODE).await;
        // Twice: the acks the broker owes the router for downgraded
        // deliveries must not stall the ones after them.
        for round in 0..2u8 {
            for qos in [0u8, 1, 2] {
                let pkid = u16::from(qos) + 10;
                publisher
                    .send(&raw::publish(
                        level,
                        topic.as_bytes(),
                        qos,
                        false,
                        pkid,
                        &[round, qos],
                    ))
                    .await;
                match qos {
                    1 => drop(publisher.expect(kind::PUBACK, LONG).await),
                    2 => {
                        publisher.expect(kind::PUBREC, LONG).await;
                        publisher.send(&raw::ack(kind::PUBREL, pkid)).await;
                        publisher.expect(kind::PUBCOMP, LONG).await;
                    }
                    _ => {}
                }
                let got = sub.expect(kind::PUBLISH, LONG).await;
                assert_eq!(
                    got.publish(level == 5).map(|(_, p)| p),
                    Some(vec![round, qos])
                );
                assert_eq!(got.qos(), qos, "v{level}: published at QoS {qos}: {got:?}");
                match qos {
                    1 => sub.send(&raw::ack(kind::PUBACK, got.pkid().unwrap())).await,
                    2 => {
                        let id = got.pkid().unwrap();
                        sub.send(&raw::ack(kind::PUBREC, id)).await;
                        sub.expect(kind::PUBREL, LONG).await;
                        sub.send(&raw::ack(kind::PUBCOMP, id)).await;
                    }
                    _ => {}
                }
            }
        }
        // Retained at QoS 0, sent to a new QoS 1 subscription: QoS 0, RETAIN 1.
        let retained = format!("telemetry/{GATEWAY_CODE}/retained{level}");
        publisher
            .send(&raw::publish(
                level,
                retained.as_bytes(),
                0,
                true,
                0,
                b"kept",
            ))
            .await;
        tokio::time::sleep(SHORT).await;
        sub.send(&raw::subscribe(level, 2, &[(retained.as_str(), 1)]))
            .await;
        let got = sub.expect(kind::PUBLISH, LONG).await;
        assert_eq!(
            (got.qos(), got.flags & 1),
            (0, 1),
            "v{level}: retained QoS 0 message: {got:?}"
        );
        publisher
            .send(&raw::publish(level, retained.as_bytes(), 0, true, 0, b""))
            .await;
    }
}

on_both!(mqtt_3_8_4_8_delivery_qos_is_the_lower_of_message_and_subscription_on: mqtt_3_8_4_8_delivery_qos_is_the_lower_of_message_and_subscription, mqtt_3_8_4_8_delivery_qos_is_the_lower_of_message_and_subscription_mosquitto_reference);

/// [MQTT-3.8.3-3]: with No Local a client does not get its own messages on
/// that subscription; other clients' messages still arrive, and so do its
/// own without No Local. The option stays with a persistent session.
async fn mqtt_3_8_3_3_no_local_keeps_a_clients_own_messages_from_it_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let own = format!("telemetry/{GATEWAY_CODE}/own");
    let echo = format!("telemetry/{GATEWAY_CODE}/echo");
    let expiry = u32_property(0x11, 300);
    let persistent = ConnectOpts {
        clean: false,
        properties: &expiry,
        ..ConnectOpts::new(5, GATEWAY_CODE)
    };
    let mut c = Raw::connect(b.mqtt(), &pki, &pki.operational, &persistent).await;
    c.send(&raw::subscribe(
        5,
        1,
        &[
            (own.as_str(), options(0, true, false, 0)),
            (echo.as_str(), options(0, false, false, 0)),
        ],
    ))
    .await;
    c.expect(kind::SUBACK, LONG).await;
    let mut other = operational(&b, &pki, 5, MONITOR).await;
    for resumed in [false, true] {
        c.send(&raw::publish(5, own.as_bytes(), 0, false, 0, b"mine"))
            .await;
        c.send(&raw::publish(5, echo.as_bytes(), 0, false, 0, b"echo"))
            .await;
        let got = c.expect(kind::PUBLISH, LONG).await;
        assert_eq!(
            got.publish(true),
            Some((echo.clone(), b"echo".to_vec())),
            "resumed={resumed}: only the subscription without No Local echoes"
        );
        other
            .send(&raw::publish(5, own.as_bytes(), 0, false, 0, b"theirs"))
            .await;
        let got = c.expect(kind::PUBLISH, LONG).await;
        assert_eq!(got.publish(true), Some((own.clone(), b"theirs".to_vec())));
        assert_eq!(c.next(SHORT).await, None, "resumed={resumed}");
        if !resumed {
            drop(c);
            tokio::time::sleep(SHORT).await;
            c = Raw::connect(b.mqtt(), &pki, &pki.operational, &persistent).await;
        }
    }
}

on_both!(mqtt_3_8_3_3_no_local_keeps_a_clients_own_messages_from_it_on: mqtt_3_8_3_3_no_local_keeps_a_clients_own_messages_from_it, mqtt_3_8_3_3_no_local_keeps_a_clients_own_messages_from_it_mosquitto_reference);

/// [MQTT-3.3.1-12] / [MQTT-3.3.1-13]: a live message goes out with RETAIN 0
/// unless the subscription has Retain As Published, then with the RETAIN
/// flag it was published with. 3.1.1 [MQTT-3.3.1-9]: always RETAIN 0.
async fn mqtt_3_3_1_13_retain_as_published_keeps_the_retain_flag_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/rap");
    let mut rap = operational(&b, &pki, 5, MONITOR).await;
    rap.send(&raw::subscribe(
        5,
        1,
        &[(topic.as_str(), options(0, false, true, 0))],
    ))
    .await;
    rap.expect(kind::SUBACK, LONG).await;
    let mut plain = operational(&b, &pki, 5, "GW0001-EEFF-plain").await;
    plain
        .send(&raw::subscribe(5, 1, &[(topic.as_str(), 0)]))
        .await;
    plain.expect(kind::SUBACK, LONG).await;
    let mut old = operational(&b, &pki, 4, "GW0001-EEFF-v311").await;
    old.send(&raw::subscribe(4, 1, &[(topic.as_str(), 0)]))
        .await;
    old.expect(kind::SUBACK, LONG).await;
    let mut publisher = operational(&b, &pki, 5, GATEWAY_CODE).await;
    for retain in [true, false] {
        publisher
            .send(&raw::publish(5, topic.as_bytes(), 0, retain, 0, b"m"))
            .await;
        let got = rap.expect(kind::PUBLISH, LONG).await;
        assert_eq!(
            got.flags & 1,
            u8::from(retain),
            "RAP, published retain={retain}"
        );
        let got = plain.expect(kind::PUBLISH, LONG).await;
        assert_eq!(got.flags & 1, 0, "no RAP, published retain={retain}");
        let got = old.expect(kind::PUBLISH, LONG).await;
        assert_eq!(got.flags & 1, 0, "3.1.1, published retain={retain}");
    }
    publisher
        .send(&raw::publish(5, topic.as_bytes(), 0, true, 0, b""))
        .await;
}

on_both!(mqtt_3_3_1_13_retain_as_published_keeps_the_retain_flag_on: mqtt_3_3_1_13_retain_as_published_keeps_the_retain_flag, mqtt_3_3_1_13_retain_as_published_keeps_the_retain_flag_mosquitto_reference);

/// [MQTT-3.3.1-9..11] Retain Handling, and [MQTT-3.8.4-3] / [MQTT-3.8.4-4]:
/// a SUBSCRIBE for a filter the session already has replaces it (its new
/// QoS applies) and, with Retain Handling 0 (always in 3.1.1), sends the
/// retained messages again. (rumqttd kept the old QoS and sent retained
/// messages only for a new subscription, and ignored Retain Handling.)
async fn mqtt_3_3_1_10_retain_handling_and_resubscribe_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/kept");
    let mut publisher = operational(&b, &pki, 5, GATEWAY_CODE).await;
    publisher
        .send(&raw::publish(5, topic.as_bytes(), 1, true, 1, b"kept"))
        .await;
    publisher.expect(kind::PUBACK, LONG).await;

    let mut c = operational(&b, &pki, 5, MONITOR).await;
    // (options, a retained message expected) in order on one filter.
    let steps = [
        (
            options(1, false, false, 2),
            false,
            "RH 2 on a new subscription",
        ),
        (
            options(1, false, false, 1),
            false,
            "RH 1 on an existing one",
        ),
        (options(1, false, false, 0), true, "RH 0 on an existing one"),
        (
            options(1, false, false, 2),
            false,
            "RH 2 on an existing one",
        ),
    ];
    for (i, (opts, expected, what)) in steps.into_iter().enumerate() {
        c.send(&raw::subscribe(5, i as u16 + 1, &[(topic.as_str(), opts)]))
            .await;
        c.expect(kind::SUBACK, LONG).await;
        let got = c.next(SHORT).await;
        if expected {
            let got = got.unwrap_or_else(|| panic!("{what}: retained message sent"));
            assert_eq!(got.publish(true), Some((topic.clone(), b"kept".to_vec())));
            assert_eq!(got.flags & 1, 1, "{what}: RETAIN 1");
            c.send(&raw::ack(kind::PUBACK, got.pkid().unwrap())).await;
        } else {
            assert_eq!(got, None, "{what}: no retained message");
        }
    }
    c.send(&raw::unsubscribe(5, 9, &[&topic])).await;
    c.expect(kind::UNSUBACK, LONG).await;
    c.send(&raw::subscribe(
        5,
        10,
        &[(topic.as_str(), options(1, false, false, 1))],
    ))
    .await;
    c.expect(kind::SUBACK, LONG).await;
    let got = c.expect(kind::PUBLISH, LONG).await;
    assert_eq!(got.flags & 1, 1, "RH 1 on a new subscription: {got:?}");

    // 3.1.1: every SUBSCRIBE sends the retained messages; a new QoS applies.
    let mut old = operational(&b, &pki, 4, "GW0001-EEFF-v311").await;
    for (i, qos) in [0u8, 1, 1].into_iter().enumerate() {
        old.send(&raw::subscribe(4, i as u16 + 1, &[(topic.as_str(), qos)]))
            .await;
        let ack = old.expect(kind::SUBACK, LONG).await;
        assert_eq!(ack.body.last(), Some(&qos));
        let got = old.expect(kind::PUBLISH, LONG).await;
        assert_eq!(
            (got.flags & 1, got.qos()),
            (1, qos),
            "3.1.1 SUBSCRIBE #{i} at QoS {qos}: {got:?}"
        );
        if qos == 1 {
            old.send(&raw::ack(kind::PUBACK, got.pkid().unwrap())).await;
        }
    }
    // Live messages then come at the new QoS.
    publisher
        .send(&raw::publish(5, topic.as_bytes(), 1, false, 2, b"live"))
        .await;
    let got = old.expect(kind::PUBLISH, LONG).await;
    assert_eq!((got.qos(), got.flags & 1), (1, 0), "{got:?}");
}

on_both!(mqtt_3_3_1_10_retain_handling_and_resubscribe_on: mqtt_3_3_1_10_retain_handling_and_resubscribe, mqtt_3_3_1_10_retain_handling_and_resubscribe_mosquitto_reference);

/// Topic Alias property (0x23) of value `alias`.
fn alias(alias: u16) -> Vec<u8> {
    let mut p = vec![0x23];
    p.extend_from_slice(&alias.to_be_bytes());
    p
}

/// [MQTT-3.3.2-9] and 3.3.2.3.4: a client may set topic aliases up to the
/// Topic Alias Maximum in the CONNACK and use them with an empty topic; the
/// ACL sees the real topic either way. Above the maximum: DISCONNECT 0x94;
/// aliases do not outlive the connection [MQTT-3.3.2-7] (an unknown alias
/// with an empty topic is a protocol error, 0x82).
async fn mqtt_3_3_2_9_topic_aliases_are_resolved_before_the_acl_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    let mut sub = subscriber(&b, &pki, 5, &topic, 0).await;
    let (mut c, ack) = connack(&b, &pki, &ConnectOpts::new(5, GATEWAY_CODE)).await;
    let props = raw::connack_properties(&ack.body).expect("CONNACK properties");
    assert!(
        props.contains(&(0x22, 10u16.to_be_bytes().to_vec())),
        "Topic Alias Maximum 10: {props:?}"
    );
    c.send(&raw::publish_v5(topic.as_bytes(), 0, 0, &alias(1), b"set"))
        .await;
    c.send(&raw::publish_v5(b"", 0, 0, &alias(1), b"used"))
        .await;
    for payload in [&b"set"[..], b"used"] {
        let got = sub.expect(kind::PUBLISH, LONG).await;
        assert_eq!(got.publish(true), Some((topic.clone(), payload.to_vec())));
    }
    // Another gateway's topic behind an alias is denied like the topic.
    c.send(&raw::publish_v5(
        b"telemetry/GW0002-AB12/data",
        1,
        1,
        &alias(2),
        b"x",
    ))
    .await;
    c.send(&raw::publish_v5(b"", 1, 2, &alias(2), b"x")).await;
    for pkid in [1u16, 2] {
        let ack = c.expect(kind::PUBACK, LONG).await;
        assert_eq!((ack.pkid(), ack.reason()), (Some(pkid), 0x87), "{ack:?}");
    }
    assert_eq!(sub.next(SHORT).await, None, "nothing denied was delivered");
    c.send(&raw::publish_v5(b"", 0, 0, &alias(11), b"x")).await;
    let closed = c.closed_within(LONG).await.expect("closed");
    assert_eq!(closed.disconnect(), Some(0x94), "{closed:?}");

    let mut again = operational(&b, &pki, 5, GATEWAY_CODE).await;
    again
        .send(&raw::publish_v5(b"", 0, 0, &alias(1), b"x"))
        .await;
    let closed = again.closed_within(LONG).await.expect("closed");
    assert_eq!(closed.disconnect(), Some(0x82), "{closed:?}");
    b.assert_metric(
        "gatehouse_protocol_errors_total{reason=\"topic_alias_unknown\"}",
        1.0,
    );
}

on_both!(mqtt_3_3_2_9_topic_aliases_are_resolved_before_the_acl_on: mqtt_3_3_2_9_topic_aliases_are_resolved_before_the_acl, mqtt_3_3_2_9_topic_aliases_are_resolved_before_the_acl_mosquitto_reference);

/// [MQTT-3.1.3-10]: the will's properties (here a content type and a user
/// property) are published with it. (rumqttd's path dropped them.)
async fn mqtt_3_1_3_10_will_properties_are_published_with_the_will_on(target: Target) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/status");
    let mut sub = subscriber(&b, &pki, 5, &topic, 1).await;
    // User Property ("why", "lost"), Content Type "text/plain" (in the
    // order the broker's encoder writes them, so bytes compare).
    let mut props = vec![0x26];
    props.extend(raw::string(b"why"));
    props.extend(raw::string(b"lost"));
    props.push(0x03);
    props.extend(raw::string(b"text/plain"));
    let c = Raw::connect(
        b.mqtt(),
        &pki,
        &pki.operational,
        &ConnectOpts {
            will: Some((topic.as_str(), b"gone", 1)),
            will_properties: &props,
            ..ConnectOpts::new(5, GATEWAY_CODE)
        },
    )
    .await;
    drop(c);
    let got = sub.expect(kind::PUBLISH, LONG).await;
    assert_eq!(got.publish(true), Some((topic.clone(), b"gone".to_vec())));
    // topic, packet id, then the properties as the will carried them.
    let at = 2 + topic.len() + 2;
    let mut expected = raw::remaining_length(props.len());
    expected.extend_from_slice(&props);
    assert_eq!(
        got.body[at..at + expected.len()],
        expected[..],
        "will properties delivered as set, nothing else: {got:?}"
    );
}

on_both!(mqtt_3_1_3_10_will_properties_are_published_with_the_will_on: mqtt_3_1_3_10_will_properties_are_published_with_the_will, mqtt_3_1_3_10_will_properties_are_published_with_the_will_mosquitto_reference);

/// A four-byte-integer property (Session Expiry 0x11, Will Delay 0x18).
fn u32_property(id: u8, value: u32) -> Vec<u8> {
    let mut p = vec![id];
    p.extend_from_slice(&value.to_be_bytes());
    p
}

/// CONNACK's Session Present flag.
fn session_present(connack: &raw::Frame) -> bool {
    connack.body[0] & 1 == 1
}

/// [MQTT-3.1.2-23] / §3.1.2.11.2: in MQTT 5 the Session Expiry Interval, not
/// Clean Start, decides whether a session outlives its connection: Clean
/// Start 1 with an expiry keeps it (queued messages arrive on return), Clean
/// Start 0 without one does not. (rumqttd followed Clean Start.)
async fn mqtt_3_1_2_23_session_expiry_decides_whether_a_session_outlives_its_connection_on(
    target: Target,
) {
    let pki = Pki::generate();
    let b = start(target, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/queued");
    let expiry = u32_property(0x11, 300);
    let mut publisher = operational(&b, &pki, 5, GATEWAY_CODE).await;
    for (clean, props, kept) in [(true, &expiry[..], true), (false, &[][..], false)] {
        let opts = |clean| ConnectOpts {
            clean,
            properties: props,
            ..ConnectOpts::new(5, MONITOR)
        };
        let (mut c, _) = connack(&b, &pki, &opts(clean)).await;
        c.send(&raw::subscribe(5, 1, &[(topic.as_str(), 1)])).await;
        c.expect(kind::SUBACK, LONG).await;
        drop(c);
        tokio::time::sleep(SHORT).await;
        publisher
            .send(&raw::publish(
                5,
                topic.as_bytes(),
                1,
                false,
                1,
                b"while away",
            ))
            .await;
        publisher.expect(kind::PUBACK, LONG).await;
        let (mut c, ack) = connack(&b, &pki, &opts(false)).await;
        assert_eq!(
            session_present(&ack),
            kept,
            "clean start {clean}, expiry {props:?}: {ack:?}"
        );
        let got = c.next(SHORT).await;
        if kept {
            let got = got.expect("the queued message");
            assert_eq!(
                got.publish(true),
                Some((topic.clone(), b"while away".to_vec()))
            );
            c.send(&raw::ack(kind::PUBACK, got.pkid().unwrap())).await;
        } else {
            assert_eq!(got, None, "nothing of a session that ended");
        }
        // End this session for the next case (Clean Start, no expiry).
        drop(c);
        let c = Raw::connect(
            b.mqtt(),
            &pki,
            &pki.operational,
            &ConnectOpts::new(5, MONITOR),
        )
        .await;
        drop(c);
        tokio::time::sleep(SHORT).await;
    }
}

on_both!(mqtt_3_1_2_23_session_expiry_decides_whether_a_session_outlives_its_connection_on: mqtt_3_1_2_23_session_expiry_decides_whether_a_session_outlives_its_connection, mqtt_3_1_2_23_session_expiry_decides_whether_a_session_outlives_its_connection_mosquitto_reference);

/// §3.1.2.11.2 / `mqtt.max_session_expiry`: a session ends when its expiry
/// has passed (removed from the router: no Session Present, no queued
/// messages); the cap applies to what a v5 client asks (the CONNACK says
/// so) and to a 3.1.1 persistent session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_removed() {
    let pki = Pki::generate();
    let b = start(
        Target::Gatehouse,
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nmax_session_expiry = \"1s\"\n"),
    );
    let topic = format!("telemetry/{GATEWAY_CODE}/expiry");
    let asked = u32_property(0x11, 300);
    for level in [5u8, 4] {
        let opts = ConnectOpts {
            clean: false,
            properties: if level == 5 { &asked } else { &[] },
            ..ConnectOpts::new(level, MONITOR)
        };
        let (mut c, ack) = connack(&b, &pki, &opts).await;
        if level == 5 {
            let props = raw::connack_properties(&ack.body).expect("properties");
            assert!(
                props.contains(&(0x11, 1u32.to_be_bytes().to_vec())),
                "Session Expiry capped to 1 s: {props:?}"
            );
        }
        c.send(&raw::subscribe(level, 1, &[(topic.as_str(), 1)]))
            .await;
        c.expect(kind::SUBACK, LONG).await;
        drop(c);
        // Within the expiry the session is there...
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (c, ack) = connack(&b, &pki, &opts).await;
        assert!(
            session_present(&ack),
            "v{level}: resumed within 1 s: {ack:?}"
        );
        drop(c);
        // ...and gone after it.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let (mut c, ack) = connack(&b, &pki, &opts).await;
        assert!(!session_present(&ack), "v{level}: expired: {ack:?}");
        let mut publisher = operational(&b, &pki, level, GATEWAY_CODE).await;
        publisher
            .send(&raw::publish(level, topic.as_bytes(), 0, false, 0, b"x"))
            .await;
        assert_eq!(
            c.next(SHORT).await,
            None,
            "v{level}: its subscription is gone"
        );
        drop(c);
        let c = Raw::connect(
            b.mqtt(),
            &pki,
            &pki.operational,
            &ConnectOpts::new(level, MONITOR),
        )
        .await;
        drop(c);
    }
}

/// [MQTT-3.1.3-9]: a will with a Will Delay Interval is published when the
/// delay has passed, not before, and not at all if the client id connects
/// again within it; a session that ends with its connection (no expiry)
/// publishes it at once. (rumqttd ignored the delay.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_9_a_delayed_will_waits_and_a_reconnect_cancels_it() {
    let pki = Pki::generate();
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/will");
    let mut sub = subscriber(&b, &pki, 5, &topic, 0).await;
    let delay = u32_property(0x18, 2);
    let expiry = u32_property(0x11, 60);
    let opts = |props: &'static [u8]| ConnectOpts {
        will: Some((topic.as_str(), b"gone", 0)),
        will_properties: &delay,
        properties: props,
        ..ConnectOpts::new(5, GATEWAY_CODE)
    };
    let expiry: &'static [u8] = Box::leak(expiry.into_boxed_slice());

    // Delayed: nothing for a second, then the will.
    drop(Raw::connect(b.mqtt(), &pki, &pki.operational, &opts(expiry)).await);
    let started = std::time::Instant::now();
    assert_eq!(
        sub.next(std::time::Duration::from_millis(1200)).await,
        None,
        "not before the delay"
    );
    let got = sub.expect(kind::PUBLISH, LONG).await;
    assert_eq!(got.publish(true), Some((topic.clone(), b"gone".to_vec())));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Back within the delay, resuming the session: no will.
    drop(Raw::connect(b.mqtt(), &pki, &pki.operational, &opts(expiry)).await);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let resume = ConnectOpts {
        clean: false,
        properties: expiry,
        ..ConnectOpts::new(5, GATEWAY_CODE)
    };
    let back = Raw::connect(b.mqtt(), &pki, &pki.operational, &resume).await;
    assert_eq!(
        sub.next(std::time::Duration::from_secs(3)).await,
        None,
        "a reconnect cancels it"
    );
    // Back with Clean Start: the old session ends, so its will goes now.
    drop(back);
    drop(Raw::connect(b.mqtt(), &pki, &pki.operational, &opts(expiry)).await);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let back = Raw::connect(
        b.mqtt(),
        &pki,
        &pki.operational,
        &ConnectOpts::new(5, GATEWAY_CODE),
    )
    .await;
    let got = sub
        .expect(kind::PUBLISH, std::time::Duration::from_millis(1500))
        .await;
    assert_eq!(
        got.publish(true),
        Some((topic.clone(), b"gone".to_vec())),
        "Clean Start ends the session"
    );
    drop(back);
    tokio::time::sleep(SHORT).await;

    // No session expiry: the session ends with the connection, the will goes now.
    drop(Raw::connect(b.mqtt(), &pki, &pki.operational, &opts(&[])).await);
    let got = sub
        .expect(kind::PUBLISH, std::time::Duration::from_millis(1500))
        .await;
    assert_eq!(got.publish(true), Some((topic.clone(), b"gone".to_vec())));
}

/// Shared subscriptions are off by default for both kinds: the CONNACK
/// says Shared Subscription Available 0 and a `$share/` filter gets SUBACK
/// 0x9E while the session goes on; 3.1.1 has no shared subscriptions (a
/// `$share/` filter is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_are_off_by_default() {
    let pki = Pki::generate();
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
    let (mut c, ack) = connack(&b, &pki, &ConnectOpts::new(5, GATEWAY_CODE)).await;
    let props = raw::connack_properties(&ack.body).expect("properties");
    assert!(props.contains(&(0x2A, vec![0])), "{props:?}");
    let shared = format!("$share/g/telemetry/{GATEWAY_CODE}/data");
    let own = format!("telemetry/{GATEWAY_CODE}/data");
    c.send(&raw::subscribe(
        5,
        1,
        &[(shared.as_str(), 0), (own.as_str(), 0)],
    ))
    .await;
    let ack = c.expect(kind::SUBACK, LONG).await;
    assert_eq!(ack.body, [0, 1, 0, 0x9E, 0x00], "{ack:?}");
}

/// [MQTT-4.8.2-*] with `[acl.operational] shared_subscriptions = true`:
/// the ACL applies to the filter inside `$share/{group}/` (a gateway shares
/// only what it could subscribe to), messages go round robin within a
/// group and each message to one member, two groups on different filters
/// do not mix, and no retained message is sent to a shared subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_8_2_shared_subscriptions_round_robin_within_the_acl() {
    let pki = Pki::generate();
    let b = start(
        Target::Gatehouse,
        &pki,
        &format!("{ANY_CLIENT_ID}[acl.operational]\nshared_subscriptions = true\n"),
    );
    let data = format!("telemetry/{GATEWAY_CODE}/data");
    let other = format!("telemetry/{GATEWAY_CODE}/other");
    let mut publisher = operational(&b, &pki, 5, GATEWAY_CODE).await;
    publisher
        .send(&raw::publish(5, data.as_bytes(), 0, true, 0, b"retained"))
        .await;
    tokio::time::sleep(SHORT).await;
    let group = format!("$share/workers/{data}");
    let mut members = Vec::new();
    for id in ["GW0001-EEFF-w1", "GW0001-EEFF-w2"] {
        let (mut c, ack) = connack(&b, &pki, &ConnectOpts::new(5, id)).await;
        let props = raw::connack_properties(&ack.body).expect("properties");
        assert!(props.contains(&(0x2A, vec![1])), "{props:?}");
        c.send(&raw::subscribe(
            5,
            1,
            &[
                (group.as_str(), 0),
                // Another gateway's topics, and every gateway's: denied.
                ("$share/workers/telemetry/GW0002-AB12/#", 0),
                ("$share/workers/telemetry/+/data", 0),
            ],
        ))
        .await;
        let ack = c.expect(kind::SUBACK, LONG).await;
        assert_eq!(ack.body, [0, 1, 0, 0x00, 0x87, 0x87], "{ack:?}");
        members.push(c);
    }
    // Same group name, other filter: a group of its own.
    let mut lone = operational(&b, &pki, 5, "GW0001-EEFF-w3").await;
    let lone_group = format!("$share/workers/{other}");
    lone.send(&raw::subscribe(5, 1, &[(lone_group.as_str(), 0)]))
        .await;
    lone.expect(kind::SUBACK, LONG).await;
    for m in &mut members {
        assert_eq!(
            m.next(SHORT).await,
            None,
            "no retained message for a shared subscription"
        );
    }
    for n in 0..10u8 {
        publisher
            .send(&raw::publish(5, data.as_bytes(), 0, false, 0, &[n]))
            .await;
        publisher
            .send(&raw::publish(5, other.as_bytes(), 0, false, 0, &[n]))
            .await;
    }
    let mut got = Vec::new();
    for (i, m) in members.iter_mut().enumerate() {
        let mut mine = Vec::new();
        while let Some(f) = m.next(SHORT).await {
            let (topic, payload) = f.publish(true).expect("a PUBLISH");
            assert_eq!(topic, data);
            mine.push(payload[0]);
        }
        assert!(
            (3..=7).contains(&mine.len()),
            "member {i} got its share: {mine:?}"
        );
        got.extend(mine);
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..10).collect::<Vec<u8>>(),
        "each message to one member, none lost"
    );
    let mut lone_got = Vec::new();
    while let Some(f) = lone.next(SHORT).await {
        assert_eq!(f.publish(true).map(|(t, _)| t), Some(other.clone()));
        lone_got.push(f);
    }
    assert_eq!(
        lone_got.len(),
        10,
        "the other filter's group gets all of its own"
    );
    // Unsubscribing the shared filter works as for any filter.
    members[0].send(&raw::unsubscribe(5, 2, &[&group])).await;
    let ack = members[0].expect(kind::UNSUBACK, LONG).await;
    assert_eq!(ack.body, [0, 2, 0, 0x00], "{ack:?}");
    for n in 0..4u8 {
        publisher
            .send(&raw::publish(5, data.as_bytes(), 0, false, 0, &[n]))
            .await;
    }
    let mut rest = 0;
    while members[1].next(SHORT).await.is_some() {
        rest += 1;
    }
    assert_eq!(rest, 4, "the remaining member gets everything");
    assert_eq!(members[0].next(SHORT).await, None);
    publisher
        .send(&raw::publish(5, data.as_bytes(), 0, true, 0, b""))
        .await;
}

/// [MQTT-3.3.4-9]: the broker never has more QoS 1/2 PUBLISHes
/// unacknowledged towards a client than the Receive Maximum the client
/// sent; the rest wait (in order) and go out as acks come back. A QoS 2
/// one counts until its PUBCOMP. (rumqttd sent up to its own window.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_4_9_the_clients_receive_maximum_is_honoured() {
    let pki = Pki::generate();
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    let receive_max = [0x21, 0x00, 0x02];
    let mut c = Raw::connect(
        b.mqtt(),
        &pki,
        &pki.operational,
        &ConnectOpts {
            properties: &receive_max,
            ..ConnectOpts::new(5, MONITOR)
        },
    )
    .await;
    c.send(&raw::subscribe(5, 1, &[(topic.as_str(), 2)])).await;
    c.expect(kind::SUBACK, LONG).await;
    let mut publisher = operational(&b, &pki, 5, GATEWAY_CODE).await;
    for n in 0..6u8 {
        let qos = if n == 1 { 2 } else { 1 };
        let pkid = u16::from(n) + 1;
        publisher
            .send(&raw::publish(5, topic.as_bytes(), qos, false, pkid, &[n]))
            .await;
        if qos == 2 {
            publisher.expect(kind::PUBREC, LONG).await;
            publisher.send(&raw::ack(kind::PUBREL, pkid)).await;
            publisher.expect(kind::PUBCOMP, LONG).await;
        } else {
            publisher.expect(kind::PUBACK, LONG).await;
        }
    }
    // Two out, then nothing until one is acknowledged.
    let first = c.expect(kind::PUBLISH, LONG).await;
    let second = c.expect(kind::PUBLISH, LONG).await;
    assert_eq!(c.next(SHORT).await, None, "no third before an ack");
    assert_eq!(first.publish(true).map(|(_, p)| p), Some(vec![0]));
    assert_eq!(
        (second.qos(), second.publish(true).map(|(_, p)| p)),
        (2, Some(vec![1]))
    );
    c.send(&raw::ack(kind::PUBACK, first.pkid().unwrap())).await;
    let third = c.expect(kind::PUBLISH, LONG).await;
    assert_eq!(third.publish(true).map(|(_, p)| p), Some(vec![2]));
    assert_eq!(
        c.next(SHORT).await,
        None,
        "the QoS 2 one is still in flight"
    );
    // The QoS 2 one frees its slot at PUBCOMP, not at PUBREC.
    let id = second.pkid().unwrap();
    c.send(&raw::ack(kind::PUBREC, id)).await;
    c.expect(kind::PUBREL, LONG).await;
    assert_eq!(c.next(SHORT).await, None, "PUBREC alone frees nothing");
    c.send(&raw::ack(kind::PUBCOMP, id)).await;
    let mut rest = vec![c.expect(kind::PUBLISH, LONG).await];
    c.send(&raw::ack(kind::PUBACK, third.pkid().unwrap())).await;
    rest.push(c.expect(kind::PUBLISH, LONG).await);
    c.send(&raw::ack(kind::PUBACK, rest[0].pkid().unwrap()))
        .await;
    rest.push(c.expect(kind::PUBLISH, LONG).await);
    let payloads: Vec<_> = rest.iter().map(|f| f.publish(true).unwrap().1[0]).collect();
    assert_eq!(payloads, [3, 4, 5], "in order");
}

/// [MQTT-3.1.4-3] with §3.1.2.5: the connection a takeover closes publishes
/// its will (no DISCONNECT came from it) — at once without a Will Delay
/// Interval; with one, only if the new connection's Clean Start ends the
/// session, not when it resumes it [MQTT-3.1.3-9]. (Wills were not
/// published on takeover.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_3_a_taken_over_connection_publishes_its_will() {
    let pki = Pki::generate();
    let b = start(Target::Gatehouse, &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/will");
    let mut sub = subscriber(&b, &pki, 5, &topic, 0).await;
    let expiry = u32_property(0x11, 60);
    let delay = u32_property(0x18, 30);
    // (level, will delay, new connection's Clean Start, will expected)
    let cases: [(u8, &[u8], bool, bool); 4] = [
        (4, &[], true, true),
        (5, &[], false, true),
        (5, &delay, false, false),
        (5, &delay, true, true),
    ];
    for (level, will_delay, clean, expected) in cases {
        let old = Raw::connect(
            b.mqtt(),
            &pki,
            &pki.operational,
            &ConnectOpts {
                will: Some((topic.as_str(), b"gone", 0)),
                will_properties: will_delay,
                properties: if level == 5 { &expiry } else { &[] },
                clean: false,
                ..ConnectOpts::new(level, GATEWAY_CODE)
            },
        )
        .await;
        let new = Raw::connect(
            b.mqtt(),
            &pki,
            &pki.operational,
            &ConnectOpts {
                clean,
                ..ConnectOpts::new(level, GATEWAY_CODE)
            },
        )
        .await;
        let got = sub.next(std::time::Duration::from_millis(1500)).await;
        let what = format!("v{level}, will delay {will_delay:?}, new Clean Start {clean}");
        if expected {
            let got = got.unwrap_or_else(|| panic!("{what}: will published"));
            assert_eq!(
                got.publish(true),
                Some((topic.clone(), b"gone".to_vec())),
                "{what}"
            );
        } else {
            assert_eq!(got, None, "{what}: no will");
        }
        drop(old);
        drop(new);
        tokio::time::sleep(SHORT).await;
        assert_eq!(sub.next(SHORT).await, None, "{what}: nothing more");
    }
}

/// `mqtt.max_persistent_sessions_*`: sessions kept beyond their connection
/// count against a per-kind limit. Past it an MQTT 5 client is told Session
/// Expiry 0 (its session ends with the connection) and a 3.1.1 persistent
/// CONNECT is refused (return code 3); a kept session that ends frees its
/// place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_count_against_a_per_kind_limit() {
    let pki = Pki::generate();
    let b = start(
        Target::Gatehouse,
        &pki,
        &format!("{ANY_CLIENT_ID}[mqtt]\nmax_persistent_sessions_operational = 1\n"),
    );
    let expiry = u32_property(0x11, 300);
    let kept = |id| ConnectOpts {
        clean: false,
        properties: &expiry,
        ..ConnectOpts::new(5, id)
    };
    let expiry_in = |ack: &raw::Frame| {
        raw::connack_properties(&ack.body)
            .expect("properties")
            .into_iter()
            .find(|(id, _)| *id == 0x11)
            .map(|(_, v)| v)
    };
    let first = "GW0001-EEFF-a";
    let second = "GW0001-EEFF-b";
    let (a, ack) = connack(&b, &pki, &kept(first)).await;
    assert_eq!(expiry_in(&ack), None, "the first is kept as asked: {ack:?}");
    drop(a);
    let (c, ack) = connack(&b, &pki, &kept(second)).await;
    assert_eq!(
        expiry_in(&ack),
        Some(vec![0, 0, 0, 0]),
        "the second is told 0: {ack:?}"
    );
    drop(c);
    tokio::time::sleep(SHORT).await;
    let (c, ack) = connack(&b, &pki, &kept(second)).await;
    assert!(!session_present(&ack), "nothing was kept for it: {ack:?}");
    drop(c);
    let mut old = Raw::open(b.mqtt(), &pki, &pki.operational, 4).await;
    old.send(&raw::connect(&ConnectOpts {
        clean: false,
        ..ConnectOpts::new(4, "GW0001-EEFF-c")
    }))
    .await;
    let ack = refused_connack(&mut old).await;
    assert_eq!(ack.body, [0, 3], "3.1.1: server unavailable: {ack:?}");
    b.assert_metric(
        "gatehouse_connect_refused_total{reason=\"persistent_sessions\"}",
        1.0,
    );
    b.assert_metric(
        "gatehouse_quota_exceeded_total{quota=\"persistent_sessions\"}",
        3.0,
    );
    // The first ends its session (Clean Start, no expiry): room again.
    drop(
        Raw::connect(
            b.mqtt(),
            &pki,
            &pki.operational,
            &ConnectOpts::new(5, first),
        )
        .await,
    );
    tokio::time::sleep(SHORT).await;
    let (_c, ack) = connack(&b, &pki, &kept(second)).await;
    assert_eq!(expiry_in(&ack), None, "kept now: {ack:?}");
}
