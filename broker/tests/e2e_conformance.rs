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
