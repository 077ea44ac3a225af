//! The load scenarios: `connect`, `publish`, `idle`, `ingest`, `revoke`.
//! Each one is bounded (a duration and/or a count), runs against one
//! [`Running`] target and returns a [`Report`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_tests::pki::Pki;
use sqlx::Connection;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::client::{self, Fail, Frames};
use crate::fleet::{self, Gateway};
use crate::report::{Progress, Report, RssSampler, cpu_seconds, percentile, rss_kib};
use crate::target::Running;

/// Knobs of every scenario (each uses the ones it names in `--help`).
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub gateways: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub count: usize,
    pub qos1: bool,
    /// Total target publish rate, msg/s; 0 = as fast as possible.
    pub rate: u64,
    pub inflight: usize,
    pub messages: usize,
    pub timeout: Duration,
    pub spread_sources: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            gateways: 4,
            concurrency: 8,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            count: 0,
            qos1: false,
            rate: 0,
            inflight: 64,
            messages: 200_000,
            timeout: Duration::from_secs(5),
            spread_sources: true,
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishers connecting at once (see [`publisher`]).
static PUBLISHER_CONNECTS: Semaphore = Semaphore::const_new(64);

/// PUBLISHes written per TLS record when a publisher is behind schedule.
const BATCH: u64 = 32;

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A ~95-byte telemetry message; `"t"` is the send time in µs (latency).
fn payload(out: &mut Vec<u8>, code: &str, seq: u64) {
    let t = now_us();
    use std::io::Write;
    let _ = write!(
        out,
        r#"{{"ts":{},"t":{t},"gw":"{code}","seq":{seq},"temp":{}.{},"hum":48.2}}"#,
        t / 1000,
        18 + seq % 10,
        seq % 10
    );
}

pub(crate) fn sent_at(payload: &[u8]) -> Option<u64> {
    let at = payload.windows(5).position(|w| w == b",\"t\":")? + 5;
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    Some(digits)
}

pub(crate) fn cpu_delta(pid: Option<u32>, before: Option<f64>) -> Option<f64> {
    Some(cpu_seconds(pid?)? - before?)
}

// ---------------------------------------------------------------- connect

