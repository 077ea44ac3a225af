//! The MQTT test client: rumqttc over real mTLS (rustls + ring), one type
//! for MQTT 3.1.1 and 5 ([`Client<V>`], [`V4`], [`V5`]), with helpers that
//! wait for exactly the packet a test needs.
//!
//! The event loop runs on its own task and stops at its first error (no
//! reconnects); dropping the client aborts it (the TCP connection closes
//! without DISCONNECT: [`Client::disconnect`] sends one first).
//! For bytes no well-behaved client would send, see [`crate::raw`].

mod version;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use version::{Mqtt5, Mqtt311, Version};

use crate::pki::{self, Pki};

/// How long any single acknowledgement may take before the test fails.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a CONNECT may take before the test fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An MQTT 3.1.1 client.
pub type V4 = Client<Mqtt311>;

/// An MQTT 5 client.
pub type V5 = Client<Mqtt5>;

/// Where to connect: a broker's mTLS listener.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// PEM CA that signed the broker's server certificate.
    pub ca_file: PathBuf,
}

/// A client certificate and key (PEM files).
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl<'a> From<&'a pki::Client> for Credentials<'a> {
    fn from(c: &'a pki::Client) -> Credentials<'a> {
        Credentials {
            cert: &c.cert_path,
            key: &c.key_path,
        }
    }
}

/// A rustls client configuration (ring) trusting the PEM CA in `ca_file`
/// and presenting `creds` if given.
pub fn client_tls(ca_file: &Path, creds: Option<Credentials<'_>>) -> rustls::ClientConfig {
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read(ca_file).as_slice()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    match creds {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain: Vec<_> = rustls_pemfile::certs(&mut read(c.cert).as_slice())
                .map(|c| c.expect("client cert PEM"))
                .collect();
            let key = rustls_pemfile::private_key(&mut read(c.key).as_slice())
                .expect("client key PEM")
                .expect("a private key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert and key match")
        }
    }
}

/// Connects with MQTT 3.1.1 to `localhost:{addr.port()}`, trusting the
/// fixture CA and presenting `cert`; see [`Client::open`].
pub async fn connect_v4(
    addr: SocketAddr,
    pki: &Pki,
    cert: Option<&pki::Client>,
    client_id: &str,
    tweak: impl FnOnce(&mut rumqttc::MqttOptions),
) -> Result<V4, rumqttc::ConnectionError> {
    let tls = client_tls(&pki.ca_path, cert.map(Credentials::from));
    V4::open("localhost", addr.port(), tls, client_id, tweak).await
}

