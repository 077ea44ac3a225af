//! ACL decisions: default rules and 1,000 rules per action; and what the
//! gate adds per request in both shapes (`gate_decide`): the policy handle's
//! load, the revocation lookup, then the same ACL decision.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_acl::{Action, Subject};
use gatehouse_auth::{Kind, RevocationHandle, RevocationSet, Serial};
use gatehouse_bench::acl_with_rules;
use gatehouse_config::Config;
use gatehouse_gate::{Policy, PolicyHandle};
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

/// One allowed publish, decided the way both shapes decide it since the
/// gate (`PolicyHandle::load` + `Policy::decide`: revocation first, then
/// the rules) against the ACL alone (what the broker called before), with
/// an empty CRL and with 100,000 revoked serials.
fn gate_decide(c: &mut Criterion) {
    let subject = Subject {
        kind: Kind::Operational,
        cn: "GW0001-EEFF",
        client_id: "GW0001-EEFF",
    };
    let topic = b"telemetry/GW0001-EEFF/data".as_slice();
    let serial = Serial::from_u64(0x5eed_0001);
    let policy = Policy::from_config(&Config::defaults()).expect("default policy");
    let acl = gatehouse_acl::Acl::new(&Config::defaults().acl).expect("default ACL");
    let handle = PolicyHandle::new(policy);
    let mut g = c.benchmark_group("gate_decide");
    g.bench_function("acl_only", |b| {
        b.iter(|| acl.decide_bytes(black_box(&subject), Action::Publish, black_box(topic)))
    });
    for (label, revoked) in [("empty_crl", 0u64), ("crl_100k", 100_000)] {
        let crl = RevocationHandle::fixed(RevocationSet::from_serials(
            (0..revoked).map(|i| Serial::from_u64(0x1000_0000 + i)),
        ));
        assert!(
            handle
                .load()
                .decide(&crl, &subject, &serial, Action::Publish, topic)
                .is_allowed()
        );
        g.bench_function(format!("policy_{label}"), |b| {
            b.iter(|| {
                handle.load().decide(
                    black_box(&crl),
                    black_box(&subject),
                    black_box(&serial),
                    Action::Publish,
                    black_box(topic),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, acl, gate_decide);
criterion_main!(benches);
