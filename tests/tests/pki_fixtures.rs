//! The fixture PKI seen through gatehouse-auth and gatehouse-acl together:
//! every good and bad certificate is classified, checked and revoked as a
//! broker would, with the default configuration.

use std::time::{Duration, Instant};

use gatehouse_acl::{Acl, Action, ClientIdPolicy, Subject};
use gatehouse_auth::{
    Classifier, CrlError, CrlVerifier, CrlWatcher, IdentityError, Kind, RevocationError,
    RevocationSet, WatchOptions,
};
use gatehouse_config::Config;
use gatehouse_tests::pki::{BOOTSTRAP_MAC, GATEWAY_CODE, Pki};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

fn classifier() -> Classifier {
    Classifier::from_settings(&Config::defaults().identity).expect("default classifier")
}

fn verifier(pki: &Pki) -> CrlVerifier {
    CrlVerifier::from_ca_file(&pki.ca_path).expect("CRL verifier from fleet CA")
}

#[test]
fn good_clients_classify_with_the_default_config() {
    let pki = Pki::generate();
    let c = classifier();
    let now = OffsetDateTime::now_utc();

    let op = c
        .identify(&pki.operational.cert.cert_der)
        .expect("operational identity");
    assert_eq!(op.kind, Kind::Operational);
    assert_eq!(op.cn, GATEWAY_CODE);
    assert_eq!(op.serial, pki.operational.cert.serial);
    assert_eq!(op.fingerprint, pki.operational.cert.fingerprint);
    op.check_validity(now)
        .expect("operational cert is valid now");

    let boot = c
        .identify(&pki.bootstrap.cert.cert_der)
        .expect("bootstrap identity");
    assert_eq!(boot.kind, Kind::Bootstrap);
    boot.check_validity(now)
        .expect("bootstrap cert is valid now");
}

#[test]
fn bad_clients_are_refused_for_their_own_reason() {
    let pki = Pki::generate();
    let c = classifier();
    let now = OffsetDateTime::now_utc();

    let e = c
        .identify(&pki.wrong_ou.cert.cert_der)
        .expect_err("OU intruder must be refused");
    assert!(matches!(e, IdentityError::UnknownKind { .. }), "{e:?}");

    let expired = c
        .identify(&pki.expired.cert.cert_der)
        .expect("expired cert still parses");
    assert!(matches!(
        expired.check_validity(now),
        Err(IdentityError::Expired { .. })
    ));

    let early = c
        .identify(&pki.not_yet_valid.cert.cert_der)
        .expect("future cert still parses");
    assert!(matches!(
        early.check_validity(now),
        Err(IdentityError::NotYetValid { .. })
    ));
}

#[test]
fn wrong_ca_client_is_really_signed_by_the_other_ca() {
    let pki = Pki::generate();
    let (_, leaf) = X509Certificate::from_der(&pki.wrong_ca.cert.cert_der).unwrap();
    let (_, fleet) = X509Certificate::from_der(pki.ca.cert_der()).unwrap();
    let (_, other) = X509Certificate::from_der(pki.other_ca.cert_der()).unwrap();
    assert!(leaf.verify_signature(Some(fleet.public_key())).is_err());
    assert!(leaf.verify_signature(Some(other.public_key())).is_ok());
}

#[test]
fn fixture_crls_load_or_fail_as_labelled() {
    let pki = Pki::generate();
    let v = verifier(&pki);
    let now = OffsetDateTime::now_utc();

    let set = RevocationSet::from_crl_file(&pki.crl_path, &v).expect("current CRL");
    assert!(set.contains(&pki.revoked.cert.serial));
    assert!(!set.contains(&pki.operational.cert.serial));
    assert!(!set.is_stale(now));

    let stale = RevocationSet::from_crl_file(&pki.expired_crl_path, &v)
        .expect("an expired CRL still loads");
    assert!(stale.is_stale(now));
    assert!(stale.contains(&pki.revoked.cert.serial));

    let e = RevocationSet::from_crl_file(&pki.corrupt_crl_path, &v).expect_err("corrupt CRL");
    assert!(matches!(e, CrlError::BadSignature), "{e:?}");

    let e = RevocationSet::from_crl_file(&pki.foreign_crl_path, &v).expect_err("CRL of another CA");
    assert!(matches!(e, CrlError::UnknownIssuer { .. }), "{e:?}");
}

