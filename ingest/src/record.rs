//! What the broker hands to ingest.

use std::time::{SystemTime, UNIX_EPOCH};

/// One telemetry message as received: ingest decodes it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the broker received it (the row's time when the payload has none).
    pub received_at: SystemTime,
    /// The sender's gateway code (its certificate CN).
    pub gateway_code: String,
    /// The MQTT topic it was published on.
    pub topic: String,
    /// The raw payload (expected: a JSON object).
    pub payload: Vec<u8>,
}

impl Record {
    /// A record received now.
    pub fn new(
        gateway_code: impl Into<String>,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Record {
        Record {
            received_at: SystemTime::now(),
            gateway_code: gateway_code.into(),
            topic: topic.into(),
            payload: payload.into(),
        }
    }

    /// Bytes this record weighs for batching.
    pub fn size(&self) -> usize {
        self.payload.len() + self.topic.len() + self.gateway_code.len()
    }
}

/// Microseconds since the Unix epoch (negative before 1970).
pub(crate) fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_micros().min(i64::MAX as u128) as i64),
    }
}

/// Inverse of [`unix_micros`].
pub(crate) fn from_unix_micros(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + std::time::Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - std::time::Duration::from_micros(us.unsigned_abs())
    }
}
