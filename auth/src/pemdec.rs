//! Single-pass PEM → DER decoding for large inputs (a million-entry CRL is
//! ~50 MB of text). Unlike the `pem` crate it does not copy the base64 body
//! to strip line breaks first: each block is decoded straight into a buffer
//! sized from the body length.

/// A decoded PEM block.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) der: Vec<u8>,
}

/// True when the input looks like PEM (`-----BEGIN` after optional whitespace).
pub(crate) fn looks_like_pem(input: &[u8]) -> bool {
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    input[start..].starts_with(b"-----BEGIN ")
}

const INVALID: u8 = 0xff;
const WHITESPACE: u8 = 0xfe;

const fn decode_table() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = WHITESPACE;
    t[b'\t' as usize] = WHITESPACE;
    t[b'\r' as usize] = WHITESPACE;
    t[b'\n' as usize] = WHITESPACE;
    t
}

static TABLE: [u8; 256] = decode_table();

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match haystack[i..].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if haystack.get(i..i + needle.len()) == Some(needle) {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Decodes every PEM block whose label satisfies `wanted`; other blocks are
/// skipped (their labels are returned in the second value).
pub(crate) fn decode_blocks(
    input: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<(Vec<Block>, Vec<String>), String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let mut blocks = Vec::new();
    let mut skipped = Vec::new();
    let mut pos = 0;
    while let Some(off) = find(&input[pos..], BEGIN) {
        let label_start = pos + off + BEGIN.len();
        let label_len = find(&input[label_start..], b"-----")
            .ok_or("PEM BEGIN line is not terminated by \"-----\"")?;
        let label = std::str::from_utf8(&input[label_start..label_start + label_len])
            .map_err(|_| "PEM label is not valid text")?
            .to_owned();
        if label.len() > 64 || label.contains('\n') {
            return Err("malformed PEM BEGIN line".into());
        }
        let body_start = label_start + label_len + 5;
        // The base64 body contains no '-', so the next '-' starts the END line.
        let body_len = input[body_start..]
            .iter()
            .position(|&b| b == b'-')
            .ok_or_else(|| format!("PEM block {label:?} has no END line"))?;
        let body = &input[body_start..body_start + body_len];
        let end_line = format!("-----END {label}-----");
        if !input[body_start + body_len..].starts_with(end_line.as_bytes()) {
            return Err(format!(
                "PEM block {label:?} is not closed by {end_line:?} (truncated or corrupted file?)"
            ));
        }
        pos = body_start + body_len + end_line.len();
        if wanted(&label) {
            let der = decode_base64(body).map_err(|e| format!("PEM block {label:?}: {e}"))?;
            blocks.push(Block { der });
        } else {
            skipped.push(label);
        }
    }
    Ok((blocks, skipped))
}

/// Decodes a base64 body, ignoring ASCII whitespace; padding is optional.
fn decode_base64(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut n: u32 = 0; // sextets in acc
    let mut padding = 0usize;
    for (i, &c) in body.iter().enumerate() {
        let v = TABLE[c as usize];
        if v < 64 {
            if padding > 0 {
                return Err(format!("base64 data after '=' padding at byte {i}"));
            }
            acc = (acc << 6) | v as u32;
            n += 1;
            if n == 4 {
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                acc = 0;
                n = 0;
            }
        } else if v == WHITESPACE {
            continue;
        } else if c == b'=' {
            padding += 1;
            if padding > 2 {
                return Err("too much '=' padding".into());
            }
        } else if c.is_ascii_graphic() {
            return Err(format!(
                "invalid base64 character {:?} at byte {i}",
                c as char
            ));
        } else {
            return Err(format!("invalid byte 0x{c:02x} in base64 data at byte {i}"));
        }
    }
    match n {
        0 => {}
        1 => return Err("truncated base64 data".into()),
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => unreachable!(),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_blocks_like_the_pem_crate() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in [0usize, 1, 2, 3, 4, 5, 47, 48, 49, 1000] {
            let text = pem::encode(&pem::Pem::new("X509 CRL", &data[..len]));
            let (blocks, skipped) = decode_blocks(text.as_bytes(), |l| l == "X509 CRL").unwrap();
            assert!(skipped.is_empty());
            assert_eq!(blocks.len(), 1);
            assert_eq!(blocks[0].der, &data[..len], "len {len}");
        }
    }

    #[test]
    fn multiple_blocks_and_skipping() {
        let a = pem::encode(&pem::Pem::new("X509 CRL", vec![1, 2, 3]));
        let b = pem::encode(&pem::Pem::new("CERTIFICATE", vec![4, 5]));
        let c = pem::encode(&pem::Pem::new("X509 CRL", vec![6]));
        let text = format!("junk before\n{a}{b}\r\n{c}trailing");
        let (blocks, skipped) = decode_blocks(text.as_bytes(), |l| l == "X509 CRL").unwrap();
        assert_eq!(
            blocks.iter().map(|b| b.der.clone()).collect::<Vec<_>>(),
            vec![vec![1, 2, 3], vec![6]]
        );
        assert_eq!(skipped, vec!["CERTIFICATE".to_string()]);
        assert!(looks_like_pem(b"\n  -----BEGIN X509 CRL-----"));
        assert!(!looks_like_pem(&[0x30, 0x82]));
    }

    #[test]
    fn rejects_corruption() {
        let good = pem::encode(&pem::Pem::new("X509 CRL", vec![9u8; 100]));
        let truncated = &good[..good.len() - 10];
        assert!(decode_blocks(truncated.as_bytes(), |_| true).is_err());
        let mut bad_char = good.clone();
        bad_char.insert(good.find('\n').unwrap() + 3, '*');
        assert!(decode_blocks(bad_char.as_bytes(), |_| true).is_err());
        let mismatched = good.replace("END X509 CRL", "END CERTIFICATE");
        assert!(decode_blocks(mismatched.as_bytes(), |_| true).is_err());
    }
}
