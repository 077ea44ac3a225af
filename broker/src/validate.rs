//! Validation of client-to-server MQTT frames (3.1.1 = level 4, 5.0 = level
//! 5) before any of rumqttd's decoders sees them.
//!
//! rumqttd's codecs are decoders, not validators: an MQTT 5 client sending a
//! server-only packet type with a body makes the v5 decoder hit
//! `unreachable!()`, a PUBLISH topic starting with a non-ASCII character
//! panics the router thread (`topic[..1]` in `rumqttd::protocol::matches`),
//! and many malformed packets are silently accepted or silently dropped (a
//! v5 PUBLISH without its property length decodes as
//! `InsufficientBytes` *after* the frame was consumed). This module is the
//! gate in front of them:
//!
//! - [`fixed_header`] judges the fixed header (packet type, flags, remaining
//!   length, size limit, first-packet rule) as soon as its 2 to 5 bytes are in,
//!   so an oversized or nonsensical frame is refused before it is buffered;
//! - [`frame`] judges one complete frame, fixed header included.
//!
//! Both are pure, never panic, never allocate, and read only inside the
//! bytes they are given (every declared length is checked against what is
//! there before it is used). Each check cites the specification's
//! conformance statement (`MQTT-x.y.z-n`, the 5.0 numbering unless marked
//! 3.1.1) or section. A [`Violation`] carries a metric label for
//! `gatehouse_protocol_errors_total{reason}` (all in [`LABELS`]) and the MQTT 5
//! reason code to close the connection with (3.1.1 has none; just close).
//!
//! Not checked here (stateful or policy, done elsewhere): Topic Alias against
//! the negotiated maximum, Receive Maximum quotas, the client-id policy, ACLs,
//! topic length/level limits, whether an Authentication Method is supported,
//! payload contents (also with Payload Format Indicator 1), and the minimal
//! encoding of variable byte integers (MQTT-1.5.5-1, not enforced so that
//! sloppy-but-harmless clients keep working).

use std::fmt;

use gatehouse_acl::{Limits, TopicError, validate_filter_bytes, validate_topic_bytes};

use crate::wire::Version;

/// 0x81 Malformed Packet.
pub const MALFORMED: u8 = 0x81;
/// 0x82 Protocol Error.
pub const PROTOCOL_ERROR: u8 = 0x82;
/// 0x84 Unsupported Protocol Version (CONNACK).
pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
/// 0x8F Topic Filter invalid.
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
/// 0x90 Topic Name invalid.
pub const TOPIC_NAME_INVALID: u8 = 0x90;
/// 0x94 Topic Alias invalid.
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
/// 0x95 Packet too large.
pub const PACKET_TOO_LARGE: u8 = 0x95;
/// 0x9E Shared Subscriptions not supported.
pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// Label for `gatehouse_protocol_errors_total{reason}`; one of [`LABELS`].
    pub label: &'static str,
    /// MQTT 5 reason code for the DISCONNECT (or CONNACK, for a CONNECT).
    pub code: u8,
}

impl Violation {
    const fn new(label: &'static str, code: u8) -> Violation {
        Violation { label, code }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (reason code 0x{:02X})", self.label, self.code)
    }
}

// Fixed header.
const RESERVED_PACKET_TYPE: Violation = Violation::new("reserved_packet_type", MALFORMED);
const SERVER_ONLY_PACKET: Violation = Violation::new("server_only_packet", PROTOCOL_ERROR);
const AUTH_UNSUPPORTED: Violation = Violation::new("auth_unsupported", PROTOCOL_ERROR);
const FIRST_PACKET_NOT_CONNECT: Violation =
    Violation::new("first_packet_not_connect", PROTOCOL_ERROR);
const SECOND_CONNECT: Violation = Violation::new("second_connect", PROTOCOL_ERROR);
const RESERVED_FLAGS: Violation = Violation::new("reserved_flags", MALFORMED);
const PUBLISH_QOS3: Violation = Violation::new("publish_qos3", MALFORMED);
const PUBLISH_DUP_QOS0: Violation = Violation::new("publish_dup_qos0", MALFORMED);
const REMAINING_LENGTH: Violation = Violation::new("remaining_length", MALFORMED);
const TOO_LARGE: Violation = Violation::new("packet_too_large", PACKET_TOO_LARGE);
const INVALID_LENGTH: Violation = Violation::new("invalid_length", MALFORMED);
// Fields.
const TRUNCATED: Violation = Violation::new("truncated", MALFORMED);
const TRAILING_BYTES: Violation = Violation::new("trailing_bytes", MALFORMED);
const INVALID_VARINT: Violation = Violation::new("invalid_varint", MALFORMED);
const INVALID_UTF8: Violation = Violation::new("invalid_utf8", MALFORMED);
const UTF8_NUL: Violation = Violation::new("utf8_nul", MALFORMED);
// CONNECT.
const PROTOCOL_NAME: Violation = Violation::new("protocol_name", MALFORMED);
const PROTOCOL_LEVEL: Violation = Violation::new("protocol_level", UNSUPPORTED_PROTOCOL_VERSION);
const CONNECT_RESERVED_FLAG: Violation = Violation::new("connect_reserved_flag", MALFORMED);
const WILL_FLAGS: Violation = Violation::new("will_flags", MALFORMED);
const WILL_QOS3: Violation = Violation::new("will_qos3", MALFORMED);
const PASSWORD_WITHOUT_USERNAME: Violation = Violation::new("password_without_username", MALFORMED);
const AUTH_DATA_WITHOUT_METHOD: Violation =
    Violation::new("auth_data_without_method", PROTOCOL_ERROR);
// Properties.
const PROPERTY_NOT_ALLOWED: Violation = Violation::new("property_not_allowed", MALFORMED);
const PROPERTY_DUPLICATE: Violation = Violation::new("property_duplicate", PROTOCOL_ERROR);
const PROPERTY_VALUE: Violation = Violation::new("property_value", PROTOCOL_ERROR);
const RESPONSE_TOPIC: Violation = Violation::new("response_topic", PROTOCOL_ERROR);
const SUBSCRIPTION_ID_FROM_CLIENT: Violation =
    Violation::new("subscription_identifier_from_client", PROTOCOL_ERROR);
const SERVER_REFERENCE_FROM_CLIENT: Violation =
    Violation::new("server_reference_from_client", PROTOCOL_ERROR);
const TOPIC_ALIAS_ZERO: Violation = Violation::new("topic_alias_zero", TOPIC_ALIAS_INVALID);
// Topics and filters.
const TOPIC_EMPTY: Violation = Violation::new("topic_empty", TOPIC_NAME_INVALID);
const TOPIC_EMPTY_NO_ALIAS: Violation = Violation::new("topic_empty", PROTOCOL_ERROR);
const TOPIC_NOT_UTF8: Violation = Violation::new("topic_not_utf8", TOPIC_NAME_INVALID);
const TOPIC_NUL: Violation = Violation::new("topic_nul", TOPIC_NAME_INVALID);
const TOPIC_WILDCARD: Violation = Violation::new("topic_wildcard", TOPIC_NAME_INVALID);
const TOPIC_INVALID: Violation = Violation::new("topic_invalid", TOPIC_NAME_INVALID);
const TOPIC_UNROUTABLE: Violation = Violation::new("topic_unroutable", TOPIC_NAME_INVALID);
const FILTER_EMPTY: Violation = Violation::new("filter_empty", TOPIC_FILTER_INVALID);
const FILTER_NOT_UTF8: Violation = Violation::new("filter_not_utf8", TOPIC_FILTER_INVALID);
const FILTER_NUL: Violation = Violation::new("filter_nul", TOPIC_FILTER_INVALID);
const FILTER_WILDCARD: Violation = Violation::new("filter_wildcard", TOPIC_FILTER_INVALID);
const FILTER_INVALID: Violation = Violation::new("filter_invalid", TOPIC_FILTER_INVALID);
const SHARED_SUBSCRIPTION: Violation =
    Violation::new("shared_subscription", SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
const SHARE_NAME: Violation = Violation::new("share_name", TOPIC_FILTER_INVALID);
const SHARED_NO_LOCAL: Violation = Violation::new("shared_no_local", PROTOCOL_ERROR);
// Packet ids, SUBSCRIBE / UNSUBSCRIBE, reason codes.
const PACKET_ID_ZERO: Violation = Violation::new("packet_id_zero", PROTOCOL_ERROR);
const NO_FILTERS_V4: Violation = Violation::new("no_filters", MALFORMED);
const NO_FILTERS_V5: Violation = Violation::new("no_filters", PROTOCOL_ERROR);
const SUBSCRIPTION_OPTIONS: Violation = Violation::new("subscription_options", MALFORMED);
const SUBSCRIPTION_QOS3: Violation = Violation::new("subscription_qos3", MALFORMED);
const RETAIN_HANDLING3: Violation = Violation::new("retain_handling3", PROTOCOL_ERROR);
const REASON_CODE: Violation = Violation::new("reason_code", MALFORMED);

/// Every label a [`Violation`] can carry (to pre-register metric series).
pub const LABELS: &[&str] = &[
    RESERVED_PACKET_TYPE.label,
    SERVER_ONLY_PACKET.label,
    AUTH_UNSUPPORTED.label,
    FIRST_PACKET_NOT_CONNECT.label,
    SECOND_CONNECT.label,
    RESERVED_FLAGS.label,
    PUBLISH_QOS3.label,
    PUBLISH_DUP_QOS0.label,
    REMAINING_LENGTH.label,
    TOO_LARGE.label,
    INVALID_LENGTH.label,
    TRUNCATED.label,
    TRAILING_BYTES.label,
    INVALID_VARINT.label,
    INVALID_UTF8.label,
    UTF8_NUL.label,
    PROTOCOL_NAME.label,
    PROTOCOL_LEVEL.label,
    CONNECT_RESERVED_FLAG.label,
    WILL_FLAGS.label,
    WILL_QOS3.label,
    PASSWORD_WITHOUT_USERNAME.label,
    AUTH_DATA_WITHOUT_METHOD.label,
    PROPERTY_NOT_ALLOWED.label,
    PROPERTY_DUPLICATE.label,
    PROPERTY_VALUE.label,
    RESPONSE_TOPIC.label,
    SUBSCRIPTION_ID_FROM_CLIENT.label,
    SERVER_REFERENCE_FROM_CLIENT.label,
    TOPIC_ALIAS_ZERO.label,
    TOPIC_EMPTY.label,
    TOPIC_NOT_UTF8.label,
    TOPIC_NUL.label,
    TOPIC_WILDCARD.label,
    TOPIC_INVALID.label,
    TOPIC_UNROUTABLE.label,
    FILTER_EMPTY.label,
    FILTER_NOT_UTF8.label,
    FILTER_NUL.label,
    FILTER_WILDCARD.label,
    FILTER_INVALID.label,
    SHARED_SUBSCRIPTION.label,
    SHARE_NAME.label,
    SHARED_NO_LOCAL.label,
    PACKET_ID_ZERO.label,
    NO_FILTERS_V5.label,
    SUBSCRIPTION_OPTIONS.label,
    SUBSCRIPTION_QOS3.label,
    RETAIN_HANDLING3.label,
    REASON_CODE.label,
];

/// The packet types a client may send (everything else is refused in the
/// fixed header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    Unsubscribe,
    PingReq,
    Disconnect,
}

/// A fixed header that passed [`fixed_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Low nibble of the first byte (for PUBLISH: DUP, QoS, RETAIN).
    pub flags: u8,
    /// Bytes of the fixed header: 1 + (1 to 4) bytes of remaining length.
    pub header_len: usize,
    /// Bytes after the fixed header.
    pub remaining_len: usize,
    /// `header_len + remaining_len`: the whole frame.
    pub frame_len: usize,
}

/// Judges the fixed header at the start of `buf` (the stream's unread
/// bytes). `Ok(None)`: not all header bytes are in yet. `Ok(Some(header))`:
/// the frame is `header.frame_len` bytes long, at most `max_packet_size`
/// (the whole frame, as MQTT 5's Maximum Packet Size counts it); hand it
/// to [`frame`] once all of it is buffered.
///
/// `first_packet`: nothing was read on this connection yet. For the first
/// packet, `version` is the level the CONNECT announces (see
/// `wire::peek_connect`); any version refuses a first packet that is not a
/// CONNECT.
pub fn fixed_header(
    version: Version,
    buf: &[u8],
    max_packet_size: usize,
    first_packet: bool,
) -> Result<Option<Header>, Violation> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let kind = kind_of(version, byte1)?;
    // MQTT-3.1.0-1 (both versions): the first packet from the client MUST be a CONNECT.
    if first_packet && kind != Kind::Connect {
        return Err(FIRST_PACKET_NOT_CONNECT);
    }
    // MQTT-3.1.0-2 (both versions): a second CONNECT is a protocol error.
    if !first_packet && kind == Kind::Connect {
        return Err(SECOND_CONNECT);
    }
    let Some((remaining_len, n)) = remaining_length(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let header = Header {
        kind,
        flags: byte1 & 0x0F,
        header_len: 1 + n,
        remaining_len,
        frame_len: 1 + n + remaining_len,
    };
    // 3.2.2.3.6 (5.0): a packet above the server's Maximum Packet Size earns 0x95.
    if header.frame_len > max_packet_size {
        return Err(TOO_LARGE);
    }
    fixed_size(version, kind, remaining_len)?;
    Ok(Some(header))
}

