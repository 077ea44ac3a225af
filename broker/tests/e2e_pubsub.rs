//! Publish / subscribe through `gatehouse serve` with rumqttc v3.1.1 and v5
//! over real mTLS, and the ACL refusing what a certificate kind may not do.

mod common;

use common::{ANY_CLIENT_ID, LONG, SHORT, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mqtt::{V5, connect_v4, connect_v5};
use gatehouse_tests::pki::{BOOTSTRAP_MAC, GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Raw};
use rumqttc::v5::ConnectionError as CE5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, SubscribeReasonCode as Sub5};
use rumqttc::{Packet as P4, QoS, SubscribeReasonCode as Sub4};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_publishes_telemetry_and_a_permitted_subscriber_receives_it() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");

    let mut sub = connect_v5(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-mon",
        |_| {},
    )
    .await
    .expect("v5 subscriber connects");
    sub.client.subscribe(&topic, Q5::AtLeastOnce).await.unwrap();
    let granted = sub
        .wait_for(LONG, |p| match p {
            P5::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(granted, Some(vec![Sub5::Success(Q5::AtLeastOnce)]));

    let mut publisher = connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .expect("v3.1.1 publisher connects");
    publisher
        .client
        .publish(&topic, QoS::AtLeastOnce, false, br#"{"t":21.5}"#.to_vec())
        .await
        .unwrap();
    let acked = publisher
        .wait_for(LONG, |p| matches!(p, P4::PubAck(_)).then_some(()))
        .await
        .unwrap();
    assert_eq!(acked, Some(()), "QoS 1 publish acknowledged");

    let got = sub
        .next_publish(LONG)
        .await
        .expect("subscriber receives the message");
    assert_eq!(&got.topic[..], topic.as_bytes());
    assert_eq!(&got.payload[..], br#"{"t":21.5}"#);
    assert_eq!(got.qos, Q5::AtLeastOnce);
    assert!(b.metric("gatehouse_messages_received_total") >= 1.0);
    assert!(b.metric("gatehouse_messages_sent_total") >= 1.0);
    assert_eq!(
        b.metric("gatehouse_sessions_active{kind=\"operational\"}"),
        2.0
    );

    // And the other way round: v5 publishes, v3.1.1 receives.
    publisher
        .client
        .subscribe(&topic, QoS::AtMostOnce)
        .await
        .unwrap();
    let codes = publisher
        .wait_for(LONG, |p| match p {
            P4::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(codes, Some(vec![Sub4::Success(QoS::AtMostOnce)]));
    sub.client
        .publish(&topic, Q5::AtMostOnce, false, b"v5".to_vec())
        .await
        .unwrap();
    let got = publisher
        .next_publish(LONG)
        .await
        .expect("v3.1.1 subscriber receives");
    assert_eq!(&got.payload[..], b"v5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_is_refused_on_another_gateways_topic_and_on_hash() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let other = "telemetry/GW0002-0002/data";

    // A listener allowed on the other gateway's topic sees nothing.
    let second = pki.issue_operational("GW0002-0002");
    let mut victim = connect_v4(b.mqtt, &pki, Some(&second), "GW0002-0002", |_| {})
        .await
        .unwrap();
    victim
        .client
        .subscribe(other, QoS::AtLeastOnce)
        .await
        .unwrap();
    victim
        .wait_for(LONG, |p| matches!(p, P4::SubAck(_)).then_some(()))
        .await
        .unwrap();

    // v5 QoS 1 publish on another gateway's topic: PUBACK 0x87.
    let mut v5 = connect_v5(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .unwrap();
    v5.client
        .publish(other, Q5::AtLeastOnce, false, b"spoof".to_vec())
        .await
        .unwrap();
    expect_puback_not_authorized(&mut v5, "expected PUBACK 0x87 (not authorized)").await;
    // v5 SUBSCRIBE to `#` and to the other gateway's topic: SUBACK 0x87.
    let mut v5 = connect_v5(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-b",
        |_| {},
    )
    .await
    .unwrap();
    v5.client.subscribe("#", Q5::AtMostOnce).await.unwrap();
    expect_suback_not_authorized(&mut v5, "expected SUBACK 0x87 for #").await;
    // v3.1.1: SUBACK failure (0x80) per refused filter, the allowed one granted.
    let mut v4 = connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-c",
        |_| {},
    )
    .await
    .unwrap();
    v4.client
        .subscribe_many([
            rumqttc::SubscribeFilter::new("#".into(), QoS::AtMostOnce),
            rumqttc::SubscribeFilter::new(format!("telemetry/{GATEWAY_CODE}/#"), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(other.into(), QoS::AtMostOnce),
            rumqttc::SubscribeFilter::new("$SYS/#".into(), QoS::AtMostOnce),
        ])
        .await
        .unwrap();
    let codes = v4
        .wait_for(LONG, |p| match p {
            P4::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(
        codes,
        Some(vec![
            Sub4::Failure,
            Sub4::Success(QoS::AtLeastOnce),
            Sub4::Failure,
            Sub4::Failure
        ])
    );
    // v3.1.1 publish on the other topic is dropped (and still acked: 3.1.1 has no refusal).
    v4.client
        .publish(other, QoS::AtLeastOnce, false, b"spoof".to_vec())
        .await
        .unwrap();
    assert!(
        victim.next_publish(SHORT).await.is_none(),
        "refused publish must not be delivered"
    );
    assert!(
        b.metric("gatehouse_acl_denials_total{action=\"publish\",kind=\"operational\"}") >= 2.0
    );
    assert!(
        b.metric("gatehouse_acl_denials_total{action=\"subscribe\",kind=\"operational\"}") >= 4.0
    );
    assert!(
        b.log()
            .contains("deny operational publish \"telemetry/GW0002-0002/data\""),
        "{}",
        b.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_only_reaches_its_own_provisioning_subtree() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    let own = format!("tds/provision/{BOOTSTRAP_MAC}/csr");

    let mut boot = connect_v5(b.mqtt, &pki, Some(&pki.bootstrap), BOOTSTRAP_MAC, |_| {})
        .await
        .unwrap();
    boot.client
        .subscribe(format!("tds/provision/{BOOTSTRAP_MAC}/#"), Q5::AtLeastOnce)
        .await
        .unwrap();
    boot.wait_for(LONG, |p| matches!(p, P5::SubAck(_)).then_some(()))
        .await
        .unwrap();
    boot.client
        .publish(&own, Q5::AtLeastOnce, false, b"hello".to_vec())
        .await
        .unwrap();
    let got = boot
        .next_publish(LONG)
        .await
        .expect("own provisioning message comes back");
    assert_eq!(&got.topic[..], own.as_bytes());

    // Telemetry is refused.
    boot.client
        .publish(
            format!("telemetry/{GATEWAY_CODE}/data"),
            Q5::AtLeastOnce,
            false,
            b"x".to_vec(),
        )
        .await
        .unwrap();
    expect_puback_not_authorized(&mut boot, "expected PUBACK 0x87").await;
    // Another MAC's sub-tree is refused.
    let mut boot = connect_v5(b.mqtt, &pki, Some(&pki.bootstrap), BOOTSTRAP_MAC, |_| {})
        .await
        .unwrap();
    boot.client
        .subscribe("tds/provision/11:22:33:44:55:66/#", Q5::AtMostOnce)
        .await
        .unwrap();
    expect_suback_not_authorized(&mut boot, "expected SUBACK 0x87").await;
    assert!(b.metric("gatehouse_acl_denials_total{action=\"publish\",kind=\"bootstrap\"}") >= 1.0);
    assert!(
        b.metric("gatehouse_acl_denials_total{action=\"subscribe\",kind=\"bootstrap\"}") >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_policy_is_enforced_at_connect() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, "");
    match connect_v5(b.mqtt, &pki, Some(&pki.operational), "NOT-MY-CN", |_| {}).await {
        Err(CE5::ConnectionRefused(code)) => {
            assert_eq!(
                code,
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::ClientIdentifierNotValid
            )
        }
        other => panic!("expected CONNACK 0x85, got {:?}", other.map(|_| ())),
    }
    match connect_v4(b.mqtt, &pki, Some(&pki.bootstrap), "not-a-mac", |_| {}).await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::BadClientId)
        }
        other => panic!(
            "expected CONNACK return code 2, got {:?}",
            other.map(|_| ())
        ),
    }
    assert_eq!(
        b.metric("gatehouse_connect_refused_total{reason=\"client_id\"}"),
        2.0
    );
    // The right ids are admitted.
    connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .unwrap();
    connect_v5(b.mqtt, &pki, Some(&pki.bootstrap), BOOTSTRAP_MAC, |_| {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_client_is_disconnected_after_too_many_denied_publishes() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(
        exe(),
        &pki,
        "[mqtt]\nacl_violations_before_disconnect = 3\n",
    );
    let mut v4 = connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .unwrap();
    for _ in 0..2 {
        v4.client
            .publish(
                "telemetry/OTHER/data",
                QoS::AtMostOnce,
                false,
                b"x".to_vec(),
            )
            .await
            .unwrap();
    }
    assert!(
        v4.closed(SHORT).await.is_none(),
        "two violations are tolerated"
    );
    v4.client
        .publish(
            "telemetry/OTHER/data",
            QoS::AtMostOnce,
            false,
            b"x".to_vec(),
        )
        .await
        .unwrap();
    assert!(
        v4.closed(LONG).await.is_some(),
        "third violation disconnects"
    );
    assert_eq!(
        b.metric("gatehouse_acl_denials_total{action=\"publish\",kind=\"operational\"}"),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_and_will_messages() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let status = format!("telemetry/{GATEWAY_CODE}/status");

    // Retained: published before anyone subscribes, delivered on subscribe.
    let v4 = connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-r",
        |_| {},
    )
    .await
    .unwrap();
    v4.client
        .publish(&status, QoS::AtLeastOnce, true, b"online".to_vec())
        .await
        .unwrap();
    let mut late = connect_v5(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-late",
        |_| {},
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    late.client
        .subscribe(format!("telemetry/{GATEWAY_CODE}/#"), Q5::AtLeastOnce)
        .await
        .unwrap();
    let got = late
        .next_publish(LONG)
        .await
        .expect("retained message delivered");
    assert_eq!(&got.payload[..], b"online");
    assert!(got.retain);

    // Will on a forbidden topic: CONNACK 0x87 (v5) / 5 (v3.1.1).
    let will = rumqttc::v5::mqttbytes::v5::LastWill::new(
        "telemetry/OTHER/status",
        "gone",
        Q5::AtMostOnce,
        false,
        None,
    );
    match connect_v5(b.mqtt, &pki, Some(&pki.operational), "GW0001-EEFF-w", |o| {
        o.set_last_will(will);
    })
    .await
    {
        Err(CE5::ConnectionRefused(code)) => {
            assert_eq!(
                code,
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::NotAuthorized
            )
        }
        other => panic!(
            "expected CONNACK 0x87 for the will topic, got {:?}",
            other.map(|_| ())
        ),
    }
    let will = rumqttc::LastWill::new("telemetry/OTHER/status", "gone", QoS::AtMostOnce, false);
    match connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-w4",
        |o| {
            o.set_last_will(will);
        },
    )
    .await
    {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized)
        }
        other => panic!(
            "expected CONNACK 5 for the will topic, got {:?}",
            other.map(|_| ())
        ),
    }

    // Allowed will: published when the connection drops without DISCONNECT.
    let mut raw = Raw::open(b.mqtt, &pki, &pki.operational, 4).await;
    raw.send(&raw::connect(&ConnectOpts {
        keepalive: 60,
        will: Some((&status, b"lost-raw", 0)),
        ..ConnectOpts::new(4, "GW0001-EEFF-raw")
    }))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(raw); // TCP close without DISCONNECT
    let got = late.next_publish(LONG).await.expect("will delivered");
    assert_eq!(&got.payload[..], b"lost-raw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_gets_what_was_published_while_offline() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/cmd");
    let id = "GW0001-EEFF-persist";
    let mut c = connect_v4(b.mqtt, &pki, Some(&pki.operational), id, |o| {
        o.set_clean_session(false);
    })
    .await
    .unwrap();
    c.client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
    c.wait_for(LONG, |p| matches!(p, P4::SubAck(_)).then_some(()))
        .await
        .unwrap();
    c.disconnect().await;
    b.wait_metric("gatehouse_sessions_active{kind=\"operational\"}", |v| {
        v == 0.0
    });

    let p = connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-sender",
        |_| {},
    )
    .await
    .unwrap();
    p.client
        .publish(&topic, QoS::AtLeastOnce, false, b"while-offline".to_vec())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut c = connect_v4(b.mqtt, &pki, Some(&pki.operational), id, |o| {
        o.set_clean_session(false);
    })
    .await
    .unwrap();
    let got = c
        .next_publish(LONG)
        .await
        .expect("queued message delivered on reconnect");
    assert_eq!(&got.payload[..], b"while-offline");
}

/// QoS 2 end to end with a library client on both sides (v5): the
/// subscription is granted QoS 2, every PUBLISH completes its
/// PUBREC/PUBREL/PUBCOMP exchange with the publisher, and each message
/// reaches the subscriber once, at QoS 2, in order. A second round proves
/// the subscriber's exchanges completed towards the router too (it stops
/// delivering while acks are outstanding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_flows_end_to_end() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, ANY_CLIENT_ID);
    let topic = format!("telemetry/{GATEWAY_CODE}/data");
    let mut sub = connect_v5(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-sub",
        |_| {},
    )
    .await
    .unwrap();
    sub.client.subscribe(&topic, Q5::ExactlyOnce).await.unwrap();
    let codes = sub
        .wait_for(LONG, |p| match p {
            P5::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(codes, Some(vec![Sub5::Success(Q5::ExactlyOnce)]));
    let mut p = connect_v5(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .unwrap();
    for round in 0..2 {
        for i in 0..3 {
            p.client
                .publish(&topic, Q5::ExactlyOnce, false, format!("r{round}m{i}"))
                .await
                .unwrap();
        }
        let mut completed = 0;
        p.wait_for(LONG, |pkt| {
            if let P5::PubRec(r) = pkt {
                assert_eq!(r.reason, rumqttc::v5::mqttbytes::v5::PubRecReason::Success);
            }
            completed += usize::from(matches!(pkt, P5::PubComp(_)));
            (completed == 3).then_some(())
        })
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("round {round}: {completed} of 3 PUBCOMPs"));
        for i in 0..3 {
            let got = sub
                .next_publish(LONG)
                .await
                .unwrap_or_else(|| panic!("round {round}: message {i} delivered"));
            assert_eq!(&got.payload[..], format!("r{round}m{i}").as_bytes());
            assert_eq!(got.qos, Q5::ExactlyOnce, "delivered at QoS 2");
        }
        assert!(sub.next_publish(SHORT).await.is_none(), "each message once");
    }
    assert_eq!(
        b.metric("gatehouse_protocol_errors_total{reason=\"receive_maximum_exceeded\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_rule_filters_every_delivered_message() {
    let pki = Pki::generate();
    // May subscribe to its whole tree but only be delivered `data`.
    let b = BrokerProcess::start(
        exe(),
        &pki,
        &format!("{ANY_CLIENT_ID}\n[acl.operational]\nreceive = [\"telemetry/{{cn}}/data\"]\n"),
    );
    let mut sub = connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-sub",
        |_| {},
    )
    .await
    .unwrap();
    sub.client
        .subscribe(format!("telemetry/{GATEWAY_CODE}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    sub.wait_for(LONG, |p| matches!(p, P4::SubAck(_)).then_some(()))
        .await
        .unwrap();
    let p = connect_v4(
        b.mqtt,
        &pki,
        Some(&pki.operational),
        "GW0001-EEFF-pub",
        |_| {},
    )
    .await
    .unwrap();
    // QoS 1 both ways: refused deliveries must not wedge the in-order acks.
    for i in 0..5 {
        for leaf in ["secret", "data"] {
            let topic = format!("telemetry/{GATEWAY_CODE}/{leaf}");
            p.client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    format!("{leaf}-{i}").into_bytes(),
                )
                .await
                .unwrap();
        }
    }
    for i in 0..5 {
        let got = sub
            .next_publish(LONG)
            .await
            .expect("data message delivered");
        assert_eq!(&got.payload[..], format!("data-{i}").as_bytes());
    }
    assert!(
        sub.next_publish(SHORT).await.is_none(),
        "nothing else delivered"
    );
    assert_eq!(
        b.metric("gatehouse_acl_denials_total{action=\"receive\",kind=\"operational\"}"),
        5.0
    );
    // The session still works afterwards.
    p.client
        .publish(
            format!("telemetry/{GATEWAY_CODE}/data"),
            QoS::AtLeastOnce,
            false,
            b"later".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        &sub.next_publish(LONG)
            .await
            .expect("still delivered")
            .payload[..],
        b"later"
    );
    assert!(
        b.log().contains("presence: online"),
        "presence events are logged"
    );
}

/// The next PUBACK `c` receives is 0x87 (not authorized).
async fn expect_puback_not_authorized(c: &mut V5, what: &str) {
    let reason = c.next_puback_reason(LONG).await;
    assert!(
        matches!(reason, Ok(Some(PubAckReason::NotAuthorized))),
        "{what}, got {reason:?}"
    );
}

/// The next SUBACK `c` receives refuses its one filter with 0x87.
async fn expect_suback_not_authorized(c: &mut V5, what: &str) {
    let codes = c.next_suback_codes(LONG).await;
    assert!(
        matches!(&codes, Ok(Some(c)) if c[..] == [Sub5::NotAuthorized]),
        "{what}, got {codes:?}"
    );
}
