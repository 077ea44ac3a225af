//! Certificate serial numbers and SHA-256 certificate fingerprints.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Longest serial RFC 5280 allows (section 4.1.2.2): 20 octets.
pub const MAX_SERIAL_OCTETS: usize = 20;

/// Why a serial number could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("certificate serial is empty: a serial needs at least one octet")]
    Empty,
    #[error(
        "certificate serial is {octets} octets long after removing leading zeros; \
         RFC 5280 allows at most 20: re-issue the certificate with a conforming CA"
    )]
    TooLong { octets: usize },
    #[error(
        "invalid serial text {input:?}: expected hexadecimal digits, optionally separated by colons \
         (e.g. \"1A2B3C\" or \"1a:2b:3c\")"
    )]
    InvalidHex { input: String },
}

/// Why a fingerprint could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error(
        "invalid SHA-256 fingerprint {input:?}: expected 64 hexadecimal digits, optionally \
         colon-separated (\"AA:BB:...\"), e.g. the output of `openssl x509 -noout -fingerprint -sha256`"
    )]
    Invalid { input: String },
}

/// A certificate serial number in canonical form: the big-endian magnitude
/// with leading `0x00` octets removed (at least one octet is kept, so zero is
/// `[0x00]`), at most 20 octets.
///
/// Stored inline (`Copy`, 21 bytes, no heap), so a set of a million serials
/// stays compact. `Display` is upper-case hex without separators (`"1A2B3C"`).
/// The sign bit of the DER INTEGER is not interpreted: the same bytes are
/// taken from the certificate and from the CRL, so non-conforming negative
/// serials still match consistently.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Serial {
    len: u8,
    bytes: [u8; MAX_SERIAL_OCTETS],
}

impl Serial {
    /// Builds a serial from big-endian octets (e.g. the content octets of the
    /// DER INTEGER). Leading zero octets are stripped.
    pub fn from_bytes(bytes: &[u8]) -> Result<Serial, SerialError> {
        if bytes.is_empty() {
            return Err(SerialError::Empty);
        }
        let first_non_zero = bytes.iter().position(|&b| b != 0);
        let magnitude = match first_non_zero {
            Some(i) => &bytes[i..],
            None => &bytes[bytes.len() - 1..], // zero: keep one 0x00
        };
        if magnitude.len() > MAX_SERIAL_OCTETS {
            return Err(SerialError::TooLong {
                octets: magnitude.len(),
            });
        }
        let mut out = [0u8; MAX_SERIAL_OCTETS];
        out[..magnitude.len()].copy_from_slice(magnitude);
        Ok(Serial {
            len: magnitude.len() as u8,
            bytes: out,
        })
    }

    /// Serial from an integer (handy in tests and for small CA serials).
    pub fn from_u64(value: u64) -> Serial {
        Serial::from_bytes(&value.to_be_bytes()).expect("8 octets always fit")
    }

    /// The canonical big-endian octets (no leading zeros, at least one octet).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// A random positive 128-bit serial from the system RNG. The top bit is
    /// cleared (positive DER INTEGER) and the next one set, so every serial
    /// is exactly 16 octets (126 random bits).
    pub fn random_128() -> Serial {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .expect("the operating system's random number generator failed");
        b[0] = (b[0] & 0x7f) | 0x40;
        Serial::from_bytes(&b).expect("16 octets")
    }
}

impl Hash for Serial {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The unused tail is always zero, so hashing the fixed array is both
        // correct and branch-free; the length disambiguates leading zeros.
        state.write(&self.bytes);
        state.write_u8(self.len);
    }
}

impl Ord for Serial {
    /// Numeric order.
    fn cmp(&self, other: &Self) -> Ordering {
        self.len
            .cmp(&other.len)
            .then_with(|| self.as_bytes().cmp(other.as_bytes()))
    }
}

impl PartialOrd for Serial {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8], sep: Option<char>) -> fmt::Result {
    use fmt::Write;
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            if let Some(sep) = sep {
                f.write_char(sep)?;
            }
        }
        f.write_char(HEX_UPPER[(b >> 4) as usize] as char)?;
        f.write_char(HEX_UPPER[(b & 0x0f) as usize] as char)?;
    }
    Ok(())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.as_bytes(), None)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = SerialError;

    /// Parses hex, colons optional, either case, optional `0x` prefix.
    /// An odd number of digits is read as a number (`"ABC"` = `0x0ABC`).
    fn from_str(s: &str) -> Result<Serial, SerialError> {
        let invalid = || SerialError::InvalidHex {
            input: s.chars().take(80).collect(),
        };
        let t = s.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let digits: Vec<u8> = t
            .bytes()
            .filter(|&c| c != b':')
            .map(|c| hex_val(c).ok_or_else(invalid))
            .collect::<Result<_, _>>()?;
        if digits.is_empty() || t.starts_with(':') || t.ends_with(':') || t.contains("::") {
            return Err(invalid());
        }
        // Drop leading zero digits (keep one) before the length check.
        let start = digits
            .iter()
            .position(|&d| d != 0)
            .unwrap_or(digits.len() - 1);
        let digits = &digits[start..];
        let octets = digits.len().div_ceil(2);
        if octets > MAX_SERIAL_OCTETS {
            return Err(SerialError::TooLong { octets });
        }
        let mut buf = [0u8; MAX_SERIAL_OCTETS];
        let mut padded = digits.len() % 2 == 1;
        let mut out = 0;
        let mut i = 0;
        while i < digits.len() {
            if padded {
                buf[out] = digits[i];
                i += 1;
                padded = false;
            } else {
                buf[out] = (digits[i] << 4) | digits[i + 1];
                i += 2;
            }
            out += 1;
        }
        Serial::from_bytes(&buf[..out])
    }
}

