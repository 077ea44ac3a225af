//! A tiny, allocation-free DER TLV reader, used to stream very large CRLs
//! without building a per-entry object tree.

/// Universal tags used by this crate.
pub(crate) mod tag {
    pub(crate) const BOOLEAN: u8 = 0x01;
    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const BIT_STRING: u8 = 0x03;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const UTC_TIME: u8 = 0x17;
    pub(crate) const GENERALIZED_TIME: u8 = 0x18;
    pub(crate) const SEQUENCE: u8 = 0x30;
    /// `[0] EXPLICIT`, constructed.
    pub(crate) const CONTEXT_0: u8 = 0xa0;
}

/// One decoded TLV.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    /// Content octets.
    pub(crate) content: &'a [u8],
    /// The whole encoding, header included.
    pub(crate) raw: &'a [u8],
}

/// A DER structure error: what was being read and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DerError {
    pub(crate) what: &'static str,
    pub(crate) reason: &'static str,
}

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.reason)
    }
}

/// Sequential reader over concatenated TLVs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The tag of the next TLV, if any.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads the next TLV, whatever its tag.
    pub(crate) fn read_any(&mut self, what: &'static str) -> Result<Tlv<'a>, DerError> {
        let err = |reason| DerError { what, reason };
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or(err("unexpected end of data"))?;
        if tag & 0x1f == 0x1f {
            return Err(err("multi-byte tags are not supported"));
        }
        let (&first, after_len) = after_tag.split_first().ok_or(err("truncated length"))?;
        let (len, header_len) = if first < 0x80 {
            (first as usize, 2)
        } else if first == 0x80 {
            return Err(err("indefinite length is not allowed in DER"));
        } else {
            let n = (first & 0x7f) as usize;
            if n > 4 {
                return Err(err("length field longer than 4 octets"));
            }
            let len_bytes = after_len.get(..n).ok_or(err("truncated length"))?;
            if len_bytes[0] == 0 {
                return Err(err("non-minimal length encoding"));
            }
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | b as usize);
            if len < 0x80 {
                return Err(err("non-minimal length encoding"));
            }
            (len, 2 + n)
        };
        let total = header_len.checked_add(len).ok_or(err("length overflows"))?;
        if input.len() < total {
            return Err(err("length runs past the end of the data"));
        }
        let (raw, rest) = input.split_at(total);
        self.rest = rest;
        Ok(Tlv {
            tag,
            content: &raw[header_len..],
            raw,
        })
    }

    /// Reads the next TLV and checks its tag.
    pub(crate) fn read(&mut self, expected: u8, what: &'static str) -> Result<Tlv<'a>, DerError> {
        match self.peek_tag() {
            Some(t) if t == expected => self.read_any(what),
            Some(_) => Err(DerError {
                what,
                reason: "unexpected tag",
            }),
            None => Err(DerError {
                what,
                reason: "missing",
            }),
        }
    }

    /// Reads the next TLV only if it carries `tag`.
    pub(crate) fn read_optional(
        &mut self,
        tag: u8,
        what: &'static str,
    ) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.read_any(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError {
                what,
                reason: "unexpected trailing data",
            })
        }
    }
}

/// Upper-case hex of a DER INTEGER's magnitude (leading zero octets removed).
pub(crate) fn integer_hex(content: &[u8]) -> String {
    let start = content
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(content.len().saturating_sub(1));
    content[start..]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        long.extend_from_slice(&[0x02, 0x01, 0x05]);
        let mut r = Reader::new(&long);
        let t = r.read(tag::OCTET_STRING, "octets").unwrap();
        assert_eq!(t.content.len(), 0x80);
        assert_eq!(t.raw.len(), 0x83);
        let i = r.read(tag::INTEGER, "int").unwrap();
        assert_eq!(i.content, &[5]);
        assert!(r.is_empty());
        r.finish("end").unwrap();
    }

    #[test]
    fn rejects_bad_encodings() {
        for bad in [
            &[0x30, 0x80, 0x00, 0x00][..],      // indefinite
            &[0x30, 0x05, 0x01],                // overrun
            &[0x30],                            // truncated length
            &[0x30, 0x81, 0x05, 1, 2, 3, 4, 5], // non-minimal
            &[0x1f, 0x01, 0x00],                // high tag
            &[0x30, 0x85, 1, 1, 1, 1, 1],       // length too long
        ] {
            assert!(Reader::new(bad).read_any("x").is_err(), "{bad:?}");
        }
        assert!(
            Reader::new(&[0x02, 0x01, 0x00])
                .read(tag::SEQUENCE, "s")
                .is_err()
        );
        assert!(Reader::new(&[0x02, 0x01, 0x00, 0x00]).read_any("x").is_ok());
    }

    #[test]
    fn integer_hex_strips_sign_padding() {
        assert_eq!(integer_hex(&[0x00, 0x80, 0x0a]), "800A");
        assert_eq!(integer_hex(&[0x00]), "00");
        assert_eq!(integer_hex(&[0x2a]), "2A");
    }
}
