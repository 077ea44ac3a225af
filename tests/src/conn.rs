//! MQTT v5 test clients over real mTLS (rumqttc + rustls/ring), with
//! helpers that wait for exactly the acknowledgement a test needs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long any single acknowledgement may take before the test fails.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to connect: a broker's mTLS listener.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// PEM CA that signed the broker's server certificate.
    pub ca_file: std::path::PathBuf,
}

/// A client certificate and key (PEM files), or none.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// What happened to a CONNECT.
#[derive(Debug)]
pub enum ConnectError {
    /// The broker answered CONNACK with a failure code.
    Refused(String),
    /// TLS or the connection failed before a CONNACK.
    Transport(String),
    /// Nothing within [`ACK_TIMEOUT`].
    Timeout,
}

/// A connected client. Its event loop runs on a task; dropped → aborted.
#[derive(Debug)]
pub struct Conn {
    pub client: AsyncClient,
    pub client_id: String,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: JoinHandle<()>,
    /// Set once the connection ended (error or DISCONNECT from the broker).
    closed: Option<String>,
    /// Messages that arrived while waiting for an acknowledgement.
    backlog: Vec<rumqttc::v5::mqttbytes::v5::Publish>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_config(ca_file: &Path, creds: Option<Credentials<'_>>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(ca_file).expect("read CA file");
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
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
            let chain: Vec<_> =
                rustls_pemfile::certs(&mut std::fs::read(c.cert).unwrap().as_slice())
                    .map(|c| c.expect("client cert PEM"))
                    .collect();
            let key = rustls_pemfile::private_key(&mut std::fs::read(c.key).unwrap().as_slice())
                .expect("client key PEM")
                .expect("a private key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert and key match")
        }
    }
}

impl Conn {
    /// Connects with MQTT v5 (clean start) and waits for CONNACK.
    pub async fn connect(
        endpoint: &Endpoint,
        client_id: &str,
        creds: Option<Credentials<'_>>,
    ) -> Result<Conn, ConnectError> {
        let mut opts = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(true);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(&endpoint.ca_file, creds)),
        )));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        let end = matches!(p, Packet::Disconnect(_));
                        if tx.send(Ok(p)).is_err() || end {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(ACK_TIMEOUT, rx.recv()).await;
        let outcome = match first {
            Err(_) => Err(ConnectError::Timeout),
            Ok(None) => Err(ConnectError::Transport("event loop ended".into())),
            Ok(Some(Ok(Packet::ConnAck(ack)))) => {
                if ack.code == rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(ConnectError::Refused(format!("{:?}", ack.code)))
                }
            }
            Ok(Some(Ok(other))) => Err(ConnectError::Transport(format!("unexpected {other:?}"))),
            Ok(Some(Err(e))) if e.contains("refused") => Err(ConnectError::Refused(e)),
            Ok(Some(Err(e))) => Err(ConnectError::Transport(e)),
        };
        match outcome {
            Ok(()) => Ok(Conn {
                client,
                client_id: client_id.to_string(),
                events: rx,
                task,
                closed: None,
                backlog: Vec::new(),
            }),
            Err(e) => {
                task.abort();
                Err(e)
            }
        }
    }

    /// Next incoming packet within `timeout`; `None` on timeout or when the
    /// connection has ended (then [`Conn::closed`] says why).
    pub async fn next(&mut self, timeout: Duration) -> Option<Packet> {
        if self.closed.is_some() {
            return None;
        }
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Err(_) => None,
            Ok(None) => {
                self.closed = Some("event loop ended".into());
                None
            }
            Ok(Some(Err(e))) => {
                self.closed = Some(e);
                None
            }
            Ok(Some(Ok(Packet::Disconnect(d)))) => {
                self.closed = Some(format!("DISCONNECT from broker: {:?}", d.reason_code));
                None
            }
            Ok(Some(Ok(p))) => Some(p),
        }
    }

    /// Why the connection ended, if it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// SUBSCRIBE at QoS 1: `true` when granted, `false` when refused in the
    /// SUBACK or when the broker closed the connection instead.
    pub async fn subscribe(&mut self, filter: &str) -> bool {
        if self
            .client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .is_err()
        {
            return false;
        }
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Packet::SubAck(ack)) => {
                    return matches!(
                        ack.return_codes.first(),
                        Some(SubscribeReasonCode::Success(_))
                    );
                }
                Some(Packet::Publish(p)) => self.backlog.push(p),
                Some(_) => continue,
                None if self.closed.is_some() => return false,
                None => panic!("no SUBACK for {filter:?} within {ACK_TIMEOUT:?}"),
            }
        }
    }

    /// PUBLISH at QoS 1: `true` when the PUBACK reason is a success code
    /// (< 0x80), `false` when it is an error code or the broker closed the
    /// connection instead.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> bool {
        if self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .is_err()
        {
            return false;
        }
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Packet::PubAck(ack)) => {
                    return matches!(
                        ack.reason,
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                    );
                }
                Some(Packet::Publish(p)) => self.backlog.push(p),
                Some(_) => continue,
                None if self.closed.is_some() => return false,
                None => panic!("no PUBACK for {topic:?} within {ACK_TIMEOUT:?}"),
            }
        }
    }

    /// Waits up to `timeout` for a PUBLISH on `topic` with `payload`.
    pub async fn received(&mut self, topic: &str, payload: &[u8], timeout: Duration) -> bool {
        let matching = |p: &rumqttc::v5::mqttbytes::v5::Publish| {
            p.topic == topic.as_bytes() && p.payload == payload
        };
        if let Some(i) = self.backlog.iter().position(matching) {
            self.backlog.remove(i);
            return true;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Packet::Publish(p)) if matching(&p) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    }

    /// Waits up to `timeout` for the broker to end the connection.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.next(left).await;
        }
        true
    }
}