/// SHA-256 digest of a certificate's DER encoding.
///
/// `Display` is upper-case hex with colons (`"AA:BB:…"`, 95 characters), as
/// the provisioning registry stores it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// The 32 digest octets.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0, Some(':'))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts 64 hex digits, with or without colons between octets, either case.
    fn from_str(s: &str) -> Result<Fingerprint, FingerprintError> {
        let invalid = || FingerprintError::Invalid {
            input: s.chars().take(120).collect(),
        };
        let t = s.trim();
        let compact: Vec<u8> = if t.contains(':') {
            let mut v = Vec::with_capacity(64);
            for group in t.split(':') {
                if group.len() != 2 {
                    return Err(invalid());
                }
                v.extend_from_slice(group.as_bytes());
            }
            v
        } else {
            t.as_bytes().to_vec()
        };
        if compact.len() != 64 {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        for (i, pair) in compact.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(invalid)?;
            let lo = hex_val(pair[1]).ok_or_else(invalid)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_128_is_sixteen_positive_octets_and_differs() {
        let (a, b) = (Serial::random_128(), Serial::random_128());
        for s in [a, b] {
            assert_eq!(s.as_bytes().len(), 16);
            assert_eq!(s.as_bytes()[0] & 0xc0, 0x40);
        }
        assert_ne!(a, b);
    }

    #[test]
    fn serial_strips_leading_zeros_and_formats_upper_hex() {
        let s = Serial::from_bytes(&[0x00, 0x00, 0x1a, 0x2b, 0x3c]).unwrap();
        assert_eq!(s.as_bytes(), &[0x1a, 0x2b, 0x3c]);
        assert_eq!(s.to_string(), "1A2B3C");
        assert_eq!(s, Serial::from_bytes(&[0x1a, 0x2b, 0x3c]).unwrap());
        // A DER INTEGER with its sign-padding 0x00 maps to the same serial.
        assert_eq!(
            Serial::from_bytes(&[0x00, 0x80, 0x01]).unwrap(),
            Serial::from_bytes(&[0x80, 0x01]).unwrap()
        );
    }

    #[test]
    fn serial_zero_is_one_octet() {
        let z = Serial::from_bytes(&[0, 0, 0]).unwrap();
        assert_eq!(z.as_bytes(), &[0]);
        assert_eq!(z.to_string(), "00");
        assert_eq!("0".parse::<Serial>().unwrap(), z);
        assert_eq!("00:00".parse::<Serial>().unwrap(), z);
        assert_eq!(Serial::from_u64(0), z);
    }

    #[test]
    fn serial_rejects_empty_and_more_than_20_octets() {
        assert_eq!(Serial::from_bytes(&[]), Err(SerialError::Empty));
        let max = [0xffu8; 20];
        assert!(Serial::from_bytes(&max).is_ok());
        let mut padded = vec![0u8; 3];
        padded.extend_from_slice(&max);
        assert!(
            Serial::from_bytes(&padded).is_ok(),
            "leading zeros do not count"
        );
        assert_eq!(
            Serial::from_bytes(&[1u8; 21]),
            Err(SerialError::TooLong { octets: 21 })
        );
        let long_hex = "01".repeat(21);
        assert_eq!(
            long_hex.parse::<Serial>(),
            Err(SerialError::TooLong { octets: 21 })
        );
        let ok_hex = format!("0000{}", "FF".repeat(20));
        assert_eq!(ok_hex.parse::<Serial>().unwrap().as_bytes(), &max);
    }

    #[test]
    fn serial_parse_round_trips_with_colons_and_case() {
        let s = Serial::from_bytes(&[0x0a, 0xbc, 0xde, 0xf0]).unwrap();
        assert_eq!(s.to_string(), "0ABCDEF0");
        for text in [
            "0ABCDEF0",
            "0abcdef0",
            "0a:bc:de:f0",
            "0A:BC:DE:F0",
            "abcdef0",
            "0xABCDEF0",
        ] {
            assert_eq!(text.parse::<Serial>().unwrap(), s, "{text}");
        }
        assert_eq!(s.to_string().parse::<Serial>().unwrap(), s);
        let leading = "00:00:01".parse::<Serial>().unwrap();
        assert_eq!(leading.as_bytes(), &[1]);
        assert_eq!(leading.to_string(), "01");
        for bad in ["", "zz", "12:", ":12", "1::2", "12 34", "0x"] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn serial_is_compact_and_ordered_numerically() {
        assert!(std::mem::size_of::<Serial>() <= 21);
        let a = Serial::from_u64(0xff);
        let b = Serial::from_u64(0x100);
        assert!(a < b);
    }

    #[test]
    fn fingerprint_formats_with_colons_and_parses_both_forms() {
        let fp = Fingerprint::of(b"hello");
        let text = fp.to_string();
        assert_eq!(text.len(), 95);
        assert_eq!(
            text,
            "2C:F2:4D:BA:5F:B0:A3:0E:26:E8:3B:2A:C5:B9:E2:9E:1B:16:1E:5C:1F:A7:42:5E:73:04:33:62:93:8B:98:24"
        );
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text.to_lowercase().parse::<Fingerprint>().unwrap(), fp);
        let compact = text.replace(':', "");
        assert_eq!(compact.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(compact.to_lowercase().parse::<Fingerprint>().unwrap(), fp);
        assert!(compact[..62].parse::<Fingerprint>().is_err());
        assert!(format!("{compact}00").parse::<Fingerprint>().is_err());
        assert!(
            text.replace("2C:F2", "2CF:2")
                .parse::<Fingerprint>()
                .is_err()
        );
        assert!(compact.replace('2', "g").parse::<Fingerprint>().is_err());
    }
}
