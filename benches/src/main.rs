//! `gatehouse-bench`: the load generator and benchmark suite (see `USAGE`,
//! printed by `--help`), plus measurements criterion cannot make
//! (`crl-load`, `ingest-sink`, `plugin-cost`).

mod bare;
mod client;
mod fleet;
mod ingest_sink;
mod plugin_cost;
mod report;
mod scenario;
mod target;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use gatehouse_auth::{CrlVerifier, RevocationSet};
use gatehouse_bench::{bench_ca, crl_pem, serials};
use gatehouse_tests::pki::Pki;
use gatehouse_tests::postgres::Postgres;
use serde_json::json;

use crate::report::{Report, fmt, median};
use crate::scenario::Params;
use crate::target::{Kind, Running, Start};

const USAGE: &str = "\
gatehouse-bench: load generator for MQTT brokers with mTLS client certificates

USAGE
  gatehouse-bench SCENARIO [--target T | --addr HOST:PORT --ca FILE --cert-dir DIR] [OPTIONS]
  gatehouse-bench suite [--quick] [--rounds N] [OPTIONS]
  gatehouse-bench pki --gateways N [--pki-dir DIR]
  gatehouse-bench ingest-sink [--rows N] [--per-row M]
  gatehouse-bench crl-load [--entries N] [--dir DIR]
  gatehouse-bench plugin-cost [--clients N] [--secs S] [--rounds R]

SCENARIOS (every run is bounded and stops by itself)
  connect   full mTLS handshakes + CONNECT/CONNACK (+DISCONNECT) by --gateways
            distinct gateways, --concurrency at a time, for --duration or
            --count connections -> connections/s, p50/p99 connect latency,
            failures by reason, broker CPU per connection
  publish   --gateways gateways publish ~95-byte JSON on telemetry/{cn}/data
            (QoS --qos, --rate msg/s in total or flat out), one subscriber on
            telemetry/+/data -> delivered msg/s, p50/p99 end-to-end latency
            (send time in the payload), broker CPU % and msg per broker
            CPU-second, peak RSS (/proc/<pid>), measured for --duration after
            --warmup
  idle      hold --gateways idle mTLS sessions (source addresses spread over
            127.0.0.x, 20,000 each) -> broker RSS per session
  ingest    --messages messages from --gateways gateways, flat out -> rows in
            table `telemetry`: rows/s end to end, time from the last send until
            the last row landed (waits up to --timeout without progress).
            Our targets get `[ingest] database_url` of a private PostgreSQL
            (or --database-url); mosquitto-acl does not ingest
  revoke    --count times: connect a fresh gateway, revoke its certificate by
            rewriting the CRL file the broker watches -> time until the broker
            cuts the session (never, if not within --timeout)

TARGETS
  --target embedded          gatehouse serve (--gatehouse BIN, default: next to
                             this binary) with a bench config
  --target mosquitto-plugin  /usr/sbin/mosquitto + libgatehouse_mosquitto.so
                             ($GATEHOUSE_PLUGIN_SO, else built)
  --target mosquitto-acl     plain Mosquitto, the same rules in acl_file
                             (use_identity_as_username, crlfile)
  --target rustls            (connect only) a bare rustls server with the same
                             certificates that verifies the client certificate,
                             reads CONNECT and answers CONNACK: the floor
  --addr HOST:PORT --ca FILE --cert-dir DIR
                             any running broker: CA of its server certificate
                             and a directory of gateway certificates
                             ({cn}.crt + {cn}.key; client id = cn, which may
                             publish on telemetry/{cn}/data and one of which may
                             subscribe to telemetry/+/data); `gatehouse-bench
                             pki` writes such a directory. Optional
                             --broker-pid PID (CPU/RSS), --database-url URL
                             (ingest). revoke needs one of our targets.
  All our targets: same fleet CA and server certificate, TLS on 127.0.0.1,
  the CRL polled every 250 ms, Mosquitto with set_tcp_nodelay true, a fresh
  broker process for every run.