/// Judges one complete client-to-server frame: `frame` is exactly the fixed
/// header and the remaining length's worth of bytes. Stateless: the
/// first-packet rule and the size limit are [`fixed_header`]'s.
pub fn frame(version: Version, frame: &[u8]) -> Result<(), Violation> {
    let Some(&byte1) = frame.first() else {
        return Err(INVALID_LENGTH);
    };
    let kind = kind_of(version, byte1)?;
    let Some((remaining_len, n)) = remaining_length(frame.get(1..).unwrap_or_default())? else {
        return Err(INVALID_LENGTH);
    };
    let header_len = 1 + n;
    if frame.len() != header_len + remaining_len {
        return Err(INVALID_LENGTH);
    }
    fixed_size(version, kind, remaining_len)?;
    let body = Reader {
        buf: frame.get(header_len..).unwrap_or_default(),
    };
    let flags = byte1 & 0x0F;
    match kind {
        Kind::Connect => connect(version, body),
        Kind::Publish => publish(version, flags, body),
        Kind::PubAck | Kind::PubRec | Kind::PubRel | Kind::PubComp => ack(version, kind, body),
        Kind::Subscribe => subscribe(version, body),
        Kind::Unsubscribe => unsubscribe(version, body),
        // Body length already checked by `fixed_size`.
        Kind::PingReq => Ok(()),
        Kind::Disconnect => disconnect(version, body),
    }
}

/// Packet type and flags of the first byte.
fn kind_of(version: Version, byte1: u8) -> Result<Kind, Violation> {
    let kind = match byte1 >> 4 {
        // 2.1.2 Table 2-1 (3.1.1: 2.2.1 Table 2.1): type 0 is reserved / forbidden.
        0 => return Err(RESERVED_PACKET_TYPE),
        1 => Kind::Connect,
        3 => Kind::Publish,
        4 => Kind::PubAck,
        5 => Kind::PubRec,
        6 => Kind::PubRel,
        7 => Kind::PubComp,
        8 => Kind::Subscribe,
        10 => Kind::Unsubscribe,
        12 => Kind::PingReq,
        14 => Kind::Disconnect,
        // 2.1.2 Table 2-1: CONNACK, SUBACK, UNSUBACK and PINGRESP flow server to client only.
        2 | 9 | 11 | 13 => return Err(SERVER_ONLY_PACKET),
        // 15: AUTH in 5.0, reserved in 3.1.1 (2.2.1 Table 2.1).
        _ => {
            return Err(match version {
                Version::V4 => RESERVED_PACKET_TYPE,
                // 4.12: AUTH is only valid after a CONNECT with an Authentication Method,
                // and we never negotiate one.
                Version::V5 => AUTH_UNSUPPORTED,
            });
        }
    };
    let flags = byte1 & 0x0F;
    match kind {
        Kind::Publish => {
            let qos = (flags >> 1) & 0b11;
            // MQTT-3.3.1-4 (both versions): a PUBLISH MUST NOT have both QoS bits set.
            if qos == 3 {
                return Err(PUBLISH_QOS3);
            }
            // MQTT-3.3.1-2 (both versions): DUP MUST be 0 for QoS 0.
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(PUBLISH_DUP_QOS0);
            }
        }
        // MQTT-2.1.3-1 (3.1.1: MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1): flags 0b0010.
        Kind::PubRel | Kind::Subscribe | Kind::Unsubscribe => {
            if flags != 0b0010 {
                return Err(RESERVED_FLAGS);
            }
        }
        // MQTT-2.1.3-1 (3.1.1: MQTT-2.2.2-1/-2): reserved flags MUST be as listed (0).
        _ => {
            if flags != 0 {
                return Err(RESERVED_FLAGS);
            }
        }
    }
    Ok(kind)
}

/// Remaining length at the start of `b`: `Ok(None)` if incomplete, else
/// (value, bytes used).
fn remaining_length(b: &[u8]) -> Result<Option<(usize, usize)>, Violation> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    // 1.5.5 (3.1.1: 2.2.3): at most 4 bytes; a continuation bit on the 4th is malformed.
    Err(REMAINING_LENGTH)
}

/// Remaining lengths fixed by the packet type, checkable from the header alone.
fn fixed_size(version: Version, kind: Kind, remaining_len: usize) -> Result<(), Violation> {
    let ok = match (kind, version) {
        // 3.12.2 / 3.12.3 (both versions): PINGREQ has no variable header and no payload.
        (Kind::PingReq, _) => remaining_len == 0,
        // 3.14.2 (3.1.1): DISCONNECT has no variable header and no payload.
        (Kind::Disconnect, Version::V4) => remaining_len == 0,
        // 3.4.2-3.7.2 (3.1.1): the acks are exactly a packet identifier.
        (Kind::PubAck | Kind::PubRec | Kind::PubRel | Kind::PubComp, Version::V4) => {
            remaining_len == 2
        }
        // 3.4.2.1 (5.0): packet id, then optional reason code and properties.
        (Kind::PubAck | Kind::PubRec | Kind::PubRel | Kind::PubComp, Version::V5) => {
            remaining_len >= 2
        }
        _ => true,
    };
    if ok { Ok(()) } else { Err(INVALID_LENGTH) }
}

/// A cursor over the bytes of one packet; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Violation> {
        if n > self.buf.len() {
            return Err(TRUNCATED);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Violation> {
        let [b] = self.take(1)? else {
            return Err(TRUNCATED);
        };
        Ok(*b)
    }

    fn u16(&mut self) -> Result<u16, Violation> {
        let [a, b] = self.take(2)? else {
            return Err(TRUNCATED);
        };
        Ok(u16::from_be_bytes([*a, *b]))
    }

    fn u32(&mut self) -> Result<u32, Violation> {
        let [a, b, c, d] = self.take(4)? else {
            return Err(TRUNCATED);
        };
        Ok(u32::from_be_bytes([*a, *b, *c, *d]))
    }

    /// 1.5.5 Variable Byte Integer: at most 4 bytes.
    fn varint(&mut self) -> Result<u32, Violation> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(INVALID_VARINT)
    }

    /// 1.5.6 Binary Data (and the raw bytes of a 1.5.4 UTF-8 string): a
    /// two-byte length, then that many bytes, all inside the packet.
    fn binary(&mut self) -> Result<&'a [u8], Violation> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// 1.5.4 UTF-8 Encoded String.
    fn string(&mut self) -> Result<&'a str, Violation> {
        utf8(self.binary()?)
    }

    /// The packet ends here: leftover bytes are malformed.
    fn finish(&self) -> Result<(), Violation> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(TRAILING_BYTES)
        }
    }
}

fn utf8(b: &[u8]) -> Result<&str, Violation> {
    // MQTT-1.5.4-1: well-formed UTF-8, no surrogates (Rust's decoder refuses
    // both ill-formed sequences and encoded surrogates).
    let s = std::str::from_utf8(b).map_err(|_| INVALID_UTF8)?;
    // MQTT-1.5.4-2: no U+0000.
    if b.contains(&0) {
        return Err(UTF8_NUL);
    }
    Ok(s)
}

/// Topic checks are syntactic here; the configured length/level limits are the ACL's.
const NO_LIMITS: Limits = Limits {
    max_length: usize::MAX,
    max_levels: usize::MAX,
};

/// A topic name that is not empty (the caller handles empty ones).
fn topic_name(topic: &[u8]) -> Result<(), Violation> {
    // MQTT-3.3.2-1 (UTF-8 string), MQTT-4.7.3-2 (no U+0000), MQTT-3.3.2-2 (no wildcards).
    validate_topic_bytes(topic, &NO_LIMITS).map_err(|e| match e {
        TopicError::InvalidUtf8 { .. } => TOPIC_NOT_UTF8,
        TopicError::Nul => TOPIC_NUL,
        TopicError::WildcardInTopic => TOPIC_WILDCARD,
        TopicError::Empty => TOPIC_EMPTY,
        _ => TOPIC_INVALID,
    })?;
    // Router safety, not a spec rule: rumqttd's `protocol::matches` slices
    // `topic[..1]`, which panics the router thread when the first character
    // is longer than one byte.
    if topic.first().is_some_and(|b| !b.is_ascii()) {
        return Err(TOPIC_UNROUTABLE);
    }
    Ok(())
}

/// A SUBSCRIBE / UNSUBSCRIBE topic filter.
fn topic_filter(filter: &[u8]) -> Result<(), Violation> {
    // MQTT-3.8.3-1 / MQTT-3.10.3-1 (UTF-8 string), MQTT-4.7.3-1 (at least one
    // character), MQTT-4.7.3-2 (no U+0000), MQTT-4.7.1-1 / -2 (3.1.1: -2 / -3):
    // `#` alone in the last level, `+` alone in its level.
    validate_filter_bytes(filter, &NO_LIMITS)
        .map(|_| ())
        .map_err(|e| match e {
            TopicError::Empty => FILTER_EMPTY,
            TopicError::InvalidUtf8 { .. } => FILTER_NOT_UTF8,
            TopicError::Nul => FILTER_NUL,
            TopicError::MisplacedHash | TopicError::MisplacedPlus | TopicError::WildcardInTopic => {
                FILTER_WILDCARD
            }
            _ => FILTER_INVALID,
        })
}

/// MQTT-3.3.2-13 / -14 (and 3.1.3.2.6 for the will): a Response Topic is a
/// valid topic name (UTF-8 already checked by the reader).
fn response_topic(s: &str) -> Result<(), Violation> {
    gatehouse_acl::validate_topic(s, &NO_LIMITS).map_err(|_| RESPONSE_TOPIC)
}

/// A packet identifier that MUST be non-zero: MQTT-2.2.1-3 (3.1.1: MQTT-2.3.1-1).
fn packet_id(r: &mut Reader<'_>) -> Result<u16, Violation> {
    match r.u16()? {
        0 => Err(PACKET_ID_ZERO),
        id => Ok(id),
    }
}

// MQTT 5 property identifiers (2.2.2.2 Table 2-4).
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC_ID: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

const fn bit(id: u8) -> u64 {
    1 << id
}

// Which properties each client-to-server packet may carry (2.2.2.2 Table 2-4).
const CONNECT_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    RECEIVE_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    REQUEST_PROBLEM_INFORMATION,
    USER_PROPERTY,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
]);
const WILL_PROPS: u64 = mask(&[
    WILL_DELAY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC_ID,
    CORRELATION_DATA,
    USER_PROPERTY,
]);
// Subscription Identifier is listed so that it earns its own protocol error
// (MQTT-3.3.4-6) rather than "not allowed".
const PUBLISH_PROPS: u64 = mask(&[
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    TOPIC_ALIAS,
    RESPONSE_TOPIC_ID,
    CORRELATION_DATA,
    USER_PROPERTY,
    CONTENT_TYPE,
    SUBSCRIPTION_IDENTIFIER,
]);
const ACK_PROPS: u64 = mask(&[REASON_STRING, USER_PROPERTY]);
const SUBSCRIBE_PROPS: u64 = mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
const UNSUBSCRIBE_PROPS: u64 = mask(&[USER_PROPERTY]);
// Server Reference is listed so that it earns its own protocol error.
const DISCONNECT_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    REASON_STRING,
    USER_PROPERTY,
    SERVER_REFERENCE,
]);

/// A decoded property value (2.2.2.2: each identifier has one data type).
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    Varint(u32),
    Str(&'a str),
    /// Binary Data (checked for bounds only).
    Bin,
    /// UTF-8 String Pair (both strings checked).
    Pair,
}

