//! Replays every seed, every saved crash (`regressions/<target>/`) and the
//! saved corpus (`corpus/<target>/`, when present) through each target, so
//! `cargo test` catches a crash that fuzzing found once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use gatehouse_fuzz::{Target, seeds};

fn replay(target: Target) {
    let mut inputs: Vec<(String, Vec<u8>)> = seeds(target)
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("seed #{i}"), s))
        .collect();
    assert!(!inputs.is_empty(), "{} has no seeds", target.name());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for kind in ["regressions", "corpus"] {
        let dir = root.join(kind).join(target.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !path.is_file() || name.starts_with("README") || name.starts_with('.') {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            inputs.push((path.display().to_string(), data));
        }
    }
    let start = Instant::now();
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| target.run(data))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} panicked on {} of {} inputs: {failed:#?}",
        target.name(),
        failed.len(),
        inputs.len()
    );
    eprintln!(
        "{}: {} inputs replayed in {:?}",
        target.name(),
        inputs.len(),
        start.elapsed()
    );
}

#[test]
fn csr_registration() {
    replay(Target::CsrRegistration);
}

#[test]
fn crl() {
    replay(Target::Crl);
}

#[test]
fn config() {
    replay(Target::Config);
}

#[test]
fn client_stream() {
    replay(Target::ClientStream);
}

#[test]
fn every_target_has_a_replay_test() {
    // Extend this list (and add a test above) with every new target.
    let tested = ["csr_registration", "crl", "config", "client_stream"];
    let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names, tested);
}

#[test]
fn seeds_are_fast() {
    let start = Instant::now();
    for &t in Target::ALL {
        seeds(t);
    }
    let took = start.elapsed();
    assert!(took.as_secs_f64() < 2.0, "seed generation took {took:?}");
}

#[test]
fn valid_seeds_reach_the_code_behind_the_checks() {
    // A seed set that only ever fails early would fuzz nothing deep.
    for (i, s) in seeds(Target::ClientStream).iter().enumerate().take(4) {
        assert!(
            gatehouse_broker::validate::fuzzing::accepted_frames(s) >= 1,
            "MQTT seed #{i} passes the validator"
        );
    }
    let csr = seeds(Target::CsrRegistration);
    let body = gatehouse_fuzz::registration_body(&csr[0]).expect("first body seed is valid");
    assert!(body.csr_pem.is_some() && body.bootstrap_fingerprint.is_some());

    let verifier = &gatehouse_fuzz::fuzz_ca().verifier;
    let crl = seeds(Target::Crl);
    // Per signed CRL: DER, PEM, then the re-sign form (mode byte + tbs).
    for der_pem in [&crl[9], &crl[10]] {
        let set = gatehouse_auth::RevocationSet::from_crl_bytes(der_pem, verifier)
            .expect("seed CRL loads");
        assert_eq!(set.len(), 40);
    }
    let resigned = gatehouse_fuzz::fuzz_ca().sign_tbs(&crl[11][1..]);
    let set = gatehouse_auth::RevocationSet::from_crl_bytes(&resigned, verifier)
        .expect("re-signed seed CRL loads");
    assert_eq!(set.len(), 40);

    let config = seeds(Target::Config);
    let text = std::str::from_utf8(&config[0]).unwrap();
    gatehouse_config::Config::parse(text, "example", Path::new("/etc/gatehouse"))
        .expect("the example config is valid");
}