/// N gateways doing full mTLS handshakes + CONNECT/CONNACK (+ DISCONNECT)
/// with `concurrency` in flight, for `duration` or `count` connections.
pub(crate) async fn connect(gws: &[Gateway], t: &Running, p: &Params) -> Report {
    let mut r = Report::new(
        "connect",
        t.kind.name(),
        format!(
            "{} gateways, concurrency {}, {}",
            gws.len(),
            p.concurrency,
            bound(p)
        ),
    );
    let gws: Arc<Vec<(String, Arc<rustls::ClientConfig>)>> = Arc::new(
        gws.iter()
            .map(|g| (g.code.clone(), g.tls.clone()))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let fails = Arc::new(Mutex::new(BTreeMap::<Fail, u64>::new()));
    let lat = Arc::new(Mutex::new(Vec::<u32>::new()));
    let progress = Progress::start(
        format!("connect {}", t.kind.name()),
        ok.clone(),
        "connected",
    );
    let cpu0 = t.pid.and_then(cpu_seconds);
    let rss = RssSampler::start(t.pid);
    let started = Instant::now();
    let deadline = started + p.duration;
    let mut workers = Vec::new();
    for _ in 0..p.concurrency.max(1) {
        let (gws, next, ok, fails, lat) = (
            gws.clone(),
            next.clone(),
            ok.clone(),
            fails.clone(),
            lat.clone(),
        );
        let (count, addr) = (p.count, t.addr);
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if (count > 0 && i >= count) || (count == 0 && Instant::now() >= deadline) {
                    break;
                }
                let (code, tls) = &gws[i % gws.len()];
                let t0 = Instant::now();
                match client::connect(addr, tls.clone(), code, None, CONNECT_TIMEOUT).await {
                    Ok(mut s) => {
                        mine.push(t0.elapsed().as_micros() as u32);
                        ok.fetch_add(1, Ordering::Relaxed);
                        let _ = s.write_all(&client::DISCONNECT).await;
                        let _ = s.shutdown().await;
                    }
                    Err(f) => *fails.lock().expect("lock").entry(f).or_default() += 1,
                }
            }
            lat.lock().expect("lock").extend(mine);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(progress);
    let cpu = cpu_delta(t.pid, cpu0);
    let n = ok.load(Ordering::Relaxed) as f64;
    let mut lat = std::mem::take(&mut *lat.lock().expect("lock"));
    lat.sort_unstable();
    r.push("connections/s", Some(n / elapsed), "conn/s");
    r.push("connected", Some(n), "");
    r.push(
        "p50 connect",
        percentile(&lat, 50.0).map(|v| v / 1000.0),
        "ms",
    );
    r.push(
        "p99 connect",
        percentile(&lat, 99.0).map(|v| v / 1000.0),
        "ms",
    );
    let fails = fails.lock().expect("lock");
    r.push("failures", Some(fails.values().sum::<u64>() as f64), "");
    for (f, k) in fails.iter() {
        r.push(&format!("failures: {}", f.as_str()), Some(*k as f64), "");
    }
    if let Some(cpu) = cpu {
        r.push(
            "broker CPU/connection",
            Some(cpu * 1000.0 / n.max(1.0)),
            "ms",
        );
        r.push("broker CPU", Some(cpu / elapsed * 100.0), "%");
    }
    r.push("broker peak RSS", rss.finish(), "MiB");
    r
}

fn bound(p: &Params) -> String {
    if p.count > 0 {
        format!("{} connections", p.count)
    } else {
        format!("{:.1} s", p.duration.as_secs_f64())
    }
}

// ---------------------------------------------------------------- publish

struct Window {
    start: Instant,
    end: Instant,
}

/// One publisher: connects, then sends on `telemetry/{cn}/data` until
/// `stop_at` (or `limit` messages), at `rate` msg/s (0 = flat out), QoS 1
/// with at most `inflight` unacknowledged. Returns (sent, PUBACKed): the
/// first PUBACKed messages are sequence numbers `0..acked` (PUBACKs come in
/// order).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publisher(
    gw: (String, Arc<rustls::ClientConfig>),
    addr: std::net::SocketAddr,
    qos1: bool,
    rate: f64,
    inflight: usize,
    stop_at: Option<Instant>,
    limit: Option<u64>,
    sent: Arc<AtomicU64>,
) -> Result<(u64, u64), String> {
    let (code, tls) = gw;
    let stream = {
        // Thousands of publishers connect a few dozen at a time: a storm of
        // handshakes on a broker pinned to one core would time out.
        let _turn = PUBLISHER_CONNECTS.acquire().await;
        client::connect(addr, tls, &code, None, CONNECT_TIMEOUT)
            .await
            .map_err(|f| format!("{code}: connect: {}", f.as_str()))?
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let window = Arc::new(Semaphore::new(inflight.max(1)));
    let acked = Arc::new(AtomicU64::new(0));
    let reader = {
        let (window, acked) = (window.clone(), acked.clone());
        tokio::spawn(async move {
            let mut frames = Frames::new(rd);
            while let Some((h, _)) = frames.next().await {
                if h >> 4 == 4 {
                    window.add_permits(1);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let topic = format!("telemetry/{code}/data");
    let started = Instant::now();
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(16 * 160);
    let mut body = Vec::with_capacity(128);
    let mut pid: u16 = 0;
    loop {
        if stop_at.is_some_and(|s| Instant::now() >= s) || limit.is_some_and(|l| seq >= l) {
            break;
        }
        let mut k: u64 = BATCH;
        if let Some(l) = limit {
            k = k.min(l - seq);
        }
        if rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due <= seq {
                let next = started + Duration::from_secs_f64((seq + 1) as f64 / rate);
                tokio::time::sleep_until(next.into()).await;
                continue;
            }
            k = k.min(due - seq);
        }
        if qos1 {
            let first = window
                .acquire()
                .await
                .map_err(|_| "window closed".to_string())?;
            first.forget();
            let mut got = 1;
            while got < k {
                match window.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            k = got;
        }
        buf.clear();
        for _ in 0..k {
            body.clear();
            payload(&mut body, &code, seq);
            pid = if pid == u16::MAX { 1 } else { pid + 1 };
            client::publish(&mut buf, &topic, &body, qos1, pid);
            seq += 1;
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return Err(format!("{code}: the broker closed the connection"));
        }
        sent.fetch_add(k, Ordering::Relaxed);
    }
    if qos1 {
        // Wait for the outstanding PUBACKs (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::Relaxed) < seq && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = wr.write_all(&client::DISCONNECT).await;
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    reader.abort();
    Ok((seq, acked.load(Ordering::Relaxed)))
}

struct SubResult {
    count: u64,
    lat_us: Vec<u32>,
}

/// What a subscriber does with each payload it receives.
pub(crate) trait Sink: Send + 'static {
    fn payload(&mut self, payload: &[u8]);
}

/// The subscriber on its own OS thread and runtime (the publishers in this
/// process cannot starve it): subscribes to `telemetry/+/data`, acknowledges
/// QoS 1 deliveries and hands every payload to `sink` until `stop`; returns
/// the sink (with what it gathered) when the thread ends.
pub(crate) fn spawn_reader<S: Sink>(
    gw: (String, Arc<rustls::ClientConfig>),
    addr: std::net::SocketAddr,
    qos1: bool,
    stop: Arc<AtomicBool>,
    mut sink: S,
) -> Result<std::thread::JoinHandle<S>, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let handle = std::thread::spawn(move || {
        favour_this_thread();
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = ready_tx.send(Err("subscriber runtime".into()));
            return sink;
        };
        rt.block_on(async {
            let (code, tls) = gw;
            let stream = match client::connect(addr, tls, &code, None, CONNECT_TIMEOUT).await {
                Ok(s) => s,
                Err(f) => {
                    let _ = ready_tx.send(Err(format!("subscriber: connect: {}", f.as_str())));
                    return;
                }
            };
            let (rd, mut wr) = tokio::io::split(stream);
            let mut frames = Frames::new(rd);
            if wr
                .write_all(&client::subscribe("telemetry/+/data", qos1))
                .await
                .is_err()
            {
                let _ = ready_tx.send(Err("subscriber: closed".into()));
                return;
            }
            match frames.next().await {
                Some((0x90, body)) if body.get(2).is_some_and(|c| *c < 0x80) => {
                    let _ = ready_tx.send(Ok(()));
                }
                other => {
                    let _ = ready_tx.send(Err(format!(
                        "subscriber: SUBSCRIBE telemetry/+/data refused ({:02x?})",
                        other.map(|(h, b)| (h, b.to_vec()))
                    )));
                    return;
                }
            }
            let mut acks = Vec::with_capacity(4096);
            // One long-lived reading future (never cancelled mid-frame; the
            // watchdog only drops it when the run is over).
            let reading = async {
                while let Some((h, body)) = frames.next().await {
                    if h >> 4 != 3 {
                        continue;
                    }
                    let Some((_, pid, pl)) = client::parse_publish(h, body) else {
                        continue;
                    };
                    if let Some(pid) = pid {
                        client::puback(&mut acks, pid);
                    }
                    sink.payload(pl);
                    if !acks.is_empty() && (frames.drained() || acks.len() >= 4000) {
                        if wr.write_all(&acks).await.is_err() {
                            break;
                        }
                        acks.clear();
                    }
                }
            };
            let watchdog = async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = reading => {}
                _ = watchdog => {}
            }
            let _ = wr.write_all(&client::DISCONNECT).await;
        });
        sink
    });
    ready_rx
        .recv()
        .map_err(|_| "subscriber thread died".to_string())??;
    Ok(handle)
}

/// The `publish` subscriber: counts what arrives inside the window and
/// records latencies from the payload.
struct WindowSink {
    window: Arc<Mutex<Option<Window>>>,
    delivered: Arc<AtomicU64>,
    bounds: Option<(Instant, Instant)>,
    res: SubResult,
}

impl Sink for WindowSink {
    fn payload(&mut self, pl: &[u8]) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if self.bounds.is_none() {
            if let Some(w) = self.window.lock().expect("lock").as_ref() {
                self.bounds = Some((w.start, w.end));
            }
        }
        if let Some((s, e)) = self.bounds {
            let now = Instant::now();
            if now >= s && now < e {
                self.res.count += 1;
                if let Some(t) = sent_at(pl) {
                    self.res
                        .lat_us
                        .push(now_us().saturating_sub(t).min(u64::from(u32::MAX)) as u32);
                }
            }
        }
    }
}

fn spawn_subscriber(
    gw: (String, Arc<rustls::ClientConfig>),
    addr: std::net::SocketAddr,
    qos1: bool,
    window: Arc<Mutex<Option<Window>>>,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<WindowSink>, String> {
    let sink = WindowSink {
        window,
        delivered,
        bounds: None,
        res: SubResult {
            count: 0,
            lat_us: Vec::new(),
        },
    };
    spawn_reader(gw, addr, qos1, stop, sink)
}

/// Gives the calling thread priority (nice -10) over the publishers that
/// share the load generator's CPU, so the subscriber drains the broker as
/// fast as it can send (best effort: needs root; silently skipped otherwise).
fn favour_this_thread() {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    let Some(tid) = link
        .file_name()
        .and_then(|t| t.to_str())
        .map(str::to_string)
    else {
        return;
    };
    let _ = std::process::Command::new("renice")
        .args(["-n", "-10", "-p", &tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The label of a scenario run: `publish` and `saturate` by QoS.
pub(crate) fn label(scenario: &str, qos1: bool) -> &str {
    match scenario {
        "publish" if qos1 => "publish-qos1",
        "publish" => "publish-qos0",
        "saturate" if qos1 => "saturate-qos1",
        "saturate" => "saturate-qos0",
        s => s,
    }
}

/// `gateways` publishers → one subscriber; delivered msg/s, latency, broker
/// CPU and RSS over the measurement window (after `warmup`).
pub(crate) async fn publish(gws: &[Gateway], t: &Running, p: &Params) -> Report {
    let qos = if p.qos1 { "QoS 1" } else { "QoS 0" };
    let mut r = Report::new(
        label("publish", p.qos1),
        t.kind.name(),
        format!(
            "{} gateways -> 1 subscriber, {qos}, {}, ~95-byte JSON, {:.1} s after {:.1} s warm-up",
            p.gateways,
            rate_text(p.rate),
            p.duration.as_secs_f64(),
            p.warmup.as_secs_f64()
        ),
    );
    if let Err(e) = publish_inner(gws, t, p, &mut r).await {
        r.error = Some(e);
    }
    r
}

fn rate_text(rate: u64) -> String {
    if rate == 0 {
        "flat out".into()
    } else {
        format!("{rate} msg/s offered")
    }
}

async fn publish_inner(
    gws: &[Gateway],
    t: &Running,
    p: &Params,
    r: &mut Report,
) -> Result<(), String> {
    let sub_gw = gws.get(p.gateways).ok_or("fleet too small")?;
    let window = Arc::new(Mutex::new(None));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sub = spawn_subscriber(
        (sub_gw.code.clone(), sub_gw.tls.clone()),
        t.addr,
        p.qos1,
        window.clone(),
        delivered.clone(),
        stop.clone(),
    )?;
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("{} {}", r.scenario, t.kind.name()),
        delivered.clone(),
        "delivered",
    );
    let begin = Instant::now();
    let start = begin + p.warmup;
    let end = start + p.duration;
    *window.lock().expect("lock") = Some(Window { start, end });
    let per = p.rate as f64 / p.gateways.max(1) as f64;
    let mut tasks = Vec::new();
    for g in &gws[..p.gateways] {
        tasks.push(tokio::spawn(publisher(
            (g.code.clone(), g.tls.clone()),
            t.addr,
            p.qos1,
            per,
            p.inflight,
            Some(end),
            None,
            sent.clone(),
        )));
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu0 = t.pid.and_then(cpu_seconds);
    let sent0 = sent.load(Ordering::Relaxed);
    let rss = RssSampler::start(t.pid);
    tokio::time::sleep_until(end.into()).await;
    let cpu = cpu_delta(t.pid, cpu0);
    let sent_n = sent.load(Ordering::Relaxed) - sent0;
    let peak = rss.finish();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    // Let the tail drain, then stop the subscriber.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let res = sub.join().map_err(|_| "subscriber panicked")?.res;
    drop(progress);
    if let Some(e) = failure {
        return Err(e);
    }
    let secs = p.duration.as_secs_f64();
    let mut lat = res.lat_us;
    lat.sort_unstable();
    let rate = res.count as f64 / secs;
    r.push("delivered", Some(rate), "msg/s");
    r.push("sent", Some(sent_n as f64 / secs), "msg/s");
    r.push(
        "p50 latency",
        percentile(&lat, 50.0).map(|v| v / 1000.0),
        "ms",
    );
    r.push(
        "p99 latency",
        percentile(&lat, 99.0).map(|v| v / 1000.0),
        "ms",
    );
    if let Some(cpu) = cpu {
        r.push("broker CPU", Some(cpu / secs * 100.0), "%");
        r.push(
            "delivered/broker CPU-s",
            Some(res.count as f64 / cpu.max(1e-9)),
            "msg",
        );
    }
    r.push("broker peak RSS", peak, "MiB");
    Ok(())
}

// ---------------------------------------------------------------- idle

/// Opens `gateways` idle mTLS sessions (source addresses spread over
/// 127.0.0.x, 20,000 per address), holds them, reports RSS per session.
pub(crate) async fn idle(gws: &[Gateway], t: &Running, p: &Params) -> Report {
    let n = p.gateways;
    let mut r = Report::new(
        "idle",
        t.kind.name(),
        format!("{n} idle mTLS sessions, opened {} at a time", p.concurrency),
    );
    let before = t.pid.and_then(rss_kib);
    let opened = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("idle {}", t.kind.name()), opened.clone(), "open");
    let sem = Arc::new(Semaphore::new(p.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    let started = Instant::now();
    for (i, g) in gws.iter().take(n).enumerate() {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (code, tls, addr, opened) = (g.code.clone(), g.tls.clone(), t.addr, opened.clone());
        let source = (p.spread_sources && t.addr.ip().is_loopback())
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i / 20_000) as u8)));
        tasks.push(tokio::spawn(async move {
            let s = client::connect(addr, tls, &code, source, CONNECT_TIMEOUT).await;
            drop(permit);
            if s.is_ok() {
                opened.fetch_add(1, Ordering::Relaxed);
            }
            s
        }));
    }
    let mut sessions = Vec::with_capacity(n);
    let mut fails = BTreeMap::<Fail, u64>::new();
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(f)) => *fails.entry(f).or_default() += 1,
            Err(_) => *fails.entry(Fail::Closed).or_default() += 1,
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = t.pid.and_then(rss_kib);
    drop(progress);
    // Still open? A session the broker closed would read EOF now.
    let held = sessions.len();
    r.push("sessions held", Some(held as f64), "");
    r.push("open rate", Some(held as f64 / open_secs), "conn/s");
    r.push("failures", Some(fails.values().sum::<u64>() as f64), "");
    for (f, k) in &fails {
        r.push(&format!("failures: {}", f.as_str()), Some(*k as f64), "");
    }
    if let (Some(b), Some(a)) = (before, after) {
        r.push("broker RSS before", Some(b as f64 / 1024.0), "MiB");
        r.push("broker RSS holding", Some(a as f64 / 1024.0), "MiB");
        r.push(
            "RSS per session",
            Some(a.saturating_sub(b) as f64 / held.max(1) as f64),
            "KiB",
        );
    }
    for mut s in sessions {
        let _ = s.write_all(&client::DISCONNECT).await;
    }
    r
}

// ---------------------------------------------------------------- ingest

/// `messages` telemetry messages from `gateways` publishers (flat out) →
/// rows in the target's `telemetry` table: rows/s end to end and the time
/// from the last PUBLISH sent until the last row landed.
pub(crate) async fn ingest(gws: &[Gateway], t: &Running, url: &str, p: &Params) -> Report {
    let qos = if p.qos1 { "QoS 1" } else { "QoS 0" };
    let mut r = Report::new(
        "ingest",
        t.kind.name(),
        format!(
            "{} messages from {} gateways, {qos}, flat out -> table telemetry",
            p.messages, p.gateways
        ),
    );
    if let Err(e) = ingest_inner(gws, t, url, p, &mut r).await {
        r.error = Some(e);
    }
    r
}

async fn count_rows(conn: &mut sqlx::PgConnection) -> u64 {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM telemetry")
        .fetch_one(conn)
        .await
        .map(|n| n as u64)
        .unwrap_or(0)
}

async fn ingest_inner(
    gws: &[Gateway],
    t: &Running,
    url: &str,
    p: &Params,
    r: &mut Report,
) -> Result<(), String> {
    if !t.ingests {
        return Err(format!(
            "{} does not ingest telemetry into a database",
            t.kind.name()
        ));
    }
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("database {url}: {e}"))?;
    let base = count_rows(&mut conn).await;
    let n = p.gateways.max(1);
    let total = p.messages as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("ingest {}", t.kind.name()), sent.clone(), "sent");
    let cpu0 = t.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, g) in gws[..n].iter().enumerate() {
        let share = total / n as u64 + u64::from((i as u64) < total % n as u64);
        tasks.push(tokio::spawn(publisher(
            (g.code.clone(), g.tls.clone()),
            t.addr,
            p.qos1,
            0.0,
            p.inflight,
            None,
            Some(share),
            sent.clone(),
        )));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let sent_secs = started.elapsed().as_secs_f64();
    drop(progress);
    let landed = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("ingest {} rows", t.kind.name()),
        landed.clone(),
        "rows",
    );
    let mut last_change = Instant::now();
    let mut rows = 0;
    loop {
        let now_rows = count_rows(&mut conn).await.saturating_sub(base);
        landed.store(now_rows, Ordering::Relaxed);
        if now_rows != rows {
            rows = now_rows;
            last_change = Instant::now();
        }
        if rows >= total || last_change.elapsed() > p.timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_secs = last_change.duration_since(started).as_secs_f64();
    drop(progress);
    let cpu = cpu_delta(t.pid, cpu0);
    r.push(
        "rows/s end to end",
        Some(rows as f64 / total_secs),
        "rows/s",
    );
    r.push("client send rate", Some(total as f64 / sent_secs), "msg/s");
    r.push(
        "last row after last send",
        Some((total_secs - sent_secs).max(0.0) * 1000.0),
        "ms",
    );
    r.push("rows landed", Some(rows as f64), "");
    r.push("rows missing", Some(total.saturating_sub(rows) as f64), "");
    if let Some(cpu) = cpu {
        r.push("broker CPU/row", Some(cpu * 1e6 / rows.max(1) as f64), "µs");
    }
    if rows == 0 {
        return Err(format!(
            "no row reached the telemetry table within {:?} of the last send",
            p.timeout
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- revoke

/// `count` times: connect a fresh gateway, revoke its certificate by
/// rewriting the CRL file the broker watches (write temp + rename), and time
/// until the broker cuts the session (up to `timeout`).
pub(crate) async fn revoke(pki: &mut Pki, t: &Running, p: &Params, round: usize) -> Report {
    let count = p.count.max(1);
    let mut r = Report::new(
        "revoke",
        t.kind.name(),
        format!(
            "{count} connected gateways revoked one at a time (CRL rewrite), up to {:.1} s each",
            p.timeout.as_secs_f64()
        ),
    );
    let mut cut = Vec::new();
    let roots = match fleet::roots(&pki.ca_path) {
        Ok(r) => r,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    for i in 0..count {
        let k = round * 1000 + i;
        let code = format!("GW9{:04}-{:04X}", k % 10_000, k & 0xffff);
        let victim = pki.issue_operational(&code);
        let tls = match fleet::client_config(&roots, &victim.cert_path, &victim.key_path) {
            Ok(c) => c,
            Err(e) => {
                r.error = Some(e);
                return r;
            }
        };
        let stream = match client::connect(t.addr, tls, &code, None, CONNECT_TIMEOUT).await {
            Ok(s) => s,
            Err(f) => {
                r.error = Some(format!("{code}: connect: {}", f.as_str()));
                return r;
            }
        };
        let (rd, _wr) = tokio::io::split(stream);
        let mut closed = tokio::spawn(async move {
            let mut frames = Frames::new(rd);
            while let Some((h, _)) = frames.next().await {
                if h == 0xE0 {
                    break;
                }
            }
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        pki.revoke(victim.cert.serial);
        match tokio::time::timeout(p.timeout, &mut closed).await {
            Ok(Ok(at)) => cut.push(Some(at.duration_since(t0).as_secs_f64() * 1000.0)),
            _ => {
                // Still connected: close it ourselves.
                closed.abort();
                cut.push(None);
            }
        }
    }
    let times: Vec<u32> = {
        let mut v: Vec<u32> = cut
            .iter()
            .flatten()
            .map(|ms| (ms * 1000.0) as u32)
            .collect();
        v.sort_unstable();
        v
    };
    r.push(
        "sessions cut",
        Some(times.len() as f64),
        if times.len() == count { "all" } else { "" },
    );
    r.push(
        "p50 time to cut",
        percentile(&times, 50.0).map(|v| v / 1000.0),
        "ms",
    );
    r.push(
        "max time to cut",
        if times.len() == count {
            times.last().map(|v| f64::from(*v) / 1000.0)
        } else {
            None
        },
        "ms",
    );
    r
}
