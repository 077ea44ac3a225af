//! What differs between the two MQTT versions rumqttc speaks (its client,
//! options, event loop, events and packets), behind one trait so that
//! [`super::Client`] is written once for both.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// An MQTT version as rumqttc implements it: [`Mqtt311`] or [`Mqtt5`].
pub trait Version: Sized + Send + 'static {
    /// rumqttc's request handle (`AsyncClient`).
    type Client: Clone + Debug + Send + Sync + 'static;
    type Options;
    type EventLoop: Send + 'static;
    type Event: Debug + Send + 'static;
    type Packet: Debug + Send + 'static;
    type Publish: Clone + Debug + Send + 'static;
    /// What ends the event loop (refused CONNACK, TLS failure, closed ...).
    type Error: Debug + Display + Send + 'static;

    /// Options for `client_id` at `host:port` over `tls`, keepalive 30 s.
    fn options(client_id: &str, host: &str, port: u16, tls: rustls::ClientConfig) -> Self::Options;
    fn new_client(options: Self::Options, cap: usize) -> (Self::Client, Self::EventLoop);
    fn poll(
        eventloop: &mut Self::EventLoop,
    ) -> impl Future<Output = Result<Self::Event, Self::Error>> + Send + '_;

    /// The packet of an incoming event.
    fn incoming(event: &Self::Event) -> Option<&Self::Packet>;
    fn into_incoming(event: Self::Event) -> Option<Self::Packet>;
    /// Whether the event is our DISCONNECT going out.
    fn is_outgoing_disconnect(event: &Self::Event) -> bool;
    fn is_connack(packet: &Self::Packet) -> bool;
    fn as_publish(packet: &Self::Packet) -> Option<&Self::Publish>;
    fn publish_is(publish: &Self::Publish, topic: &str, payload: &[u8]) -> bool;
    /// What a DISCONNECT from the broker said.
    fn as_disconnect(packet: &Self::Packet) -> Option<String>;
    /// Whether a SUBACK granted its first filter.
    fn as_suback_granted(packet: &Self::Packet) -> Option<bool>;
    /// Whether a PUBACK carries a success code (< 0x80; always in 3.1.1).
    fn as_puback_success(packet: &Self::Packet) -> Option<bool>;

    /// Queues a QoS 1 SUBSCRIBE; `false` if the event loop is gone.
    fn subscribe(client: Self::Client, filter: String) -> impl Future<Output = bool> + Send;
    /// Queues a QoS 1 PUBLISH; `false` if the event loop is gone.
    fn publish(
        client: Self::Client,
        topic: String,
        payload: Vec<u8>,
    ) -> impl Future<Output = bool> + Send;
    /// Queues a DISCONNECT; `false` if the event loop is gone.
    fn disconnect(client: Self::Client) -> impl Future<Output = bool> + Send;
}

const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// MQTT 3.1.1 (rumqttc's top-level, "v4" API).
#[derive(Debug, Clone, Copy)]
pub enum Mqtt311 {}

/// MQTT 5 (rumqttc's `v5` API).
#[derive(Debug, Clone, Copy)]
pub enum Mqtt5 {}

impl Version for Mqtt311 {
    type Client = rumqttc::AsyncClient;
    type Options = rumqttc::MqttOptions;
    type EventLoop = rumqttc::EventLoop;
    type Event = rumqttc::Event;
    type Packet = rumqttc::Packet;
    type Publish = rumqttc::Publish;
    type Error = rumqttc::ConnectionError;

    fn options(client_id: &str, host: &str, port: u16, tls: rustls::ClientConfig) -> Self::Options {
        let mut o = rumqttc::MqttOptions::new(client_id, host, port);
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
        o.set_keep_alive(KEEP_ALIVE);
        o
    }

    fn new_client(options: Self::Options, cap: usize) -> (Self::Client, Self::EventLoop) {
        rumqttc::AsyncClient::new(options, cap)
    }