/// Connects with MQTT 5; as [`connect_v4`].
pub async fn connect_v5(
    addr: SocketAddr,
    pki: &Pki,
    cert: Option<&pki::Client>,
    client_id: &str,
    tweak: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> Result<V5, rumqttc::v5::ConnectionError> {
    let tls = client_tls(&pki.ca_path, cert.map(Credentials::from));
    V5::open("localhost", addr.port(), tls, client_id, tweak).await
}

/// One step of the event loop as a client sees it.
enum Step<V: Version> {
    Event(V::Event),
    /// The error that ended the event loop.
    Failed(V::Error),
    /// The event loop had already ended.
    Ended,
    TimedOut,
}

/// A connected rumqttc client (MQTT 3.1.1 or 5) whose event loop runs on
/// its own task.
pub struct Client<V: Version> {
    /// rumqttc's handle, for requests the helpers below do not cover.
    pub client: V::Client,
    pub client_id: String,
    events: mpsc::UnboundedReceiver<Result<V::Event, V::Error>>,
    task: JoinHandle<()>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
    /// PUBLISHes that arrived while [`Client::subscribe`] or
    /// [`Client::publish`] waited for their acknowledgement.
    backlog: Vec<V::Publish>,
}

impl<V: Version> fmt::Debug for Client<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("closed", &self.closed)
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

impl<V: Version> Drop for Client<V> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<V: Version> Client<V> {
    /// Connects to `host:port` over `tls` (keepalive 30 s, clean session,
    /// then `tweak`) and waits for the CONNACK. `Err` is the first
    /// connection error (refused handshake, CONNACK failure code ...); no
    /// answer within [`CONNECT_TIMEOUT`] fails the test.
    pub async fn open(
        host: &str,
        port: u16,
        tls: rustls::ClientConfig,
        client_id: &str,
        tweak: impl FnOnce(&mut V::Options),
    ) -> Result<Client<V>, V::Error> {
        let mut opts = V::options(client_id, host, port, tls);
        tweak(&mut opts);
        let (client, mut eventloop) = V::new_client(opts, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = V::poll(&mut eventloop).await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
        let mut c = Client {
            client,
            client_id: client_id.to_string(),
            events,
            task,
            closed: None,
            backlog: Vec::new(),
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match c.step(deadline).await {
                Step::Event(ev) if V::incoming(&ev).is_some_and(V::is_connack) => return Ok(c),
                Step::Event(_) => continue,
                Step::Failed(e) => return Err(e),
                Step::Ended | Step::TimedOut => {
                    panic!("no CONNACK and no error from {host}:{port} within {CONNECT_TIMEOUT:?}")
                }
            }
        }
    }

    /// Connects to `endpoint` as `client_id`, with or without a client
    /// certificate; as [`Client::open`].
    pub async fn connect(
        endpoint: &Endpoint,
        client_id: &str,
        creds: Option<Credentials<'_>>,
    ) -> Result<Client<V>, V::Error> {
        let tls = client_tls(&endpoint.ca_file, creds);
        Client::open(&endpoint.host, endpoint.port, tls, client_id, |_| {}).await
    }

    /// The next event before `deadline`; records why the connection ended.
    async fn step(&mut self, deadline: Instant) -> Step<V> {
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Err(_) => Step::TimedOut,
            Ok(None) => {
                self.closed.get_or_insert_with(|| "event loop ended".into());
                Step::Ended
            }
            Ok(Some(Err(e))) => {
                self.closed = Some(e.to_string());
                Step::Failed(e)
            }
            Ok(Some(Ok(ev))) => {
                if let Some(why) = V::incoming(&ev).and_then(V::as_disconnect) {
                    self.closed = Some(why);
                }
                Step::Event(ev)
            }
        }
    }

    /// The next event of the event loop, outgoing ones included, however
    /// long it takes; `None` once the loop has ended.
    pub async fn event(&mut self) -> Option<Result<V::Event, V::Error>> {
        let ev = self.events.recv().await;
        match &ev {
            None => {
                self.closed.get_or_insert_with(|| "event loop ended".into());
            }
            Some(Err(e)) => self.closed = Some(e.to_string()),
            Some(Ok(_)) => {}
        }
        ev
    }

    /// Next incoming packet within `within`; `None` on time-out or when the
    /// connection has ended (a DISCONNECT from the broker included).
    pub async fn next(&mut self, within: Duration) -> Option<V::Packet> {
        if self.closed.is_some() {
            return None;
        }
        let deadline = Instant::now() + within;
        loop {
            match self.step(deadline).await {
                Step::Event(_) if self.closed.is_some() => return None,
                Step::Event(ev) => match V::into_incoming(ev) {
                    Some(p) => return Some(p),
                    None => continue,
                },
                Step::Failed(_) | Step::Ended | Step::TimedOut => return None,
            }
        }
    }

    /// Next incoming packet matching `pick` within `within` (others
    /// skipped); `Ok(None)` on time-out or when the event loop had already
    /// ended, `Err` for the connection error that ends it.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&V::Packet) -> Option<T>,
    ) -> Result<Option<T>, V::Error> {
        let deadline = Instant::now() + within;
        loop {
            match self.step(deadline).await {
                Step::Event(ev) => {
                    if let Some(v) = V::incoming(&ev).and_then(&mut pick) {
                        return Ok(Some(v));
                    }
                }
                Step::Failed(e) => return Err(e),
                Step::Ended | Step::TimedOut => return Ok(None),
            }
        }
    }

    /// Next incoming PUBLISH within `within` (other packets skipped);
    /// `None` on time-out; a connection error or an ended event loop fails
    /// the test.
    pub async fn next_publish(&mut self, within: Duration) -> Option<V::Publish> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        let deadline = Instant::now() + within;
        loop {
            match self.step(deadline).await {
                Step::Event(ev) => {
                    if let Some(p) = V::incoming(&ev).and_then(V::as_publish) {
                        return Some(p.clone());
                    }
                }
                Step::TimedOut => return None,
                Step::Failed(e) => panic!("connection error while waiting for a PUBLISH: {e}"),
                Step::Ended => panic!("event loop ended while waiting for a PUBLISH"),
            }
        }
    }

    /// Waits up to `within` for the connection to end (an error, or a
    /// DISCONNECT from the broker); why it ended, `None` if it is still up.
    pub async fn closed(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while self.closed.is_none() {
            if let Step::TimedOut = self.step(deadline).await {
                return None;
            }
        }
        self.closed.clone()
    }

    /// Waits for the next acknowledgement `ack` picks, keeping PUBLISHes
    /// that arrive meanwhile; `false` if the connection ended first.
    async fn acked(&mut self, what: &str, ack: impl Fn(&V::Packet) -> Option<bool>) -> bool {
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            match self.step(deadline).await {
                Step::Event(_) if self.closed.is_some() => return false,
                Step::Event(ev) => {
                    let Some(p) = V::incoming(&ev) else { continue };
                    if let Some(ok) = ack(p) {
                        return ok;
                    }
                    if let Some(publish) = V::as_publish(p) {
                        self.backlog.push(publish.clone());
                    }
                }
                Step::Failed(_) | Step::Ended => return false,
                Step::TimedOut => panic!("no acknowledgement for {what} within {ACK_TIMEOUT:?}"),
            }
        }
    }

    /// SUBSCRIBE at QoS 1: `true` when granted, `false` when refused in the
    /// SUBACK or when the broker closed the connection instead.
    pub async fn subscribe(&mut self, filter: &str) -> bool {
        if !V::subscribe(self.client.clone(), filter.to_string()).await {
            return false;
        }
        self.acked(&format!("SUBSCRIBE {filter:?}"), V::as_suback_granted)
            .await
    }

    /// PUBLISH at QoS 1: `true` when the PUBACK reason is a success code
    /// (< 0x80), `false` when it is an error code or the broker closed the
    /// connection instead.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> bool {
        if !V::publish(self.client.clone(), topic.to_string(), payload.to_vec()).await {
            return false;
        }
        self.acked(&format!("PUBLISH {topic:?}"), V::as_puback_success)
            .await
    }

    /// Waits up to `within` for a PUBLISH on `topic` with `payload` (others
    /// skipped).
    pub async fn received(&mut self, topic: &str, payload: &[u8], within: Duration) -> bool {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|p| V::publish_is(p, topic, payload))
        {
            self.backlog.remove(i);
            return true;
        }
        let deadline = Instant::now() + within;
        loop {
            match self.step(deadline).await {
                Step::Event(ev) => {
                    if V::incoming(&ev)
                        .and_then(V::as_publish)
                        .is_some_and(|p| V::publish_is(p, topic, payload))
                    {
                        return true;
                    }
                }
                Step::Failed(_) | Step::Ended | Step::TimedOut => return false,
            }
        }
    }

    /// Sends DISCONNECT and waits (up to [`ACK_TIMEOUT`]) until it has gone
    /// out and the connection has ended.
    pub async fn disconnect(&mut self) {
        assert!(
            V::disconnect(self.client.clone()).await,
            "{}: event loop gone before DISCONNECT",
            self.client_id
        );
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut sent = false;
        loop {
            match self.step(deadline).await {
                Step::Event(ev) => sent |= V::is_outgoing_disconnect(&ev),
                Step::Failed(_) | Step::Ended => return,
                Step::TimedOut if sent => return,
                Step::TimedOut => panic!(
                    "{}: DISCONNECT not sent within {ACK_TIMEOUT:?}",
                    self.client_id
                ),
            }
        }
    }
}

