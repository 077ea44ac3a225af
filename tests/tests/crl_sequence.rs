//! A fresh provisioning database continues the CRL sequence of the file
//! already published: brokers refuse a CRL numbered lower than the one in
//! force (rollback protection), so restarting the count at 1 would leave
//! every later revocation unenforced.

use gatehouse_provisioning::Provisioning;
use gatehouse_provisioning::metrics::Metrics;
use gatehouse_tests::provisioning::{Harness, StoreKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_continues_the_published_crl_numbers() {
    let h = Harness::start(StoreKind::Sqlite, "").await;
    let mut last = 0;
    for _ in 0..3 {
        last = h.sidecar.service.publish_crl().await.unwrap().number;
    }
    assert!(last >= 3);
    // The database is lost (or replaced); the CRL file stays.
    let db = h.config.data_dir.join("provisioning.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let fresh = Provisioning::open(&h.config, Metrics::unregistered())
        .await
        .expect("open a fresh store");
    let next = fresh.publish_crl().await.unwrap().number;
    assert_eq!(next, last + 1, "continues after the file's number {last}");
    h.stop().await;
}
