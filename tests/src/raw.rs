//! A raw-packet MQTT client over real mTLS: tests build every byte of what
//! they send (valid or not) and read back the broker's frames as they are
//! on the wire, with nothing in between that would fix or hide them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::mqtt::{Credentials, client_tls};
use crate::pki::{Client, Pki};

/// MQTT packet types (the high nibble of the first byte).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// One frame from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub body: Vec<u8>,
}

impl Frame {
    /// The v5 reason code of a DISCONNECT / CONNACK / PUBACK / PUBREC /
    /// PUBREL / PUBCOMP (0 when absent).
    pub fn reason(&self) -> u8 {
        match self.kind {
            kind::CONNACK => self.body.get(1).copied().unwrap_or(0),
            kind::PUBACK | kind::PUBREC | kind::PUBREL | kind::PUBCOMP => {
                self.body.get(2).copied().unwrap_or(0)
            }
            _ => self.body.first().copied().unwrap_or(0),
        }
    }

    /// The packet identifier of a PUBLISH (QoS > 0) or of an
    /// acknowledgement.
    pub fn pkid(&self) -> Option<u16> {
        let b = &self.body;
        let at = match self.kind {
            kind::PUBLISH if (self.flags >> 1) & 3 > 0 => {
                2 + usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
            }
            kind::PUBACK | kind::PUBREC | kind::PUBREL | kind::PUBCOMP => 0,
            _ => return None,
        };
        Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
    }

    /// The QoS of a PUBLISH.
    pub fn qos(&self) -> u8 {
        (self.flags >> 1) & 3
    }

    /// Topic and payload of a PUBLISH (v3.1.1 framing, or v5 with `v5`).
    pub fn publish(&self, v5: bool) -> Option<(String, Vec<u8>)> {
        if self.kind != kind::PUBLISH {
            return None;
        }
        let b = &self.body;
        let tlen = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
        let topic = String::from_utf8(b.get(2..2 + tlen)?.to_vec()).ok()?;
        let mut at = 2 + tlen;
        if (self.flags >> 1) & 3 > 0 {
            at += 2;
        }
        if v5 {
            let (plen, n) = varint(b.get(at..)?)?;
            at += n + plen;
        }
        Some((topic, b.get(at..)?.to_vec()))
    }
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Frames that arrived before the close.
    pub frames: Vec<Frame>,
}

impl Closed {
    /// The reason code of the DISCONNECT the broker sent, if it sent one.
    pub fn disconnect(&self) -> Option<u8> {
        self.frames
            .iter()
            .find(|f| f.kind == kind::DISCONNECT)
            .map(Frame::reason)
    }
}

fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in b.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Takes the first whole frame off the front of `buf`, if there is one.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    let first = *buf.first()?;
    let (len, n) = varint(buf.get(1..)?)?;
    if buf.len() < 1 + n + len {
        return None;
    }
    let body = buf[1 + n..1 + n + len].to_vec();
    buf.drain(..1 + n + len);
    Some(Frame {
        kind: first >> 4,
        flags: first & 0x0f,
        body,
    })
}

/// The remaining-length encoding of `len`.
pub fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return out;
        }
    }
}

/// A frame: first byte, remaining length, body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(remaining_length(body.len()));
    p.extend_from_slice(body);
    p
}

/// An MQTT string (u16 length + bytes).
pub fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// Options of a CONNECT built by [`connect`].
#[derive(Debug, Clone)]
pub struct ConnectOpts<'a> {
    /// 4 (3.1.1) or 5.
    pub level: u8,
    pub client_id: &'a str,
    pub keepalive: u16,
    pub clean: bool,
    /// Will topic, payload, QoS.
    pub will: Option<(&'a str, &'a [u8], u8)>,
    /// v5 will properties, encoded (without their length).
    pub will_properties: &'a [u8],
    /// v5 CONNECT properties, encoded (without their length).
    pub properties: &'a [u8],
}

impl<'a> ConnectOpts<'a> {
    pub fn new(level: u8, client_id: &'a str) -> ConnectOpts<'a> {
        ConnectOpts {
            level,
            client_id,
            keepalive: 30,
            clean: true,
            will: None,
            will_properties: &[],
            properties: &[],
        }
    }
}

/// A CONNECT packet.
pub fn connect(o: &ConnectOpts<'_>) -> Vec<u8> {
    let mut flags = 0u8;
    if o.clean {
        flags |= 0x02;
    }
    if let Some((_, _, qos)) = o.will {
        flags |= 0x04 | (qos << 3);
    }
    let mut body = string(b"MQTT");
    body.push(o.level);
    body.push(flags);
    body.extend_from_slice(&o.keepalive.to_be_bytes());
    if o.level == 5 {
        body.extend(remaining_length(o.properties.len()));
        body.extend_from_slice(o.properties);
    }
    body.extend(string(o.client_id.as_bytes()));
    if let Some((topic, payload, _)) = o.will {
        if o.level == 5 {
            body.extend(remaining_length(o.will_properties.len()));
            body.extend_from_slice(o.will_properties);
        }
        body.extend(string(topic.as_bytes()));
        body.extend(string(payload));
    }
    frame(0x10, &body)
}

/// A PUBLISH; `pkid` is used for QoS > 0.
pub fn publish(
    level: u8,
    topic: &[u8],
    qos: u8,
    retain: bool,
    pkid: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// A v5 PUBLISH with the given encoded properties (without their length).
pub fn publish_v5(topic: &[u8], qos: u8, pkid: u16, properties: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend(remaining_length(properties.len()));
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1), &body)
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP (`kind`) for `pkid`, reason
/// Success without properties (the same bytes in 3.1.1 and 5).
pub fn ack(kind: u8, pkid: u16) -> Vec<u8> {
    let flags = if kind == self::kind::PUBREL { 0x02 } else { 0 };
    frame((kind << 4) | flags, &pkid.to_be_bytes())
}

/// A SUBSCRIBE of `(filter, options byte)` pairs.
pub fn subscribe(level: u8, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0);
    }
    for (f, opts) in filters {
        body.extend(string(f.as_bytes()));
        body.push(*opts);
    }
    frame(0x82, &body)
}