/// Reads a property block (length, then properties exactly filling it),
/// refusing identifiers outside `allowed` and duplicates, and hands each
/// value to `check`. Returns the set of identifiers seen.
fn properties<'a>(
    r: &mut Reader<'a>,
    allowed: u64,
    mut check: impl FnMut(u8, Value<'a>) -> Result<(), Violation>,
) -> Result<u64, Violation> {
    // 2.2.2.1: Property Length, a Variable Byte Integer, then exactly that many bytes.
    let len = r.varint()?;
    let mut p = Reader {
        buf: r.take(usize::try_from(len).map_err(|_| TRUNCATED)?)?,
    };
    let mut seen = 0u64;
    while !p.is_empty() {
        // 2.2.2.2: the identifier is a Variable Byte Integer; every defined one
        // fits in a single byte, so any other byte value is invalid.
        let id = p.u8()?;
        // 2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
        if id >= 64 || allowed & bit(id) == 0 {
            return Err(PROPERTY_NOT_ALLOWED);
        }
        let value = match id {
            PAYLOAD_FORMAT_INDICATOR
            | REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION => Value::Byte(p.u8()?),
            RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => Value::U16(p.u16()?),
            MESSAGE_EXPIRY_INTERVAL
            | SESSION_EXPIRY_INTERVAL
            | WILL_DELAY_INTERVAL
            | MAXIMUM_PACKET_SIZE => Value::U32(p.u32()?),
            SUBSCRIPTION_IDENTIFIER => Value::Varint(p.varint()?),
            CONTENT_TYPE
            | RESPONSE_TOPIC_ID
            | AUTHENTICATION_METHOD
            | SERVER_REFERENCE
            | REASON_STRING => Value::Str(p.string()?),
            CORRELATION_DATA | AUTHENTICATION_DATA => {
                p.binary()?;
                Value::Bin
            }
            USER_PROPERTY => {
                p.string()?;
                p.string()?;
                Value::Pair
            }
            // Only reachable if a mask lists an id this table does not know.
            _ => return Err(PROPERTY_NOT_ALLOWED),
        };
        // 3.x.2.x "It is a Protocol Error to include the <property> more than
        // once" holds for every property a client sends except User Property.
        if seen & bit(id) != 0 && id != USER_PROPERTY {
            return Err(PROPERTY_DUPLICATE);
        }
        seen |= bit(id);
        check(id, value)?;
    }
    Ok(seen)
}

/// Properties of a PUBLISH and of a will, which share their checks.
fn message_property(id: u8, value: Value<'_>) -> Result<(), Violation> {
    match (id, value) {
        // 3.3.2.3.2 / 3.1.3.2.3: Payload Format Indicator is 0 or 1.
        (PAYLOAD_FORMAT_INDICATOR, Value::Byte(b)) if b > 1 => Err(PROPERTY_VALUE),
        // MQTT-3.3.2-8: a Topic Alias of 0 is not permitted.
        (TOPIC_ALIAS, Value::U16(0)) => Err(TOPIC_ALIAS_ZERO),
        (RESPONSE_TOPIC_ID, Value::Str(s)) => response_topic(s),
        // MQTT-3.3.4-6: a PUBLISH from a client MUST NOT contain a Subscription Identifier.
        (SUBSCRIPTION_IDENTIFIER, _) => Err(SUBSCRIPTION_ID_FROM_CLIENT),
        _ => Ok(()),
    }
}

/// 3.1 CONNECT.
fn connect(version: Version, mut r: Reader<'_>) -> Result<(), Violation> {
    // MQTT-3.1.2-1: the protocol name is "MQTT".
    if r.binary()? != b"MQTT" {
        return Err(PROTOCOL_NAME);
    }
    // MQTT-3.1.2-2: the level must be the one this session speaks.
    let level = r.u8()?;
    let expected = match version {
        Version::V4 => 4,
        Version::V5 => 5,
    };
    if level != expected {
        return Err(PROTOCOL_LEVEL);
    }
    let flags = r.u8()?;
    // MQTT-3.1.2-3 (both versions): the reserved flag MUST be 0.
    if flags & 0b0000_0001 != 0 {
        return Err(CONNECT_RESERVED_FLAG);
    }
    let will = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password = flags & 0b0100_0000 != 0;
    let username = flags & 0b1000_0000 != 0;
    // MQTT-3.1.2-11 and -13 (3.1.1: MQTT-3.1.2-11, -13, -15): without a will,
    // Will QoS and Will Retain MUST be 0.
    if !will && (will_qos != 0 || will_retain) {
        return Err(WILL_FLAGS);
    }
    // MQTT-3.1.2-12 (3.1.1: MQTT-3.1.2-14): Will QoS MUST NOT be 3.
    if will_qos == 3 {
        return Err(WILL_QOS3);
    }
    // 3.1.1 MQTT-3.1.2-22: no password without a user name (5.0 dropped this rule).
    if version == Version::V4 && password && !username {
        return Err(PASSWORD_WITHOUT_USERNAME);
    }
    let _keep_alive = r.u16()?;
    if version == Version::V5 {
        // 3.1.2.11 CONNECT properties.
        let seen = properties(&mut r, CONNECT_PROPS, |id, value| match (id, value) {
            // 3.1.2.11.3 / .4: Receive Maximum and Maximum Packet Size of 0 are protocol errors.
            (RECEIVE_MAXIMUM, Value::U16(0)) | (MAXIMUM_PACKET_SIZE, Value::U32(0)) => {
                Err(PROPERTY_VALUE)
            }
            // 3.1.2.11.6 / .7: Request Response / Problem Information are 0 or 1.
            (REQUEST_RESPONSE_INFORMATION | REQUEST_PROBLEM_INFORMATION, Value::Byte(b))
                if b > 1 =>
            {
                Err(PROPERTY_VALUE)
            }
            _ => Ok(()),
        })?;
        // 3.1.2.11.10: Authentication Data without an Authentication Method is a protocol error.
        if seen & bit(AUTHENTICATION_DATA) != 0 && seen & bit(AUTHENTICATION_METHOD) == 0 {
            return Err(AUTH_DATA_WITHOUT_METHOD);
        }
    }
    // MQTT-3.1.3-4 (both versions): the Client Identifier is a UTF-8 string
    // (which characters are allowed is the client-id policy's business).
    r.string()?;
    if will {
        if version == Version::V5 {
            // 3.1.3.2 Will Properties.
            properties(&mut r, WILL_PROPS, message_property)?;
        }
        // MQTT-3.1.3-11 (3.1.1: MQTT-3.1.3-10): the Will Topic is a UTF-8 string,
        // and it will be published: a valid, routable topic name.
        let topic = r.binary()?;
        if topic.is_empty() {
            return Err(TOPIC_EMPTY);
        }
        topic_name(topic)?;
        // 3.1.3.4 Will Payload: binary data.
        r.binary()?;
    }
    if username {
        // MQTT-3.1.3-12 (3.1.1: MQTT-3.1.3-11): the User Name is a UTF-8 string.
        r.string()?;
    }
    if password {
        // 3.1.3.6: the Password is binary data.
        r.binary()?;
    }
    // 3.1.3: the payload is exactly the fields the flags announce.
    r.finish()
}

/// 3.3 PUBLISH.
fn publish(version: Version, flags: u8, mut r: Reader<'_>) -> Result<(), Violation> {
    let topic = r.binary()?;
    if (flags >> 1) & 0b11 != 0 {
        packet_id(&mut r)?;
    }
    let mut alias = false;
    if version == Version::V5 {
        // 3.3.2.3 PUBLISH properties (the property length is mandatory).
        let seen = properties(&mut r, PUBLISH_PROPS, message_property)?;
        alias = seen & bit(TOPIC_ALIAS) != 0;
    }
    if topic.is_empty() {
        return match version {
            // MQTT-4.7.3-1: topic names are at least one character long.
            Version::V4 => Err(TOPIC_EMPTY),
            // 3.3.2.1: a zero-length Topic Name without a Topic Alias is a protocol error.
            Version::V5 if alias => Ok(()),
            Version::V5 => Err(TOPIC_EMPTY_NO_ALIAS),
        };
    }
    // The rest is the payload, not checked.
    topic_name(topic)
}

/// 3.4 PUBACK, 3.5 PUBREC, 3.6 PUBREL, 3.7 PUBCOMP.
fn ack(version: Version, kind: Kind, mut r: Reader<'_>) -> Result<(), Violation> {
    packet_id(&mut r)?;
    if version == Version::V4 || r.is_empty() {
        // 3.1.1: exactly the id (checked by `fixed_size`). 5.0, 3.4.2.1:
        // remaining length 2 means reason Success and no properties.
        return Ok(());
    }
    let reason = r.u8()?;
    let known = match kind {
        // 3.4.2.1 Table 3-4, 3.5.2.1 Table 3-5.
        Kind::PubAck | Kind::PubRec => matches!(
            reason,
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ),
        // 3.6.2.1 Table 3-6, 3.7.2.1 Table 3-7.
        _ => matches!(reason, 0x00 | 0x92),
    };
    if !known {
        return Err(REASON_CODE);
    }
    if r.is_empty() {
        // 3.4.2.2: remaining length < 4 means no properties.
        return Ok(());
    }
    properties(&mut r, ACK_PROPS, |_, _| Ok(()))?;
    r.finish()
}

/// 3.8 SUBSCRIBE.
fn subscribe(version: Version, mut r: Reader<'_>) -> Result<(), Violation> {
    packet_id(&mut r)?;
    if version == Version::V5 {
        properties(&mut r, SUBSCRIBE_PROPS, |id, value| match (id, value) {
            // 3.8.2.1.2: Subscription Identifier 1 to 268,435,455; 0 is a protocol error
            // (the upper bound is the largest 4-byte varint).
            (SUBSCRIPTION_IDENTIFIER, Value::Varint(0)) => Err(PROPERTY_VALUE),
            _ => Ok(()),
        })?;
    }
    // MQTT-3.8.3-2 (3.1.1: MQTT-3.8.3-3): at least one filter / options pair.
    if r.is_empty() {
        return Err(match version {
            Version::V4 => NO_FILTERS_V4,
            Version::V5 => NO_FILTERS_V5,
        });
    }
    while !r.is_empty() {
        let filter = r.binary()?;
        let options = r.u8()?;
        topic_filter(filter)?;
        // 4.8.2: shared subscriptions ("$share/{ShareName}/{filter}") are
        // MQTT 5's (3.1.1 has none, but rumqttd would treat the filter as one).
        if let Some(shared) = filter.strip_prefix(b"$share/") {
            if version == Version::V4 {
                return Err(SHARED_SUBSCRIPTION);
            }
            // MQTT-4.8.2-1: a ShareName of at least one character, then "/"
            // and a filter; MQTT-4.8.2-2: no "/", "+" or "#" in it.
            let name_end = shared.iter().position(|&b| b == b'/');
            match name_end {
                Some(n) if n > 0 && n + 1 < shared.len() => {
                    if shared[..n].iter().any(|&b| b == b'+' || b == b'#') {
                        return Err(SHARE_NAME);
                    }
                }
                _ => return Err(SHARE_NAME),
            }
            // MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
            if options & 0b100 != 0 {
                return Err(SHARED_NO_LOCAL);
            }
        }
        match version {
            Version::V4 => {
                // 3.1.1 MQTT-3.8.3-4: bits 2-7 reserved (0), QoS 0 to 2.
                if options & 0b1111_1100 != 0 {
                    return Err(SUBSCRIPTION_OPTIONS);
                }
            }
            Version::V5 => {
                // MQTT-3.8.3-5: bits 6-7 reserved (0).
                if options & 0b1100_0000 != 0 {
                    return Err(SUBSCRIPTION_OPTIONS);
                }
                // 3.8.3.1: Retain Handling 3 is a protocol error.
                if (options >> 4) & 0b11 == 3 {
                    return Err(RETAIN_HANDLING3);
                }
            }
        }
        // 3.8.3.1 (3.1.1: MQTT-3.8.3-4): Maximum QoS 3 is malformed.
        if options & 0b11 == 3 {
            return Err(SUBSCRIPTION_QOS3);
        }
    }
    Ok(())
}

/// 3.10 UNSUBSCRIBE.
fn unsubscribe(version: Version, mut r: Reader<'_>) -> Result<(), Violation> {
    packet_id(&mut r)?;
    if version == Version::V5 {
        properties(&mut r, UNSUBSCRIBE_PROPS, |_, _| Ok(()))?;
    }
    // MQTT-3.10.3-2 (both versions): at least one topic filter.
    if r.is_empty() {
        return Err(match version {
            Version::V4 => NO_FILTERS_V4,
            Version::V5 => NO_FILTERS_V5,
        });
    }
    while !r.is_empty() {
        topic_filter(r.binary()?)?;
    }
    Ok(())
}

/// 3.14 DISCONNECT (5.0; 3.1.1's is empty, checked by `fixed_size`).
fn disconnect(version: Version, mut r: Reader<'_>) -> Result<(), Violation> {
    if version == Version::V4 || r.is_empty() {
        // 3.14.2.1: no reason code means 0x00 Normal disconnection.
        return Ok(());
    }
    let reason = r.u8()?;
    // 3.14.2.1 Table 3-10: the codes a client may send.
    let known = matches!(
        reason,
        0x00 | 0x04
            | 0x80
            | 0x81
            | 0x82
            | 0x83
            | 0x90
            | 0x93
            | 0x94
            | 0x95
            | 0x96
            | 0x97
            | 0x98
            | 0x99
    );
    if !known {
        return Err(REASON_CODE);
    }
    if r.is_empty() {
        // 3.14.2.2: remaining length < 2 means no properties.
        return Ok(());
    }
    properties(&mut r, DISCONNECT_PROPS, |id, _| match id {
        // 3.14.2.2.5: Server Reference is sent by the server only.
        SERVER_REFERENCE => Err(SERVER_REFERENCE_FROM_CLIENT),
        _ => Ok(()),
    })?;
    r.finish()
}

