//! One well-behaved QoS 1 pair keeps its guarantees while other clients,
//! all holding valid certificates, attack the same broker at once: random
//! bytes after CONNECT, a flood of distinct topics while 3,000 subscription
//! filters exist, and connections that drip partial packets. The pair must
//! lose nothing and see p99 delivery latency under 100 ms.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ANY_CLIENT_ID, exe};
use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::pki::{GATEWAY_CODE, Pki};
use gatehouse_tests::raw::{self, ConnectOpts, Raw, kind};

const RUN: Duration = Duration::from_secs(8);
const PAIR_RATE_HZ: u64 = 100;
const FILTERS: usize = 3000;

/// A small deterministic generator for the fuzzing client.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn fuzzer(
    b: Arc<BrokerProcess>,
    pki: Arc<Pki>,
    stop: Arc<AtomicBool>,
    sessions: Arc<AtomicU64>,
) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    while !stop.load(Ordering::Relaxed) {
        let level = if rng.next() % 2 == 0 { 4 } else { 5 };
        let mut c = Raw::connect(
            b.mqtt,
            &pki,
            &pki.operational,
            &ConnectOpts::new(level, "fuzzer"),
        )
        .await;
        sessions.fetch_add(1, Ordering::Relaxed);
        // A plausible first byte (a client packet type) and random rest.
        let mut bytes =
            vec![[0x30u8, 0x32, 0x82, 0xA2, 0xC0, 0xE0, 0x62, 0x40][rng.next() as usize % 8]];
        let len = (rng.next() % 64) as usize;
        bytes.push(len as u8);
        bytes.extend((0..len).map(|_| rng.next() as u8));
        let _ = c.try_send(&bytes).await;
        let _ = c.closed_within(Duration::from_millis(300)).await;
    }
}

