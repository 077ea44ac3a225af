//! ACL decisions: default rules and 1,000 rules per action.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_acl::{Action, Subject};
use gatehouse_auth::Kind;
use gatehouse_bench::acl_with_rules;
use std::hint::black_box;

fn acl(c: &mut Criterion) {
    let subject = Subject {
        kind: Kind::Operational,
        cn: "GW0001-EEFF",
        client_id: "GW0001-EEFF",
    };
    let mut g = c.benchmark_group("acl");
    for (label, extra) in [("default_rules", 0), ("1000_rules", 1000)] {
        let acl = acl_with_rules(extra);
        let publish_topic = if extra == 0 {
            "telemetry/GW0001-EEFF/data".to_string()
        } else {
            format!("fleet/GW0001-EEFF/sensor{}/data", extra - 1)
        };
        let subscribe_filter = if extra == 0 {
            "telemetry/GW0001-EEFF/#".to_string()
        } else {
            format!("fleet/GW0001-EEFF/sensor{}/+", extra / 2)
        };
        assert!(
            acl.decide(&subject, Action::Publish, &publish_topic)
                .is_allowed()
        );
        assert!(
            acl.decide(&subject, Action::Subscribe, &subscribe_filter)
                .is_allowed()
        );
        g.bench_function(format!("{label}/publish_allowed"), |b| {
            b.iter(|| {
                acl.decide(
                    black_box(&subject),
                    Action::Publish,
                    black_box(&publish_topic),
                )
            })
        });
        g.bench_function(format!("{label}/publish_denied"), |b| {
            b.iter(|| {
                acl.decide(
                    black_box(&subject),
                    Action::Publish,
                    black_box("telemetry/GW0002-0001/data"),
                )
            })
        });
        g.bench_function(format!("{label}/subscribe_allowed"), |b| {
            b.iter(|| {
                acl.decide(
                    black_box(&subject),
                    Action::Subscribe,
                    black_box(&subscribe_filter),
                )
            })
        });
        g.bench_function(format!("{label}/subscribe_denied_wildcard"), |b| {
            b.iter(|| {
                acl.decide(
                    black_box(&subject),
                    Action::Subscribe,
                    black_box("telemetry/#"),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, acl);
criterion_main!(benches);
