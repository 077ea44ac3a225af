//! `gatehouse-bench`: shared helpers for the criterion micro-benchmarks in
//! `benches/` and the `gatehouse-bench` binary (measurements criterion cannot
//! make, such as peak memory of a CRL load).
//!
//! Criterion benchmarks also run once each under `cargo test --benches`
//! (its test mode); sizes shrink there so `scripts/test.sh` stays quick.

#![forbid(unsafe_code)]

use gatehouse_acl::Acl;
use gatehouse_auth::Serial;
use gatehouse_ca::{Ca, CaOptions, CrlSpec, KeyAlgorithm, RevocationReason, RevokedEntry};
use gatehouse_config::{AclSettings, Config};
use time::{Duration, OffsetDateTime};

/// True when criterion runs for real (`cargo bench`), false in test mode.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `full` under `cargo bench`, `small` under `cargo test`.
pub fn size(full: usize, small: usize) -> usize {
    if bench_mode() { full } else { small }
}

/// Deterministic 128-bit serials (splitmix64), like the CA's random ones.
pub fn serials(n: usize, seed: u64) -> Vec<Serial> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&next().to_be_bytes());
            bytes[8..].copy_from_slice(&next().to_be_bytes());
            bytes[0] &= 0x7f;
            bytes[0] |= 0x40; // always 16 significant octets
            Serial::from_bytes(&bytes).expect("16-byte serial")
        })
        .collect()
}

/// A throw-away CA for benchmarks.
pub fn bench_ca() -> Ca {
    Ca::generate(&CaOptions {
        common_name: "Gatehouse Bench CA".into(),
        organization: None,
        validity_days: 365,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("bench CA")
}

/// A PEM CRL signed by `ca` listing `serials`.
pub fn crl_pem(ca: &Ca, serials: &[Serial]) -> String {
    let now = OffsetDateTime::now_utc();
    let entries = serials
        .iter()
        .map(|s| RevokedEntry {
            serial: *s,
            revoked_at: now - Duration::hours(1),
            reason: RevocationReason::KeyCompromise,
        })
        .collect();
    ca.crl(&CrlSpec {
        number: 1,
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(7),
        entries,
    })
    .expect("CRL")
}

/// The default ACL settings plus `n` extra operational rules
/// `fleet/{cn}/sensor{i}/#` for every action.
pub fn acl_with_rules(n: usize) -> Acl {
    let mut settings: AclSettings = Config::defaults().acl;
    for list in [
        &mut settings.operational.publish,
        &mut settings.operational.subscribe,
        &mut settings.operational.receive,
    ] {
        list.extend((0..n).map(|i| format!("fleet/{{cn}}/sensor{i}/#")));
    }
    Acl::new(&settings).expect("bench ACL compiles")
}