/// What only MQTT 5 acknowledgements carry.
impl Client<Mqtt5> {
    /// The reason code of the next PUBACK within `within` (rumqttc 0.25
    /// reports refused PUBACKs as packets, not errors).
    pub async fn next_puback_reason(
        &mut self,
        within: Duration,
    ) -> Result<Option<rumqttc::v5::mqttbytes::v5::PubAckReason>, rumqttc::v5::ConnectionError>
    {
        self.wait_for(within, |p| match p {
            rumqttc::v5::mqttbytes::v5::Packet::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await
    }

    /// The return codes of the next SUBACK within `within`.
    pub async fn next_suback_codes(
        &mut self,
        within: Duration,
    ) -> Result<
        Option<Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode>>,
        rumqttc::v5::ConnectionError,
    > {
        self.wait_for(within, |p| match p {
            rumqttc::v5::mqttbytes::v5::Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// The reason code of the DISCONNECT the server sends within `within`
    /// (rumqttc reports it as an incoming packet or as the error that ends
    /// the connection); `None` if none came.
    pub async fn server_disconnect(
        &mut self,
        within: Duration,
    ) -> Option<rumqttc::v5::mqttbytes::v5::DisconnectReasonCode> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{ConnectionError, StateError};
        match self
            .wait_for(within, |p| match p {
                Packet::Disconnect(d) => Some(d.reason_code),
                _ => None,
            })
            .await
        {
            Ok(code) => code,
            Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code, ..
            })) => Some(reason_code),
            Err(_) => None,
        }
    }
}
