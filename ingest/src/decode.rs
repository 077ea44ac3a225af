//! Payload decoding: is it a JSON object, and what is its event time?
//!
//! The payload is stored as it came (it is valid JSON, so it is valid jsonb);
//! only the top level is walked, and only the time field is materialised.

use std::fmt;

use gatehouse_config::TimeFormat;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::record::{Record, unix_micros};

/// A decoded record: a row for the telemetry table, or a reject.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub received_us: i64,
    pub gateway_code: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// Event time, microseconds since the Unix epoch.
    Row { time_us: i64 },
    /// Goes to the reject table; `label` is the metric label.
    Reject { label: &'static str, reason: String },
}

impl Item {
    pub(crate) fn size(&self) -> usize {
        self.payload.len() + self.topic.len() + self.gateway_code.len()
    }
}

/// Years accepted as event times (PostgreSQL and SQLite both handle these).
const MIN_US: i64 = -62_135_596_800_000_000; // 0001-01-01
const MAX_US: i64 = 253_402_300_799_999_999; // 9999-12-31

#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    time_field: Option<String>,
    format: TimeFormat,
}

impl Decoder {
    pub(crate) fn new(time_field: Option<String>, format: TimeFormat) -> Decoder {
        Decoder { time_field, format }
    }

    pub(crate) fn decode(&self, r: Record) -> Item {
        let received_us = unix_micros(r.received_at);
        let kind = self.classify(&r, received_us);
        Item {
            received_us,
            gateway_code: r.gateway_code,
            topic: r.topic,
            payload: r.payload,
            kind,
        }
    }

    fn classify(&self, r: &Record, received_us: i64) -> Kind {
        let reject = |label, reason: String| Kind::Reject { label, reason };
        if r.gateway_code.contains('\0') || r.topic.contains('\0') {
            return reject(
                "nul",
                "gateway code or topic contains a NUL character".into(),
            );
        }
        let mut de = serde_json::Deserializer::from_slice(&r.payload);
        let seed = TopLevel {
            field: self.time_field.as_deref(),
        };
        let time = match seed.deserialize(&mut de).and_then(|t| de.end().map(|()| t)) {
            Ok(TopLevelResult::Object(t)) => t,
            Ok(TopLevelResult::NotObject) => {
                return reject("not_object", "payload is JSON but not an object".into());
            }
            Err(e) => return reject("invalid_json", format!("payload is not valid JSON: {e}")),
        };
        if has_nul_escape(&r.payload) {
            return reject(
                "nul",
                "payload contains \\u0000, which jsonb cannot store".into(),
            );
        }
        let time_us = match time {
            None => received_us,
            Some(v) => match self.parse_time(&v) {
                Ok(t) => t,
                Err(why) => {
                    let field = self.time_field.as_deref().unwrap_or_default();
                    return reject("bad_time", format!("time field {field:?}: {why}"));
                }
            },
        };
        Kind::Row { time_us }
    }

    fn parse_time(&self, v: &serde_json::Value) -> Result<i64, String> {
        let us = match (self.format, v) {
            (TimeFormat::Auto | TimeFormat::Rfc3339, serde_json::Value::String(s)) => {
                let t = OffsetDateTime::parse(s, &Rfc3339)
                    .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))?;
                (t.unix_timestamp_nanos() / 1000) as i64
            }
            (TimeFormat::Auto, serde_json::Value::Number(n)) => {
                let x = n.as_f64().ok_or("not a number")?;
                if x.abs() >= 1e11 {
                    millis(x)
                } else {
                    seconds(x)
                }
            }
            (TimeFormat::EpochSeconds, serde_json::Value::Number(n)) => {
                seconds(n.as_f64().ok_or("not a number")?)
            }
            (TimeFormat::EpochMillis, serde_json::Value::Number(n)) => {
                millis(n.as_f64().ok_or("not a number")?)
            }
            (TimeFormat::Rfc3339, other) => {
                return Err(format!("expected an RFC 3339 string, got {other}"));
            }
            (_, other) => return Err(format!("expected an epoch number, got {other}")),
        };
        if !(MIN_US..=MAX_US).contains(&us) {
            return Err(format!("{v} is outside the years 1..9999"));
        }
        Ok(us)
    }
}

fn seconds(x: f64) -> i64 {
    (x * 1e6).round() as i64
}

fn millis(x: f64) -> i64 {
    (x * 1e3).round() as i64
}

/// True if the JSON text holds the escape `\u0000` (not an escaped backslash
/// followed by `u0000`).
fn has_nul_escape(json: &[u8]) -> bool {
    let pat = b"u0000";
    let mut i = 0;
    while i + pat.len() <= json.len() {
        if &json[i..i + pat.len()] == pat {
            let backslashes = json[..i].iter().rev().take_while(|b| **b == b'\\').count();
            if backslashes % 2 == 1 {
                return true;
            }
        }
        i += 1;
    }
    false
}

