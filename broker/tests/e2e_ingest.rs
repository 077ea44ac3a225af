//! Telemetry ingest wired into `gatehouse serve`, driven by real rumqttc
//! clients over mTLS:
//!
//! * PostgreSQL `database_url`, `ack = "durable"`: QoS 1 publishers on
//!   `telemetry/{cn}/data`, PostgreSQL stopped mid-stream (acks then come
//!   from the spool), `gatehouse` SIGKILLed, everything restarted → every
//!   message whose PUBACK a client received is in the table, none twice.
//! * No `database_url`: rows land in the SQLite file of the data directory;
//!   topics outside `ingest.topic_filter` and PUBLISHes the ACL denies are
//!   not ingested; SIGTERM flushes what ingest still holds.
//! * Invalid JSON (and an unparseable time) published over MQTT lands in the
//!   reject table; with durable acks every PUBACK (and QoS 2 PUBREC) comes
//!   after the row is committed, in PUBLISH order.
//! * Ingest that cannot start stops `gatehouse serve` with one clear line.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{LONG, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mqtt::{V4, connect_v4, connect_v5};
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::postgres::Postgres;
use rumqttc::{Event, Outgoing, Packet, QoS};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

/// Durable-ack settings with test-friendly timings.
fn durable_ingest(database_url: Option<&str>) -> String {
    let db = database_url
        .map(|u| format!("database_url = {u:?}\n"))
        .unwrap_or_default();
    format!(
        "[ingest]\n{db}ack = \"durable\"\nbatch_age = \"20ms\"\nretry_min = \"50ms\"\n\
         retry_max = \"500ms\"\nconnect_timeout = \"500ms\"\n"
    )
}

/// Blocking harness work from async tests.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What one publisher saw: sequence numbers sent and acknowledged.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked: Vec<u64>,
}