/// Entry points for fuzz targets: drive the validator the way the front door
/// does, and rumqttd's decoders (and topic matcher) behind it.
pub mod fuzzing {
    use bytes::BytesMut;
    use rumqttd::protocol::v4::V4;
    use rumqttd::protocol::v5::V5;
    use rumqttd::protocol::{Packet, Protocol};

    use crate::wire::Version;

    /// The `max_packet_size` the fuzzing loop applies.
    pub const MAX_PACKET_SIZE: usize = 1 << 20;

    /// Feeds `data` to the validator as one client's byte stream. The first
    /// byte picks the session: bit 0 = MQTT 5 (else 3.1.1), bit 1 = CONNECT
    /// already done (else the stream must start with one). Then, like the
    /// front door: [`fixed_header`](super::fixed_header) on the unread
    /// bytes, [`frame`](super::frame) on each complete frame, and for every
    /// accepted frame rumqttd's decoder, plus the router's topic matcher for
    /// the topics of accepted PUBLISHes and wills. Stops at the first refused
    /// or incomplete frame. Never panics, whatever `data` is (that is the
    /// property a fuzz target checks).
    pub fn client_stream(data: &[u8]) {
        let _ = accepted_frames(data);
    }

    /// [`client_stream`], returning how many frames were accepted.
    pub fn accepted_frames(data: &[u8]) -> usize {
        let Some((&mode, mut rest)) = data.split_first() else {
            return 0;
        };
        let version = if mode & 1 == 0 {
            Version::V4
        } else {
            Version::V5
        };
        let mut first = mode & 2 == 0;
        let mut accepted = 0;
        loop {
            let header = match super::fixed_header(version, rest, MAX_PACKET_SIZE, first) {
                Ok(Some(header)) => header,
                Ok(None) | Err(_) => return accepted,
            };
            let Some(frame) = rest.get(..header.frame_len) else {
                return accepted;
            };
            if super::frame(version, frame).is_err() {
                return accepted;
            }
            decode(version, frame);
            accepted += 1;
            rest = rest.get(header.frame_len..).unwrap_or_default();
            first = false;
        }
    }

    /// Decodes an accepted frame with rumqttd and runs the router's matcher
    /// on the topics it will see.
    pub fn decode(version: Version, frame: &[u8]) {
        let mut buf = BytesMut::from(frame);
        let packet = match version {
            Version::V4 => V4.read_mut(&mut buf, MAX_PACKET_SIZE),
            Version::V5 => V5.read_mut(&mut buf, MAX_PACKET_SIZE),
        };
        let topic = match &packet {
            Ok(Packet::Publish(publish, _)) => Some(publish.topic.clone()),
            Ok(Packet::Connect(_, _, Some(will), _, _)) => Some(will.topic.clone()),
            _ => None,
        };
        let Some(topic) = topic else {
            return;
        };
        if let Ok(topic) = std::str::from_utf8(&topic) {
            for filter in ["#", "+", "+/#", "a/+/c", "$SYS/#"] {
                let _ = rumqttd::protocol::matches(topic, filter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use rumqttd::protocol::v4::V4;
    use rumqttd::protocol::v5::V5;
    use rumqttd::protocol::{self as rp, Packet, Protocol, QoS};

    use super::*;

    const L4: Version = Version::V4;
    const L5: Version = Version::V5;
    const BOTH: [Version; 2] = [L4, L5];
    const MAX: usize = 1 << 20;

    // ---- a tiny frame builder -------------------------------------------

    fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return out;
            }
        }
    }

    /// A frame: first byte, remaining length, body.
    fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        out.extend(varint(body.len()));
        out.extend_from_slice(body);
        out
    }

