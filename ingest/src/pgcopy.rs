//! The PostgreSQL binary COPY format (`COPY ... FROM STDIN (FORMAT binary)`),
//! for the telemetry columns `(time, gateway_code, topic, payload, received_at)`.
//!
//! Layout: 11-byte signature, i32 flags, i32 header-extension length; per
//! tuple an i16 field count then per field an i32 length and the value in
//! the type's binary send format; an i16 -1 trailer. All big-endian.

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Column list matching [`CopyEncoder::row`].
pub const COLUMNS: &str = "time, gateway_code, topic, payload, received_at";

/// Builds one COPY payload.
#[derive(Debug)]
pub struct CopyEncoder {
    buf: Vec<u8>,
}

impl CopyEncoder {
    /// Starts a payload with room for about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> CopyEncoder {
        let mut buf = Vec::with_capacity(capacity + 19);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        CopyEncoder { buf }
    }

    /// Appends one row. `payload` must be valid JSON text (it becomes jsonb);
    /// times are microseconds since the Unix epoch.
    pub fn row(
        &mut self,
        time_us: i64,
        gateway_code: &str,
        topic: &str,
        payload: &[u8],
        received_us: i64,
    ) {
        let b = &mut self.buf;
        b.extend_from_slice(&5i16.to_be_bytes());
        timestamptz(b, time_us);
        text(b, gateway_code.as_bytes());
        text(b, topic.as_bytes());
        // jsonb binary format: version byte 1, then the JSON text.
        b.extend_from_slice(&((payload.len() + 1) as i32).to_be_bytes());
        b.push(1);
        b.extend_from_slice(payload);
        timestamptz(b, received_us);
    }

    /// Adds the trailer and returns the bytes to send.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

fn timestamptz(b: &mut Vec<u8>, unix_us: i64) {
    b.extend_from_slice(&8i32.to_be_bytes());
    b.extend_from_slice(&(unix_us - PG_EPOCH_OFFSET_US).to_be_bytes());
}

fn text(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as i32).to_be_bytes());
    b.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_one_row() {
        let mut e = CopyEncoder::with_capacity(0);
        e.row(PG_EPOCH_OFFSET_US + 1, "G", "t", b"{}", PG_EPOCH_OFFSET_US);
        let b = e.finish();
        assert_eq!(&b[..11], SIGNATURE);
        assert_eq!(&b[11..19], &[0; 8]);
        let row = &b[19..];
        assert_eq!(&row[..2], &[0, 5]);
        assert_eq!(&row[2..6], &[0, 0, 0, 8]);
        assert_eq!(&row[6..14], &1i64.to_be_bytes());
        assert_eq!(&row[14..19], &[0, 0, 0, 1, b'G']);
        assert_eq!(&row[19..24], &[0, 0, 0, 1, b't']);
        assert_eq!(&row[24..31], &[0, 0, 0, 3, 1, b'{', b'}']);
        assert_eq!(&row[31..43], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&row[43..], &[0xff, 0xff]);
    }
}