enum TopLevelResult {
    Object(Option<serde_json::Value>),
    NotObject,
}

/// Walks the top-level value: an object whose `field` is captured and
/// everything else validated and skipped.
struct TopLevel<'f> {
    field: Option<&'f str>,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = TopLevelResult;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = TopLevelResult;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut time = None;
        while let Some(is_time) = map.next_key_seed(KeyIs(self.field))? {
            if is_time {
                time = Some(map.next_value::<serde_json::Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(TopLevelResult::Object(time))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevelResult::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TopLevelResult::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(TopLevelResult::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(TopLevelResult::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(TopLevelResult::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(TopLevelResult::NotObject)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(TopLevelResult::NotObject)
    }
}

/// Deserializes a map key into "is it the time field?" without allocating.
struct KeyIs<'f>(Option<&'f str>);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(self.0 == Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec() -> Decoder {
        Decoder::new(Some("ts".into()), TimeFormat::Auto)
    }

    fn kind(payload: &str) -> Kind {
        dec()
            .decode(Record::new("GW-1", "telemetry/GW-1/data", payload))
            .kind
    }

    fn time(payload: &str) -> i64 {
        match kind(payload) {
            Kind::Row { time_us } => time_us,
            k => panic!("expected a row, got {k:?}"),
        }
    }

    fn label(payload: &str) -> &'static str {
        match kind(payload) {
            Kind::Reject { label, .. } => label,
            k => panic!("expected a reject, got {k:?}"),
        }
    }

    #[test]
    fn time_variants() {
        let t = 1_700_000_000_000_000;
        assert_eq!(time(r#"{"ts":"2023-11-14T22:13:20Z"}"#), t);
        assert_eq!(time(r#"{"ts":"2023-11-14T23:13:20.5+01:00"}"#), t + 500_000);
        assert_eq!(time(r#"{"ts":1700000000}"#), t);
        assert_eq!(time(r#"{"ts":1700000000.25}"#), t + 250_000);
        assert_eq!(time(r#"{"ts":1700000000123}"#), t + 123_000);
        assert_eq!(time(r#"{"a":{"ts":1},"ts":1700000000}"#), t);
    }

    #[test]
    fn missing_time_field_uses_receive_time() {
        let r = Record::new("GW", "t", r#"{"v":1}"#);
        let expect = unix_micros(r.received_at);
        assert_eq!(dec().decode(r).kind, Kind::Row { time_us: expect });
        let no_field = Decoder::new(None, TimeFormat::Auto);
        let r = Record::new("GW", "t", r#"{"ts":5}"#);
        let expect = unix_micros(r.received_at);
        assert_eq!(no_field.decode(r).kind, Kind::Row { time_us: expect });
    }

    #[test]
    fn explicit_formats() {
        let ms = Decoder::new(Some("t".into()), TimeFormat::EpochMillis);
        let r = ms.decode(Record::new("G", "x", r#"{"t":5}"#));
        assert_eq!(r.kind, Kind::Row { time_us: 5000 });
        let s = Decoder::new(Some("t".into()), TimeFormat::EpochSeconds);
        let r = s.decode(Record::new("G", "x", r#"{"t":5}"#));
        assert_eq!(r.kind, Kind::Row { time_us: 5_000_000 });
        let rfc = Decoder::new(Some("t".into()), TimeFormat::Rfc3339);
        let r = rfc.decode(Record::new("G", "x", r#"{"t":5}"#));
        assert!(matches!(
            r.kind,
            Kind::Reject {
                label: "bad_time",
                ..
            }
        ));
    }

    #[test]
    fn rejects() {
        assert_eq!(label("not json"), "invalid_json");
        assert_eq!(label(r#"{"a":1"#), "invalid_json");
        assert_eq!(label(r#"{"a":1} trailing"#), "invalid_json");
        assert_eq!(label("[1,2]"), "not_object");
        assert_eq!(label("42"), "not_object");
        assert_eq!(label(r#"{"ts":"yesterday"}"#), "bad_time");
        assert_eq!(label(r#"{"ts":true}"#), "bad_time");
        assert_eq!(label(r#"{"ts":1e300}"#), "bad_time");
        assert_eq!(label(r#"{"a":"x\u0000y"}"#), "nul");
        assert!(matches!(kind(r#"{"a":"x\\u0000y"}"#), Kind::Row { .. }));
        let bad_utf8 = dec().decode(Record::new(
            "G",
            "t",
            vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}'],
        ));
        assert!(matches!(
            bad_utf8.kind,
            Kind::Reject {
                label: "invalid_json",
                ..
            }
        ));
    }

    #[test]
    fn escaped_keys_match() {
        assert_eq!(time(r#"{"\u0074s":1700000000}"#), 1_700_000_000_000_000);
    }
}