    /// A two-byte-length-prefixed string or binary field.
    fn s(b: &[u8]) -> Vec<u8> {
        let mut out = (b.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(b);
        out
    }

    /// A property block: length, then the properties.
    fn props(b: &[u8]) -> Vec<u8> {
        let mut out = varint(b.len());
        out.extend_from_slice(b);
        out
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A string property: id, then the string.
    fn sp(id: u8, v: &[u8]) -> Vec<u8> {
        cat(&[&[id], &s(v)])
    }

    fn user_prop(k: &[u8], v: &[u8]) -> Vec<u8> {
        cat(&[&[USER_PROPERTY], &s(k), &s(v)])
    }

    fn level(v: Version) -> u8 {
        match v {
            L4 => 4,
            L5 => 5,
        }
    }

    /// CONNECT: `payload` starts with the client id.
    fn connect(v: Version, flags: u8, properties: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut body = cat(&[&s(b"MQTT"), &[level(v), flags, 0, 60]]);
        if v == L5 {
            body.extend(props(properties));
        }
        body.extend_from_slice(payload);
        pkt(0x10, &body)
    }

    fn connect_min(v: Version) -> Vec<u8> {
        connect(v, 0x02, &[], &s(b"gw-1"))
    }

    /// CONNECT with a will (QoS 1) on `topic`.
    fn connect_will(v: Version, will_props: &[u8], topic: &[u8]) -> Vec<u8> {
        let mut payload = s(b"gw-1");
        if v == L5 {
            payload.extend(props(will_props));
        }
        payload.extend(s(topic));
        payload.extend(s(b"offline"));
        connect(v, 0x02 | 0x04 | 0x08, &[], &payload)
    }

    fn publish(
        v: Version,
        flags: u8,
        topic: &[u8],
        pkid: Option<u16>,
        properties: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = s(topic);
        if let Some(id) = pkid {
            body.extend(id.to_be_bytes());
        }
        if v == L5 {
            body.extend(props(properties));
        }
        body.extend_from_slice(payload);
        pkt(0x30 | flags, &body)
    }

    fn publish0(v: Version, topic: &[u8]) -> Vec<u8> {
        publish(v, 0, topic, None, &[], b"22.5")
    }

    fn publish_props(properties: &[u8]) -> Vec<u8> {
        publish(L5, 0b0010, b"a/b", Some(1), properties, b"x")
    }

    fn subscribe(v: Version, pkid: u16, properties: &[u8], entries: &[(&[u8], u8)]) -> Vec<u8> {
        let mut body = pkid.to_be_bytes().to_vec();
        if v == L5 {
            body.extend(props(properties));
        }
        for (filter, options) in entries {
            body.extend(s(filter));
            body.push(*options);
        }
        pkt(0x82, &body)
    }

    fn unsubscribe(v: Version, pkid: u16, properties: &[u8], filters: &[&[u8]]) -> Vec<u8> {
        let mut body = pkid.to_be_bytes().to_vec();
        if v == L5 {
            body.extend(props(properties));
        }
        for filter in filters {
            body.extend(s(filter));
        }
        pkt(0xA2, &body)
    }

    // ---- assertions -----------------------------------------------------

    fn rumqttd_decode(v: Version, f: &[u8]) -> Result<Packet, rp::Error> {
        let mut buf = BytesMut::from(f);
        match v {
            L4 => V4.read_mut(&mut buf, MAX),
            L5 => V5.read_mut(&mut buf, MAX),
        }
    }

    /// The validator accepts `f`, and so does rumqttd's decoder.
    #[track_caller]
    fn accept(v: Version, f: &[u8]) {
        assert_eq!(frame(v, f), Ok(()), "frame {f:02x?}");
        let decoded = rumqttd_decode(v, f);
        assert!(
            decoded.is_ok(),
            "rumqttd refuses an accepted frame: {decoded:?}"
        );
    }

    /// The validator accepts `f` (a valid packet); rumqttd's answer is returned
    /// for the caller to pin down.
    #[track_caller]
    fn accept_only(v: Version, f: &[u8]) -> Result<Packet, rp::Error> {
        assert_eq!(frame(v, f), Ok(()), "frame {f:02x?}");
        rumqttd_decode(v, f)
    }

    #[track_caller]
    fn reject(v: Version, f: &[u8], label: &'static str, code: u8) {
        assert!(LABELS.contains(&label), "{label} missing from LABELS");
        assert_eq!(
            frame(v, f),
            Err(Violation { label, code }),
            "frame {f:02x?}"
        );
    }

    #[track_caller]
    fn reject_header(v: Version, buf: &[u8], first: bool, label: &'static str, code: u8) {
        assert!(LABELS.contains(&label), "{label} missing from LABELS");
        assert_eq!(
            fixed_header(v, buf, MAX, first),
            Err(Violation { label, code }),
            "header {buf:02x?}"
        );
    }

    // ---- fixed header ---------------------------------------------------

    #[test]
    fn fixed_header_waits_for_its_bytes() {
        for v in BOTH {
            assert_eq!(fixed_header(v, &[], MAX, true), Ok(None));
            assert_eq!(fixed_header(v, &[0x30], MAX, false), Ok(None));
            assert_eq!(fixed_header(v, &[0x30, 0x80], MAX, false), Ok(None));
            assert_eq!(
                fixed_header(v, &[0x30, 0xFF, 0xFF, 0xFF], MAX, false),
                Ok(None)
            );
            let f = publish0(v, b"a/b");
            let h = fixed_header(v, &f[..2], MAX, false).unwrap().unwrap();
            assert_eq!(h.kind, Kind::Publish);
            assert_eq!(
                (h.header_len, h.remaining_len, h.frame_len),
                (2, f.len() - 2, f.len())
            );
        }
    }

    #[test]
    fn reserved_packet_type_0_is_malformed() {
        for v in BOTH {
            reject_header(v, &[0x00, 0x00], false, "reserved_packet_type", MALFORMED);
            reject(v, &[0x00, 0x00], "reserved_packet_type", MALFORMED);
        }
    }

    #[test]
    fn server_only_packet_types_are_protocol_errors() {
        for v in BOTH {
            for t in [2u8, 9, 11, 13] {
                let f = pkt(t << 4, &[0x00, 0x01, 0x00]);
                reject_header(v, &f, false, "server_only_packet", PROTOCOL_ERROR);
                reject(v, &f, "server_only_packet", PROTOCOL_ERROR);
            }
        }
    }

    #[test]
    fn rumqttd_v5_decoder_panics_on_connack_and_unsuback_with_a_body() {
        // Why the type check above exists: rumqttd's v5 decoder hits `unreachable!()`.
        for first in [0x20u8, 0xB0] {
            let f = pkt(first, &[0x00, 0x01, 0x00, 0x00]);
            let outcome = std::panic::catch_unwind(|| rumqttd_decode(L5, &f));
            assert!(outcome.is_err(), "rumqttd no longer panics: {outcome:?}");
            reject(L5, &f, "server_only_packet", PROTOCOL_ERROR);
        }
    }

    #[test]
    fn auth_is_a_protocol_error_in_v5_and_reserved_in_v4() {
        let f = pkt(0xF0, &[0x00, 0x00]);
        reject(L5, &f, "auth_unsupported", PROTOCOL_ERROR);
        reject_header(L5, &f, false, "auth_unsupported", PROTOCOL_ERROR);
        reject(L4, &f, "reserved_packet_type", MALFORMED);
    }

    #[test]
    fn mqtt_3_1_0_1_first_packet_must_be_connect() {
        for v in BOTH {
            let c = connect_min(v);
            let h = fixed_header(v, &c, MAX, true).unwrap().unwrap();
            assert_eq!((h.kind, h.frame_len), (Kind::Connect, c.len()));
            reject_header(
                v,
                &publish0(v, b"a"),
                true,
                "first_packet_not_connect",
                PROTOCOL_ERROR,
            );
            reject_header(
                v,
                &[0xC0, 0x00],
                true,
                "first_packet_not_connect",
                PROTOCOL_ERROR,
            );
        }
    }

    #[test]
    fn mqtt_3_1_0_2_second_connect_is_a_protocol_error() {
        for v in BOTH {
            reject_header(v, &connect_min(v), false, "second_connect", PROTOCOL_ERROR);
            assert!(fixed_header(v, &publish0(v, b"a"), MAX, false).is_ok());
        }
    }

    #[test]
    fn mqtt_2_1_3_1_reserved_flags() {
        for v in BOTH {
            for first in [
                0x11u8, 0x41, 0x51, 0x71, 0xC1, 0xE2, 0x60, 0x63, 0x80, 0x83, 0xA0, 0xAA,
            ] {
                let f = pkt(first, &[0x00, 0x01]);
                reject(v, &f, "reserved_flags", MALFORMED);
                reject_header(v, &f, first == 0x11, "reserved_flags", MALFORMED);
            }
            accept(v, &pkt(0x62, &[0x00, 0x01]));
            accept(v, &pkt(0x40, &[0x00, 0x01]));
        }
    }

    #[test]
    fn mqtt_3_3_1_4_publish_qos_3_is_malformed() {
        for v in BOTH {
            let f = publish(v, 0b0110, b"a", Some(1), &[], b"");
            reject(v, &f, "publish_qos3", MALFORMED);
            reject_header(v, &f, false, "publish_qos3", MALFORMED);
        }
    }

    #[test]
    fn mqtt_3_3_1_2_dup_with_qos_0_is_malformed() {
        for v in BOTH {
            reject(
                v,
                &publish(v, 0b1000, b"a", None, &[], b""),
                "publish_dup_qos0",
                MALFORMED,
            );
            accept(v, &publish(v, 0b1010, b"a", Some(1), &[], b""));
            accept(v, &publish(v, 0b1101, b"a", Some(1), &[], b""));
        }
    }

    #[test]
    fn remaining_length_is_at_most_four_bytes() {
        for v in BOTH {
            // A continuation bit on the 4th byte: refused without waiting for a 5th.
            reject_header(
                v,
                &[0x30, 0xFF, 0xFF, 0xFF, 0xFF],
                false,
                "remaining_length",
                MALFORMED,
            );
            reject_header(
                v,
                &[0x30, 0x80, 0x80, 0x80, 0x80],
                false,
                "remaining_length",
                MALFORMED,
            );
            reject(
                v,
                &[0x30, 0x80, 0x80, 0x80, 0x80, 0x00],
                "remaining_length",
                MALFORMED,
            );
            // The largest 4-byte value is a header (if the limit allows it).
            let h = fixed_header(v, &[0x30, 0xFF, 0xFF, 0xFF, 0x7F], usize::MAX, false);
            assert_eq!(h.unwrap().unwrap().remaining_len, 268_435_455);
        }
    }

    #[test]
    fn packet_too_large_is_refused_from_the_header() {
        for v in BOTH {
            let f = publish0(v, b"telemetry/x");
            assert!(fixed_header(v, &f[..2], f.len(), false).unwrap().is_some());
            assert_eq!(
                fixed_header(v, &f[..2], f.len() - 1, false),
                Err(Violation {
                    label: "packet_too_large",
                    code: PACKET_TOO_LARGE
                })
            );
            // Declared, not buffered: 268 MB announced in 5 bytes.
            assert_eq!(
                fixed_header(v, &[0x30, 0xFF, 0xFF, 0xFF, 0x7F], MAX, false)
                    .unwrap_err()
                    .code,
                PACKET_TOO_LARGE
            );
        }
    }

    #[test]
    fn frame_must_be_exactly_one_packet() {
        for v in BOTH {
            let f = publish0(v, b"a/b");
            reject(v, &[], "invalid_length", MALFORMED);
            reject(v, &[0x30], "invalid_length", MALFORMED);
            reject(v, &f[..f.len() - 1], "invalid_length", MALFORMED);
            let mut longer = f.clone();
            longer.push(0);
            reject(v, &longer, "invalid_length", MALFORMED);
        }
    }

    #[test]
    fn pingreq_has_no_body() {
        for v in BOTH {
            accept(v, &[0xC0, 0x00]);
            reject(v, &[0xC0, 0x01, 0x00], "invalid_length", MALFORMED);
            reject_header(v, &[0xC0, 0x01], false, "invalid_length", MALFORMED);
        }
    }

    #[test]
    fn disconnect_v4_has_no_body() {
        accept(L4, &[0xE0, 0x00]);
        reject(L4, &[0xE0, 0x01, 0x00], "invalid_length", MALFORMED);
        reject_header(L4, &[0xE0, 0x01], false, "invalid_length", MALFORMED);
    }

    #[test]
    fn ack_lengths() {
        for first in [0x40u8, 0x50, 0x62, 0x70] {
            // 3.1.1: exactly 2.
            accept(L4, &pkt(first, &[0x00, 0x07]));
            reject(L4, &pkt(first, &[0x00]), "invalid_length", MALFORMED);
            reject(
                L4,
                &pkt(first, &[0x00, 0x07, 0x00]),
                "invalid_length",
                MALFORMED,
            );
            reject_header(L4, &[first, 0x03], false, "invalid_length", MALFORMED);
            // 5.0: 2 or more.
            accept(L5, &pkt(first, &[0x00, 0x07]));
            accept(L5, &pkt(first, &[0x00, 0x07, 0x00]));
            accept(L5, &pkt(first, &[0x00, 0x07, 0x00, 0x00]));
            reject(L5, &pkt(first, &[0x00]), "invalid_length", MALFORMED);
            reject(L5, &pkt(first, &[]), "invalid_length", MALFORMED);
        }
    }

    // ---- CONNECT --------------------------------------------------------

    #[test]
    fn connect_minimal_is_accepted() {
        for v in BOTH {
            accept(v, &connect_min(v));
            // An empty client id is a valid UTF-8 string (policy is elsewhere).
            accept(v, &connect(v, 0x02, &[], &s(b"")));
        }
    }

    #[test]
    fn mqtt_3_1_2_1_protocol_name_is_mqtt() {
        for v in BOTH {
            let mut f = connect_min(v);
            f[5] = b'X';
            reject(v, &f, "protocol_name", MALFORMED);
            let body = cat(&[&s(b"MQIsdp"), &[3, 0x02, 0, 60], &s(b"gw-1")]);
            reject(v, &pkt(0x10, &body), "protocol_name", MALFORMED);
        }
    }

    #[test]
    fn mqtt_3_1_2_2_protocol_level_matches_the_session() {
        reject(
            L4,
            &connect_min(L5),
            "protocol_level",
            UNSUPPORTED_PROTOCOL_VERSION,
        );
        reject(
            L5,
            &connect_min(L4),
            "protocol_level",
            UNSUPPORTED_PROTOCOL_VERSION,
        );
        let mut f = connect_min(L4);
        f[8] = 3;
        reject(L4, &f, "protocol_level", UNSUPPORTED_PROTOCOL_VERSION);
    }

    #[test]
    fn mqtt_3_1_2_3_reserved_connect_flag() {
        for v in BOTH {
            reject(
                v,
                &connect(v, 0x03, &[], &s(b"gw-1")),
                "connect_reserved_flag",
                MALFORMED,
            );
        }
    }

    #[test]
    fn mqtt_3_1_2_11_will_qos_without_will() {
        for v in BOTH {
            reject(
                v,
                &connect(v, 0x02 | 0x08, &[], &s(b"gw-1")),
                "will_flags",
                MALFORMED,
            );
            reject(
                v,
                &connect(v, 0x02 | 0x10, &[], &s(b"gw-1")),
                "will_flags",
                MALFORMED,
            );
        }
    }

    #[test]
    fn mqtt_3_1_2_13_will_retain_without_will() {
        for v in BOTH {
            reject(
                v,
                &connect(v, 0x02 | 0x20, &[], &s(b"gw-1")),
                "will_flags",
                MALFORMED,
            );
        }
    }

    #[test]
    fn mqtt_3_1_2_12_will_qos_3() {
        for v in BOTH {
            let mut f = connect_will(v, &[], b"gw/1/status");
            accept(v, &f);
            f[9] |= 0x18;
            reject(v, &f, "will_qos3", MALFORMED);
            // QoS 2 with retain is fine.
            f[9] = 0x02 | 0x04 | 0x10 | 0x20;
            accept(v, &f);
        }
    }

    #[test]
    fn mqtt_3_1_2_22_password_without_username() {
        let payload = cat(&[&s(b"gw-1"), &s(b"secret")]);
        reject(
            L4,
            &connect(L4, 0x42, &[], &payload),
            "password_without_username",
            MALFORMED,
        );
        // 5.0 allows a password alone.
        accept(L5, &connect(L5, 0x42, &[], &payload));
        let payload = cat(&[&s(b"gw-1"), &s(b"user"), &s(b"secret")]);
        for v in BOTH {
            accept(v, &connect(v, 0xC2, &[], &payload));
        }
    }

    #[test]
    fn connect_password_is_binary_data() {
        // 3.1.3.6: binary, so not UTF-8 is valid; rumqttd refuses it (a refusal, not a panic).
        let payload = cat(&[&s(b"gw-1"), &s(b"user"), &s(&[0xFF, 0x00])]);
        for v in BOTH {
            assert!(accept_only(v, &connect(v, 0xC2, &[], &payload)).is_err());
        }
    }

    #[test]
    fn mqtt_1_5_4_1_strings_are_well_formed_utf8() {
        for v in BOTH {
            reject(
                v,
                &connect(v, 0x02, &[], &s(&[0xC3, 0x28])),
                "invalid_utf8",
                MALFORMED,
            );
            // An encoded surrogate (U+D800).
            reject(
                v,
                &connect(v, 0x02, &[], &s(&[0xED, 0xA0, 0x80])),
                "invalid_utf8",
                MALFORMED,
            );
            let payload = cat(&[&s(b"gw-1"), &s(&[0xFF])]);
            reject(
                v,
                &connect(v, 0x82, &[], &payload),
                "invalid_utf8",
                MALFORMED,
            );
            accept(v, &connect(v, 0x02, &[], &s("gw-é".as_bytes())));
        }
    }

    #[test]
    fn mqtt_1_5_4_2_strings_have_no_nul() {
        for v in BOTH {
            reject(
                v,
                &connect(v, 0x02, &[], &s(b"gw\0")),
                "utf8_nul",
                MALFORMED,
            );
        }
    }

    #[test]
    fn connect_fields_match_the_flags_exactly() {
        for v in BOTH {
            let mut f = connect_min(v);
            f.push(0);
            f[1] += 1;
            reject(v, &f, "trailing_bytes", MALFORMED);
            // User name flag without a user name.
            reject(
                v,
                &connect(v, 0x82, &[], &s(b"gw-1")),
                "truncated",
                MALFORMED,
            );
            // Client id length beyond the packet.
            reject(
                v,
                &connect(v, 0x02, &[], &[0x00, 0x09, b'g']),
                "truncated",
                MALFORMED,
            );
            // Nothing after the protocol name.
            reject(v, &pkt(0x10, &s(b"MQTT")), "truncated", MALFORMED);
        }
    }

    #[test]
    fn connect_v5_properties_allowed() {
        let p = cat(&[
            &[SESSION_EXPIRY_INTERVAL, 0, 0, 0x0E, 0x10],
            &[RECEIVE_MAXIMUM, 0, 10],
            &[MAXIMUM_PACKET_SIZE, 0, 1, 0, 0],
            &[TOPIC_ALIAS_MAXIMUM, 0, 5],
            &[REQUEST_RESPONSE_INFORMATION, 1],
            &[REQUEST_PROBLEM_INFORMATION, 0],
            &user_prop(b"site", b"north"),
            &user_prop(b"site", b"south"),
            &sp(AUTHENTICATION_METHOD, b"SCRAM-SHA-1"),
            &sp(AUTHENTICATION_DATA, &[0, 1, 2]),
        ]);
        accept(L5, &connect(L5, 0x02, &p, &s(b"gw-1")));
    }

    #[test]
    fn connect_v5_property_not_allowed_is_malformed() {
        for p in [
            vec![TOPIC_ALIAS, 0, 1],
            vec![PAYLOAD_FORMAT_INDICATOR, 0],
            vec![SERVER_REFERENCE, 0, 0],
            vec![0x7F, 0],
            vec![0x80, 0x01, 0],
        ] {
            reject(
                L5,
                &connect(L5, 0x02, &p, &s(b"gw-1")),
                "property_not_allowed",
                MALFORMED,
            );
        }
    }

    #[test]
    fn connect_v5_duplicate_property_is_a_protocol_error() {
        let p = cat(&[
            &[SESSION_EXPIRY_INTERVAL, 0, 0, 0, 1],
            &[SESSION_EXPIRY_INTERVAL, 0, 0, 0, 2],
        ]);
        reject(
            L5,
            &connect(L5, 0x02, &p, &s(b"gw-1")),
            "property_duplicate",
            PROTOCOL_ERROR,
        );
        let p = cat(&[
            &sp(AUTHENTICATION_METHOD, b"a"),
            &sp(AUTHENTICATION_METHOD, b"b"),
        ]);
        reject(
            L5,
            &connect(L5, 0x02, &p, &s(b"gw-1")),
            "property_duplicate",
            PROTOCOL_ERROR,
        );
    }

    #[test]
    fn connect_v5_receive_maximum_zero() {
        reject(
            L5,
            &connect(L5, 0x02, &[RECEIVE_MAXIMUM, 0, 0], &s(b"gw")),
            "property_value",
            PROTOCOL_ERROR,
        );
        accept(L5, &connect(L5, 0x02, &[RECEIVE_MAXIMUM, 0, 1], &s(b"gw")));
    }

    #[test]
    fn connect_v5_maximum_packet_size_zero() {
        let p = [MAXIMUM_PACKET_SIZE, 0, 0, 0, 0];
        reject(
            L5,
            &connect(L5, 0x02, &p, &s(b"gw")),
            "property_value",
            PROTOCOL_ERROR,
        );
        accept(
            L5,
            &connect(L5, 0x02, &[MAXIMUM_PACKET_SIZE, 0, 0, 0, 1], &s(b"gw")),
        );
    }

    #[test]
    fn connect_v5_request_information_is_0_or_1() {
        for id in [REQUEST_RESPONSE_INFORMATION, REQUEST_PROBLEM_INFORMATION] {
            reject(
                L5,
                &connect(L5, 0x02, &[id, 2], &s(b"gw")),
                "property_value",
                PROTOCOL_ERROR,
            );
            accept(L5, &connect(L5, 0x02, &[id, 1], &s(b"gw")));
        }
    }

    #[test]
    fn connect_v5_authentication_data_without_method() {
        let data = sp(AUTHENTICATION_DATA, b"x");
        reject(
            L5,
            &connect(L5, 0x02, &data, &s(b"gw")),
            "auth_data_without_method",
            PROTOCOL_ERROR,
        );
        let both = cat(&[&data, &sp(AUTHENTICATION_METHOD, b"m")]);
        accept(L5, &connect(L5, 0x02, &both, &s(b"gw")));
    }

    #[test]
    fn v5_property_block_is_bounded_and_well_formed() {
        // Property length beyond the packet.
        let body = cat(&[&s(b"MQTT"), &[5, 0x02, 0, 60, 0x20], &s(b"gw")]);
        reject(L5, &pkt(0x10, &body), "truncated", MALFORMED);
        // A value running past the end of its property block (but not of the packet).
        let body = cat(&[
            &s(b"MQTT"),
            &[5, 0x02, 0, 60, 3, SESSION_EXPIRY_INTERVAL, 0, 0],
            &s(b"gw"),
        ]);
        reject(L5, &pkt(0x10, &body), "truncated", MALFORMED);
        // A 5-byte property length.
        let body = cat(&[
            &s(b"MQTT"),
            &[5, 0x02, 0, 60, 0x80, 0x80, 0x80, 0x80, 0x00],
            &s(b"gw"),
        ]);
        reject(L5, &pkt(0x10, &body), "invalid_varint", MALFORMED);
        // No property length at all.
        reject(
            L5,
            &pkt(0x10, &cat(&[&s(b"MQTT"), &[5, 0x02, 0, 60]])),
            "truncated",
            MALFORMED,
        );
        // Invalid UTF-8 / NUL in string properties.
        let p = user_prop(b"k", &[0xFF]);
        reject(
            L5,
            &connect(L5, 0x02, &p, &s(b"gw")),
            "invalid_utf8",
            MALFORMED,
        );
        let p = user_prop(b"k\0", b"v");
        reject(L5, &connect(L5, 0x02, &p, &s(b"gw")), "utf8_nul", MALFORMED);
        let p = sp(AUTHENTICATION_METHOD, &[0xC0, 0x80]);
        reject(
            L5,
            &connect(L5, 0x02, &p, &s(b"gw")),
            "invalid_utf8",
            MALFORMED,
        );
    }

    #[test]
    fn connect_v5_will_properties() {
        let all = cat(&[
            &[WILL_DELAY_INTERVAL, 0, 0, 0, 30],
            &[PAYLOAD_FORMAT_INDICATOR, 1],
            &[MESSAGE_EXPIRY_INTERVAL, 0, 0, 1, 0],
            &sp(CONTENT_TYPE, b"application/json"),
            &sp(RESPONSE_TOPIC_ID, b"gw/1/reply"),
            &sp(CORRELATION_DATA, &[0xFF, 0x00]),
            &user_prop(b"a", b"b"),
            &user_prop(b"a", b"c"),
        ]);
        accept(L5, &connect_will(L5, &all, b"gw/1/status"));
        let dup = cat(&[
            &[WILL_DELAY_INTERVAL, 0, 0, 0, 30],
            &[WILL_DELAY_INTERVAL, 0, 0, 0, 30],
        ]);
        reject(
            L5,
            &connect_will(L5, &dup, b"gw/1"),
            "property_duplicate",
            PROTOCOL_ERROR,
        );
        reject(
            L5,
            &connect_will(L5, &[PAYLOAD_FORMAT_INDICATOR, 2], b"gw/1"),
            "property_value",
            PROTOCOL_ERROR,
        );
        for bad in [&b"gw/+/reply"[..], b"gw/#", b""] {
            let p = sp(RESPONSE_TOPIC_ID, bad);
            reject(
                L5,
                &connect_will(L5, &p, b"gw/1"),
                "response_topic",
                PROTOCOL_ERROR,
            );
        }
        for not_allowed in [
            vec![TOPIC_ALIAS, 0, 1],
            vec![SESSION_EXPIRY_INTERVAL, 0, 0, 0, 1],
        ] {
            reject(
                L5,
                &connect_will(L5, &not_allowed, b"gw/1"),
                "property_not_allowed",
                MALFORMED,
            );
        }
    }

    #[test]
    fn mqtt_3_1_3_11_will_topic_is_a_valid_topic_name() {
        for v in BOTH {
            accept(v, &connect_will(v, &[], "gw/é".as_bytes()));
            reject(
                v,
                &connect_will(v, &[], b""),
                "topic_empty",
                TOPIC_NAME_INVALID,
            );
            reject(
                v,
                &connect_will(v, &[], b"gw/+"),
                "topic_wildcard",
                TOPIC_NAME_INVALID,
            );
            reject(
                v,
                &connect_will(v, &[], b"gw/#"),
                "topic_wildcard",
                TOPIC_NAME_INVALID,
            );
            reject(
                v,
                &connect_will(v, &[], b"gw\0"),
                "topic_nul",
                TOPIC_NAME_INVALID,
            );
            reject(
                v,
                &connect_will(v, &[], &[0xFF]),
                "topic_not_utf8",
                TOPIC_NAME_INVALID,
            );
            reject(
                v,
                &connect_will(v, &[], "é/x".as_bytes()),
                "topic_unroutable",
                TOPIC_NAME_INVALID,
            );
        }
    }

    // ---- PUBLISH --------------------------------------------------------

    #[test]
    fn publish_all_qos_are_accepted() {
        for v in BOTH {
            accept(v, &publish0(v, b"telemetry/gw-1/data"));
            accept(v, &publish(v, 0b0011, b"a/b", Some(1), &[], b"x"));
            accept(v, &publish(v, 0b0100, b"a/b", Some(65535), &[], b""));
            // Empty levels are legal MQTT.
            accept(v, &publish0(v, b"/a//b/"));
        }
    }

    #[test]
    fn mqtt_3_3_2_2_topic_name_has_no_wildcards() {
        for v in BOTH {
            for t in [&b"a/+"[..], b"a/#", b"+", b"#", b"a+b"] {
                reject(v, &publish0(v, t), "topic_wildcard", TOPIC_NAME_INVALID);
            }
        }
    }

    #[test]
    fn mqtt_4_7_3_2_topic_name_has_no_nul() {
        for v in BOTH {
            reject(v, &publish0(v, b"a\0b"), "topic_nul", TOPIC_NAME_INVALID);
        }
    }

    #[test]
    fn mqtt_3_3_2_1_topic_name_is_utf8() {
        for v in BOTH {
            reject(
                v,
                &publish0(v, &[b'a', 0xFF]),
                "topic_not_utf8",
                TOPIC_NAME_INVALID,
            );
            reject(
                v,
                &publish0(v, &[b'a', 0xED, 0xA0, 0x80]),
                "topic_not_utf8",
                TOPIC_NAME_INVALID,
            );
        }
    }

    #[test]
    fn mqtt_4_7_3_1_empty_topic_name() {
        reject(L4, &publish0(L4, b""), "topic_empty", TOPIC_NAME_INVALID);
        reject(L5, &publish0(L5, b""), "topic_empty", PROTOCOL_ERROR);
        // 5.0: an empty topic with a Topic Alias uses the alias.
        accept(L5, &publish(L5, 0, b"", None, &[TOPIC_ALIAS, 0, 3], b"x"));
    }

    #[test]
    fn topic_starting_with_non_ascii_is_unroutable() {
        for v in BOTH {
            for t in ["é/x", "\u{FEFF}x", "€"] {
                reject(
                    v,
                    &publish0(v, t.as_bytes()),
                    "topic_unroutable",
                    TOPIC_NAME_INVALID,
                );
            }
            accept(v, &publish0(v, "x/é".as_bytes()));
        }
        // Why: rumqttd's router matcher slices the first byte of the topic.
        let outcome = std::panic::catch_unwind(|| rumqttd::protocol::matches("é/x", "#"));
        assert!(outcome.is_err(), "rumqttd's matcher no longer panics");
    }

    #[test]
    fn mqtt_2_2_1_3_publish_packet_id_is_not_zero() {
        for v in BOTH {
            for qos in [0b0010u8, 0b0100] {
                reject(
                    v,
                    &publish(v, qos, b"a", Some(0), &[], b""),
                    "packet_id_zero",
                    PROTOCOL_ERROR,
                );
            }
            // QoS 1 without room for a packet id.
            reject(v, &pkt(0x32, &s(b"a")), "truncated", MALFORMED);
            // Topic length beyond the packet.
            reject(v, &pkt(0x30, &[0x00, 0x05, b'a']), "truncated", MALFORMED);
            reject(v, &pkt(0x30, &[0x00]), "truncated", MALFORMED);
        }
    }

    #[test]
    fn publish_v5_properties_allowed() {
        let all = cat(&[
            &[PAYLOAD_FORMAT_INDICATOR, 1],
            &[MESSAGE_EXPIRY_INTERVAL, 0, 0, 0, 60],
            &[TOPIC_ALIAS, 0, 2],
            &sp(RESPONSE_TOPIC_ID, b"gw/1/reply"),
            &sp(CORRELATION_DATA, &[1, 2, 3]),
            &user_prop(b"k", b"v"),
            &user_prop(b"k", b"v"),
            &sp(CONTENT_TYPE, b"text/plain"),
        ]);
        accept(L5, &publish_props(&all));
        for p in [
            vec![SESSION_EXPIRY_INTERVAL, 0, 0, 0, 1],
            vec![REASON_STRING, 0, 0],
            vec![0x00],
        ] {
            reject(L5, &publish_props(&p), "property_not_allowed", MALFORMED);
        }
    }

    #[test]
    fn publish_v5_property_length_is_mandatory() {
        // rumqttd decodes this as InsufficientBytes after consuming the frame
        // (the session would silently drop it); here it is truncated.
        let f = pkt(0x30, &s(b"a/b"));
        reject(L5, &f, "truncated", MALFORMED);
        assert!(matches!(
            rumqttd_decode(L5, &f),
            Err(rp::Error::InsufficientBytes(_))
        ));
        // With a payload, its first byte is read as the property length.
        reject(
            L5,
            &pkt(0x30, &cat(&[&s(b"a/b"), b"hello"])),
            "truncated",
            MALFORMED,
        );
    }

    #[test]
    fn mqtt_3_3_2_8_topic_alias_zero() {
        reject(
            L5,
            &publish_props(&[TOPIC_ALIAS, 0, 0]),
            "topic_alias_zero",
            TOPIC_ALIAS_INVALID,
        );
    }

    #[test]
    fn mqtt_3_3_4_6_no_subscription_identifier_from_client() {
        reject(
            L5,
            &publish_props(&[SUBSCRIPTION_IDENTIFIER, 1]),
            "subscription_identifier_from_client",
            PROTOCOL_ERROR,
        );
    }

    #[test]
    fn publish_v5_duplicate_property() {
        let p = cat(&[&[TOPIC_ALIAS, 0, 1], &[TOPIC_ALIAS, 0, 2]]);
        reject(L5, &publish_props(&p), "property_duplicate", PROTOCOL_ERROR);
        let p = cat(&[&sp(CONTENT_TYPE, b"a"), &sp(CONTENT_TYPE, b"a")]);
        reject(L5, &publish_props(&p), "property_duplicate", PROTOCOL_ERROR);
    }

    #[test]
    fn publish_v5_payload_format_indicator_is_0_or_1() {
        reject(
            L5,
            &publish_props(&[PAYLOAD_FORMAT_INDICATOR, 2]),
            "property_value",
            PROTOCOL_ERROR,
        );
        // The payload is not checked, even when announced as UTF-8.
        accept(
            L5,
            &publish(
                L5,
                0,
                b"a",
                None,
                &[PAYLOAD_FORMAT_INDICATOR, 1],
                &[0xFF, 0x00],
            ),
        );
    }

    #[test]
    fn mqtt_3_3_2_14_response_topic_is_a_topic_name() {
        for bad in [&b"r/+"[..], b"r/#", b""] {
            reject(
                L5,
                &publish_props(&sp(RESPONSE_TOPIC_ID, bad)),
                "response_topic",
                PROTOCOL_ERROR,
            );
        }
        reject(
            L5,
            &publish_props(&sp(RESPONSE_TOPIC_ID, &[0xFF])),
            "invalid_utf8",
            MALFORMED,
        );
    }

    // ---- SUBSCRIBE ------------------------------------------------------

    #[test]
    fn subscribe_is_accepted() {
        for v in BOTH {
            let f = subscribe(
                v,
                1,
                &[],
                &[
                    (b"cmd/gw-1/#", 1),
                    (b"+/status", 2),
                    (b"#", 0),
                    (b"$SYS/+", 0),
                ],
            );
            accept(v, &f);
        }
        // 5.0 options: No Local, Retain As Published, Retain Handling 2, QoS 2.
        accept(L5, &subscribe(L5, 1, &[], &[(b"a/b", 0b0010_1110)]));
    }

    #[test]
    fn mqtt_2_2_1_3_subscribe_packet_id_is_not_zero() {
        for v in BOTH {
            reject(
                v,
                &subscribe(v, 0, &[], &[(b"a", 0)]),
                "packet_id_zero",
                PROTOCOL_ERROR,
            );
        }
    }

    #[test]
    fn mqtt_3_8_3_2_subscribe_has_at_least_one_filter() {
        reject(
            L5,
            &subscribe(L5, 1, &[], &[]),
            "no_filters",
            PROTOCOL_ERROR,
        );
        // 3.1.1 MQTT-3.8.3-3.
        reject(L4, &subscribe(L4, 1, &[], &[]), "no_filters", MALFORMED);
    }

    #[test]
    fn mqtt_4_7_1_wildcards_in_filters() {
        for v in BOTH {
            for f in [
                &b"a/#/b"[..],
                b"a#",
                b"a/b#",
                b"a+",
                b"a/+b/c",
                b"##",
                b"++",
            ] {
                reject(
                    v,
                    &subscribe(v, 1, &[], &[(f, 0)]),
                    "filter_wildcard",
                    TOPIC_FILTER_INVALID,
                );
            }
            reject(
                v,
                &subscribe(v, 1, &[], &[(b"", 0)]),
                "filter_empty",
                TOPIC_FILTER_INVALID,
            );
            reject(
                v,
                &subscribe(v, 1, &[], &[(b"a\0", 0)]),
                "filter_nul",
                TOPIC_FILTER_INVALID,
            );
            reject(
                v,
                &subscribe(v, 1, &[], &[(&[0xFF], 0)]),
                "filter_not_utf8",
                TOPIC_FILTER_INVALID,
            );
            // A bad filter after a good one.
            reject(
                v,
                &subscribe(v, 1, &[], &[(b"a", 0), (b"b#", 0)]),
                "filter_wildcard",
                TOPIC_FILTER_INVALID,
            );
        }
    }

    #[test]
    fn shared_subscriptions_are_mqtt5s() {
        let f = subscribe(L4, 1, &[], &[(b"$share/group/a/#", 0)]);
        reject(
            L4,
            &f,
            "shared_subscription",
            SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
        );
        accept(L5, &subscribe(L5, 1, &[], &[(b"$share/group/a/#", 1)]));
        for v in BOTH {
            accept(v, &subscribe(v, 1, &[], &[(b"$shared", 0)]));
        }
    }

    #[test]
    fn mqtt_4_8_2_1_share_names() {
        for bad in [&b"$share//a"[..], b"$share/g", b"$share/g/"] {
            reject(
                L5,
                &subscribe(L5, 1, &[], &[(bad, 0)]),
                "share_name",
                TOPIC_FILTER_INVALID,
            );
        }
    }

    #[test]
    fn mqtt_4_8_2_2_wildcards_in_a_share_name() {
        // Refused as any misplaced wildcard is (same reason code).
        for bad in [&b"$share/g+/a"[..], b"$share/#/a"] {
            reject(
                L5,
                &subscribe(L5, 1, &[], &[(bad, 0)]),
                "filter_wildcard",
                TOPIC_FILTER_INVALID,
            );
        }
    }

    #[test]
    fn mqtt_3_8_3_4_no_local_on_a_shared_subscription() {
        reject(
            L5,
            &subscribe(L5, 1, &[], &[(b"$share/g/a", 0x04)]),
            "shared_no_local",
            PROTOCOL_ERROR,
        );
    }

    #[test]
    fn mqtt_3_8_3_4_v4_subscription_options() {
        for options in [0x04u8, 0x08, 0x10, 0x80] {
            reject(
                L4,
                &subscribe(L4, 1, &[], &[(b"a", options)]),
                "subscription_options",
                MALFORMED,
            );
        }
        reject(
            L4,
            &subscribe(L4, 1, &[], &[(b"a", 3)]),
            "subscription_qos3",
            MALFORMED,
        );
    }

    #[test]
    fn mqtt_3_8_3_5_v5_subscription_options() {
        for options in [0x40u8, 0x80] {
            reject(
                L5,
                &subscribe(L5, 1, &[], &[(b"a", options)]),
                "subscription_options",
                MALFORMED,
            );
        }
        reject(
            L5,
            &subscribe(L5, 1, &[], &[(b"a", 3)]),
            "subscription_qos3",
            MALFORMED,
        );
        reject(
            L5,
            &subscribe(L5, 1, &[], &[(b"a", 0x30)]),
            "retain_handling3",
            PROTOCOL_ERROR,
        );
    }

    #[test]
    fn subscribe_entries_are_complete() {
        for v in BOTH {
            let mut f = subscribe(v, 1, &[], &[(b"a", 0)]);
            f.pop();
            f[1] -= 1;
            reject(v, &f, "truncated", MALFORMED);
        }
    }

    #[test]
    fn subscribe_v5_properties() {
        let max_id = [SUBSCRIPTION_IDENTIFIER, 0xFF, 0xFF, 0xFF, 0x7F];
        accept(
            L5,
            &subscribe(
                L5,
                1,
                &cat(&[&max_id, &user_prop(b"k", b"v")]),
                &[(b"a", 0)],
            ),
        );
        reject(
            L5,
            &subscribe(L5, 1, &[SUBSCRIPTION_IDENTIFIER, 0], &[(b"a", 0)]),
            "property_value",
            PROTOCOL_ERROR,
        );
        let five = [SUBSCRIPTION_IDENTIFIER, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        reject(
            L5,
            &subscribe(L5, 1, &five, &[(b"a", 0)]),
            "invalid_varint",
            MALFORMED,
        );
        let twice = [SUBSCRIPTION_IDENTIFIER, 1, SUBSCRIPTION_IDENTIFIER, 2];
        reject(
            L5,
            &subscribe(L5, 1, &twice, &[(b"a", 0)]),
            "property_duplicate",
            PROTOCOL_ERROR,
        );
        reject(
            L5,
            &subscribe(L5, 1, &sp(REASON_STRING, b"r"), &[(b"a", 0)]),
            "property_not_allowed",
            MALFORMED,
        );
    }

    // ---- UNSUBSCRIBE ----------------------------------------------------

    #[test]
    fn unsubscribe_is_accepted() {
        for v in BOTH {
            accept(v, &unsubscribe(v, 1, &[], &[b"a/+", b"#", b"$share/g/a"]));
        }
        accept(L5, &unsubscribe(L5, 1, &user_prop(b"k", b"v"), &[b"a"]));
    }

    #[test]
    fn mqtt_2_2_1_3_unsubscribe_packet_id_is_not_zero() {
        for v in BOTH {
            reject(
                v,
                &unsubscribe(v, 0, &[], &[b"a"]),
                "packet_id_zero",
                PROTOCOL_ERROR,
            );
        }
    }

    #[test]
    fn mqtt_3_10_3_2_unsubscribe_has_at_least_one_filter() {
        reject(
            L5,
            &unsubscribe(L5, 1, &[], &[]),
            "no_filters",
            PROTOCOL_ERROR,
        );
        reject(L4, &unsubscribe(L4, 1, &[], &[]), "no_filters", MALFORMED);
    }

    #[test]
    fn mqtt_3_10_3_1_unsubscribe_filters_are_valid() {
        for v in BOTH {
            reject(
                v,
                &unsubscribe(v, 1, &[], &[b"a/#/b"]),
                "filter_wildcard",
                TOPIC_FILTER_INVALID,
            );
            reject(
                v,
                &unsubscribe(v, 1, &[], &[b""]),
                "filter_empty",
                TOPIC_FILTER_INVALID,
            );
            reject(
                v,
                &unsubscribe(v, 1, &[], &[&[0xC3]]),
                "filter_not_utf8",
                TOPIC_FILTER_INVALID,
            );
            let mut f = unsubscribe(v, 1, &[], &[b"abc"]);
            f.pop();
            f[1] -= 1;
            reject(v, &f, "truncated", MALFORMED);
        }
        for p in [vec![SUBSCRIPTION_IDENTIFIER, 1], sp(REASON_STRING, b"r")] {
            reject(
                L5,
                &unsubscribe(L5, 1, &p, &[b"a"]),
                "property_not_allowed",
                MALFORMED,
            );
        }
    }

    // ---- PUBACK / PUBREC / PUBREL / PUBCOMP -----------------------------

    #[test]
    fn mqtt_2_2_1_3_ack_packet_id_is_not_zero() {
        for v in BOTH {
            for first in [0x40u8, 0x50, 0x62, 0x70] {
                reject(v, &pkt(first, &[0, 0]), "packet_id_zero", PROTOCOL_ERROR);
            }
        }
    }

    #[test]
    fn ack_v5_reason_codes() {
        for first in [0x40u8, 0x50] {
            for code in [0x00u8, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
                accept(L5, &pkt(first, &[0, 1, code]));
            }
            for code in [0x01u8, 0x92, 0xFF] {
                reject(L5, &pkt(first, &[0, 1, code]), "reason_code", MALFORMED);
            }
        }
        for first in [0x62u8, 0x70] {
            accept(L5, &pkt(first, &[0, 1, 0x00]));
            accept(L5, &pkt(first, &[0, 1, 0x92]));
            reject(L5, &pkt(first, &[0, 1, 0x10]), "reason_code", MALFORMED);
        }
    }

    #[test]
    fn ack_v5_properties() {
        for first in [0x40u8, 0x50, 0x62, 0x70] {
            let p = cat(&[&sp(REASON_STRING, b"ok"), &user_prop(b"k", b"v")]);
            accept(L5, &pkt(first, &cat(&[&[0, 1, 0], &props(&p)])));
            let dup = cat(&[&sp(REASON_STRING, b"a"), &sp(REASON_STRING, b"b")]);
            reject(
                L5,
                &pkt(first, &cat(&[&[0, 1, 0], &props(&dup)])),
                "property_duplicate",
                PROTOCOL_ERROR,
            );
            let other = [SESSION_EXPIRY_INTERVAL, 0, 0, 0, 0];
            reject(
                L5,
                &pkt(first, &cat(&[&[0, 1, 0], &props(&other)])),
                "property_not_allowed",
                MALFORMED,
            );
            reject(
                L5,
                &pkt(first, &[0, 1, 0, 0, 0]),
                "trailing_bytes",
                MALFORMED,
            );
            reject(
                L5,
                &pkt(first, &[0, 1, 0, 5, REASON_STRING]),
                "truncated",
                MALFORMED,
            );
            let bad = sp(REASON_STRING, &[0xFF]);
            reject(
                L5,
                &pkt(first, &cat(&[&[0, 1, 0], &props(&bad)])),
                "invalid_utf8",
                MALFORMED,
            );
        }
    }

    // ---- DISCONNECT -----------------------------------------------------

    #[test]
    fn disconnect_v5_reason_codes() {
        for code in [
            0x00u8, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        ] {
            accept(L5, &pkt(0xE0, &[code, 0]));
        }
        // Server-only and undefined codes.
        for code in [0x87u8, 0x8B, 0x8E, 0x9C, 0xA2, 0x01, 0xFF] {
            reject(L5, &pkt(0xE0, &[code, 0]), "reason_code", MALFORMED);
        }
        accept(L5, &[0xE0, 0x00]);
    }

    #[test]
    fn disconnect_v5_reason_code_alone_is_valid() {
        // 3.14.2.2: remaining length 1 = reason code, no properties. rumqttd
        // answers InsufficientBytes for it (after consuming the frame).
        let f = pkt(0xE0, &[0x04]);
        assert!(matches!(
            accept_only(L5, &f),
            Err(rp::Error::InsufficientBytes(_))
        ));
    }

    #[test]
    fn disconnect_v5_properties() {
        let p = cat(&[
            &[SESSION_EXPIRY_INTERVAL, 0, 0, 0, 0],
            &sp(REASON_STRING, b"bye"),
            &user_prop(b"k", b"v"),
        ]);
        accept(L5, &pkt(0xE0, &cat(&[&[0x00], &props(&p)])));
        let sr = sp(SERVER_REFERENCE, b"other:8883");
        reject(
            L5,
            &pkt(0xE0, &cat(&[&[0x00], &props(&sr)])),
            "server_reference_from_client",
            PROTOCOL_ERROR,
        );
        let other = [TOPIC_ALIAS, 0, 1];
        reject(
            L5,
            &pkt(0xE0, &cat(&[&[0x00], &props(&other)])),
            "property_not_allowed",
            MALFORMED,
        );
        reject(
            L5,
            &pkt(0xE0, &[0x00, 0x00, 0x00]),
            "trailing_bytes",
            MALFORMED,
        );
    }

    #[test]
    fn every_label_is_listed_once() {
        let mut labels = LABELS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), LABELS.len());
        assert!(LABELS.contains(&"topic_unroutable"));
    }

    // ---- rumqttd's own encoder, mutations, random streams -----------------

    fn users() -> Vec<(String, String)> {
        vec![
            ("site".into(), "north".into()),
            ("site".into(), "south".into()),
        ]
    }

    /// A PUBLISH with QoS and packet id (rumqttd keeps those fields private;
    /// its `deserialize` is the public way in).
    fn rumqttd_publish(header: u8, pkid: u16, topic: &str, payload: &[u8]) -> rp::Publish {
        let raw = cat(&[
            &[header],
            &pkid.to_be_bytes(),
            &s(topic.as_bytes()),
            payload,
        ]);
        rp::Publish::deserialize(Bytes::from(raw))
    }

    fn filter(path: &str, qos: QoS, rule: rp::RetainForwardRule, flags: bool) -> rp::Filter {
        rp::Filter {
            path: path.into(),
            qos,
            nolocal: flags,
            preserve_retain: flags,
            retain_forward_rule: rule,
        }
    }

    fn only_v5<T>(v5: bool, x: T) -> Option<T> {
        v5.then_some(x)
    }

    fn corpus_packets(v: Version) -> Vec<Packet> {
        let v5 = v == L5;
        let connect = rp::Connect {
            keep_alive: 30,
            client_id: "gw-1".into(),
            clean_session: true,
        };
        let will = rp::LastWill {
            topic: Bytes::from_static(b"gw/1/status"),
            message: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        let login = rp::Login {
            username: "user".into(),
            password: "secret".into(),
        };
        let connect_props = rp::ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(10),
            max_packet_size: Some(65_536),
            topic_alias_max: Some(5),
            request_response_info: Some(1),
            request_problem_info: Some(0),
            user_properties: users(),
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"\x00\x01")),
        };
        let will_props = rp::LastWillProperties {
            delay_interval: Some(5),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("gw/1/reply".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: users(),
        };
        let publish_props = rp::PublishProperties {
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            response_topic: Some("gw/1/reply".into()),
            correlation_data: Some(Bytes::from_static(b"id-7")),
            user_properties: users(),
            subscription_identifiers: Vec::new(),
            content_type: Some("application/json".into()),
        };
        let reason_string = Some("fine".to_string());
        let user_properties = users();
        let mut out = vec![
            Packet::Connect(connect.clone(), None, None, None, None),
            Packet::Connect(
                connect.clone(),
                only_v5(v5, connect_props),
                Some(will.clone()),
                only_v5(v5, will_props),
                Some(login.clone()),
            ),
            Packet::Connect(
                connect,
                None,
                Some(rp::LastWill {
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    ..will
                }),
                None,
                Some(login),
            ),
            Packet::Publish(
                rp::Publish::new("telemetry/gw-1/data", "{\"t\":22.5}", false),
                None,
            ),
            Packet::Publish(rp::Publish::new("a", "", true), None),
            Packet::Publish(
                rumqttd_publish(0x32, 1, "telemetry/gw-1/data", b"x"),
                only_v5(v5, publish_props),
            ),
            Packet::Publish(
                rumqttd_publish(0x3D, 65_535, "x/\u{e9}/y", &[0xFF; 200]),
                None,
            ),
            Packet::PubAck(
                rp::PubAck {
                    pkid: 1,
                    reason: rp::PubAckReason::Success,
                },
                None,
            ),
            Packet::PubRec(
                rp::PubRec {
                    pkid: 2,
                    reason: rp::PubRecReason::Success,
                },
                None,
            ),
            Packet::PubRel(
                rp::PubRel {
                    pkid: 3,
                    reason: rp::PubRelReason::Success,
                },
                None,
            ),
            Packet::PubComp(
                rp::PubComp {
                    pkid: 4,
                    reason: rp::PubCompReason::Success,
                },
                None,
            ),
            Packet::Subscribe(
                rp::Subscribe {
                    pkid: 5,
                    filters: vec![
                        filter(
                            "cmd/gw-1/#",
                            QoS::AtLeastOnce,
                            rp::RetainForwardRule::OnEverySubscribe,
                            false,
                        ),
                        filter(
                            "+/status",
                            QoS::ExactlyOnce,
                            rp::RetainForwardRule::OnEverySubscribe,
                            false,
                        ),
                    ],
                },
                only_v5(
                    v5,
                    rp::SubscribeProperties {
                        id: Some(7),
                        user_properties: users(),
                    },
                ),
            ),
            Packet::Unsubscribe(
                rp::Unsubscribe {
                    pkid: 6,
                    filters: vec!["cmd/gw-1/#".into(), "+/status".into()],
                },
                only_v5(
                    v5,
                    rp::UnsubscribeProperties {
                        user_properties: users(),
                    },
                ),
            ),
            Packet::PingReq(rp::PingReq),
            Packet::Disconnect(
                rp::Disconnect {
                    reason_code: rp::DisconnectReasonCode::NormalDisconnection,
                },
                None,
            ),
        ];
        if v5 {
            out.extend([
                Packet::Publish(
                    rumqttd_publish(0x30, 0, "", b"aliased"),
                    Some(rp::PublishProperties {
                        topic_alias: Some(3),
                        ..Default::default()
                    }),
                ),
                Packet::Subscribe(
                    rp::Subscribe {
                        pkid: 8,
                        filters: vec![filter(
                            "a/+/c",
                            QoS::AtMostOnce,
                            rp::RetainForwardRule::Never,
                            true,
                        )],
                    },
                    None,
                ),
                Packet::PubAck(
                    rp::PubAck {
                        pkid: 9,
                        reason: rp::PubAckReason::NoMatchingSubscribers,
                    },
                    Some(rp::PubAckProperties {
                        reason_string: reason_string.clone(),
                        user_properties: user_properties.clone(),
                    }),
                ),
                Packet::PubRec(
                    rp::PubRec {
                        pkid: 10,
                        reason: rp::PubRecReason::QuotaExceeded,
                    },
                    Some(rp::PubRecProperties {
                        reason_string: reason_string.clone(),
                        user_properties: user_properties.clone(),
                    }),
                ),
                Packet::PubRel(
                    rp::PubRel {
                        pkid: 11,
                        reason: rp::PubRelReason::PacketIdentifierNotFound,
                    },
                    Some(rp::PubRelProperties {
                        reason_string: reason_string.clone(),
                        user_properties: user_properties.clone(),
                    }),
                ),
                Packet::PubComp(
                    rp::PubComp {
                        pkid: 12,
                        reason: rp::PubCompReason::Success,
                    },
                    Some(rp::PubCompProperties {
                        reason_string: reason_string.clone(),
                        user_properties,
                    }),
                ),
                Packet::Disconnect(
                    rp::Disconnect {
                        reason_code: rp::DisconnectReasonCode::DisconnectWithWillMessage,
                    },
                    Some(rp::DisconnectProperties {
                        session_expiry_interval: Some(0),
                        reason_string,
                        user_properties: users(),
                        server_reference: None,
                    }),
                ),
            ]);
        }
        out
    }