    fn poll(
        eventloop: &mut Self::EventLoop,
    ) -> impl Future<Output = Result<Self::Event, Self::Error>> + Send + '_ {
        eventloop.poll()
    }

    fn incoming(event: &Self::Event) -> Option<&Self::Packet> {
        match event {
            rumqttc::Event::Incoming(p) => Some(p),
            rumqttc::Event::Outgoing(_) => None,
        }
    }

    fn into_incoming(event: Self::Event) -> Option<Self::Packet> {
        match event {
            rumqttc::Event::Incoming(p) => Some(p),
            rumqttc::Event::Outgoing(_) => None,
        }
    }

    fn is_outgoing_disconnect(event: &Self::Event) -> bool {
        matches!(
            event,
            rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)
        )
    }

    fn is_connack(packet: &Self::Packet) -> bool {
        matches!(packet, rumqttc::Packet::ConnAck(_))
    }

    fn as_publish(packet: &Self::Packet) -> Option<&Self::Publish> {
        match packet {
            rumqttc::Packet::Publish(p) => Some(p),
            _ => None,
        }
    }

    fn publish_is(publish: &Self::Publish, topic: &str, payload: &[u8]) -> bool {
        publish.topic == topic && publish.payload == payload
    }

    fn as_disconnect(packet: &Self::Packet) -> Option<String> {
        matches!(packet, rumqttc::Packet::Disconnect).then(|| "DISCONNECT from broker".into())
    }

    fn as_suback_granted(packet: &Self::Packet) -> Option<bool> {
        match packet {
            rumqttc::Packet::SubAck(ack) => Some(matches!(
                ack.return_codes.first(),
                Some(rumqttc::SubscribeReasonCode::Success(_))
            )),
            _ => None,
        }
    }

    fn as_puback_success(packet: &Self::Packet) -> Option<bool> {
        matches!(packet, rumqttc::Packet::PubAck(_)).then_some(true)
    }

    async fn subscribe(client: Self::Client, filter: String) -> bool {
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .is_ok()
    }

    async fn publish(client: Self::Client, topic: String, payload: Vec<u8>) -> bool {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .is_ok()
    }

    async fn disconnect(client: Self::Client) -> bool {
        client.disconnect().await.is_ok()
    }
}

impl Version for Mqtt5 {
    type Client = rumqttc::v5::AsyncClient;
    type Options = rumqttc::v5::MqttOptions;
    type EventLoop = rumqttc::v5::EventLoop;
    type Event = rumqttc::v5::Event;
    type Packet = rumqttc::v5::mqttbytes::v5::Packet;
    type Publish = rumqttc::v5::mqttbytes::v5::Publish;
    type Error = rumqttc::v5::ConnectionError;

    fn options(client_id: &str, host: &str, port: u16, tls: rustls::ClientConfig) -> Self::Options {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, host, port);
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
        o.set_keep_alive(KEEP_ALIVE);
        o.set_clean_start(true);
        o
    }

    fn new_client(options: Self::Options, cap: usize) -> (Self::Client, Self::EventLoop) {
        rumqttc::v5::AsyncClient::new(options, cap)
    }

    fn poll(
        eventloop: &mut Self::EventLoop,
    ) -> impl Future<Output = Result<Self::Event, Self::Error>> + Send + '_ {
        eventloop.poll()
    }

    fn incoming(event: &Self::Event) -> Option<&Self::Packet> {
        match event {
            rumqttc::v5::Event::Incoming(p) => Some(p),
            rumqttc::v5::Event::Outgoing(_) => None,
        }
    }

    fn into_incoming(event: Self::Event) -> Option<Self::Packet> {
        match event {
            rumqttc::v5::Event::Incoming(p) => Some(p),
            rumqttc::v5::Event::Outgoing(_) => None,
        }
    }

    fn is_outgoing_disconnect(event: &Self::Event) -> bool {
        matches!(
            event,
            rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)
        )
    }

    fn is_connack(packet: &Self::Packet) -> bool {
        matches!(packet, rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))
    }

    fn as_publish(packet: &Self::Packet) -> Option<&Self::Publish> {
        match packet {
            rumqttc::v5::mqttbytes::v5::Packet::Publish(p) => Some(p),
            _ => None,
        }
    }

    fn publish_is(publish: &Self::Publish, topic: &str, payload: &[u8]) -> bool {
        publish.topic == topic.as_bytes() && publish.payload == payload
    }

    fn as_disconnect(packet: &Self::Packet) -> Option<String> {
        match packet {
            rumqttc::v5::mqttbytes::v5::Packet::Disconnect(d) => {
                Some(format!("DISCONNECT from broker: {:?}", d.reason_code))
            }
            _ => None,
        }
    }

    fn as_suback_granted(packet: &Self::Packet) -> Option<bool> {
        use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
        match packet {
            Packet::SubAck(ack) => Some(matches!(
                ack.return_codes.first(),
                Some(SubscribeReasonCode::Success(_))
            )),
            _ => None,
        }
    }

    fn as_puback_success(packet: &Self::Packet) -> Option<bool> {
        use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
        match packet {
            Packet::PubAck(ack) => Some(matches!(
                ack.reason,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            )),
            _ => None,
        }
    }

    async fn subscribe(client: Self::Client, filter: String) -> bool {
        client
            .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .is_ok()
    }

    async fn publish(client: Self::Client, topic: String, payload: Vec<u8>) -> bool {
        client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .is_ok()
    }

    async fn disconnect(client: Self::Client) -> bool {
        client.disconnect().await.is_ok()
    }
}
