//! A minimal MQTT 3.1.1 client over mTLS (tokio-rustls), lean enough that
//! the load generator spends its CPU on the broker's work, not its own:
//! CONNECT/CONNACK, PUBLISH at QoS 0/1 (several per TLS record when the
//! caller batches), SUBSCRIBE, PUBACK, DISCONNECT, and a frame reader.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_tests::raw::ConnectOpts;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

pub(crate) type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Why a connection attempt failed (the `failures` column of `connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Fail {
    Tcp,
    Tls,
    Refused,
    Closed,
    Timeout,
}

impl Fail {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fail::Tcp => "tcp",
            Fail::Tls => "tls",
            Fail::Refused => "connack-refused",
            Fail::Closed => "closed-before-connack",
            Fail::Timeout => "timeout",
        }
    }
}

/// TCP (optionally from `source`) + TLS + CONNECT → CONNACK accepted.
pub(crate) async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    client_id: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<Stream, Fail> {
    match tokio::time::timeout(timeout, connect_inner(addr, tls, client_id, source)).await {
        Ok(r) => r,
        Err(_) => Err(Fail::Timeout),
    }
}

async fn connect_inner(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    client_id: &str,
    source: Option<IpAddr>,
) -> Result<Stream, Fail> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|_| Fail::Tcp)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|_| Fail::Tcp)?;
    }
    let tcp = socket.connect(addr).await.map_err(|_| Fail::Tcp)?;
    tcp.set_nodelay(true).map_err(|_| Fail::Tcp)?;
    let name = ServerName::try_from("localhost").map_err(|_| Fail::Tls)?;
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|_| Fail::Tls)?;
    // Keepalive 600 s: long enough that no PINGREQ is ever due in a run.
    s.write_all(&gatehouse_tests::raw::connect(&ConnectOpts {
        keepalive: 600,
        ..ConnectOpts::new(4, client_id)
    }))
    .await
    .map_err(|_| Fail::Closed)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.map_err(|_| Fail::Closed)?;
    match ack {
        [0x20, 0x02, _, 0x00] => Ok(s),
        [0x20, 0x02, _, _] => Err(Fail::Refused),
        _ => Err(Fail::Closed),
    }
}

/// Appends a PUBLISH to `out` (packet id used only for QoS 1).
pub(crate) fn publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], qos1: bool, pid: u16) {
    let len = 2 + topic.len() + if qos1 { 2 } else { 0 } + payload.len();
    out.push(if qos1 { 0x32 } else { 0x30 });
    remaining_length(out, len);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if qos1 {
        out.extend_from_slice(&pid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A SUBSCRIBE for one filter.
pub(crate) fn subscribe(filter: &str, qos1: bool) -> Vec<u8> {
    let mut out = vec![0x82];
    remaining_length(&mut out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    out.extend_from_slice(filter.as_bytes());
    out.push(u8::from(qos1));
    out
}

/// A PUBACK for `pid`, appended to `out`.
pub(crate) fn puback(out: &mut Vec<u8>, pid: u16) {
    out.extend_from_slice(&[0x40, 0x02]);
    out.extend_from_slice(&pid.to_be_bytes());
}

pub(crate) const DISCONNECT: [u8; 2] = [0xE0, 0x00];

fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return;
        }
    }
}

/// Reads MQTT frames: `(first header byte, body)`; `None` at EOF / error.
pub(crate) struct Frames<R> {
    reader: BufReader<R>,
    body: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    pub(crate) fn new(r: R) -> Self {
        Frames {
            reader: BufReader::with_capacity(64 * 1024, r),
            body: Vec::with_capacity(256),
        }
    }

    pub(crate) async fn next(&mut self) -> Option<(u8, &[u8])> {
        let header = self.reader.read_u8().await.ok()?;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = self.reader.read_u8().await.ok()?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return None;
            }
        }
        self.body.resize(len, 0);
        self.reader.read_exact(&mut self.body).await.ok()?;
        Some((header, &self.body))
    }

    /// Whether a complete read would not touch the socket (nothing buffered).
    pub(crate) fn drained(&self) -> bool {
        self.reader.buffer().is_empty()
    }
}

/// Topic, packet id (QoS 1 only) and payload of a PUBLISH body.
pub(crate) fn parse_publish(header: u8, body: &[u8]) -> Option<(&[u8], Option<u16>, &[u8])> {
    let tlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + tlen)?;
    let mut at = 2 + tlen;
    let pid = if (header >> 1) & 0x03 > 0 {
        let p = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        at += 2;
        Some(p)
    } else {
        None
    };
    Some((topic, pid, body.get(at..)?))
}