    fn corpus(v: Version) -> Vec<Vec<u8>> {
        corpus_packets(v)
            .into_iter()
            .map(|packet| {
                let mut buf = BytesMut::new();
                match v {
                    L4 => V4.write(packet, &mut buf),
                    L5 => V5.write(packet, &mut buf),
                }
                .expect("rumqttd encodes its own packet");
                buf.to_vec()
            })
            .collect()
    }

    fn is_connect(f: &[u8]) -> bool {
        f.first() == Some(&0x10)
    }

    /// Validates a mutated frame; when accepted, rumqttd must decode it without
    /// panicking and without asking for more bytes (which the session would
    /// take as "wait", silently dropping the consumed frame). The one
    /// exception is the valid v5 DISCONNECT with only a reason code.
    fn check_mutant(v: Version, f: &[u8]) -> bool {
        let _ = fixed_header(v, f, MAX, is_connect(f));
        if frame(v, f).is_err() {
            return false;
        }
        fuzzing::decode(v, f);
        let decoded = rumqttd_decode(v, f);
        let disconnect_reason_only = v == L5 && f.len() == 3 && f[0] == 0xE0;
        if !disconnect_reason_only {
            assert!(
                !matches!(decoded, Err(rp::Error::InsufficientBytes(_))),
                "accepted frame {f:02x?} makes rumqttd ask for more bytes"
            );
        }
        true
    }

