//! The SQLite sink (the embedded default) and the when-full policies, end to
//! end through the public API.

use std::time::Duration;

use gatehouse_config::{AckMode, Config, IngestDatabase, IngestSettings, WhenFull};
use gatehouse_ingest::{Ack, AckError, AckWaiter, DropReason, Durability, Record, Submitted};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};

fn settings(dir: &std::path::Path) -> IngestSettings {
    let mut s = Config::defaults().ingest;
    s.database = IngestDatabase::Sqlite {
        path: dir.join("telemetry.db"),
    };
    s.spool_dir = dir.join("spool");
    s.batch_age = Duration::from_millis(20);
    s.ack = AckMode::Durable;
    s
}

async fn open(path: &std::path::Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap()
}

async fn join(waiters: Vec<AckWaiter>) -> Vec<Result<Durability, AckError>> {
    let mut out = Vec::new();
    for w in waiters {
        out.push(w.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sink_stores_rows_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let (h, svc) = gatehouse_ingest::start(&s, None).await.unwrap();
    let mut waiters = Vec::new();
    for (gw, payload) in [
        ("GW-1", r#"{"ts":"2024-05-01T12:00:00.5Z","v":{"a":[1,2]}}"#),
        ("GW-2", r#"{"ts":1714564800,"v":2}"#),
        ("GW-2", r#"{"ts":1714564800250,"v":3}"#),
        ("GW-3", "{bad"),
    ] {
        let (ack, w) = Ack::new();
        let r = Record::new(gw, format!("telemetry/{gw}/data"), payload);
        assert_eq!(h.submit_async(r, Some(ack)).await, Submitted::Queued);
        waiters.push(w);
    }
    assert_eq!(
        join(waiters).await,
        [
            Ok(Durability::Committed),
            Ok(Durability::Committed),
            Ok(Durability::Committed),
            Ok(Durability::Rejected)
        ]
    );
    // Several batches and several multi-row INSERT chunks; the remainder is
    // flushed by shutdown.
    for i in 0..1234 {
        let r = Record::new("GW-9", "telemetry/GW-9/data", format!(r#"{{"i":{i}}}"#));
        h.submit_async(r, None).await;
    }
    svc.shutdown().await;

    let pool = open(&dir.path().join("telemetry.db")).await;
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT time, gateway_code, topic, payload, received_at FROM telemetry \
         WHERE gateway_code <> 'GW-9' ORDER BY gateway_code, time",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str(), r.3.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "2024-05-01T12:00:00.500000Z",
                "GW-1",
                "telemetry/GW-1/data",
                r#"{"ts":"2024-05-01T12:00:00.5Z","v":{"a":[1,2]}}"#
            ),
            (
                "2024-05-01T12:00:00.000000Z",
                "GW-2",
                "telemetry/GW-2/data",
                r#"{"ts":1714564800,"v":2}"#
            ),
            (
                "2024-05-01T12:00:00.250000Z",
                "GW-2",
                "telemetry/GW-2/data",
                r#"{"ts":1714564800250,"v":3}"#
            ),
        ]
    );
    assert!(
        rows.iter().all(|r| r.4.len() == 27 && r.4.ends_with('Z')),
        "received_at as fixed-width UTC text"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM telemetry WHERE gateway_code = 'GW-9'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1234);
    let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let rejects: Vec<(String, Vec<u8>, String)> =
        sqlx::query_as("SELECT gateway_code, payload, reason FROM telemetry_rejects")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].0, "GW-3");
    assert_eq!(rejects[0].1, b"{bad");
    assert!(rejects[0].2.contains("not valid JSON"), "{}", rejects[0].2);
    pool.close().await;
}

/// On a current-thread runtime nothing drains the queue while the test
/// submits without yielding, so "full" is deterministic.
fn policy_run(when_full: WhenFull) -> (Vec<Submitted>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 4;
    s.when_full = when_full;
    s.ack = AckMode::None;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcomes = rt.block_on(async {
        let (h, svc) = gatehouse_ingest::start(&s, None).await.unwrap();
        let outcomes: Vec<_> = (0..10)
            .map(|i| {
                let r = Record::new("GW", "telemetry/GW/data", format!(r#"{{"i":{i}}}"#));
                h.submit(r, None)
            })
            .collect();
        svc.shutdown().await;
        outcomes
    });
    (outcomes, dir)
}

#[test]
fn when_full_drop_newest_drops_and_counts() {
    let (outcomes, _dir) = policy_run(WhenFull::DropNewest);
    assert_eq!(&outcomes[..4], [Submitted::Queued; 4]);
    assert_eq!(
        &outcomes[4..],
        [Submitted::Dropped(DropReason::QueueFull); 6]
    );
}

#[test]
fn when_full_block_on_a_current_thread_runtime_refuses_instead_of_deadlocking() {
    let (outcomes, _dir) = policy_run(WhenFull::Block);
    assert_eq!(&outcomes[..4], [Submitted::Queued; 4]);
    assert_eq!(
        &outcomes[4..],
        [Submitted::Dropped(DropReason::WouldBlock); 6]
    );
}

#[test]
fn when_full_spool_keeps_the_overflow_on_disk_and_replays_it() {
    let (outcomes, dir) = policy_run(WhenFull::Spool);
    assert_eq!(&outcomes[..4], [Submitted::Queued; 4]);
    assert_eq!(&outcomes[4..], [Submitted::Spooled; 6]);
    // The first run may already have replayed them; a second start finishes
    // whatever is left. Either way all ten are stored exactly once.
    let s = settings(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_h, svc) = gatehouse_ingest::start(&s, None).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while svc.spool_backlog().0 > 0 {
            assert!(std::time::Instant::now() < deadline, "spool never replayed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        svc.shutdown().await;
        let pool = open(&dir.path().join("telemetry.db")).await;
        let mut seen: Vec<(String,)> = sqlx::query_as("SELECT payload FROM telemetry")
            .fetch_all(&pool)
            .await
            .unwrap();
        seen.sort();
        let mut want: Vec<(String,)> = (0..10).map(|i| (format!(r#"{{"i":{i}}}"#),)).collect();
        want.sort();
        assert_eq!(seen, want);
        pool.close().await;
    });
}

#[test]
fn when_full_block_from_a_foreign_thread_waits_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 2;
    s.when_full = WhenFull::Block;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (h, svc) = rt.block_on(gatehouse_ingest::start(&s, None)).unwrap();
    // A plain thread, like Mosquitto's: every submit eventually gets room.
    let waiters = std::thread::spawn(move || {
        (0..300)
            .map(|i| {
                let (ack, w) = Ack::new();
                let r = Record::new("GW", "telemetry/GW/data", format!(r#"{{"i":{i}}}"#));
                assert_eq!(h.submit(r, Some(ack)), Submitted::Queued);
                w
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    for w in waiters {
        assert_eq!(w.blocking_wait(), Ok(Durability::Committed));
    }
    rt.block_on(svc.shutdown());
}
