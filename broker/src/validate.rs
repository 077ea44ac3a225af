//! TEMPORARY stub (replaced by the validator branch).
use crate::wire::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub label: &'static str,
    pub code: u8,
}

#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub frame_len: usize,
}

pub fn fixed_header(
    _version: Version,
    buf: &[u8],
    max: usize,
    _first: bool,
) -> Result<Option<Header>, Violation> {
    let Some(_) = buf.first() else {
        return Ok(None);
    };
    let mut value = 0usize;
    for (i, byte) in buf[1..].iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > max {
                return Err(Violation {
                    label: "packet_too_large",
                    code: 0x95,
                });
            }
            return Ok(Some(Header {
                frame_len: 1 + i + 1 + value,
            }));
        }
    }
    if buf.len() >= 5 {
        return Err(Violation {
            label: "malformed",
            code: 0x81,
        });
    }
    Ok(None)
}

pub fn frame(_version: Version, _frame: &[u8]) -> Result<(), Violation> {
    Ok(())
}