/// An UNSUBSCRIBE of `filters`.
pub fn unsubscribe(level: u8, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0);
    }
    for f in filters {
        body.extend(string(f.as_bytes()));
    }
    frame(0xA2, &body)
}

/// The v5 properties of a CONNACK body as (identifier, value bytes) pairs;
/// string and binary values without their length prefix. `None` if the
/// body is not a v5 CONNACK with well-formed properties.
pub fn connack_properties(body: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    let (len, n) = varint(body.get(2..)?)?;
    let mut p = body.get(2 + n..2 + n + len)?;
    let mut out = Vec::new();
    while let Some((&id, rest)) = p.split_first() {
        let size = match id {
            // Byte: max QoS, retain / wildcard / subscription-id / shared
            // available, request problem / response information.
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A | 0x17 | 0x19 => 1,
            // Two-byte integer: server keep alive, receive maximum, topic
            // alias maximum.
            0x13 | 0x21 | 0x22 => 2,
            // Four-byte integer: session expiry, maximum packet size.
            0x11 | 0x27 => 4,
            // String or binary: assigned client id, reason string, response
            // information, server reference, authentication method / data.
            0x12 | 0x1F | 0x1A | 0x1C | 0x15 | 0x16 => {
                usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])) + 2
            }
            // User property: two strings.
            0x26 => {
                let k = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                let v = usize::from(u16::from_be_bytes([*rest.get(2 + k)?, *rest.get(3 + k)?]));
                4 + k + v
            }
            _ => return None,
        };
        let value = rest.get(..size)?;
        let value = if matches!(id, 0x12 | 0x1F | 0x1A | 0x1C | 0x15 | 0x16) {
            value[2..].to_vec()
        } else {
            value.to_vec()
        };
        out.push((id, value));
        p = &rest[size..];
    }
    Some(out)
}

/// A raw mTLS MQTT connection (server name `localhost`).
#[derive(Debug)]
pub struct Raw {
    /// The TLS stream itself (e.g. for the certificate the broker served).
    pub stream: TlsStream<TcpStream>,
    /// The MQTT level frames are read for: 4 (3.1.1) or 5.
    pub level: u8,
    buf: Vec<u8>,
}

impl Raw {
    /// Opens mTLS with `client`'s certificate and sends nothing yet.
    pub async fn open(addr: SocketAddr, pki: &Pki, client: &Client, level: u8) -> Raw {
        let config = client_tls(&pki.ca_path, Some(Credentials::from(client)));
        let tcp = TcpStream::connect(addr)
            .await
            .expect("TCP connection to the broker");
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS connection to the broker");
        Raw {
            stream,
            level,
            buf: Vec::new(),
        }
    }

    /// Opens mTLS, sends CONNECT and requires a successful CONNACK.
    pub async fn connect(addr: SocketAddr, pki: &Pki, client: &Client, o: &ConnectOpts<'_>) -> Raw {
        let mut raw = Raw::open(addr, pki, client, o.level).await;
        raw.send(&connect(o)).await;
        let ack = raw.next(Duration::from_secs(10)).await.expect("a CONNACK");
        assert_eq!(ack.kind, kind::CONNACK, "first frame is a CONNACK: {ack:?}");
        assert_eq!(ack.reason(), 0, "CONNACK accepts: {ack:?}");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("write to the broker");
    }

    /// Writes and reports failure instead of panicking (the broker may
    /// already have closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    fn take_frame(&mut self) -> Option<Frame> {
        take_frame(&mut self.buf)
    }

    /// The next frame within `within`; `None` on close or time-out.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The next frame of `kind` within `within`, skipping others.
    pub async fn expect(&mut self, kind: u8, within: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(f) if f.kind == kind => return f,
                Some(_) => continue,
                None => panic!("no frame of type {kind} within {within:?}"),
            }
        }
    }

    /// Reads until the broker closes the connection; `None` if it is still
    /// open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Closed> {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            while let Some(f) = self.take_frame() {
                frames.push(f);
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Closed { frames }),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