    #[test]
    fn rumqttd_encoded_frames_are_accepted_and_decodable() {
        for v in BOTH {
            for f in corpus(v) {
                let h = fixed_header(v, &f, MAX, is_connect(&f)).unwrap().unwrap();
                assert_eq!(h.frame_len, f.len(), "{f:02x?}");
                accept(v, &f);
            }
        }
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let mut accepted = 0usize;
        let mut total = 0usize;
        for v in BOTH {
            for f in corpus(v) {
                let h = fixed_header(v, &f, MAX, is_connect(&f)).unwrap().unwrap();
                // Every prefix: the header waits or is judged, a short frame is refused.
                for cut in 0..f.len() {
                    let _ = fixed_header(v, &f[..cut], MAX, is_connect(&f));
                    assert!(frame(v, &f[..cut]).is_err());
                }
                // Every shortened body with a consistent remaining length.
                for cut in 0..h.remaining_len {
                    total += 1;
                    accepted += usize::from(check_mutant(
                        v,
                        &pkt(f[0], &f[h.header_len..h.header_len + cut]),
                    ));
                }
                // Every first byte (all packet types and flags).
                for first in 0..=u8::MAX {
                    let mut m = f.clone();
                    m[0] = first;
                    total += 1;
                    accepted += usize::from(check_mutant(v, &m));
                }
                // Multi-byte characters written over every position (a
                // non-ASCII first character is what panics rumqttd's router).
                for i in 0..f.len() {
                    for chars in [&[0xC3u8, 0xA9][..], &[0xEF, 0xBB, 0xBF]] {
                        let mut m = f.clone();
                        let end = (i + chars.len()).min(m.len());
                        m[i..end].copy_from_slice(&chars[..end - i]);
                        total += 1;
                        accepted += usize::from(check_mutant(v, &m));
                    }
                }
                // Every bit flip and a few byte substitutions, everywhere.
                for i in 0..f.len() {
                    for bit in 0..8 {
                        let mut m = f.clone();
                        m[i] ^= 1 << bit;
                        total += 1;
                        accepted += usize::from(check_mutant(v, &m));
                    }
                    for b in [0x00u8, 0x01, 0x7F, 0x80, 0xFF, b'+', b'#', b'/', 0xC3] {
                        let mut m = f.clone();
                        m[i] = b;
                        total += 1;
                        accepted += usize::from(check_mutant(v, &m));
                    }
                }
            }
        }
        // Sanity: the loop exercised both outcomes.
        assert!(accepted > 100 && accepted < total, "{accepted} of {total}");
    }

