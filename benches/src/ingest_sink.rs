//! `gatehouse-bench ingest-sink`: telemetry rows/s into a private PostgreSQL,
//! three ways in one run on the same generated rows:
//!
//! 1. **raw COPY** — the floor: rows pre-encoded in PostgreSQL's binary COPY
//!    format, one `COPY` per 5,000 rows on one connection, no decoding;
//! 2. **ingest** — `gatehouse-ingest` end to end: `submit` every record with
//!    a durable ack, JSON decoding, batching, parallel COPY writers, batch
//!    ledger, and the clock stops when the last ack fired (all committed);
//! 3. **INSERT per row** — how the reference subscriber worked: one
//!    autocommit `INSERT` per message (measured on a prefix, as rows/s).

use std::time::{Duration, Instant};

use gatehouse_config::{AckMode, Config, IngestDatabase};
use gatehouse_ingest::pgcopy::{COLUMNS, CopyEncoder};
use gatehouse_ingest::{Ack, Record};
use gatehouse_tests::postgres::Postgres;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

const SCHEMA: &str = "(time timestamptz NOT NULL, gateway_code text NOT NULL, topic text NOT NULL, \
                      payload jsonb NOT NULL, received_at timestamptz NOT NULL)";

pub(crate) fn run(rows: usize, per_row: usize) -> Result<(), String> {
    let pg = Postgres::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(measure(&pg, rows, per_row.min(rows)));
    drop(pg);
    result
}

struct Sample {
    ts: i64,
    gateway: String,
    payload: String,
}

fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let gw = format!("ESP32-{:04X}", i % 500);
            let ts = 1_700_000_000_000 + i as i64 * 10;
            Sample {
                payload: format!(
                    r#"{{"ts":{ts},"seq":{i},"temp":{:.2},"hum":{:.1},"modbus":{{"slave":{},"regs":[{},{},{}]}},"fw":"1.4.2"}}"#,
                    20.0 + (i % 100) as f64 / 10.0,
                    40.0 + (i % 37) as f64,
                    i % 8,
                    i % 1000,
                    i % 333,
                    i % 77
                ),
                ts: ts * 1000,
                gateway: gw,
            }
        })
        .collect()
}

async fn measure(pg: &Postgres, rows: usize, per_row: usize) -> Result<(), String> {
    let url = pg.database_url();
    let e = |e: sqlx::Error| e.to_string();
    let mut conn = PgConnection::connect(&url).await.map_err(e)?;
    for t in ["raw_copy", "per_row"] {
        sqlx::query(&format!("CREATE TABLE {t} {SCHEMA}"))
            .execute(&mut conn)
            .await
            .map_err(e)?;
        sqlx::query(&format!("CREATE INDEX ON {t} (gateway_code, time DESC)"))
            .execute(&mut conn)
            .await
            .map_err(e)?;
    }
    let data = samples(rows);
    let payload_mb = data.iter().map(|s| s.payload.len()).sum::<usize>() as f64 / 1e6;
    println!(
        "ingest bench: {rows} rows ({payload_mb:.1} MB of JSON), PostgreSQL on 127.0.0.1, \
         same schema and (gateway_code, time DESC) index everywhere"
    );

    // 1. raw binary COPY
    let started = Instant::now();
    for chunk in data.chunks(5_000) {
        let now = now_us();
        let mut enc = CopyEncoder::with_capacity(chunk.len() * 256);
        for s in chunk {
            let topic = format!("telemetry/{}/data", s.gateway);
            enc.row(s.ts, &s.gateway, &topic, s.payload.as_bytes(), now);
        }
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY raw_copy ({COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(e)?;
        copy.send(enc.finish()).await.map_err(e)?;
        copy.finish().await.map_err(e)?;
    }
    let raw = rate(rows, started.elapsed());
    check(&mut conn, "raw_copy", rows).await?;

    // 2. gatehouse-ingest
    let spool = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut settings = Config::defaults().ingest;
    settings.database = IngestDatabase::Postgres { url: url.clone() };
    settings.table = "ingest".into();
    settings.reject_table = "ingest_rejects".into();
    settings.spool_dir = spool.path().to_path_buf();
    settings.ack = AckMode::Durable;
    settings.queue_capacity = rows.max(1);
    let (handle, service) = gatehouse_ingest::start(&settings, None)
        .await
        .map_err(|e| e.to_string())?;
    // Warm-up: schema creation is not part of the figure.
    let (ack, w) = Ack::new();
    handle.submit(Record::new("warm", "telemetry/warm/data", "{}"), Some(ack));
    w.await.map_err(|e| e.to_string())?;
    let records: Vec<Record> = data
        .iter()
        .map(|s| {
            Record::new(
                s.gateway.clone(),
                format!("telemetry/{}/data", s.gateway),
                s.payload.clone(),
            )
        })
        .collect();
    let started = Instant::now();
    let mut waiters = Vec::with_capacity(rows);
    for r in records {
        let (ack, w) = Ack::new();
        handle.submit_async(r, Some(ack)).await;
        waiters.push(w);
    }
    for w in waiters {
        w.await.map_err(|e| e.to_string())?;
    }
    let ingest = rate(rows, started.elapsed());
    service.shutdown().await;
    check(&mut conn, "ingest", rows + 1).await?;

    // 3. one autocommit INSERT per row
    let started = Instant::now();
    for s in &data[..per_row] {
        sqlx::query(
            "INSERT INTO per_row VALUES ('epoch'::timestamptz + $1 * interval '1 microsecond', $2, $3, $4::jsonb, now())",
        )
        .bind(s.ts)
        .bind(&s.gateway)
        .bind(format!("telemetry/{}/data", s.gateway))
        .bind(&s.payload)
        .execute(&mut conn)
        .await
        .map_err(e)?;
    }
    let insert = rate(per_row, started.elapsed());
    check(&mut conn, "per_row", per_row).await?;

    println!("  raw binary COPY      {raw:>10.0} rows/s");
    println!(
        "  gatehouse-ingest     {ingest:>10.0} rows/s   {:.0}% of raw COPY, {:.1}x INSERT per row   (durable acks, {} writers, {} rows/batch)",
        100.0 * ingest / raw,
        ingest / insert,
        settings.writers,
        settings.batch_rows
    );
    println!(
        "  INSERT per row       {insert:>10.0} rows/s   (autocommit, measured on {per_row} rows)"
    );
    Ok(())
}

async fn check(conn: &mut PgConnection, table: &str, want: usize) -> Result<(), String> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .map_err(|e| e.to_string())?;
    if n as usize != want {
        return Err(format!("{table}: {n} rows, expected {want}"));
    }
    Ok(())
}

fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
