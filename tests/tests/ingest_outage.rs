//! Ingest across database outages and crashes, against a real PostgreSQL:
//!
//! * PostgreSQL stopped in the middle of a 100,000-record stream and started
//!   again: every record lands exactly once (count, distinct count, sums).
//! * A process using durable acks is killed with SIGKILL mid-stream (with
//!   PostgreSQL down, so part of the stream sits in the spool): after a
//!   restart replays the spool, every acknowledged record is in the table.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use gatehouse_config::AckMode;
use gatehouse_ingest::{Ack, Record};
use gatehouse_tests::postgres::Postgres;

fn counter(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_stream_every_record_lands_exactly_once() {
    const N: u64 = 100_000;
    let pg = Arc::new(Mutex::new(
        tokio::task::spawn_blocking(Postgres::start).await.unwrap(),
    ));
    let spool = tempfile::tempdir().unwrap();
    let mut settings = pg.lock().unwrap().ingest_settings(spool.path());
    settings.ack = AckMode::Durable;
    settings.batch_rows = 2_000;
    let registry = prometheus::Registry::new();
    let (h, svc) = gatehouse_ingest::start(&settings, Some(&registry))
        .await
        .unwrap();

    let submitted = Arc::new(AtomicU64::new(0));
    // The stream does not get past 80,000 before PostgreSQL is back, so the
    // restart is always mid-stream too.
    let restarted = Arc::new(tokio::sync::Notify::new());
    let feeder = {
        let submitted = Arc::clone(&submitted);
        let restarted = Arc::clone(&restarted);
        tokio::spawn(async move {
            let mut waiters = Vec::with_capacity(N as usize);
            for seq in 0..N {
                if seq == 80_000 {
                    restarted.notified().await;
                }
                let payload = format!(
                    r#"{{"seq":{seq},"ts":{},"m":{{"t":{}}}}}"#,
                    1_700_000_000 + seq,
                    seq % 97
                );
                let (ack, waiter) = Ack::new();
                h.submit_async(
                    Record::new("GW-1", "telemetry/GW-1/data", payload),
                    Some(ack),
                )
                .await;
                waiters.push(waiter);
                submitted.store(seq + 1, Ordering::Release);
                if seq % 500 == 499 {
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            }
            let mut failed = 0;
            for w in waiters {
                if w.await.is_err() {
                    failed += 1;
                }
            }
            failed
        })
    };

    let wait_submitted = |n: u64| {
        let submitted = Arc::clone(&submitted);
        async move {
            while submitted.load(Ordering::Acquire) < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    wait_submitted(25_000).await;
    let p = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || p.lock().unwrap().stop())
        .await
        .unwrap();
    let stopped_at = submitted.load(Ordering::Acquire);
    wait_submitted(60_000).await;
    // Keep it down until ingest has noticed and spooled (a blip shorter than
    // connect_timeout is simply waited out).
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&registry, "gatehouse_ingest_spooled_records_total") == 0.0 {
        assert!(
            Instant::now() < deadline,
            "ingest never spooled during the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || p.lock().unwrap().start_again())
        .await
        .unwrap();
    let restarted_at = submitted.load(Ordering::Acquire);
    restarted.notify_one();
    assert!(
        stopped_at < N && restarted_at < N,
        "the outage happened mid-stream ({stopped_at}, {restarted_at})"
    );

    assert_eq!(
        feeder.await.unwrap(),
        0,
        "every record acknowledged as durable"
    );
    // Everything is durable; wait for the spool to drain into the database.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = Arc::clone(&pg);
        let count: u64 = tokio::task::spawn_blocking(move || {
            p.lock()
                .unwrap()
                .psql("SELECT count(*) FROM telemetry")
                .parse()
                .unwrap()
        })
        .await
        .unwrap();
        if count >= N && svc.spool_backlog().0 == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {N} rows arrived; backlog {:?}",
            svc.spool_backlog()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.shutdown().await;

    let pg = pg.lock().unwrap();
    let got = pg.psql(
        "SELECT count(*), count(DISTINCT (payload->>'seq')::bigint), sum((payload->>'seq')::bigint), \
                sum(((payload->>'seq')::numeric) ^ 2)::numeric(30,0) FROM telemetry",
    );
    let n = N as u128;
    let sum = n * (n - 1) / 2;
    let sum_sq = (n - 1) * n * (2 * n - 1) / 6;
    assert_eq!(
        got,
        format!("{N}|{N}|{sum}|{sum_sq}"),
        "count, distinct, sum, sum of squares"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM telemetry WHERE time <> to_timestamp(1700000000 + (payload->>'seq')::bigint)"),
        "0",
        "every event time decoded"
    );
    assert!(
        counter(&registry, "gatehouse_ingest_retries_total") > 0.0,
        "the outage was seen"
    );
    assert!(
        counter(&registry, "gatehouse_ingest_spooled_records_total") > 0.0,
        "records went through the spool"
    );
    assert!(
        counter(&registry, "gatehouse_ingest_replayed_records_total") > 0.0,
        "and were replayed"
    );
    assert_eq!(counter(&registry, "gatehouse_ingest_drops_total"), 0.0);
    assert!(
        std::fs::read_dir(spool.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".spool")),
        "replayed segments deleted"
    );
}

#[test]
fn sigkill_with_durable_acks_loses_no_acknowledged_record() {
    let mut pg = Postgres::start();
    let spool = tempfile::tempdir().unwrap();
    let feeder = env!("CARGO_BIN_EXE_ingest-feeder");
    let url = pg.database_url();
    let spool_arg = spool.path().to_str().unwrap().to_string();

    let mut child = Command::new(feeder)
        .args([&url, &spool_arg, "0", "10000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx
                .send(line.trim().parse().expect("a sequence number"))
                .is_err()
            {
                break;
            }
        }
    });
    let mut acked = HashSet::new();
    let wait_acks = |acked: &mut HashSet<u64>, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let seq = rx.recv_timeout(left).expect("feeder stopped acknowledging");
            acked.insert(seq);
        }
    };
    wait_acks(&mut acked, 5_000);
    pg.stop(); // from here on, acks mean "fsynced to the spool"
    let at_stop = acked.len();
    wait_acks(&mut acked, at_stop + 5_000);
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the feeder was killed mid-stream ({status})"
    );
    reader.join().unwrap();
    acked.extend(rx.try_iter());
    assert!(acked.len() > at_stop + 5_000 - 1);

    // Restart: PostgreSQL back, and a new ingest process replays the spool.
    pg.start_again();
    let out = Command::new(feeder)
        .args([&url, &spool_arg, "0", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rows = pg.psql("SELECT payload->>'seq' FROM telemetry");
    let mut in_db = HashSet::new();
    let mut total = 0;
    for line in rows.lines() {
        in_db.insert(line.parse::<u64>().unwrap());
        total += 1;
    }
    assert_eq!(total, in_db.len(), "no record stored twice");
    let missing: Vec<_> = acked
        .iter()
        .filter(|s| !in_db.contains(s))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records missing, e.g. {missing:?}",
        acked.iter().filter(|s| !in_db.contains(s)).count()
    );
    assert!(acked.len() >= 10_000);
}
