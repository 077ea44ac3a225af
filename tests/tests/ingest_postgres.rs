//! Ingest into a private, real PostgreSQL: values land where and as they
//! should, undecodable payloads go to the reject table, and a table whose
//! schema does not match sends the rows to the reject table loudly instead
//! of losing them.

use gatehouse_config::AckMode;
use gatehouse_ingest::{Ack, AckWaiter, Durability, Record};
use gatehouse_tests::postgres::Postgres;

fn counter(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

async fn submit(h: &gatehouse_ingest::IngestHandle, gw: &str, payload: &str) -> AckWaiter {
    let (ack, waiter) = Ack::new();
    let r = Record::new(gw, format!("telemetry/{gw}/data"), payload);
    h.submit_async(r, Some(ack)).await;
    waiter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_land_correctly_and_bad_payloads_are_rejected() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut settings = pg.ingest_settings(spool.path());
    settings.ack = AckMode::Durable;
    let registry = prometheus::Registry::new();
    let before = std::time::SystemTime::now();
    let (h, svc) = gatehouse_ingest::start(&settings, Some(&registry))
        .await
        .unwrap();

    // (gateway, payload, expected event time in µs since the Unix epoch; None = receive time)
    let rows: &[(&str, &str, Option<i64>)] = &[
        (
            "GW-1",
            r#"{"v":1,"ts":"2024-05-01T12:00:00.123456Z"}"#,
            Some(1_714_564_800_123_456),
        ),
        (
            "GW-1",
            r#"{"v":2,"ts":1714564800}"#,
            Some(1_714_564_800_000_000),
        ),
        (
            "GW-2",
            r#"{"v":3,"ts":1714564800250}"#,
            Some(1_714_564_800_250_000),
        ),
        (
            "GW-2",
            r#"{"v":4,"ts":"2024-05-01T14:00:00+02:00"}"#,
            Some(1_714_564_800_000_000),
        ),
        (
            "GW-2",
            r#"{"v":5,"ts":1714564800.5}"#,
            Some(1_714_564_800_500_000),
        ),
        (
            "GW-3",
            r#"{"v":6,"nested":{"a":[1,{"b":"ü \"q\""}],"n":null,"deep":{"x":{"y":{"z":true}}}}}"#,
            None,
        ),
    ];
    let bad: &[(&str, &str)] = &[
        ("not json{", "not valid JSON"),
        ("[1,2,3]", "not an object"),
        (r#"{"v":9,"ts":"yesterday"}"#, "time field \"ts\""),
        (r#"{"v":10,"ts":{"s":1}}"#, "time field \"ts\""),
    ];
    let mut waiters = Vec::new();
    for (gw, payload, _) in rows {
        waiters.push((submit(&h, gw, payload).await, Durability::Committed));
    }
    for (payload, _) in bad {
        waiters.push((submit(&h, "GW-BAD", payload).await, Durability::Rejected));
    }
    for (w, expect) in waiters {
        assert_eq!(w.await, Ok(expect));
    }
    let after = std::time::SystemTime::now();

    for (gw, payload, time) in rows {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let n = v["v"].as_i64().unwrap();
        let got = pg.psql(&format!(
            "SELECT gateway_code, topic, (extract(epoch from time) * 1000000)::bigint, \
                    (extract(epoch from received_at) * 1000000)::bigint, payload = '{}'::jsonb \
             FROM telemetry WHERE (payload->>'v')::int = {n}",
            payload.replace('\'', "''")
        ));
        let cols: Vec<&str> = got.split('|').collect();
        assert_eq!(cols.len(), 5, "row v={n}: {got:?}");
        assert_eq!(cols[0], *gw);
        assert_eq!(cols[1], format!("telemetry/{gw}/data"));
        let received: i64 = cols[3].parse().unwrap();
        let t0 = before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let t1 = after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        assert!(
            (t0..=t1).contains(&received),
            "received_at {received} not in [{t0}, {t1}]"
        );
        match time {
            Some(t) => assert_eq!(cols[2].parse::<i64>().unwrap(), *t, "time of v={n}"),
            None => assert_eq!(cols[2], cols[3], "no time field: time = received_at"),
        }
        assert_eq!(
            cols[4], "t",
            "payload round-trips as the same jsonb (v={n})"
        );
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM telemetry"),
        rows.len().to_string()
    );
    assert_eq!(
        pg.psql(
            "SELECT payload->'nested'->'a'->1->>'b' FROM telemetry WHERE gateway_code = 'GW-3'"
        ),
        "ü \"q\""
    );
    assert_eq!(
        pg.psql(
            "SELECT payload #>> '{nested,deep,x,y,z}' FROM telemetry WHERE gateway_code = 'GW-3'"
        ),
        "true"
    );

    // Rejects keep the exact bytes and say why.
    let rejects = pg.psql(
        "SELECT convert_from(payload, 'UTF8') || E'\\t' || reason || E'\\t' || gateway_code FROM telemetry_rejects",
    );
    assert_eq!(rejects.lines().count(), bad.len(), "{rejects}");
    for (payload, why) in bad {
        let line = rejects
            .lines()
            .find(|l| l.split('\t').next() == Some(*payload))
            .unwrap_or_else(|| panic!("reject for {payload:?} missing in {rejects}"));
        assert!(line.contains(why), "{line} should say {why}");
        assert!(line.ends_with("\tGW-BAD"));
    }

    assert_eq!(
        counter(&registry, "gatehouse_ingest_rows_written_total"),
        rows.len() as f64
    );
    assert_eq!(
        counter(&registry, "gatehouse_ingest_rejects_total"),
        bad.len() as f64
    );
    assert_eq!(counter(&registry, "gatehouse_ingest_drops_total"), 0.0);

    // Plain table (Debian has no TimescaleDB package) with the documented index.
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"),
        "0"
    );
    assert_eq!(
        pg.psql("SELECT indexdef FROM pg_indexes WHERE indexname = 'telemetry_gateway_time_idx'"),
        "CREATE INDEX telemetry_gateway_time_idx ON public.telemetry USING btree (gateway_code, \"time\" DESC)"
    );
    svc.shutdown().await;
    assert_eq!(
        h.submit(Record::new("G", "t", "{}"), None),
        gatehouse_ingest::Submitted::Dropped(gatehouse_ingest::DropReason::Shutdown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_mismatch_sends_rows_to_the_reject_table() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    // Someone created the table with the wrong payload type.
    pg.psql(
        "CREATE TABLE telemetry (time timestamptz NOT NULL, gateway_code text NOT NULL, \
         topic text NOT NULL, payload int NOT NULL, received_at timestamptz NOT NULL)",
    );
    let spool = tempfile::tempdir().unwrap();
    let mut settings = pg.ingest_settings(spool.path());
    settings.ack = AckMode::Durable;
    let registry = prometheus::Registry::new();
    let (h, svc) = gatehouse_ingest::start(&settings, Some(&registry))
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for i in 0..20 {
        waiters.push(submit(&h, "GW-1", &format!(r#"{{"seq":{i}}}"#)).await);
    }
    for w in waiters {
        assert!(
            w.await.is_ok(),
            "refused rows are stored in the reject table, so acknowledged"
        );
    }
    assert_eq!(pg.psql("SELECT count(*) FROM telemetry"), "0");
    assert_eq!(pg.psql("SELECT count(*) FROM telemetry_rejects"), "20");
    assert_eq!(
        pg.psql(
            "SELECT sum((convert_from(payload, 'UTF8')::jsonb->>'seq')::int) FROM telemetry_rejects"
        ),
        (0..20).sum::<i32>().to_string()
    );
    let reason = pg.psql("SELECT DISTINCT reason FROM telemetry_rejects");
    assert!(
        reason.starts_with("the database refused the row"),
        "{reason}"
    );
    assert_eq!(counter(&registry, "gatehouse_ingest_rejects_total"), 20.0);
    assert_eq!(
        counter(&registry, "gatehouse_ingest_rows_written_total"),
        0.0
    );
    assert_eq!(
        svc.spool_backlog().0,
        0,
        "nothing retried forever from the spool"
    );
    svc.shutdown().await;
}

/// The database comes back empty (tables dropped, as after a restore or a
/// new database) while ingest runs: the tables are recreated, every record
/// acknowledged afterwards lands exactly once, and nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_dropped_while_running_are_recreated_and_nothing_acknowledged_is_lost() {
    database_comes_back_empty(|pg| {
        pg.psql("DROP TABLE telemetry, telemetry_rejects, telemetry_batches");
    })
    .await;
}

/// The same with the whole database dropped (open connections killed) and
/// created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_recreated_while_running_gets_the_tables_and_every_record() {
    database_comes_back_empty(Postgres::recreate_database).await;
}

async fn database_comes_back_empty(empty_it: impl FnOnce(&Postgres)) {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut settings = pg.ingest_settings(spool.path());
    settings.ack = AckMode::Durable;
    settings.batch_rows = 50;
    let registry = prometheus::Registry::new();
    let (h, svc) = gatehouse_ingest::start(&settings, Some(&registry))
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for seq in 0..200 {
        waiters.push(submit(&h, "GW-1", &format!(r#"{{"seq":{seq}}}"#)).await);
    }
    for w in waiters {
        assert_eq!(w.await, Ok(Durability::Committed));
    }
    assert_eq!(pg.psql("SELECT count(*) FROM telemetry"), "200");

    // Everything ingest created is gone.
    empty_it(&pg);
    let mut waiters = Vec::new();
    for seq in 1000..1600 {
        waiters.push(submit(&h, "GW-1", &format!(r#"{{"seq":{seq}}}"#)).await);
        if seq % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let mut failed = Vec::new();
    for (i, w) in waiters.into_iter().enumerate() {
        if let Err(e) = w.await {
            failed.push((1000 + i, e));
        }
    }
    assert!(
        failed.is_empty(),
        "{} acknowledgements failed, first {:?}",
        failed.len(),
        failed.first()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let count = pg.psql("SELECT count(*) FROM telemetry");
        if count == "600" && svc.spool_backlog().0 == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} of 600 rows arrived; backlog {:?}",
            svc.spool_backlog()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        pg.psql(
            "SELECT count(*), count(DISTINCT (payload->>'seq')::int), sum((payload->>'seq')::int), \
             min((payload->>'seq')::int) FROM telemetry"
        ),
        format!("600|600|{}|1000", (1000..1600).sum::<i32>())
    );
    assert_eq!(pg.psql("SELECT count(*) FROM telemetry_rejects"), "0");
    assert_eq!(counter(&registry, "gatehouse_ingest_drops_total"), 0.0);
    svc.shutdown().await;
}