OPTIONS (defaults in brackets)
  --gateways N       publishers / distinct gateways / sessions [publish 4,
                     connect 1000, idle 1000, ingest 4]
  --concurrency N    connections in flight (connect, idle) [8]
  --duration SECS    measurement time [10]      --warmup SECS   [2]
  --count N          connections (connect; 0 = use --duration) or revocations
                     (revoke) [connect 0, revoke 3]
  --qos 0|1          [0]           --rate MSGS   total msg/s, 0 = flat out [0]
  --inflight N       unacknowledged QoS 1 PUBLISHes per publisher [64]
  --messages N       ingest messages [200000]
  --timeout SECS     revoke: wait for the cut; ingest: wait without progress [3 / 10]
  --pin-broker CPU   taskset the broker (all threads) to CPU
  --pin-client CPU   taskset this load generator to CPU
  --client-threads N tokio worker threads of the load generator [2]
  --pki-dir DIR      fleet CA + gateway certificates cached between runs
                     [target/gatehouse-bench-pki]
  --json FILE        also write the results as JSON
  --quick            (suite) tiny durations: proves every contender and
                     scenario works end to end, figures meaningless
  --rounds N         (suite) rounds of every scenario x contender [3; quick 1]

suite runs connect, publish QoS 0, publish QoS 1, ingest and revoke against
embedded, mosquitto-plugin and mosquitto-acl (connect also against the bare
rustls server), interleaved (A B C A B C ...),
then prints the median of the rounds for every figure and the ratios
embedded/mosquitto-acl, plugin/mosquitto-acl and embedded/plugin.
scripts/bench.sh builds the release binaries and runs it.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-bench: {e}\n(gatehouse-bench --help for usage)");
            ExitCode::from(2)
        }
    }
}

/// Parsed command line.
struct Opts {
    target: Option<Kind>,
    addr: Option<SocketAddr>,
    ca: Option<PathBuf>,
    cert_dir: Option<PathBuf>,
    broker_pid: Option<u32>,
    database_url: Option<String>,
    gatehouse: PathBuf,
    pki_dir: PathBuf,
    json: Option<PathBuf>,
    pin_broker: Option<usize>,
    pin_client: Option<usize>,
    client_threads: usize,
    quick: bool,
    rounds: Option<usize>,
    params: Params,
    set: Vec<&'static str>,
    // bare-server and older tools
    port: u16,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    entries: usize,
    dir: PathBuf,
    rows: usize,
    per_row: usize,
    clients: usize,
    secs: u64,
}

