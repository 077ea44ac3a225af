//! Small reads of raw MQTT frames that rumqttd's codecs do not expose: the
//! protocol level of a CONNECT (to pick the v3.1.1 or v5 codec) and the QoS
//! and packet id of a PUBLISH (rumqttd keeps those fields crate-private).

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error as ProtoError, Packet, Protocol};

/// MQTT protocol version of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V4 => "3.1.1",
            Version::V5 => "5.0",
        }
    }
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectPeek {
    /// Not enough bytes yet.
    NeedMore,
    Version(Version),
    /// The first packet is not a CONNECT.
    NotConnect,
    /// A CONNECT with a protocol level we do not speak (3 = MQTT 3.1).
    UnsupportedLevel(u8),
    Malformed,
}

/// Variable byte integer at the start of `b`: (value, bytes used).
fn varint(b: &[u8]) -> Option<Result<(usize, usize), ()>> {
    let mut value = 0usize;
    for (i, byte) in b.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(Ok((value, i + 1)));
        }
    }
    if b.len() >= 4 { Some(Err(())) } else { None }
}

/// Looks at the start of a connection's byte stream.
pub(crate) fn peek_connect(b: &[u8]) -> ConnectPeek {
    let Some(&first) = b.first() else {
        return ConnectPeek::NeedMore;
    };
    if first != 0x10 {
        return ConnectPeek::NotConnect;
    }
    let (_, n) = match varint(&b[1..]) {
        None => return ConnectPeek::NeedMore,
        Some(Err(())) => return ConnectPeek::Malformed,
        Some(Ok(v)) => v,
    };
    let vh = &b[1 + n..];
    if vh.len() < 2 {
        return ConnectPeek::NeedMore;
    }
    let name_len = usize::from(u16::from_be_bytes([vh[0], vh[1]]));
    if name_len > 6 {
        return ConnectPeek::Malformed;
    }
    let Some(&level) = vh.get(2 + name_len) else {
        return ConnectPeek::NeedMore;
    };
    match (&vh[2..2 + name_len], level) {
        (b"MQTT", 4) => ConnectPeek::Version(Version::V4),
        (b"MQTT", 5) => ConnectPeek::Version(Version::V5),
        (b"MQTT", other) | (b"MQIsdp", other) => ConnectPeek::UnsupportedLevel(other),
        _ => ConnectPeek::Malformed,
    }
}

/// QoS and packet id of a complete PUBLISH frame (`None` if `frame` is not one).
pub(crate) fn publish_qos_pkid(frame: &[u8]) -> Option<(u8, u16)> {
    let first = *frame.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    let (_, n) = varint(&frame[1..])?.ok()?;
    let vh = frame.get(1 + n..)?;
    let topic_len = usize::from(u16::from_be_bytes([*vh.first()?, *vh.get(1)?]));
    let pkid = if qos == 0 {
        0
    } else {
        let at = 2 + topic_len;
        u16::from_be_bytes([*vh.get(at)?, *vh.get(at + 1)?])
    };
    Some((qos, pkid))
}

/// Sets QoS and RETAIN of the PUBLISH frame that starts at `start` in
/// `buf` and runs to its end. A frame going from QoS 1 or 2 to QoS 0 loses
/// its packet id (and its remaining length shrinks by 2); between 1 and 2
/// only the flags change. DUP is cleared.
pub(crate) fn rewrite_publish(buf: &mut BytesMut, start: usize, qos: u8, retain: bool) {
    let Some((old_qos, _)) = publish_qos_pkid(&buf[start..]) else {
        return;
    };
    let flags = (qos << 1) | u8::from(retain);
    if old_qos == 0 || qos > 0 {
        buf[start] = 0x30 | flags;
        return;
    }
    let Some(Ok((len, n))) = varint(&buf[start + 1..]) else {
        return;
    };
    let frame = buf.split_off(start);
    let body = &frame[1 + n..];
    let topic_end = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
    buf.reserve(frame.len());
    buf.extend_from_slice(&[0x30 | flags]);
    let mut rest = len - 2;
    loop {
        let byte = (rest % 128) as u8;
        rest /= 128;
        buf.extend_from_slice(&[if rest > 0 { byte | 0x80 } else { byte }]);
        if rest == 0 {
            break;
        }
    }
    buf.extend_from_slice(&body[..topic_end]);
    buf.extend_from_slice(&body[topic_end + 2..]);
}

/// rumqttd's v3.1.1 or v5 codec.
#[derive(Debug, Clone)]
pub(crate) enum Codec {
    V4(V4),
    V5(V5),
}

impl Codec {
    pub(crate) fn new(version: Version) -> Codec {
        match version {
            Version::V4 => Codec::V4(V4),
            Version::V5 => Codec::V5(V5),
        }
    }

    pub(crate) fn version(&self) -> Version {
        match self {
            Codec::V4(_) => Version::V4,
            Codec::V5(_) => Version::V5,
        }
    }

    pub(crate) fn read(&mut self, buf: &mut BytesMut, max: usize) -> Result<Packet, ProtoError> {
        match self {
            Codec::V4(c) => c.read_mut(buf, max),
            Codec::V5(c) => c.read_mut(buf, max),
        }
    }

