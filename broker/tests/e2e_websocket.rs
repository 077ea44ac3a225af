//! MQTT over WebSocket (`[listeners] websocket`) on `gatehouse serve`: the
//! same mTLS, rules and session code as raw MQTT; the `mqtt` subprotocol
//! [MQTT-6.0.0-3/4], binary messages only [MQTT-6.0.0-1], packets cut
//! anywhere across messages [MQTT-6.0.0-2].

mod common;

use std::net::SocketAddr;

use common::{ANY_CLIENT_ID, LONG, exe};
use futures_util::SinkExt;
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::ports::free_port;
use gatehouse_tests::raw::{self, ConnectOpts, Raw, kind};
use gatehouse_tests::ws::WsClient;

/// A broker with the WebSocket listener on a free port.
fn start(pki: &Pki) -> (BrokerProcess, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Appended inside [listeners] by the harness.
    let b = BrokerProcess::start(
        exe(),
        pki,
        &format!("websocket = \"{addr}\"\n{ANY_CLIENT_ID}"),
    );
    (b, addr)
}

/// A client certificate's session over WebSocket carries MQTT both ways with
/// a raw-MQTT client on the other side, and the ACL applies as on the MQTT
/// listener; one CONNECT split over three messages and two packets in one
/// message are read as the byte stream they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_6_0_0_2_mqtt_over_websocket_is_the_same_session() {
    let pki = Pki::generate();
    let (b, ws_addr) = start(&pki);
    let mut ws = WsClient::connect(ws_addr, &pki, &pki.operational, Some("mqtt"))
        .await
        .expect("upgrade with the mqtt subprotocol");
    let connect = raw::connect(&ConnectOpts::new(5, "GW0001-EEFF-ws"));
    let (a, rest) = connect.split_at(3);
    let (b2, c) = rest.split_at(rest.len() / 2);
    for part in [a, b2, c] {
        ws.send(part).await;
    }
    let ack = ws.next(LONG).await.expect("CONNACK");
    assert_eq!((ack.kind, ack.reason()), (kind::CONNACK, 0), "{ack:?}");
    let own = format!("telemetry/{GATEWAY_CODE}/data");
    // SUBSCRIBE and a PUBLISH to a denied topic in one message.
    let mut both = raw::subscribe(5, 1, &[(own.as_str(), 1)]);
    both.extend(raw::publish(
        5,
        b"telemetry/GW0002-AB12/data",
        1,
        false,
        2,
        b"x",
    ));
    ws.send(&both).await;
    // Two answers (the SUBACK comes through the router, so in either order).
    let mut answers = [
        ws.next(LONG).await.expect("an answer"),
        ws.next(LONG).await.expect("another"),
    ];
    answers.sort_by_key(|f| f.kind);
    assert_eq!(answers[0].kind, kind::PUBACK, "{answers:?}");
    assert_eq!(answers[0].reason(), 0x87, "the denied PUBLISH: {answers:?}");
    assert_eq!(answers[1].kind, kind::SUBACK, "{answers:?}");
    // Raw MQTT publisher -> WebSocket subscriber.
    let mut publisher = Raw::connect(
        b.mqtt,
        &pki,
        &pki.operational,
        &ConnectOpts::new(5, GATEWAY_CODE),
    )
    .await;
    publisher
        .send(&raw::publish(5, own.as_bytes(), 1, false, 1, b"{\"t\":1}"))
        .await;
    publisher.expect(kind::PUBACK, LONG).await;
    let got = ws.next(LONG).await.expect("the message over WebSocket");
    assert_eq!(
        got.publish(true),
        Some((own.clone(), b"{\"t\":1}".to_vec()))
    );
    ws.send(&raw::ack(kind::PUBACK, got.pkid().unwrap())).await;
    // WebSocket publisher -> raw MQTT subscriber.
    publisher
        .send(&raw::subscribe(5, 2, &[(own.as_str(), 0)]))
        .await;
    publisher.expect(kind::SUBACK, LONG).await;
    ws.send(&raw::publish(5, own.as_bytes(), 0, false, 0, b"from ws"))
        .await;
    let got = publisher.expect(kind::PUBLISH, LONG).await;
    assert_eq!(got.publish(true), Some((own.clone(), b"from ws".to_vec())));
    b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
        v == 2.0
    });
}

/// [MQTT-6.0.0-3/4]: an upgrade that does not offer the `mqtt`
/// subprotocol is refused; [MQTT-6.0.0-1]: a text message closes the
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_6_0_0_1_text_messages_and_other_subprotocols_are_refused() {
    let pki = Pki::generate();
    let (b, ws_addr) = start(&pki);
    let refused = WsClient::connect(ws_addr, &pki, &pki.operational, None).await;
    assert!(refused.is_err(), "no subprotocol offered: refused");
    let refused = WsClient::connect(ws_addr, &pki, &pki.operational, Some("wamp")).await;
    assert!(refused.is_err(), "another subprotocol: refused");
    // Counted (the broker counts after answering, so wait for it).
    b.wait_metric(
        "gatehouse_protocol_errors_total{reason=\"websocket_upgrade\"}",
        |v| v >= 2.0,
    );
    let mut ws = WsClient::connect(ws_addr, &pki, &pki.operational, Some("mqtt"))
        .await
        .expect("upgrade");
    ws.send(&raw::connect(&ConnectOpts::new(4, GATEWAY_CODE)))
        .await;
    let ack = ws.next(LONG).await.expect("CONNACK");
    assert_eq!(ack.body, [0, 0], "{ack:?}");
    ws.send_text("hello").await;
    assert!(
        ws.closed_within(LONG).await,
        "a text message closes the connection"
    );
}

/// A WebSocket message larger than `mqtt.max_packet_size` (+16) closes that
/// connection before it is buffered whole; the listener goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_message_closes_only_its_connection() {
    let pki = Pki::generate();
    let (_b, ws_addr) = start(&pki);
    let mut ws = WsClient::connect(ws_addr, &pki, &pki.operational, Some("mqtt"))
        .await
        .expect("upgrade");
    ws.send(&raw::connect(&ConnectOpts::new(5, GATEWAY_CODE)))
        .await;
    ws.next(LONG).await.expect("CONNACK");
    // 2 MiB against the default max_packet_size of 1 MiB.
    let _ = ws
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![0u8; 2 << 20].into(),
        ))
        .await;
    assert!(ws.closed_within(LONG).await, "closed");
    let mut again = WsClient::connect(ws_addr, &pki, &pki.operational, Some("mqtt"))
        .await
        .expect("a new upgrade");
    again
        .send(&raw::connect(&ConnectOpts::new(5, GATEWAY_CODE)))
        .await;
    let ack = again.next(LONG).await.expect("CONNACK");
    assert_eq!(ack.kind, kind::CONNACK, "{ack:?}");
}