fn parse(rest: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        target: None,
        addr: None,
        ca: None,
        cert_dir: None,
        broker_pid: None,
        database_url: None,
        gatehouse: target::default_gatehouse(),
        pki_dir: default_pki_dir(),
        json: None,
        pin_broker: None,
        pin_client: None,
        client_threads: 2,
        quick: false,
        rounds: None,
        params: Params::default(),
        set: Vec::new(),
        port: 0,
        cert: None,
        key: None,
        entries: 1_000_000,
        dir: std::env::temp_dir().join("gatehouse-bench-crl"),
        rows: 200_000,
        per_row: 5_000,
        clients: 8,
        secs: 5,
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            o.quick = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err("help".into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| -> Result<usize, String> {
            v.parse()
                .map_err(|_| format!("{flag}: not a whole number: {v:?}"))
        };
        let secs = |v: &str| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: not a number of seconds: {v:?}"))
        };
        let p = &mut o.params;
        match flag.as_str() {
            "--target" => o.target = Some(Kind::parse(value)?),
            "--addr" => {
                o.addr = Some(
                    std::net::ToSocketAddrs::to_socket_addrs(value.as_str())
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| format!("--addr: cannot resolve {value:?}"))?,
                )
            }
            "--ca" => o.ca = Some(PathBuf::from(value)),
            "--cert-dir" => o.cert_dir = Some(PathBuf::from(value)),
            "--broker-pid" => o.broker_pid = Some(num(value)? as u32),
            "--database-url" => o.database_url = Some(value.clone()),
            "--gatehouse" => o.gatehouse = PathBuf::from(value),
            "--pki-dir" => o.pki_dir = PathBuf::from(value),
            "--json" => o.json = Some(PathBuf::from(value)),
            "--pin-broker" => o.pin_broker = Some(num(value)?),
            "--pin-client" => o.pin_client = Some(num(value)?),
            "--client-threads" => o.client_threads = num(value)?.max(1),
            "--rounds" => o.rounds = Some(num(value)?.max(1)),
            "--gateways" => {
                p.gateways = num(value)?.max(1);
                o.set.push("gateways");
            }
            "--concurrency" => p.concurrency = num(value)?.max(1),
            "--duration" => p.duration = secs(value)?,
            "--warmup" => p.warmup = secs(value)?,
            "--count" => {
                p.count = num(value)?;
                o.set.push("count");
            }
            "--qos" => {
                p.qos1 = match value.as_str() {
                    "0" => false,
                    "1" => true,
                    _ => return Err(format!("--qos: 0 or 1, not {value:?}")),
                }
            }
            "--rate" => p.rate = num(value)? as u64,
            "--inflight" => p.inflight = num(value)?.max(1),
            "--messages" => p.messages = num(value)?.max(1),
            "--timeout" => {
                p.timeout = secs(value)?;
                o.set.push("timeout");
            }
            "--entries" => o.entries = num(value)?,
            "--port" => o.port = num(value)? as u16,
            "--cert" => o.cert = Some(PathBuf::from(value)),
            "--key" => o.key = Some(PathBuf::from(value)),
            "--dir" => o.dir = PathBuf::from(value),
            "--rows" => o.rows = num(value)?,
            "--per-row" => o.per_row = num(value)?,
            "--clients" => o.clients = num(value)?,
            "--secs" => o.secs = num(value)? as u64,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn default_pki_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("gatehouse-bench-pki")
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    if matches!(cmd.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return Ok(());
    }
    let mut o = match parse(rest) {
        Err(e) if e == "help" => {
            println!("{USAGE}");
            return Ok(());
        }
        r => r?,
    };
    match cmd.as_str() {
        "crl-load" => crl_load(o.entries, &o.dir),
        "bare-server" => {
            let (Some(ca), Some(cert), Some(key)) = (&o.ca, &o.cert, &o.key) else {
                return Err("bare-server needs --port, --ca, --cert and --key".into());
            };
            bare::serve(o.port, ca, cert, key)
        }
        "make-crl" => make_crl(o.entries, &o.dir),
        "ingest-sink" => ingest_sink::run(o.rows, o.per_row),
        "plugin-cost" => plugin_cost::plugin_cost(o.clients, o.secs, o.rounds.unwrap_or(2)),
        "pki" => {
            let ca = fleet::fleet_ca(&o.pki_dir)?;
            let n = fleet::ensure_gateways(&ca, &o.pki_dir, o.params.gateways)?;
            println!(
                "{}: fleet CA ca.crt, {} gateway certificates in {} ({n} new)",
                o.pki_dir.display(),
                o.params.gateways,
                fleet::gateway_dir(&o.pki_dir).display()
            );
            Ok(())
        }
        "connect" | "publish" | "idle" | "ingest" | "revoke" => {
            let sc = cmd.clone();
            defaults_for(&sc, &mut o);
            single(&sc, &o)
        }
        "suite" => suite(&mut o),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn defaults_for(scenario: &str, o: &mut Opts) {
    let p = &mut o.params;
    let set = |k: &str| o.set.contains(&k);
    if !set("gateways") && matches!(scenario, "connect" | "idle") {
        p.gateways = 1000;
    }
    if !set("count") && scenario == "revoke" {
        p.count = 3;
    }
    if !set("timeout") {
        p.timeout = Duration::from_secs(if scenario == "ingest" { 10 } else { 3 });
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Everything a run needs from this side: the certificates, the load
/// generator's runtime and (for ingest) PostgreSQL.
struct Env {
    pki: Option<Pki>,
    gateways: Vec<fleet::Gateway>,
    rt: tokio::runtime::Runtime,
    pg: Option<Postgres>,
    databases: usize,
    scratch: tempfile::TempDir,
}

fn fleet_size(scenario: &str, p: &Params) -> usize {
    match scenario {
        "publish" | "ingest" => p.gateways + 1,
        "revoke" => 1,
        _ => p.gateways,
    }
}

fn env(o: &Opts, fleet: usize, need_pg: bool) -> Result<Env, String> {
    let external = o.addr.is_some();
    let started = Instant::now();
    let (pki, gateways) = if external {
        let (Some(ca), Some(dir)) = (&o.ca, &o.cert_dir) else {
            return Err("--addr needs --ca FILE and --cert-dir DIR".into());
        };
        (None, fleet::load(dir, ca, fleet)?)
    } else {
        let ca = fleet::fleet_ca(&o.pki_dir)?;
        let issued = fleet::ensure_gateways(&ca, &o.pki_dir, fleet)?;
        if issued > 0 {
            eprintln!(
                "issued {issued} gateway certificates into {} in {:.1?} (cached for later runs)",
                o.pki_dir.display(),
                started.elapsed()
            );
        }
        let pki = Pki::with_fleet_ca(ca);
        let gws = fleet::load(&fleet::gateway_dir(&o.pki_dir), &pki.ca_path, fleet)?;
        (Some(pki), gws)
    };
    let pg = (need_pg && o.database_url.is_none()).then(Postgres::start);
    if let Some(cpu) = o.pin_client {
        target::pin(std::process::id(), cpu)?;
    }
    Ok(Env {
        pki,
        gateways,
        rt: runtime(o.client_threads)?,
        pg,
        databases: 0,
        scratch: tempfile::tempdir().map_err(|e| e.to_string())?,
    })
}

impl Env {
    /// A database URL for one ingest run: a fresh database in our private
    /// PostgreSQL, or the one given with --database-url.
    fn database(&mut self, o: &Opts) -> Option<String> {
        if let Some(url) = &o.database_url {
            return Some(url.clone());
        }
        let pg = self.pg.as_ref()?;
        self.databases += 1;
        let name = format!("bench_{}", self.databases);
        pg.psql(&format!("CREATE DATABASE {name}"));
        let base = pg.database_url();
        let root = base.rsplit_once('/').map(|(r, _)| r).unwrap_or(&base);
        Some(format!("{root}/{name}"))
    }
}

/// Starts the target (fresh), runs one scenario, stops the target.
fn run_one(env: &mut Env, o: &Opts, kind: Kind, scenario: &str, round: usize) -> Report {
    let p = &o.params;
    let label = match scenario {
        "publish" if p.qos1 => "publish-qos1",
        "publish" => "publish-qos0",
        s => s,
    };
    let url = if scenario == "ingest" {
        env.database(o)
    } else {
        None
    };
    let scratch = env
        .scratch
        .path()
        .join(format!("{label}-{}-{round}", kind.name()));
    let _ = std::fs::create_dir_all(&scratch);
    let running = if kind == Kind::External {
        let addr = o.addr.expect("external has an address");
        Ok(Running::external(addr, o.broker_pid, url.is_some()))
    } else {
        let pki = env.pki.as_ref().expect("own targets have a PKI");
        Running::start(&Start {
            kind,
            gatehouse: &o.gatehouse,
            pki,
            ingest_url: url.as_deref(),
            scratch: &scratch,
            pin: o.pin_broker,
        })
    };
    let running = match running {
        Ok(r) => r,
        Err(e) => {
            let mut r = Report::new(label, kind.name(), String::new());
            r.error = Some(e);
            return r;
        }
    };
    let gws = &env.gateways;
    let report = match scenario {
        "connect" => env.rt.block_on(scenario::connect(gws, &running, p)),
        "publish" => env.rt.block_on(scenario::publish(gws, &running, p)),
        "idle" => env.rt.block_on(scenario::idle(gws, &running, p)),
        "ingest" => match &url {
            Some(url) => env.rt.block_on(scenario::ingest(gws, &running, url, p)),
            None => {
                let mut r = Report::new(label, kind.name(), String::new());
                r.error = Some("ingest needs --database-url for an external broker".into());
                r
            }
        },
        "revoke" => match env.pki.as_mut() {
            Some(pki) => env.rt.block_on(scenario::revoke(pki, &running, p, round)),
            None => {
                let mut r = Report::new(label, kind.name(), String::new());
                r.error = Some(
                    "revoke rewrites the CRL with the fleet CA: only for --target embedded, \
                     mosquitto-plugin or mosquitto-acl"
                        .into(),
                );
                r
            }
        },
        other => unreachable!("scenario {other}"),
    };
    drop(running);
    report
}

fn single(scenario: &str, o: &Opts) -> Result<(), String> {
    let kind = match (o.target, o.addr) {
        (Some(_), Some(_)) => return Err("give either --target or --addr, not both".into()),
        (Some(k), None) => k,
        (None, Some(_)) => Kind::External,
        (None, None) => Kind::Embedded,
    };
    let mut env = env(o, fleet_size(scenario, &o.params), scenario == "ingest")?;
    let report = run_one(&mut env, o, kind, scenario, 0);
    report.print();
    if let Some(path) = &o.json {
        write_json(path, &report.json())?;
    }
    match &report.error {
        Some(e) => Err(format!("{} on {}: {e}", report.scenario, report.target)),
        None => Ok(()),
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The headline figures of each suite scenario (medians and ratios).
const HEADLINES: &[(&str, &[&str])] = &[
    (
        "connect",
        &[
            "connections/s",
            "p50 connect",
            "p99 connect",
            "broker CPU/connection",
            "failures",
        ],
    ),
    (
        "publish-qos0",
        &[
            "delivered",
            "delivered/broker CPU-s",
            "broker CPU",
            "p50 latency",
            "p99 latency",
            "broker peak RSS",
        ],
    ),
    (
        "publish-qos1",
        &[
            "delivered",
            "delivered/broker CPU-s",
            "broker CPU",
            "p50 latency",
            "p99 latency",
            "broker peak RSS",
        ],
    ),
    (
        "ingest",
        &[
            "rows/s end to end",
            "client send rate",
            "last row after last send",
            "rows missing",
        ],
    ),
    (
        "revoke",
        &["sessions cut", "p50 time to cut", "max time to cut"],
    ),
];

const CONTENDERS: [Kind; 3] = [Kind::Embedded, Kind::MosquittoPlugin, Kind::MosquittoAcl];

fn suite(o: &mut Opts) -> Result<(), String> {
    if o.addr.is_some() || o.target.is_some() {
        return Err("suite runs its own three targets: no --target / --addr".into());
    }
    let rounds = o.rounds.unwrap_or(if o.quick { 1 } else { 3 });
    let quick = o.quick;
    let mut base = o.params.clone();
    let connect_gws = if o.set.contains(&"gateways") {
        base.gateways
    } else {
        1000
    };
    let pub_gws = if o.set.contains(&"gateways") {
        base.gateways
    } else {
        4
    };
    if quick {
        base.duration = Duration::from_secs(1);
        base.warmup = Duration::from_millis(500);
        base.messages = 5_000;
    }
    let mut env = env(o, connect_gws.max(pub_gws + 1), true)?;
    let started = Instant::now();
    let machine = machine();
    println!(
        "gatehouse-bench suite: {rounds} round(s), contenders interleaved; {machine}{}",
        if quick {
            " — QUICK MODE: tiny durations, figures meaningless"
        } else {
            ""
        }
    );
    let plan: Vec<(&str, &str, Params)> = vec![
        (
            "connect",
            "connect",
            Params {
                gateways: connect_gws,
                count: 0,
                ..base.clone()
            },
        ),
        (
            "publish-qos0",
            "publish",
            Params {
                gateways: pub_gws,
                qos1: false,
                ..base.clone()
            },
        ),
        (
            "publish-qos1",
            "publish",
            Params {
                gateways: pub_gws,
                qos1: true,
                ..base.clone()
            },
        ),
        (
            "ingest",
            "ingest",
            Params {
                gateways: pub_gws,
                qos1: false,
                timeout: Duration::from_secs(10),
                ..base.clone()
            },
        ),
        (
            "revoke",
            "revoke",
            Params {
                count: if quick { 1 } else { 3 },
                timeout: Duration::from_secs(if quick { 2 } else { 3 }),
                ..base.clone()
            },
        ),
    ];
    let mut reports: Vec<Report> = Vec::new();
    for (label, scenario, params) in &plan {
        o.params = params.clone();
        for round in 0..rounds {
            let extra = (*scenario == "connect").then_some(Kind::Bare);
            for kind in CONTENDERS.into_iter().chain(extra) {
                if *scenario == "ingest" && kind == Kind::MosquittoAcl {
                    continue;
                }
                let r = run_one(&mut env, o, kind, scenario, round);
                println!(
                    "[{:>5.0} s] {label:<13} round {} {:<17} {}",
                    started.elapsed().as_secs_f64(),
                    round + 1,
                    kind.name(),
                    match &r.error {
                        Some(e) => format!("FAILED: {e}"),
                        None => headline(&r),
                    }
                );
                reports.push(r);
            }
        }
    }
    let medians = print_summary(&plan, &reports, rounds);
    println!(
        "\ntotal {:.0} s; {machine}",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &o.json {
        write_json(
            path,
            &json!({
                "machine": machine,
                "rounds": rounds,
                "quick": quick,
                "params": plan.iter().map(|(l, _, p)| json!({"scenario": l, "params": format!("{p:?}")})).collect::<Vec<_>>(),
                "medians": medians,
                "runs": reports.iter().map(Report::json).collect::<Vec<_>>(),
            }),
        )?;
    }
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        println!("{failed} run(s) failed (marked FAILED above; their figures are missing)");
    }
    Ok(())
}

fn headline(r: &Report) -> String {
    r.metrics
        .iter()
        .take(3)
        .map(|m| format!("{} {} {}", m.name, fmt(m.value), m.unit))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(
    plan: &[(&str, &str, Params)],
    reports: &[Report],
    rounds: usize,
) -> serde_json::Value {
    println!(
        "\nMedians of {rounds} round(s). Ratios: E = embedded, P = mosquitto-plugin, A = mosquitto-acl\n"
    );
    println!(
        "{:<13} {:<24} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7}  unit",
        "scenario", "figure", "embedded", "mosq+plugin", "mosq+acl", "E/A", "P/A", "E/P"
    );
    let mut out = Vec::new();
    for (label, _, params) in plan {
        let figures = HEADLINES
            .iter()
            .find(|(s, _)| s == label)
            .map(|(_, f)| *f)
            .unwrap_or(&[]);
        for fig in figures {
            let mut unit = "";
            let med: Vec<Option<f64>> = CONTENDERS
                .iter()
                .map(|k| {
                    let vals: Vec<Option<f64>> = reports
                        .iter()
                        .filter(|r| {
                            r.scenario == *label && r.target == k.name() && r.error.is_none()
                        })
                        .map(|r| {
                            if let Some(m) = r.metrics.iter().find(|m| m.name == *fig) {
                                unit = m.unit;
                            }
                            r.get(fig)
                        })
                        .collect();
                    median(&vals)
                })
                .collect();
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let cell = |k: usize| {
                let ran = reports
                    .iter()
                    .any(|r| r.scenario == *label && r.target == CONTENDERS[k].name());
                if !ran {
                    "n/a".to_string()
                } else if reports.iter().any(|r| {
                    r.scenario == *label && r.target == CONTENDERS[k].name() && r.error.is_some()
                }) && med[k].is_none()
                {
                    "FAILED".to_string()
                } else {
                    fmt(med[k])
                }
            };
            println!(
                "{:<13} {:<24} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7}  {unit}",
                label,
                fig,
                cell(0),
                cell(1),
                cell(2),
                ratio(med[0], med[2]),
                ratio(med[1], med[2]),
                ratio(med[0], med[1]),
            );
            out.push(json!({
                "scenario": label,
                "figure": fig,
                "unit": unit,
                "embedded": med[0],
                "mosquitto-plugin": med[1],
                "mosquitto-acl": med[2],
            }));
        }
        let _ = params;
        if *label == "connect" {
            let bare: Vec<Option<f64>> = reports
                .iter()
                .filter(|r| r.scenario == "connect" && r.target == "rustls" && r.error.is_none())
                .map(|r| r.get("connections/s"))
                .collect();
            let bare = median(&bare);
            let emb: Vec<Option<f64>> = reports
                .iter()
                .filter(|r| r.scenario == "connect" && r.target == "embedded" && r.error.is_none())
                .map(|r| r.get("connections/s"))
                .collect();
            let ratio = match (median(&emb), bare) {
                (Some(e), Some(b)) if b > 0.0 => format!("{:.2}", e / b),
                _ => "-".into(),
            };
            println!(
                "{:<13} {:<24} {:>12}  (bare rustls mTLS server + CONNACK; embedded / bare = {ratio})",
                "connect",
                "connections/s, rustls",
                fmt(bare)
            );
            out.push(json!({
                "scenario": "connect",
                "figure": "connections/s",
                "unit": "conn/s",
                "rustls": bare,
            }));
        }
    }
    serde_json::Value::Array(out)
}

/// "2 cores (model), 23.4 GiB RAM, Mosquitto x.y.z, <date>".
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / 1048576.0)
        .unwrap_or(0.0);
    let mosquitto = Command::new(gatehouse_tests::mosquitto::MOSQUITTO_BIN)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "mosquitto ?".into());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({model}), {mem_gib:.1} GiB RAM, {mosquitto}, {date}")
}

/// Child step: CA + CRL files into `dir`.
fn make_crl(entries: usize, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let ca = bench_ca();
    let started = Instant::now();
    let pem = crl_pem(&ca, &serials(entries, 7));
    eprintln!("generated {entries}-entry CRL in {:.2?}", started.elapsed());
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("bench.crl"), pem).map_err(|e| e.to_string())?;
    Ok(())
}

fn crl_load(entries: usize, dir: &Path) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let status = Command::new(me)
        .args(["make-crl", "--entries", &entries.to_string(), "--dir"])
        .arg(dir)
        .status()
        .map_err(|e| format!("starting the generator: {e}"))?;
    if !status.success() {
        return Err(format!("generator failed: {status}"));
    }
    let verifier = CrlVerifier::from_ca_file(dir.join("ca.crt")).map_err(|e| e.to_string())?;
    let crl_file = dir.join("bench.crl");
    let file_len = std::fs::metadata(&crl_file)
        .map_err(|e| e.to_string())?
        .len();
    let before = proc_status_kib("VmRSS:")?;
    let started = Instant::now();
    let set = RevocationSet::from_crl_file(&crl_file, &verifier).map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let peak = proc_status_kib("VmHWM:")?;
    let after = proc_status_kib("VmRSS:")?;
    if set.len() != entries {
        return Err(format!("loaded {} entries, expected {entries}", set.len()));
    }
    println!(
        "crl-load: {entries} entries, file {:.1} MiB: {:.3} s, peak RSS growth {:.1} MiB, retained {:.1} MiB",
        file_len as f64 / 1048576.0,
        elapsed.as_secs_f64(),
        (peak.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / 1024.0,
    );
    drop(set);
    Ok(())
}

fn proc_status_kib(field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{field} not found in /proc/self/status"))
}
