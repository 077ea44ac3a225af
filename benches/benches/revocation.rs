//! Revocation lookups in a 1,000,000-serial set, and loading a
//! 1,000,000-entry CRL (signature check + index). Sizes shrink under
//! `cargo test` (criterion's test mode).

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_auth::{CrlVerifier, RevocationSet};
use gatehouse_bench::{bench_ca, crl_pem, serials, size};
use std::hint::black_box;

fn lookup(c: &mut Criterion) {
    let n = size(1_000_000, 10_000);
    let revoked = serials(n, 1);
    let set = RevocationSet::from_serials(revoked.iter().copied());
    let present = revoked[n / 2];
    let absent = serials(1, 99)[0];
    assert!(set.contains(&present) && !set.contains(&absent));
    let mut g = c.benchmark_group("revocation");
    g.bench_function(format!("lookup_{n}/hit"), |b| {
        b.iter(|| set.contains(black_box(&present)))
    });
    g.bench_function(format!("lookup_{n}/miss"), |b| {
        b.iter(|| set.contains(black_box(&absent)))
    });
    // The same key every iteration stays in cache; this walks ~64k different
    // keys (half present, half absent), so most probes miss the CPU cache.
    let mut queries: Vec<_> = revoked
        .iter()
        .step_by((n / 32_768).max(1))
        .copied()
        .collect();
    queries.extend(serials(queries.len(), 100));
    let mut i = 0usize;
    g.bench_function(format!("lookup_{n}/random_mixed"), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            set.contains(black_box(&queries[i]))
        })
    });
    g.finish();
}

fn crl_load(c: &mut Criterion) {
    let n = size(1_000_000, 10_000);
    let ca = bench_ca();
    let pem = crl_pem(&ca, &serials(n, 2));
    let verifier = CrlVerifier::from_ca_pem(ca.cert_pem()).expect("verifier");
    let mut g = c.benchmark_group("revocation");
    g.sample_size(10);
    g.bench_function(format!("crl_load_{n}_entries"), |b| {
        b.iter(|| {
            let set = RevocationSet::from_crl_bytes(black_box(pem.as_bytes()), &verifier)
                .expect("CRL loads");
            assert_eq!(set.len(), n);
            set
        })
    });
    g.finish();
}

criterion_group!(benches, lookup, crl_load);
criterion_main!(benches);
