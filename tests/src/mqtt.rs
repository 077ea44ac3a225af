//! MQTT test clients over real mTLS: rumqttc (v3.1.1 and v5) with a
//! fixture client certificate, and a raw TLS connection for sending bytes
//! no well-behaved client would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::pki::{Client, Pki};
use crate::raw::remaining_length;

/// TLS settings for rumqttc: the fleet CA and, optionally, a client cert.
pub fn rumqttc_tls(pki: &Pki, client: Option<&Client>) -> rumqttc::TlsConfiguration {
    let read =
        |p: &std::path::Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    rumqttc::TlsConfiguration::Simple {
        ca: read(&pki.ca_path),
        alpn: None,
        client_auth: client.map(|c| (read(&c.cert_path), read(&c.key_path))),
    }
}

/// A rumqttc v3.1.1 client whose event loop runs on its own task.
#[derive(Debug)]
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::Event, rumqttc::ConnectionError>>,
}

/// A rumqttc v5 client whose event loop runs on its own task.
#[derive(Debug)]
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>>,
}

/// Connects with MQTT 3.1.1; `Err` is the first connection error (refused
/// handshake, CONNACK return code ...). The event loop stops at the first
/// error (no reconnects).
pub async fn connect_v4(
    addr: SocketAddr,
    pki: &Pki,
    cert: Option<&Client>,
    client_id: &str,
    tweak: impl FnOnce(&mut rumqttc::MqttOptions),
) -> Result<V4, rumqttc::ConnectionError> {
    let mut opts = rumqttc::MqttOptions::new(client_id, "localhost", addr.port());
    opts.set_transport(rumqttc::Transport::Tls(rumqttc_tls(pki, cert)));
    opts.set_keep_alive(Duration::from_secs(30));
    tweak(&mut opts);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
    let (tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let stop = ev.is_err();
            if tx.send(ev).is_err() || stop {
                return;
            }
        }
    });
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))) => {
                return Ok(V4 { client, events });
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) | Err(_) => panic!("no CONNACK and no error from {addr} within 10 s"),
        }
    }
}

/// Connects with MQTT 5; as [`connect_v4`].
pub async fn connect_v5(
    addr: SocketAddr,
    pki: &Pki,
    cert: Option<&Client>,
    client_id: &str,
    tweak: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> Result<V5, rumqttc::v5::ConnectionError> {
    connect_v5_tls(addr, rumqttc_tls(pki, cert), client_id, tweak).await
}

/// TLS settings for rumqttc from PEM text: CA, client certificate and key
/// (e.g. the files of a provisioning bundle).
pub fn rumqttc_tls_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> rumqttc::TlsConfiguration {
    rumqttc::TlsConfiguration::Simple {
        ca: ca_pem.as_bytes().to_vec(),
        alpn: None,
        client_auth: Some((cert_pem.as_bytes().to_vec(), key_pem.as_bytes().to_vec())),
    }
}

/// [`connect_v5`] with explicit TLS settings.
pub async fn connect_v5_tls(
    addr: SocketAddr,
    tls: rumqttc::TlsConfiguration,
    client_id: &str,
    tweak: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> Result<V5, rumqttc::v5::ConnectionError> {
    let mut opts = rumqttc::v5::MqttOptions::new(client_id, "localhost", addr.port());
    opts.set_transport(rumqttc::Transport::Tls(tls));
    opts.set_keep_alive(Duration::from_secs(30));
    tweak(&mut opts);
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 1000);
    let (tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let stop = ev.is_err();
            if tx.send(ev).is_err() || stop {
                return;
            }
        }
    });
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Ok(rumqttc::v5::Event::Incoming(
                rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_),
            )))) => {
                return Ok(V5 { client, events });
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) | Err(_) => panic!("no CONNACK and no error from {addr} within 10 s"),
        }
    }
}

impl V4 {
    /// Next incoming PUBLISH within `within` (other events skipped);
    /// `None` on timeout; panics on a connection error.
    pub async fn next_publish(&mut self, within: Duration) -> Option<rumqttc::Publish> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return None,
                Ok(Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))))) => {
                    return Some(p);
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("connection error while waiting for a PUBLISH: {e}"),
                Ok(None) => panic!("event loop ended while waiting for a PUBLISH"),
            }
        }
    }

    /// Next incoming packet matching `pick` within `within`; errors are
    /// returned as `Err`.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&rumqttc::Packet) -> Option<T>,
    ) -> Result<Option<T>, rumqttc::ConnectionError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) | Ok(None) => return Ok(None),
                Ok(Some(Ok(rumqttc::Event::Incoming(p)))) => {
                    if let Some(v) = pick(&p) {
                        return Ok(Some(v));
                    }
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(e),
            }
        }
    }

    /// Waits for the connection to end; the error that ended it.
    pub async fn closed(&mut self, within: Duration) -> Option<rumqttc::ConnectionError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) | Ok(None) => return None,
                Ok(Some(Err(e))) => return Some(e),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

impl V5 {
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

    /// Next incoming packet matching `pick` within `within`; a connection
    /// error is returned as `Err`.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&rumqttc::v5::mqttbytes::v5::Packet) -> Option<T>,
    ) -> Result<Option<T>, rumqttc::v5::ConnectionError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) | Ok(None) => return Ok(None),
                Ok(Some(Ok(rumqttc::v5::Event::Incoming(p)))) => {
                    if let Some(v) = pick(&p) {
                        return Ok(Some(v));
                    }
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(e),
            }
        }
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

    /// Next incoming PUBLISH within `within`; `None` on timeout.
    pub async fn next_publish(
        &mut self,
        within: Duration,
    ) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        self.wait_for(within, |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("connection error while waiting for a PUBLISH: {e}"))
    }
}

/// A TLS connection with a fixture client certificate over which tests
/// write raw bytes.
#[derive(Debug)]
pub struct RawTls {
    pub stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl RawTls {
    pub async fn connect(addr: SocketAddr, pki: &Pki, client: &Client) -> std::io::Result<RawTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&pki.ca_path).expect("CA PEM") {
            roots.add(c.expect("CA cert")).expect("add CA");
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&client.cert_path)
            .expect("cert PEM")
            .collect::<Result<_, _>>()
            .expect("cert");
        let key = PrivateKeyDer::from_pem_file(&client.key_path).expect("key PEM");
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client auth");
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await?;
        Ok(RawTls { stream })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads until EOF or error; `Some(bytes)` if the peer closed within
    /// `within`, `None` if it was still open.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }
}

/// An MQTT 3.1.1 CONNECT packet (clean session, no will).
pub fn connect_packet_v4(client_id: &str, keepalive: u16) -> Vec<u8> {
    let mut vh = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02];
    vh.extend_from_slice(&keepalive.to_be_bytes());
    vh.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    vh.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10];
    p.extend(remaining_length(vh.len()));
    p.extend(vh);
    p
}

/// An MQTT PUBLISH (QoS 0) header + body of the given payload size.
pub fn publish_packet(topic: &str, payload_len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + topic.len() + payload_len);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.resize(body.len() + payload_len, b'x');
    let mut p = vec![0x30];
    p.extend(remaining_length(body.len()));
    p.extend(body);
    p
}