/// Publishes `{"seq":n}` with QoS 1 on `telemetry/{cn}/data` for n = 0, 1,
/// ... until the connection dies, matching each PUBACK to its message by
/// packet id (rumqttc sends PUBLISHes in request order and reuses a packet
/// id only after its PUBACK). `acks` counts PUBACKs across publishers.
fn publish_until_gone(
    mut c: V4,
    cn: String,
    acks: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Tally> {
    let client = c.client.clone();
    let topic = format!("telemetry/{cn}/data");
    let sender = tokio::spawn(async move {
        for seq in 0u64.. {
            let payload = format!(r#"{{"seq":{seq},"t":21.5}}"#);
            if client
                .publish(&topic, QoS::AtLeastOnce, false, payload.into_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let mut in_flight: HashMap<u16, u64> = HashMap::new();
        while let Some(Ok(event)) = c.event().await {
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    in_flight.insert(pkid, tally.sent);
                    tally.sent += 1;
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    let seq = in_flight
                        .remove(&ack.pkid)
                        .unwrap_or_else(|| panic!("PUBACK for packet id {} never sent", ack.pkid));
                    tally.acked.push(seq);
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        sender.abort();
        tally
    })
}

/// Polls until `cond` holds (up to `within`).
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(gateway_code, seq)` of every row of the PostgreSQL telemetry table.
fn pg_rows(pg: &Postgres) -> Vec<(String, u64)> {
    pg.psql("SELECT gateway_code, payload->>'seq' FROM telemetry")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (gw, seq) = l.split_once('|').expect("two columns");
            (gw.to_string(), seq.parse().expect("seq is a number"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_acks_survive_sigkill_every_acknowledged_message_is_in_postgres() {
    let pki = Pki::generate();
    let mut pg = blocking(Postgres::start);
    let mut b = BrokerProcess::start(exe(), &pki, &durable_ingest(Some(&pg.database_url())));
    let others = [
        pki.issue_operational("GW0002-AB12"),
        pki.issue_operational("GW0003-CD34"),
    ];
    let acks = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for cert in std::iter::once(&pki.operational).chain(others.iter()) {
        let cn = cert.client_id.clone();
        let c = connect_v4(b.mqtt, &pki, Some(cert), &cn, |_| {})
            .await
            .expect("publisher connects");
        publishers.push((cn.clone(), publish_until_gone(c, cn, acks.clone())));
    }

    // Acks from database commits ...
    wait_until(Duration::from_secs(30), "300 PUBACKs", || {
        acks.load(Ordering::Relaxed) >= 300
    })
    .await;
    assert!(
        b.metric("gatehouse_ingest_rows_written_total") >= 300.0,
        "acknowledged rows were committed"
    );
    // ... then from the spool while PostgreSQL is down.
    blocking(|| pg.stop());
    let at_stop = acks.load(Ordering::Relaxed);
    blocking(|| b.wait_metric("gatehouse_ingest_spooled_records_total", |v| v > 0.0));
    wait_until(
        Duration::from_secs(30),
        "PUBACKs for spooled records",
        || acks.load(Ordering::Relaxed) >= at_stop + 200,
    )
    .await;
    blocking(|| b.kill());

    let mut acked: HashSet<(String, u64)> = HashSet::new();
    let mut sent: HashMap<String, u64> = HashMap::new();
    for (cn, task) in publishers {
        let tally = tokio::time::timeout(LONG, task)
            .await
            .expect("publisher sees the connection die")
            .expect("publisher task");
        assert!(!tally.acked.is_empty(), "{cn}: at least one PUBACK");
        assert!(
            tally.sent > tally.acked.len() as u64,
            "{cn}: killed mid-stream (messages in flight)"
        );
        acked.extend(tally.acked.into_iter().map(|s| (cn.clone(), s)));
        sent.insert(cn, tally.sent);
    }

    blocking(|| {
        pg.start_again();
        b.restart();
    });
    // The restarted broker replays the spool the killed one left.
    blocking(|| b.wait_metric("gatehouse_ingest_replayed_records_total", |v| v > 0.0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = blocking(|| pg_rows(&pg));
        let present: HashSet<&(String, u64)> = rows.iter().collect();
        let missing = acked.iter().filter(|m| !present.contains(m)).count();
        if missing == 0 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged messages are not in the table\n{}",
            acked.len(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    blocking(|| b.wait_metric("gatehouse_ingest_spool_bytes", |v| v == 0.0));
    let rows = {
        let again = blocking(|| pg_rows(&pg));
        assert!(again.len() >= rows.len());
        again
    };
    let distinct: HashSet<&(String, u64)> = rows.iter().collect();
    assert_eq!(distinct.len(), rows.len(), "no message stored twice");
    for (cn, seq) in &rows {
        assert!(*seq < sent[cn], "{cn} seq {seq} stored but never published");
    }
    let gw = pg.psql("SELECT DISTINCT gateway_code FROM telemetry ORDER BY 1");
    assert_eq!(gw, "GW0001-EEFF\nGW0002-AB12\nGW0003-CD34");
    eprintln!(
        "acknowledged {} of {} published; {} rows after restart",
        acked.len(),
        sent.values().sum::<u64>(),
        rows.len()
    );
}

async fn sqlite(path: &Path) -> SqlitePool {
    assert!(path.exists(), "{} exists", path.display());
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("open the ingest SQLite file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_database_url_telemetry_lands_in_sqlite_only_on_the_filter_and_allowed() {
    let pki = Pki::generate();
    // Batches older than an hour: rows can only be written by the shutdown flush.
    let mut b = BrokerProcess::start(exe(), &pki, "[ingest]\nbatch_age = \"1h\"\n");
    let mut c = connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .expect("connects");
    let own = format!("telemetry/{GATEWAY_CODE}/data");
    for (topic, seq) in [
        (own.clone(), 1),
        (format!("telemetry/{GATEWAY_CODE}/status"), 2), // allowed, not on the filter
        ("telemetry/GW0002-AB12/data".to_string(), 3),   // on the filter, denied by the ACL
    ] {
        c.client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"seq":{seq}}}"#),
            )
            .await
            .unwrap();
    }
    c.client
        .publish(&own, QoS::AtMostOnce, false, r#"{"seq":4}"#)
        .await
        .unwrap();
    let mut pubacks = 0;
    while pubacks < 3 {
        c.wait_for(LONG, |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await
            .unwrap()
            .expect("PUBACK");
        pubacks += 1;
    }
    blocking(|| b.wait_metric("gatehouse_ingest_submitted_total", |v| v >= 2.0));
    assert_eq!(
        b.metric(r#"gatehouse_acl_denials_total{action="publish",kind="operational"}"#),
        1.0
    );
    assert_eq!(b.metric("gatehouse_ingest_submitted_total"), 2.0);
    assert_eq!(b.metric("gatehouse_ingest_rows_written_total"), 0.0);

    let status = blocking(|| b.terminate(LONG));
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let db = sqlite(&b.data_dir.join("telemetry.db")).await;
    let rows = sqlx::query(
        "SELECT gateway_code, topic, payload, received_at FROM telemetry ORDER BY payload",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (GATEWAY_CODE.into(), own.clone(), r#"{"seq":1}"#.into()),
            (GATEWAY_CODE.into(), own.clone(), r#"{"seq":4}"#.into()),
        ],
        "only allowed PUBLISHes on the filter, flushed at shutdown"
    );
    let received: String = rows[0].get(3);
    assert!(
        received.ends_with('Z') && received.len() == 27,
        "{received}"
    );
    let rejects: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry_rejects")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rejects, 0);
    assert!(b.log().contains("ingest stopped"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_over_mqtt_lands_in_the_reject_table_and_durable_pubacks_keep_order() {
    let pki = Pki::generate();
    let b = BrokerProcess::start(exe(), &pki, &durable_ingest(None));
    let db = sqlite(&b.data_dir.join("telemetry.db")).await;
    let mut c = connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .expect("connects");
    let own = format!("telemetry/{GATEWAY_CODE}/data");
    let sent: [(&str, &[u8]); 4] = [
        (&own, b"not json{"),
        // Denied: the broker answers at once, but behind the held PUBACK above.
        ("telemetry/GW0002-AB12/data", br#"{"seq":2}"#),
        (&own, br#"{"seq":3,"ts":"yesterday"}"#),
        (&own, br#"{"seq":4,"ts":1700000000}"#),
    ];
    for (topic, payload) in sent {
        c.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
    }
    let mut order = Vec::new();
    while order.len() < 4 {
        let pkid = c
            .wait_for(LONG, |p| match p {
                Packet::PubAck(a) => Some(a.pkid),
                _ => None,
            })
            .await
            .unwrap()
            .expect("PUBACK");
        order.push(pkid);
    }
    assert_eq!(order, vec![1, 2, 3, 4], "PUBACKs in PUBLISH order");

    // Durable: by the time the PUBACKs arrived, everything is committed.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT payload, time FROM telemetry ORDER BY payload")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(
            r#"{"seq":4,"ts":1700000000}"#.to_string(),
            "2023-11-14T22:13:20.000000Z".to_string()
        )]
    );
    let rejects: Vec<(String, String, Vec<u8>, String)> = sqlx::query_as(
        "SELECT gateway_code, topic, payload, reason FROM telemetry_rejects ORDER BY rowid",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!(rejects[0].0, GATEWAY_CODE);
    assert_eq!(rejects[0].1, own);
    assert_eq!(rejects[0].2, b"not json{");
    assert!(
        rejects[0].3.contains("not valid JSON"),
        "reason: {}",
        rejects[0].3
    );
    assert_eq!(rejects[1].2, br#"{"seq":3,"ts":"yesterday"}"#);
    assert!(rejects[1].3.contains("\"ts\""), "reason: {}", rejects[1].3);
    assert_eq!(
        b.metric(r#"gatehouse_ingest_rejects_total{reason="invalid_json"}"#),
        1.0
    );
    assert_eq!(
        b.metric(r#"gatehouse_ingest_rejects_total{reason="bad_time"}"#),
        1.0
    );

    // MQTT 5 gets its PUBACK after the commit as well.
    let mut v5 = connect_v5(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .expect("v5 connects");
    v5.client
        .publish(
            &own,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            br#"{"seq":5}"#.to_vec(),
        )
        .await
        .unwrap();
    v5.wait_for(LONG, |p| {
        matches!(p, rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)).then_some(())
    })
    .await
    .unwrap()
    .expect("v5 PUBACK");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE payload = '{\"seq\":5}'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1, "committed before its PUBACK");

    // QoS 2: the PUBREC waits for the commit as the PUBACK does, and the
    // exchange completes.
    v5.client
        .publish(
            &own,
            rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
            false,
            br#"{"seq":6}"#.to_vec(),
        )
        .await
        .unwrap();
    v5.wait_for(LONG, |p| {
        matches!(p, rumqttc::v5::mqttbytes::v5::Packet::PubRec(_)).then_some(())
    })
    .await
    .unwrap()
    .expect("v5 PUBREC");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE payload = '{\"seq\":6}'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1, "committed before its PUBREC");
    v5.wait_for(LONG, |p| {
        matches!(p, rumqttc::v5::mqttbytes::v5::Packet::PubComp(_)).then_some(())
    })
    .await
    .unwrap()
    .expect("v5 PUBCOMP");
    assert_eq!(
        b.metric(r#"gatehouse_puback_withheld_total{reason="lost"}"#),
        0.0
    );
}

#[test]
fn ingest_that_cannot_start_stops_serve_with_one_clear_line() {
    let pki = Pki::generate();
    let mut b = BrokerProcess::start(exe(), &pki, "");
    assert!(b.terminate(LONG).success());
    // The SQLite file's directory would have to be inside a regular file.
    let blocker = b.data_dir.join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let mut config = std::fs::read_to_string(&b.config_path).unwrap();
    config.push_str(&format!(
        "[ingest]\nsqlite_path = {:?}\n",
        blocker.join("telemetry.db")
    ));
    std::fs::write(&b.config_path, config).unwrap();
    let out = std::process::Command::new(exe())
        .arg("serve")
        .arg("--config")
        .arg(&b.config_path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0]
            .starts_with("gatehouse: cannot start telemetry ingest: cannot open the SQLite file")
            && lines[0].contains("not-a-dir")
            && lines[0].contains("ingest.sqlite_path"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_disabled_stores_nothing_and_still_acks() {
    let pki = Pki::generate();
    let mut b = BrokerProcess::start(
        exe(),
        &pki,
        "[ingest]\nenabled = false\nack = \"durable\"\n",
    );
    let mut c = connect_v4(b.mqtt, &pki, Some(&pki.operational), GATEWAY_CODE, |_| {})
        .await
        .expect("connects");
    c.client
        .publish(
            format!("telemetry/{GATEWAY_CODE}/data"),
            QoS::AtLeastOnce,
            false,
            r#"{"seq":1}"#,
        )
        .await
        .unwrap();
    // ack = "durable" has nothing to wait for: the PUBACK comes at once.
    c.wait_for(LONG, |p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await
        .unwrap()
        .expect("PUBACK with ingest disabled");
    assert!(b.log().contains("[ingest] enabled = false"), "{}", b.log());
    let metrics = b.http_get("/metrics").expect("metrics");
    assert!(!metrics.contains("gatehouse_ingest_"), "{metrics}");
    assert!(b.terminate(LONG).success());
    assert!(!b.data_dir.join("telemetry.db").exists());
    assert!(!b.data_dir.join("spool").exists());
}