    /// Encodes `packet`; for v3.1.1, v5-only properties are dropped first
    /// (rumqttd's v4 writer refuses packets that carry any).
    pub(crate) fn write(&self, packet: Packet, out: &mut BytesMut) -> Result<usize, ProtoError> {
        match self {
            Codec::V5(c) => c.write(packet, out),
            Codec::V4(c) => c.write(strip_properties(packet), out),
        }
    }
}

fn strip_properties(packet: Packet) -> Packet {
    match packet {
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::SubAck(p, _) => Packet::SubAck(p, None),
        Packet::UnsubAck(p, _) => Packet::UnsubAck(p, None),
        Packet::ConnAck(p, _) => Packet::ConnAck(p, None),
        Packet::Disconnect(p, _) => Packet::Disconnect(p, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubRel(p, _) => Packet::PubRel(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::{Publish, PublishProperties};

    /// A QoS 2 PUBLISH of `payload_len` bytes encoded by rumqttd (the
    /// router's form), with a content type when `v5`.
    fn encoded(v5: bool, payload_len: usize) -> (Codec, BytesMut) {
        let codec = Codec::new(if v5 { Version::V5 } else { Version::V4 });
        let mut p = Publish::new("t/x", "", false);
        p.payload = vec![7u8; payload_len].into();
        let frame = p.serialize();
        let mut f = BytesMut::from(&frame[..]);
        f[0] = 0x34; // QoS 2
        f[1..3].copy_from_slice(&9u16.to_be_bytes());
        let p = Publish::deserialize(f.freeze());
        let props = v5.then(|| PublishProperties {
            content_type: Some("json".into()),
            ..Default::default()
        });
        let mut buf = BytesMut::from(&b"before"[..]);
        codec.write(Packet::Publish(p, props), &mut buf).unwrap();
        (codec, buf)
    }

    #[test]
    fn rewrite_publish_changes_qos_and_retain_and_stays_decodable() {
        // 125 and 126 bytes put the remaining length on both sides of 128.
        for v5 in [false, true] {
            for payload_len in [0, 10, 115, 116, 117, 125, 126, 127, 300] {
                for (qos, retain) in [(0, false), (0, true), (1, true), (2, false)] {
                    let (mut codec, mut buf) = encoded(v5, payload_len);
                    rewrite_publish(&mut buf, 6, qos, retain);
                    assert_eq!(&buf[..6], b"before");
                    let mut frame = buf.split_off(6);
                    assert_eq!(
                        publish_qos_pkid(&frame),
                        Some((qos, if qos == 0 { 0 } else { 9 })),
                        "v5={v5} len={payload_len} qos={qos}"
                    );
                    let Packet::Publish(p, props) = codec.read(&mut frame, 1 << 20).unwrap() else {
                        panic!("a PUBLISH")
                    };
                    assert!(frame.is_empty(), "whole frame consumed");
                    assert_eq!(p.retain, retain);
                    assert_eq!((&p.topic[..], p.payload.len()), (&b"t/x"[..], payload_len));
                    assert_eq!(
                        props.and_then(|p| p.content_type).as_deref(),
                        v5.then_some("json")
                    );
                }
            }
        }
    }

    fn connect(name: &[u8], level: u8) -> Vec<u8> {
        let mut v = vec![0x10, 0x0c, 0x00, name.len() as u8];
        v.extend_from_slice(name);
        v.push(level);
        v.extend_from_slice(&[0x02, 0x00, 0x3c, 0x00, 0x00]);
        v
    }

    #[test]
    fn connect_versions() {
        assert_eq!(
            peek_connect(&connect(b"MQTT", 4)),
            ConnectPeek::Version(Version::V4)
        );
        assert_eq!(
            peek_connect(&connect(b"MQTT", 5)),
            ConnectPeek::Version(Version::V5)
        );
        assert_eq!(
            peek_connect(&connect(b"MQIsdp", 3)),
            ConnectPeek::UnsupportedLevel(3)
        );
        assert_eq!(peek_connect(&connect(b"XXXX", 4)), ConnectPeek::Malformed);
        assert_eq!(peek_connect(&[]), ConnectPeek::NeedMore);
        assert_eq!(peek_connect(&[0x10]), ConnectPeek::NeedMore);
        assert_eq!(
            peek_connect(&connect(b"MQTT", 4)[..6]),
            ConnectPeek::NeedMore
        );
        assert_eq!(peek_connect(b"GET / HTTP/1.1"), ConnectPeek::NotConnect);
        assert_eq!(
            peek_connect(&[0x10, 0xff, 0xff, 0xff, 0xff]),
            ConnectPeek::Malformed
        );
    }

    #[test]
    fn publish_header() {
        // QoS 1, topic "a/b", pkid 0x1234, payload "x".
        let f = [0x32, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x12, 0x34, b'x'];
        assert_eq!(publish_qos_pkid(&f), Some((1, 0x1234)));
        let q0 = [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'b', b'x'];
        assert_eq!(publish_qos_pkid(&q0), Some((0, 0)));
        assert_eq!(publish_qos_pkid(&[0x82, 0x00]), None);
        assert_eq!(publish_qos_pkid(&[0x32, 0x03, 0x00, 0x05, b'a']), None);
    }
}
