//! Fixtures shared by the unit tests: everything is generated at run time.

use time::{Duration, OffsetDateTime};

use crate::ca::{Ca, CaOptions, CrlSpec, RevocationReason, RevokedEntry};
use crate::serial::Serial;

pub(crate) fn ca(name: &str) -> Ca {
    Ca::generate(CaOptions {
        common_name: name.to_owned(),
        organization: Some("Gatehouse Test".to_owned()),
        validity_days: 30,
        ..CaOptions::default()
    })
    .unwrap()
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(crate) fn crl_spec(number: u64, serials: &[Serial]) -> CrlSpec {
    let now = now();
    CrlSpec {
        number,
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(7),
        entries: serials
            .iter()
            .map(|s| RevokedEntry {
                serial: *s,
                revoked_at: now - Duration::minutes(30),
                reason: RevocationReason::KeyCompromise,
            })
            .collect(),
    }
}

/// Serial `i` of a synthetic population: 16 octets, top bit set on odd
/// numbers so DER sign padding is exercised.
pub(crate) fn synthetic_serial(i: u64) -> Serial {
    let mut b = [0u8; 16];
    b[0] = if i % 2 == 1 { 0x80 } else { 0x40 };
    b[8..].copy_from_slice(&i.to_be_bytes());
    Serial::from_bytes(&b).unwrap()
}
