//! Certificate DER -> Identity (parse, classify, fingerprint).

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_auth::Classifier;
use gatehouse_config::Config;
use gatehouse_tests::pki::Pki;
use std::hint::black_box;

fn identity(c: &mut Criterion) {
    let pki = Pki::generate();
    let classifier = Classifier::from_settings(&Config::defaults().identity).expect("classifier");
    let operational = pki.operational.cert.cert_der.clone();
    let bootstrap = pki.bootstrap.cert.cert_der.clone();
    let mut g = c.benchmark_group("identity");
    g.bench_function("from_der/operational", |b| {
        b.iter(|| {
            classifier
                .identify(black_box(&operational))
                .expect("identity")
        })
    });
    g.bench_function("from_der/bootstrap", |b| {
        b.iter(|| {
            classifier
                .identify(black_box(&bootstrap))
                .expect("identity")
        })
    });
    g.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
