//! Test helper for the crash test: feeds numbered telemetry records into
//! ingest with `ack = "durable"` and prints the sequence number of every
//! record whose ack fired (committed or spooled) on stdout, one per line.
//!
//! `ingest-feeder DATABASE_URL SPOOL_DIR FIRST COUNT`: submit COUNT records
//! numbered from FIRST, paced in small bursts, then shut down gracefully.
//! With COUNT = 0 it only replays the spool left by an earlier run: it waits
//! until the spool is empty, then shuts down.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_config::{AckMode, Config, IngestDatabase};
use gatehouse_ingest::{Ack, Record};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, spool, first, count] = args.as_slice() else {
        eprintln!("usage: ingest-feeder DATABASE_URL SPOOL_DIR FIRST COUNT");
        std::process::exit(2);
    };
    let first: u64 = first.parse().expect("FIRST");
    let count: u64 = count.parse().expect("COUNT");
    let mut settings = Config::defaults().ingest;
    settings.database = IngestDatabase::Postgres { url: url.clone() };
    settings.spool_dir = PathBuf::from(spool);
    settings.ack = AckMode::Durable;
    settings.batch_rows = 500;
    settings.batch_age = Duration::from_millis(20);
    settings.retry_min = Duration::from_millis(50);
    settings.retry_max = Duration::from_millis(500);
    settings.connect_timeout = Duration::from_millis(500);
    let (handle, service) = gatehouse_ingest::start(&settings, None)
        .await
        .expect("start ingest");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let printer = tokio::spawn(async move {
        let mut out = std::io::stdout();
        while let Some(seq) = rx.recv().await {
            writeln!(out, "{seq}").expect("stdout");
            out.flush().expect("stdout");
        }
    });
    for seq in first..first + count {
        let payload = format!(
            r#"{{"seq":{seq},"ts":{},"v":{{"t":21.5}}}}"#,
            1_700_000_000 + seq
        );
        let (ack, waiter) = Ack::new();
        handle
            .submit_async(
                Record::new("GW-FEED", "telemetry/GW-FEED/data", payload),
                Some(ack),
            )
            .await;
        let tx = tx.clone();
        tokio::spawn(async move {
            if waiter.await.is_ok() {
                let _ = tx.send(seq);
            }
        });
        if seq % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if count == 0 {
        while service.spool_backlog().0 > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    service.shutdown().await;
    drop(tx);
    let _ = printer.await;
}