#[test]
fn stale_crl_keeps_serving_unless_fail_closed() {
    let pki = Pki::generate();
    let open = CrlWatcher::start(
        pki.expired_crl_path.clone(),
        verifier(&pki),
        WatchOptions {
            poll_interval: Duration::from_millis(50),
            fail_closed: false,
        },
    )
    .expect("watcher on an expired CRL starts");
    let h = open.handle();
    h.check(&pki.operational.cert.serial)
        .expect("fail-open: fleet keeps working");
    assert!(matches!(
        h.check(&pki.revoked.cert.serial),
        Err(RevocationError::Revoked { .. })
    ));
    assert!(h.status().stale);

    let closed = CrlWatcher::start(
        pki.expired_crl_path.clone(),
        verifier(&pki),
        WatchOptions {
            poll_interval: Duration::from_millis(50),
            fail_closed: true,
        },
    )
    .expect("watcher starts");
    let e = closed
        .handle()
        .check(&pki.operational.cert.serial)
        .expect_err("fail-closed refuses");
    assert!(matches!(e, RevocationError::CrlExpired { .. }), "{e:?}");
}

#[test]
fn revoking_a_connected_client_is_announced_within_a_second() {
    let mut pki = Pki::generate();
    let watcher = CrlWatcher::start(
        pki.crl_path.clone(),
        verifier(&pki),
        WatchOptions {
            poll_interval: Duration::from_millis(50),
            fail_closed: false,
        },
    )
    .expect("watcher");
    let handle = watcher.handle();
    let mut updates = handle.subscribe();
    let victim = pki.operational.cert.serial;
    handle.check(&victim).expect("not revoked yet");

    let started = Instant::now();
    pki.revoke(victim);
    let update = loop {
        match updates.try_recv() {
            Ok(u) => break u,
            Err(_) if started.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("no revocation update within 2 s: {e:?}"),
        }
    };
    let took = started.elapsed();
    assert_eq!(
        &update.newly_revoked[..],
        &[victim],
        "only the new serial is announced"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(matches!(
        handle.check(&victim),
        Err(RevocationError::Revoked { .. })
    ));
    eprintln!("revocation noticed after {took:?}");
    watcher.stop();
}

#[test]
fn identities_from_fixtures_meet_the_default_acl_and_client_id_policy() {
    let pki = Pki::generate();
    let config = Config::defaults();
    let acl = Acl::new(&config.acl).expect("default ACL");
    let policy = ClientIdPolicy::new(&config.identity);
    let c = classifier();

    let op = c.identify(&pki.operational.cert.cert_der).unwrap();
    policy
        .check(op.kind, &op.cn, &pki.operational.client_id)
        .expect("client id = CN");
    assert!(policy.check(op.kind, &op.cn, "someone-else").is_err());
    let s = Subject {
        kind: op.kind,
        cn: &op.cn,
        client_id: &pki.operational.client_id,
    };
    assert!(
        acl.decide(
            &s,
            Action::Publish,
            &format!("telemetry/{GATEWAY_CODE}/data")
        )
        .is_allowed()
    );
    assert!(
        !acl.decide(&s, Action::Publish, "telemetry/GW9999-0000/data")
            .is_allowed()
    );
    assert!(!acl.decide(&s, Action::Subscribe, "#").is_allowed());
    assert!(!acl.decide(&s, Action::Subscribe, "$SYS/#").is_allowed());

    let boot = c.identify(&pki.bootstrap.cert.cert_der).unwrap();
    policy
        .check(boot.kind, &boot.cn, BOOTSTRAP_MAC)
        .expect("bootstrap connects as a MAC");
    assert!(
        policy
            .check(boot.kind, &boot.cn, "factory-batch-1")
            .is_err()
    );
    let s = Subject {
        kind: boot.kind,
        cn: &boot.cn,
        client_id: BOOTSTRAP_MAC,
    };
    assert!(
        acl.decide(
            &s,
            Action::Publish,
            &format!("tds/provision/{BOOTSTRAP_MAC}/req")
        )
        .is_allowed()
    );
    assert!(
        !acl.decide(&s, Action::Publish, "tds/provision/11:22:33:44:55:66/req")
            .is_allowed()
    );
    assert!(
        !acl.decide(
            &s,
            Action::Publish,
            &format!("telemetry/{GATEWAY_CODE}/data")
        )
        .is_allowed()
    );
}
