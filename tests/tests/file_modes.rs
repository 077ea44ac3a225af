//! Files Gatehouse creates that hold keys, tokens or data are mode 0600 and
//! the directories it creates 0700, whatever the umask: this test runs under
//! umask 022 (in its own process: the umask is process-wide) and checks the
//! data directory after `gatehouse ca init`, a running provisioning sidecar
//! with a bootstrap key in its SQLite store, and ingest's SQLite file and spool.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gatehouse_ingest::Record;
use gatehouse_tests::provisioning::{Harness, StoreKind};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_data_are_private_under_umask_022() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let h = Harness::start(StoreKind::Sqlite, "").await;
    // A bootstrap certificate whose private key waits in the store.
    h.sidecar
        .service
        .issue_bootstrap("batch 1", "test")
        .await
        .unwrap();
    let data = h.config.data_dir.clone();
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let mut files = vec![
        h.config.provisioning.ca_key.clone(),
        h.config.provisioning.key.clone(),
        h.config.provisioning.admin_token_file.clone(),
        data.join("provisioning.db"),
    ];
    // The CRL is public: a Mosquitto running as its own user reads it.
    let crl = h.config.tls.crl.clone().unwrap();
    assert_eq!(mode(&crl), 0o644, "{}", crl.display());

    // Ingest into SQLite, with its spool, in the same data directory.
    let text = format!(
        "data_dir = \"{}\"\n[ingest]\nsqlite_path = \"{}\"\nspool_dir = \"{}\"\n",
        data.display(),
        data.join("telemetry.db").display(),
        data.join("spool").display()
    );
    let config = gatehouse_config::Config::parse(&text, "ingest.toml", h.dir.path()).unwrap();
    let (handle, svc) = gatehouse_ingest::start(&config.ingest, None).await.unwrap();
    let _ = handle.submit(
        Record::new("GW-1", "telemetry/GW-1/data", br#"{"t":1}"#.to_vec()),
        None,
    );
    svc.shutdown().await;
    assert_eq!(mode(&data.join("spool")), 0o700);
    files.push(data.join("telemetry.db"));
    for entry in std::fs::read_dir(data.join("spool")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for entry in std::fs::read_dir(&data).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with("-wal") || name.ends_with("-shm") {
            files.push(p);
        }
    }
    let open: Vec<String> = files
        .iter()
        .filter(|f| mode(f) != 0o600)
        .map(|f| format!("{} is {:o}", f.display(), mode(f)))
        .collect();
    assert!(open.is_empty(), "not 0600: {open:?}");
    h.stop().await;
}