async fn topic_flooder(
    b: Arc<BrokerProcess>,
    pki: Arc<Pki>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut c = Raw::connect(
            b.mqtt,
            &pki,
            &pki.operational,
            &ConnectOpts::new(5, "flooder"),
        )
        .await;
        loop {
            n += 1;
            let topic = format!("telemetry/{GATEWAY_CODE}/flood/{n}");
            if c.try_send(&raw::publish(5, topic.as_bytes(), 0, false, 0, b"x"))
                .await
                .is_err()
            {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if n % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn dripper(b: Arc<BrokerProcess>, pki: Arc<Pki>, stop: Arc<AtomicBool>, id: usize) {
    let packet = raw::publish(
        5,
        format!("telemetry/{GATEWAY_CODE}/drip").as_bytes(),
        0,
        false,
        0,
        &[b'x'; 60_000],
    );
    while !stop.load(Ordering::Relaxed) {
        let mut c = Raw::connect(
            b.mqtt,
            &pki,
            &pki.operational,
            &ConnectOpts::new(5, &format!("drip-{id}")),
        )
        .await;
        // Most of a large packet at once, then a byte now and then.
        if c.try_send(&packet[..50_000]).await.is_err() {
            continue;
        }
        for byte in &packet[50_000..] {
            if stop.load(Ordering::Relaxed) || c.try_send(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_well_behaved_pair_loses_nothing_and_stays_fast_under_attack() {
    let pki = Arc::new(Pki::generate());
    let b = Arc::new(BrokerProcess::start(
        exe(),
        &pki,
        &format!(
            "{ANY_CLIENT_ID}\n[mqtt]\nmax_subscriptions_per_client = {FILTERS}\npacket_timeout = \"2s\"\nmax_partial_bytes = 400000\n"
        ),
    ));

    // 3,000 filters held by one client: every new topic is matched
    // against all of them.
    let mut holder = Raw::connect(
        b.mqtt,
        &pki,
        &pki.operational,
        &ConnectOpts::new(5, "filters"),
    )
    .await;
    for chunk in 0..FILTERS / 100 {
        let filters: Vec<String> = (0..100)
            .map(|i| format!("telemetry/{GATEWAY_CODE}/flood/+/f{}", chunk * 100 + i))
            .collect();
        let list: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 0)).collect();
        holder
            .send(&raw::subscribe(5, chunk as u16 + 1, &list))
            .await;
        let ack = holder.expect(kind::SUBACK, Duration::from_secs(10)).await;
        assert!(ack.body[3..].iter().all(|&c| c == 0), "all granted");
    }

    let pair_topic = format!("telemetry/{GATEWAY_CODE}/pair");
    let mut sub = Raw::connect(
        b.mqtt,
        &pki,
        &pki.operational,
        &ConnectOpts::new(5, "pair-sub"),
    )
    .await;
    sub.send(&raw::subscribe(5, 1, &[(pair_topic.as_str(), 1)]))
        .await;
    sub.expect(kind::SUBACK, Duration::from_secs(10)).await;
    let mut publ = Raw::connect(
        b.mqtt,
        &pki,
        &pki.operational,
        &ConnectOpts::new(5, "pair-pub"),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let fuzzed = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    attackers.push(tokio::spawn(fuzzer(
        b.clone(),
        pki.clone(),
        stop.clone(),
        fuzzed.clone(),
    )));
    attackers.push(tokio::spawn(topic_flooder(
        b.clone(),
        pki.clone(),
        stop.clone(),
        flooded.clone(),
    )));
    for id in 0..10 {
        attackers.push(tokio::spawn(dripper(
            b.clone(),
            pki.clone(),
            stop.clone(),
            id,
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The pair: the subscriber acks every QoS 1 delivery and records latency.
    let base = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut seqs = Vec::new();
        let deadline = Instant::now() + RUN + Duration::from_secs(10);
        while seqs.len() < (RUN.as_secs() * PAIR_RATE_HZ) as usize && Instant::now() < deadline {
            let Some(f) = sub.next(Duration::from_secs(5)).await else {
                break;
            };
            if f.kind != kind::PUBLISH {
                continue;
            }
            let pkid = [
                f.body[2 + f.body[1] as usize],
                f.body[3 + f.body[1] as usize],
            ];
            let (_, payload) = f.publish(true).expect("publish");
            let seq = u64::from_be_bytes(payload[..8].try_into().unwrap());
            let sent = u64::from_be_bytes(payload[8..16].try_into().unwrap());
            let now = base.elapsed().as_micros() as u64;
            latencies.push(now.saturating_sub(sent));
            seqs.push(seq);
            sub.send(&raw::frame(0x40, &pkid)).await;
        }
        (seqs, latencies)
    });
    let total = RUN.as_secs() * PAIR_RATE_HZ;
    let mut acked = 0;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / PAIR_RATE_HZ));
    for seq in 0..total {
        tick.tick().await;
        let mut payload = seq.to_be_bytes().to_vec();
        payload.extend((base.elapsed().as_micros() as u64).to_be_bytes());
        let pkid = (seq % 60_000) as u16 + 1;
        publ.send(&raw::publish(
            5,
            pair_topic.as_bytes(),
            1,
            false,
            pkid,
            &payload,
        ))
        .await;
        let ack = publ.expect(kind::PUBACK, Duration::from_secs(5)).await;
        assert_eq!(ack.reason(), 0, "PUBACK for #{seq}");
        acked += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (seqs, mut latencies) = receiver.await.unwrap();
    for a in attackers {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }

    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(acked, total);
    assert_eq!(
        sorted.len() as u64,
        total,
        "every acknowledged message delivered"
    );
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "pair: {} delivered, p50 {:.1} ms, p99 {:.1} ms; attack: {} flooded topics sent, {} fuzz sessions, quota hits {}, protocol errors {}",
        seqs.len(),
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        flooded.load(Ordering::Relaxed),
        fuzzed.load(Ordering::Relaxed),
        b.metric("gatehouse_quota_exceeded_total{quota=\"new_topics_per_minute\"}"),
        b.http_get("/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("gatehouse_protocol_errors_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>(),
    );
    assert!(p99 < 100_000, "p99 {p99} µs under attack");
    assert!(fuzzed.load(Ordering::Relaxed) > 5, "the fuzzer really ran");
    assert!(b.metric("gatehouse_quota_exceeded_total{quota=\"new_topics_per_minute\"}") >= 1.0);
    assert_eq!(b.metric("gatehouse_session_panics_total"), 0.0);
    assert_eq!(b.http_get("/healthz").as_deref(), Some("ok\n"));
}
