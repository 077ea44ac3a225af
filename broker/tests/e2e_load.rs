//! Abuse and load: garbage, a CONNECT that never comes and an oversized
//! packet each close only their own connection while 100 connected clients
//! keep working; 500 clients connected at once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ANY_CLIENT_ID, LONG, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mqtt::{V4, connect_v4};
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Frame, Raw, kind};
use rumqttc::{Packet as P4, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects `n` v3.1.1 clients of the sample gateway at once, each
/// subscribed to `topic`.
async fn crowd(addr: std::net::SocketAddr, pki: &Arc<Pki>, n: usize, topic: &str) -> Vec<V4> {
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let topic = topic.to_string();
        let pki = pki.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("{GATEWAY_CODE}-{i}");
            let mut c = connect_v4(addr, &pki, Some(&pki.operational), &id, |o| {
                o.set_keep_alive(Duration::from_secs(60));
            })
            .await
            .unwrap_or_else(|e| panic!("client {i} could not connect: {e}"));
            c.client.subscribe(&topic, QoS::AtMostOnce).await.unwrap();
            let ok = c
                .wait_for(LONG * 3, |p| matches!(p, P4::SubAck(_)).then_some(()))
                .await
                .unwrap();
            assert_eq!(ok, Some(()), "client {i} subscribed");
            c
        }));
    }
    let mut clients = Vec::with_capacity(n);
    for t in tasks {
        clients.push(t.await.expect("client task"));
    }
    clients
}

/// Every client receives one message published on `topic`.
async fn all_receive(b: &BrokerProcess, pki: &Pki, clients: &mut [V4], topic: &str, tag: &str) {
    let id = format!("{GATEWAY_CODE}-pub-{tag}");
    let mut publisher = connect_v4(b.mqtt, pki, Some(&pki.operational), &id, |_| {})
        .await
        .unwrap();
    publisher
        .client
        .publish(topic, QoS::AtMostOnce, false, tag.as_bytes().to_vec())
        .await
        .unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c
            .next_publish(LONG)
            .await
            .unwrap_or_else(|| panic!("client {i} got no message after {tag}"));
        assert_eq!(&got.payload[..], tag.as_bytes());
    }
    publisher.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_are_closed_alone_while_100_clients_keep_working() {
    let pki = Arc::new(Pki::generate());
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}\n[mqtt]\nmax_packet_size = 4096\n"),
    );
    let topic = format!("telemetry/{GATEWAY_CODE}/fanout");
    let mut clients = crowd(b.mqtt, &pki, 100, &topic).await;
    assert_eq!(
        b.metric("gatehouse_sessions_active{kind=\"operational\"}"),
        100.0
    );
    all_receive(&b, &pki, &mut clients, &topic, "before").await;

    // 1. Not TLS at all: the handshake fails, the socket is closed.
    let mut tcp = tokio::net::TcpStream::connect(b.mqtt).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\xff\x13garbage")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let n = tokio::time::timeout(LONG, tcp.read_to_end(&mut sink)).await;
    assert!(n.is_ok(), "plain-text garbage must be closed");
    b.wait_metric("gatehouse_handshakes_total{result=\"failed\"}", |v| {
        v >= 1.0
    });

    // 2. Good TLS, then garbage instead of CONNECT.
    let mut raw = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    raw.send(b"\xde\xad\xbe\xef this is not MQTT").await;
    assert!(
        raw.closed_within(LONG).await.is_some(),
        "garbage after TLS closed"
    );
    b.wait_metric(
        "gatehouse_protocol_errors_total{reason=\"not_connect\"}",
        |v| v >= 1.0,
    );

    // 3. Good TLS, then nothing: closed at tls.handshake_timeout (2 s here).
    let mut silent = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    let started = Instant::now();
    assert!(
        silent.closed_within(LONG).await.is_some(),
        "silent connection closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    b.wait_metric(
        "gatehouse_protocol_errors_total{reason=\"connect_timeout\"}",
        |v| v >= 1.0,
    );

    // 3b. TCP only, no ClientHello: the handshake times out.
    let mut idle = tokio::net::TcpStream::connect(b.mqtt).await.unwrap();
    let mut sink = Vec::new();
    let r = tokio::time::timeout(LONG, idle.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "idle TCP connection closed");
    b.wait_metric("gatehouse_handshakes_total{result=\"timeout\"}", |v| {
        v >= 1.0
    });

    // 4. A packet over mqtt.max_packet_size after a good CONNECT.
    let mut big = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    big.send(&raw::connect(&ConnectOpts::new(
        4,
        &format!("{GATEWAY_CODE}-big"),
    )))
    .await;
    big.send(&raw::publish(
        4,
        topic.as_bytes(),
        0,
        false,
        0,
        &[b'x'; 10_000],
    ))
    .await;
    let got = big
        .closed_within(LONG)
        .await
        .expect("oversized packet closes the connection");
    assert_eq!(
        got.frames.first(),
        Some(&Frame {
            kind: kind::CONNACK,
            flags: 0,
            body: vec![0x00, 0x00]
        }),
        "it had been accepted (CONNACK)"
    );
    b.wait_metric(
        "gatehouse_protocol_errors_total{reason=\"packet_too_large\"}",
        |v| v >= 1.0,
    );

    // Everyone else is still connected and served. The oversized packet's
    // session (also operational) is counted until its task has finished
    // closing, a moment after the protocol error is counted: wait for 100,
    // which a lost good client would never reach.
    b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
        v == 100.0
    });
    all_receive(&b, &pki, &mut clients, &topic, "after").await;
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(
            c.closed(Duration::from_millis(1)).await.is_none(),
            "client {i} still connected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_connected_at_once() {
    let pki = Arc::new(Pki::generate());
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/all");
    let started = Instant::now();
    let mut clients = crowd(b.mqtt, &pki, 500, &topic).await;
    println!(
        "500 mTLS clients connected and subscribed in {:?}",
        started.elapsed()
    );
    assert_eq!(
        b.metric("gatehouse_sessions_active{kind=\"operational\"}"),
        500.0
    );
    assert_eq!(b.metric("gatehouse_connection_limit_hits_total"), 0.0);
    all_receive(&b, &pki, &mut clients, &topic, "hello-500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_counted() {
    let pki = Arc::new(Pki::generate());
    let b = BrokerProcess::start_with_limit(exe(), &pki, 3, ANY_CLIENT_ID);
    let mut held = Vec::new();
    for i in 0..3 {
        let mut raw = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
        raw.send(&raw::connect(&ConnectOpts::new(
            4,
            &format!("{GATEWAY_CODE}-held-{i}"),
        )))
        .await;
        held.push(raw);
    }
    b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
        v == 3.0
    });
    let refused = connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        &format!("{GATEWAY_CODE}-4th"),
        |_| {},
    )
    .await;
    assert!(refused.is_err(), "a fourth connection is closed at accept");
    assert!(b.metric("gatehouse_connection_limit_hits_total") >= 1.0);
    drop(held.pop());
    b.wait_metric("gatehouse_connections_open", |v| v == 2.0);
    connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        &format!("{GATEWAY_CODE}-4th"),
        |_| {},
    )
    .await
    .expect("a freed slot is usable again");
}
