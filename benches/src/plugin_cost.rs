//! `gatehouse-bench plugin-cost`: throughput of Mosquitto + the Gatehouse
//! plugin against the same Mosquitto with equivalent rules in a plain
//! `acl_file` (no plugin), same load, same run, alternating rounds.
//!
//! Load: N operational gateways, each subscribed to its own
//! `telemetry/{cn}/#` and publishing QoS 1 to `telemetry/{cn}/data` as fast as
//! the in-flight window allows, so every message costs one write and one read
//! ACL check. Throughput = messages delivered back per second.
//!
//! Two plugin contenders: `[ingest] enabled = false` (identity, rules, live
//! CRL: what `acl_file` does too) and the default, which also copies every
//! `telemetry/+/data` message into ingest (here the default SQLite file).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_tests::mosquitto::{Mosquitto, Options};
use gatehouse_tests::mqtt::{Credentials, V5};
use gatehouse_tests::pki::{Client, Pki};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;

/// Equivalent of the default `[acl.operational]` rules for Mosquitto's
/// `acl_file` (username = CN with `use_identity_as_username`).
const PLAIN_ACL: &str = "pattern readwrite telemetry/%u/#\n";

async fn round(mosq: &Mosquitto, clients: &[Client], secs: u64) -> Result<f64, String> {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    for c in clients {
        let creds = Credentials {
            cert: &c.cert_path,
            key: &c.key_path,
        };
        let mut conn = V5::connect(&mosq.endpoint(), &c.client_id, Some(creds))
            .await
            .map_err(|e| format!("{}: connect: {e:?}", c.client_id))?;
        let filter = format!("telemetry/{}/#", c.client_id);
        if !conn.subscribe(&filter).await {
            return Err(format!("{}: subscribe refused", c.client_id));
        }
        let topic = format!("telemetry/{}/data", c.client_id);
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            let client = conn.client.clone();
            let publisher = tokio::spawn(async move {
                let payload = vec![b'x'; 64];
                while Instant::now() < end {
                    if client
                        .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            while Instant::now() < end {
                let left = end.saturating_duration_since(Instant::now());
                match conn.next(left).await {
                    Some(Packet::Publish(_)) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            publisher.abort();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(delivered.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Runs `rounds` alternating rounds of `secs` seconds with `clients`
/// gateways against both setups; prints per-round figures and the cost.
pub(crate) fn plugin_cost(clients: usize, secs: u64, rounds: usize) -> Result<(), String> {
    let pki = Pki::generate();
    let gateways: Vec<Client> = (0..clients)
        .map(|i| pki.issue_operational(&format!("GW{:04}-{:04X}", 100 + i, i)))
        .collect();
    let plugin = Mosquitto::start(
        &pki,
        &Options {
            gatehouse_extra: "[ingest]\nenabled = false\n".into(),
            ..Options::default()
        },
    );
    let ingesting = Mosquitto::start(&pki, &Options::default());
    let plain = Mosquitto::start(
        &pki,
        &Options {
            plain_acl_file: Some(PLAIN_ACL.into()),
            ..Options::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    // One discarded warm-up round each (TLS session setup, allocator, caches).
    rt.block_on(round(&plain, &gateways, 2))?;
    rt.block_on(round(&plugin, &gateways, 2))?;
    rt.block_on(round(&ingesting, &gateways, 2))?;
    let (mut with, mut without, mut full) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let a = rt.block_on(round(&plain, &gateways, secs))?;
        let b = rt.block_on(round(&plugin, &gateways, secs))?;
        let c = rt.block_on(round(&ingesting, &gateways, secs))?;
        println!(
            "round {}: acl_file {a:.0} msg/s, plugin {b:.0} msg/s, plugin + ingest {c:.0} msg/s",
            r + 1
        );
        without.push(a);
        with.push(b);
        full.push(c);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let (a, b, c) = (mean(&without), mean(&with), mean(&full));
    let (ma, mb, mc) = (median(&mut without), median(&mut with), median(&mut full));
    println!(
        "plugin-cost: {clients} gateways, {rounds} x {secs} s rounds: acl_file {a:.0} msg/s, \
         plugin {b:.0} msg/s (means), cost {:.1}%; medians {ma:.0} vs {mb:.0}, cost {:.1}%",
        (a - b) / a * 100.0,
        (ma - mb) / ma * 100.0
    );
    println!(
        "plugin + ingest (SQLite): {c:.0} msg/s (mean), cost {:.1}%; median {mc:.0}, cost {:.1}%",
        (a - c) / a * 100.0,
        (ma - mc) / ma * 100.0
    );
    Ok(())
}
