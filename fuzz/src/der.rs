//! Just enough DER to build seeds and to wrap re-signed CRLs.

/// One tag-length-value: `(tag, whole TLV, content, rest)`.
pub type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Reads one TLV (single-octet tags, definite lengths up to 4 octets).
pub fn read(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((tag, &input[..header + len], &rest[..len], &rest[len..]))
}

/// Encodes one TLV.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The `tbsCertList` (whole TLV) of a DER `CertificateList`.
pub fn crl_tbs(crl_der: &[u8]) -> Option<&[u8]> {
    let (_, _, content, _) = read(crl_der)?;
    let (_, tbs, _, _) = read(content)?;
    Some(tbs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trips_short_and_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let enc = tlv(0x04, &content);
            let (tag, whole, c, rest) = read(&enc).unwrap();
            assert_eq!(
                (tag, whole.len(), c, rest.len()),
                (0x04, enc.len(), &content[..], 0)
            );
        }
    }
}