    /// xorshift64*: deterministic, dependency-free randomness.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn client_stream_accepts_a_whole_valid_session() {
        for (mode, v) in [(0u8, L4), (1, L5)] {
            let frames = corpus(v);
            // CONNECT first, then everything else (no second CONNECT).
            let mut stream = vec![mode];
            stream.extend(&frames[0]);
            let rest: Vec<_> = frames.iter().filter(|f| !is_connect(f)).collect();
            for f in &rest {
                stream.extend(f.iter());
            }
            assert_eq!(fuzzing::accepted_frames(&stream), 1 + rest.len());
            // A second CONNECT stops the stream.
            stream.extend(&frames[0]);
            stream.extend(&frames[0]);
            assert_eq!(fuzzing::accepted_frames(&stream), 1 + rest.len());
        }
    }

    #[test]
    fn client_stream_never_panics_on_random_input() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let corpora = [corpus(L4), corpus(L5)];
        for round in 0..30_000 {
            let mode = rng.next() as u8;
            let frames = &corpora[usize::from(mode & 1)];
            let mut data = vec![mode];
            if round % 4 == 0 {
                // Pure noise.
                let len = rng.below(64);
                data.extend((0..len).map(|_| rng.next() as u8));
            } else {
                // A few valid frames, then a handful of random byte edits.
                for _ in 0..1 + rng.below(3) {
                    data.extend(&frames[rng.below(frames.len())]);
                }
                for _ in 0..1 + rng.below(4) {
                    let at = 1 + rng.below(data.len() - 1);
                    data[at] = rng.next() as u8;
                }
                if rng.below(3) == 0 {
                    data.truncate(1 + rng.below(data.len()));
                }
            }
            fuzzing::client_stream(&data);
        }
    }
}
