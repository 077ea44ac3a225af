//! `gatehouse-bench`: the load generator and benchmark suite (see `--help`),
//! plus measurements criterion cannot make (`crl-load`, `ingest-sink`,
//! `plugin-cost`).

mod bare;
mod client;
mod fleet;
mod ingest_sink;
mod plugin_cost;
mod report;
mod saturate;
mod scenario;
mod target;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use gatehouse_auth::{CrlVerifier, RevocationSet};
use gatehouse_bench::{bench_ca, crl_pem, serials};
use gatehouse_tests::pki::Pki;
use gatehouse_tests::postgres::Postgres;
use serde_json::json;

use crate::report::{Report, fmt, median};
use crate::scenario::Params;
use crate::target::{Kind, Running, Start};

/// Shown after the help of the scenarios that run against one target.
const TARGETS_HELP: &str = "\
Targets (--target, default embedded; or --addr for any running broker):
  embedded          gatehouse serve (--gatehouse BIN) with a bench config
  mosquitto-plugin  /usr/sbin/mosquitto + libgatehouse_mosquitto.so
                    ($GATEHOUSE_PLUGIN_SO, else built)
  mosquitto-acl     plain Mosquitto, the same rules in acl_file
                    (use_identity_as_username, crlfile)
  rustls            (connect only) a bare rustls server with the same
                    certificates that verifies the client certificate, reads
                    CONNECT and answers CONNACK: the floor
  --addr HOST:PORT --ca FILE --cert-dir DIR
                    any running broker: CA of its server certificate and a
                    directory of gateway certificates ({cn}.crt + {cn}.key;
                    client id = cn, which may publish on telemetry/{cn}/data
                    and one of which may subscribe to telemetry/+/data);
                    `gatehouse-bench pki` writes such a directory. Optional
                    --broker-pid PID (CPU/RSS), --database-url URL (ingest).
                    revoke needs one of our targets.
All our targets: same fleet CA and server certificate, TLS on 127.0.0.1, the
CRL polled every 250 ms, Mosquitto with set_tcp_nodelay true, a fresh broker
process for every run.";

const SUITE_HELP: &str = "\
suite runs connect, publish QoS 0 and 1 (flat out), saturate QoS 0 and 1,
ingest and revoke (--only to pick) against
embedded, mosquitto-plugin and mosquitto-acl (connect also against the bare
rustls server), interleaved (A B C A B C ...), then prints the median of the
rounds for every figure and the ratios embedded/mosquitto-acl,
plugin/mosquitto-acl and embedded/plugin. scripts/bench.sh builds the release
binaries and runs it.";

/// gatehouse-bench: load generator for MQTT brokers with mTLS client
/// certificates.
///
/// Every scenario run is bounded (a duration and/or a count) and stops by
/// itself; `gatehouse-bench <COMMAND> --help` lists a command's options.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-bench", version, after_help = SUITE_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Full mTLS handshakes + CONNECT/CONNACK (+DISCONNECT): connections/s,
    /// p50/p99 connect latency, failures by reason, broker CPU per connection.
    ///
    /// --gateways distinct gateways, --concurrency at a time, for --duration
    /// or --count connections.
    #[command(after_help = TARGETS_HELP)]
    Connect(ConnectArgs),
    /// Gateways publish telemetry, one subscriber receives it: delivered
    /// msg/s, p50/p99 end-to-end latency, broker CPU, peak RSS.
    ///
    /// --gateways gateways publish ~95-byte JSON on telemetry/{cn}/data (QoS
    /// --qos, --rate msg/s in total or flat out), one subscriber on
    /// telemetry/+/data -> delivered msg/s, p50/p99 end-to-end latency (send
    /// time in the payload), broker CPU % and msg per broker CPU-second, peak
    /// RSS (/proc/<pid>), measured for --duration after --warmup.
    #[command(after_help = TARGETS_HELP)]
    Publish(PublishArgs),
    /// Highest rate with nothing lost and p99 <= 10 ms, then 4x that:
    /// goodput and exact loss.
    ///
    /// --gateways publishers on telemetry/{cn}/data, one subscriber on
    /// telemetry/+/data; every payload carries its publisher and a sequence
    /// number, and after each step (fresh connections, drained until quiet)
    /// every message is accounted: lost, lost after PUBACK (QoS 1),
    /// duplicated, reordered. The rate doubles from --rate (default 5000)
    /// until a step fails (one that lost nothing but missed p99 is run once
    /// more), then is bisected to within 10 %; steps last
    /// min(--duration, 4 s). Then 4x the highest passing rate for --duration:
    /// goodput (distinct messages delivered per second) and loss.
    #[command(after_help = TARGETS_HELP)]
    Saturate(PublishArgs),
    /// Hold idle mTLS sessions: broker RSS per session.
    ///
    /// Holds --gateways idle sessions (source addresses spread over
    /// 127.0.0.x, 20,000 each) -> broker RSS per session.
    #[command(after_help = TARGETS_HELP)]
    Idle(IdleArgs),
    /// Publish flat out into ingest: rows/s end to end into table
    /// `telemetry`.
    ///
    /// --messages messages from --gateways gateways, flat out -> rows in table
    /// `telemetry`: rows/s end to end, time from the last send until the last
    /// row landed (waits up to --timeout without progress). Our targets get
    /// `[ingest] database_url` of a private PostgreSQL (or --database-url);
    /// mosquitto-acl does not ingest.
    #[command(after_help = TARGETS_HELP)]
    Ingest(IngestArgs),
    /// Revoke connected gateways through the CRL: time until the broker cuts
    /// the session.
    ///
    /// --count times: connect a fresh gateway, revoke its certificate by
    /// rewriting the CRL file the broker watches -> time until the broker cuts
    /// the session (never, if not within --timeout). Only our targets.
    #[command(after_help = TARGETS_HELP)]
    Revoke(RevokeArgs),
    /// The broker comparison: every scenario against every contender, medians
    /// and ratios.
    #[command(after_help = SUITE_HELP)]
    Suite(SuiteArgs),
    /// Write a fleet CA and gateway certificates (a --cert-dir for --addr).
    ///
    /// Writes ca.crt/ca.key and gateways/{cn}.crt + {cn}.key into --pki-dir
    /// (certificates already there are kept).
    Pki(PkiArgs),
    /// Telemetry rows/s into a private PostgreSQL: binary COPY, the ingest
    /// sink and an INSERT baseline.
    IngestSink(IngestSinkArgs),
    /// Time and peak memory of loading + verifying a large CRL.
    ///
    /// Generates the CRL in a child process (make-crl), then loads it here
    /// and reports the time and the RSS growth.
    CrlLoad(CrlLoadArgs),
    /// Throughput of Mosquitto + the Gatehouse plugin against the same
    /// Mosquitto with an equivalent acl_file, alternating rounds.
    PluginCost(PluginCostArgs),
    /// Internal (target rustls): a bare rustls mTLS server answering CONNACK.
    #[command(hide = true)]
    BareServer(BareServerArgs),
    /// Internal (crl-load's child step): CA + CRL files into --dir.
    #[command(hide = true)]
    MakeCrl(CrlLoadArgs),
}

/// The broker a single scenario runs against.
#[derive(Debug, Default, Args)]
struct BrokerArgs {
    /// Which of our brokers to start for the run (default: embedded)
    #[arg(long, value_enum, value_name = "TARGET", conflicts_with = "addr")]
    target: Option<TargetArg>,
    /// A running broker to measure instead of one of ours (needs --ca and
    /// --cert-dir)
    #[arg(long, value_name = "HOST:PORT", value_parser = socket_addr, requires_all = ["ca", "cert_dir"])]
    addr: Option<SocketAddr>,
    /// (--addr) CA certificate (PEM) of the broker's server certificate
    #[arg(long, value_name = "FILE", requires = "addr")]
    ca: Option<PathBuf>,
    /// (--addr) directory of gateway certificates, {cn}.crt + {cn}.key
    #[arg(long, value_name = "DIR", requires = "addr")]
    cert_dir: Option<PathBuf>,
    /// (--addr) process id of that broker, for its CPU and RSS figures
    #[arg(long, value_name = "PID", value_parser = whole::<u32>, requires = "addr")]
    broker_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetArg {
    /// gatehouse serve (--gatehouse BIN) with a bench config
    Embedded,
    /// Mosquitto + libgatehouse_mosquitto.so ($GATEHOUSE_PLUGIN_SO, else built)
    MosquittoPlugin,
    /// plain Mosquitto, the same rules in acl_file
    MosquittoAcl,
    /// (connect only) a bare rustls mTLS server answering CONNACK: the floor
    Rustls,
}

impl From<TargetArg> for Kind {
    fn from(t: TargetArg) -> Kind {
        match t {
            TargetArg::Embedded => Kind::Embedded,
            TargetArg::MosquittoPlugin => Kind::MosquittoPlugin,
            TargetArg::MosquittoAcl => Kind::MosquittoAcl,
            TargetArg::Rustls => Kind::Bare,
        }
    }
}

/// How runs are set up on this side (every scenario and the suite).
#[derive(Debug, Args)]
struct Harness {
    /// The gatehouse binary for --target embedded [default: next to this binary]
    #[arg(long, value_name = "BIN", default_value_os_t = target::default_gatehouse(), hide_default_value = true)]
    gatehouse: PathBuf,
    /// Fleet CA + gateway certificates, cached between runs
    /// [default: $CARGO_TARGET_DIR or target, + /gatehouse-bench-pki]
    #[arg(long, value_name = "DIR", default_value_os_t = default_pki_dir(), hide_default_value = true)]
    pki_dir: PathBuf,
    /// Also write the results as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// taskset the broker (all its threads) to this CPU number
    #[arg(long, value_name = "CPU", value_parser = whole::<usize>)]
    pin_broker: Option<usize>,
    /// taskset this load generator to this CPU number
    #[arg(long, value_name = "CPU", value_parser = whole::<usize>)]
    pin_client: Option<usize>,
    /// Tokio worker threads of the load generator (0 counts as 1)
    #[arg(long, value_name = "N", default_value = "2", value_parser = at_least_one)]
    client_threads: usize,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    harness: Harness,
    /// Distinct gateways (one certificate each) that connect in turn (0 counts as 1)
    #[arg(long, value_name = "N", default_value = "1000", value_parser = at_least_one)]
    gateways: usize,
    #[command(flatten)]
    concurrency: Concurrency,
    /// Connections to make; 0 = connect for --duration instead
    #[arg(long, value_name = "N", default_value = "0", value_parser = whole::<usize>)]
    count: usize,
    /// Measurement time in seconds, fractions allowed (unless --count)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds, allow_negative_numbers = true)]
    duration: Duration,
}

#[derive(Debug, Args)]
struct PublishArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    harness: Harness,
    /// Publishing gateways (each its own certificate; 0 counts as 1)
    #[arg(long, value_name = "N", default_value = "4", value_parser = at_least_one)]
    gateways: usize,
    #[command(flatten)]
    qos: Qos,
    #[command(flatten)]
    window: Window,
    #[command(flatten)]
    rate: Rate,
    #[command(flatten)]
    inflight: Inflight,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    harness: Harness,
    /// Idle mTLS sessions to hold, one gateway each (0 counts as 1)
    #[arg(long, value_name = "N", default_value = "1000", value_parser = at_least_one)]
    gateways: usize,
    #[command(flatten)]
    concurrency: Concurrency,
}

#[derive(Debug, Args)]
struct IngestArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    harness: Harness,
    #[command(flatten)]
    database: Database,
    /// Publishing gateways (each its own certificate; 0 counts as 1)
    #[arg(long, value_name = "N", default_value = "4", value_parser = at_least_one)]
    gateways: usize,
    #[command(flatten)]
    messages: Messages,
    #[command(flatten)]
    qos: Qos,
    #[command(flatten)]
    inflight: Inflight,
    /// Seconds to wait for rows without progress before giving up, fractions allowed
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds, allow_negative_numbers = true)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    harness: Harness,
    /// Revocations (each a fresh gateway; 0 counts as 1)
    #[arg(long, value_name = "N", default_value = "3", value_parser = whole::<usize>)]
    count: usize,
    /// Seconds to wait for the broker to cut the session, fractions allowed
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = seconds, allow_negative_numbers = true)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct SuiteArgs {
    #[command(flatten)]
    harness: Harness,
    #[command(flatten)]
    database: Database,
    /// Tiny durations: proves every contender and scenario works end to end,
    /// figures meaningless (1 s runs, 0.5 s warm-up, 5,000 ingest messages)
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios, comma-separated (connect, publish-qos0,
    /// publish-qos1, saturate-qos0, saturate-qos1, ingest, revoke)
    #[arg(long, value_name = "LIST")]
    only: Option<String>,
    /// Rounds of every scenario x contender (0 counts as 1) [default: 3; --quick: 1]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    rounds: Option<usize>,
    /// Gateways of every scenario (0 counts as 1) [default: connect 1000, publish and ingest 4]
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    gateways: Option<usize>,
    #[command(flatten)]
    concurrency: Concurrency,
    #[command(flatten)]
    window: Window,
    #[command(flatten)]
    rate: Rate,
    #[command(flatten)]
    inflight: Inflight,
    #[command(flatten)]
    messages: Messages,
}

#[derive(Debug, Args)]
struct Concurrency {
    /// Connections in flight at a time (0 counts as 1)
    #[arg(long, value_name = "N", default_value = "8", value_parser = at_least_one)]
    concurrency: usize,
}

#[derive(Debug, Args)]
struct Qos {
    /// MQTT QoS of the PUBLISHes: 0 or 1
    #[arg(long = "qos", value_name = "0|1", default_value = "0", value_parser = qos, action = ArgAction::Set)]
    qos1: bool,
}

/// Measurement window of publish (and of every suite scenario).
#[derive(Debug, Args)]
struct Window {
    /// Measurement time in seconds, fractions allowed
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds, allow_negative_numbers = true)]
    duration: Duration,
    /// Warm-up before the measurement in seconds, fractions allowed
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = seconds, allow_negative_numbers = true)]
    warmup: Duration,
}

#[derive(Debug, Args)]
struct Rate {
    /// Total publish rate of all gateways in msg/s; 0 = flat out
    #[arg(long, value_name = "MSGS", default_value = "0", value_parser = whole::<u64>)]
    rate: u64,
}

#[derive(Debug, Args)]
struct Inflight {
    /// Unacknowledged QoS 1 PUBLISHes per publisher (0 counts as 1)
    #[arg(long, value_name = "N", default_value = "64", value_parser = at_least_one)]
    inflight: usize,
}

#[derive(Debug, Args)]
struct Messages {
    /// Messages to publish into ingest, in total (0 counts as 1)
    #[arg(long, value_name = "N", default_value = "200000", value_parser = at_least_one)]
    messages: usize,
}

#[derive(Debug, Args)]
struct Database {
    /// Ingest into this PostgreSQL database instead of a fresh one in a
    /// private PostgreSQL (needed for ingest against --addr)
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct PkiArgs {
    /// Gateway certificates to have in the directory (0 counts as 1)
    #[arg(long, value_name = "N", default_value = "4", value_parser = at_least_one)]
    gateways: usize,
    /// Where the fleet CA and gateways/ go
    /// [default: $CARGO_TARGET_DIR or target, + /gatehouse-bench-pki]
    #[arg(long, value_name = "DIR", default_value_os_t = default_pki_dir(), hide_default_value = true)]
    pki_dir: PathBuf,
}

#[derive(Debug, Args)]
struct IngestSinkArgs {
    /// Rows for COPY and the ingest sink
    #[arg(long, value_name = "N", default_value = "200000", value_parser = whole::<usize>)]
    rows: usize,
    /// Rows of the INSERT-per-row baseline (at most --rows)
    #[arg(long, value_name = "M", default_value = "5000", value_parser = whole::<usize>)]
    per_row: usize,
}

#[derive(Debug, Args)]
struct CrlLoadArgs {
    /// Revoked serials in the generated CRL
    #[arg(long, value_name = "N", default_value = "1000000", value_parser = whole::<usize>)]
    entries: usize,
    /// Directory for the generated CA + CRL files
    /// [default: <temp dir>/gatehouse-bench-crl]
    #[arg(long, value_name = "DIR", default_value_os_t = std::env::temp_dir().join("gatehouse-bench-crl"), hide_default_value = true)]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct PluginCostArgs {
    /// Gateways publishing QoS 1 to, and receiving from, their own topics
    #[arg(long, value_name = "N", default_value = "8", value_parser = whole::<usize>)]
    clients: usize,
    /// Length of one round in seconds
    #[arg(long, value_name = "S", default_value = "5", value_parser = whole::<u64>)]
    secs: u64,
    /// Rounds per contender (0 counts as 1)
    #[arg(long, value_name = "R", default_value = "2", value_parser = at_least_one)]
    rounds: usize,
}

#[derive(Debug, Args)]
struct BareServerArgs {
    /// TCP port on 127.0.0.1 (0 = any free port)
    #[arg(long, value_name = "PORT", default_value = "0", value_parser = whole::<u16>)]
    port: u16,
    /// CA (PEM) that client certificates must chain to
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// Server certificate (PEM)
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// Server private key (PEM)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
}

/// A whole number (`--flag N`).
fn whole<T: FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("not a whole number: {v:?}"))
}

/// A whole number where 0 means 1 (a run needs at least one).
fn at_least_one(v: &str) -> Result<usize, String> {
    whole::<usize>(v).map(|n| n.max(1))
}

/// Seconds, fractions allowed (`--duration 0.5`).
fn seconds(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds: {v:?}"))
}

/// `--qos 0|1`: whether QoS 1.
fn qos(v: &str) -> Result<bool, String> {
    match v {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("0 or 1, not {v:?}")),
    }
}

/// HOST:PORT, resolved once (the first address).
fn socket_addr(v: &str) -> Result<SocketAddr, String> {
    std::net::ToSocketAddrs::to_socket_addrs(v)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {v:?}"))
}

fn default_pki_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("gatehouse-bench-pki")
}

/// What the runs of a scenario (or the suite) need, whichever subcommand
/// they came from.
#[derive(Debug)]
struct Opts {
    broker: BrokerArgs,
    harness: Harness,
    database_url: Option<String>,
    params: Params,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-bench: {e}\n(gatehouse-bench --help for usage)");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Cmd) -> Result<(), String> {
    let (scenario, o) = match cmd {
        Cmd::CrlLoad(a) => return crl_load(a.entries, &a.dir),
        Cmd::MakeCrl(a) => return make_crl(a.entries, &a.dir),
        Cmd::BareServer(a) => return bare::serve(a.port, &a.ca, &a.cert, &a.key),
        Cmd::IngestSink(a) => return ingest_sink::run(a.rows, a.per_row),
        Cmd::PluginCost(a) => return plugin_cost::plugin_cost(a.clients, a.secs, a.rounds),
        Cmd::Pki(a) => {
            let ca = fleet::fleet_ca(&a.pki_dir)?;
            let n = fleet::ensure_gateways(&ca, &a.pki_dir, a.gateways)?;
            println!(
                "{}: fleet CA ca.crt, {} gateway certificates in {} ({n} new)",
                a.pki_dir.display(),
                a.gateways,
                fleet::gateway_dir(&a.pki_dir).display()
            );
            return Ok(());
        }
        Cmd::Suite(a) => return suite(a),
        Cmd::Connect(a) => (
            "connect",
            Opts {
                broker: a.broker,
                harness: a.harness,
                database_url: None,
                params: Params {
                    gateways: a.gateways,
                    concurrency: a.concurrency.concurrency,
                    count: a.count,
                    duration: a.duration,
                    ..Params::default()
                },
            },
        ),
        Cmd::Publish(a) => ("publish", publish_opts(a)),
        Cmd::Saturate(a) => ("saturate", publish_opts(a)),
        Cmd::Idle(a) => (
            "idle",
            Opts {
                broker: a.broker,
                harness: a.harness,
                database_url: None,
                params: Params {
                    gateways: a.gateways,
                    concurrency: a.concurrency.concurrency,
                    ..Params::default()
                },
            },
        ),
        Cmd::Ingest(a) => (
            "ingest",
            Opts {
                broker: a.broker,
                harness: a.harness,
                database_url: a.database.database_url,
                params: Params {
                    gateways: a.gateways,
                    messages: a.messages.messages,
                    qos1: a.qos.qos1,
                    inflight: a.inflight.inflight,
                    timeout: a.timeout,
                    ..Params::default()
                },
            },
        ),
        Cmd::Revoke(a) => (
            "revoke",
            Opts {
                broker: a.broker,
                harness: a.harness,
                database_url: None,
                params: Params {
                    count: a.count,
                    timeout: a.timeout,
                    ..Params::default()
                },
            },
        ),
    };
    single(scenario, &o)
}

/// `publish` and `saturate` take the same options.
fn publish_opts(a: PublishArgs) -> Opts {
    Opts {
        broker: a.broker,
        harness: a.harness,
        database_url: None,
        params: Params {
            gateways: a.gateways,
            qos1: a.qos.qos1,
            duration: a.window.duration,
            warmup: a.window.warmup,
            rate: a.rate.rate,
            inflight: a.inflight.inflight,
            ..Params::default()
        },
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
        "publish" | "saturate" | "ingest" => p.gateways + 1,
        "revoke" => 1,
        _ => p.gateways,
    }
}

fn env(o: &Opts, fleet: usize, need_pg: bool) -> Result<Env, String> {
    let external = o.broker.addr.is_some();
    let started = Instant::now();
    let (pki, gateways) = if external {
        let (Some(ca), Some(dir)) = (&o.broker.ca, &o.broker.cert_dir) else {
            return Err("--addr needs --ca FILE and --cert-dir DIR".into());
        };
        (None, fleet::load(dir, ca, fleet)?)
    } else {
        let ca = fleet::fleet_ca(&o.harness.pki_dir)?;
        let issued = fleet::ensure_gateways(&ca, &o.harness.pki_dir, fleet)?;
        if issued > 0 {
            eprintln!(
                "issued {issued} gateway certificates into {} in {:.1?} (cached for later runs)",
                o.harness.pki_dir.display(),
                started.elapsed()
            );
        }
        let pki = Pki::with_fleet_ca(ca);
        let gws = fleet::load(&fleet::gateway_dir(&o.harness.pki_dir), &pki.ca_path, fleet)?;
        (Some(pki), gws)
    };
    let pg = (need_pg && o.database_url.is_none()).then(Postgres::start);
    if let Some(cpu) = o.harness.pin_client {
        target::pin(std::process::id(), cpu)?;
    }
    Ok(Env {
        pki,
        gateways,
        rt: runtime(o.harness.client_threads)?,
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
    let label = scenario::label(scenario, p.qos1);
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
        let addr = o.broker.addr.expect("external has an address");
        Ok(Running::external(addr, o.broker.broker_pid, url.is_some()))
    } else {
        let pki = env.pki.as_ref().expect("own targets have a PKI");
        Running::start(&Start {
            kind,
            gatehouse: &o.harness.gatehouse,
            pki,
            ingest_url: url.as_deref(),
            scratch: &scratch,
            pin: o.harness.pin_broker,
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
    let mut report = match scenario {
        "connect" => env.rt.block_on(scenario::connect(gws, &running, p)),
        "publish" => env.rt.block_on(scenario::publish(gws, &running, p)),
        "saturate" => env.rt.block_on(saturate::saturate(gws, &running, p)),
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
    if let (Some(cpu), Some(pid), false) =
        (o.harness.pin_broker, running.pid, kind == Kind::External)
    {
        // Every broker thread, also those started during the run, stayed
        // on the broker's CPU (else its CPU figures are not one core's).
        let outside = target::unpinned_threads(pid, cpu);
        if !outside.is_empty() && report.error.is_none() {
            report.error = Some(format!(
                "{} broker thread(s) ran outside CPU {cpu} (--pin-broker): {outside:?}",
                outside.len()
            ));
        }
    }
    drop(running);
    report
}

fn single(scenario: &str, o: &Opts) -> Result<(), String> {
    let kind = match (o.broker.target, o.broker.addr) {
        (Some(_), Some(_)) => return Err("give either --target or --addr, not both".into()),
        (Some(k), None) => k.into(),
        (None, Some(_)) => Kind::External,
        (None, None) => Kind::Embedded,
    };
    let mut env = env(o, fleet_size(scenario, &o.params), scenario == "ingest")?;
    let report = run_one(&mut env, o, kind, scenario, 0);
    report.print();
    if let Some(path) = &o.harness.json {
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
        "saturate-qos0",
        &[
            "zero-loss rate",
            "p99 at zero-loss rate",
            "delivered/broker CPU-s at zero-loss rate",
            "overload goodput",
            "overload goodput / zero-loss rate",
            "overload lost",
            "machine CPU steal",
        ],
    ),
    (
        "saturate-qos1",
        &[
            "zero-loss rate",
            "p99 at zero-loss rate",
            "delivered/broker CPU-s at zero-loss rate",
            "overload goodput",
            "overload goodput / zero-loss rate",
            "overload lost",
            "lost after PUBACK (all steps)",
            "machine CPU steal",
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

fn suite(a: SuiteArgs) -> Result<(), String> {
    let quick = a.quick;
    let rounds = a.rounds.unwrap_or(if quick { 1 } else { 3 });
    let mut base = Params {
        gateways: a.gateways.unwrap_or(4),
        concurrency: a.concurrency.concurrency,
        duration: a.window.duration,
        warmup: a.window.warmup,
        rate: a.rate.rate,
        inflight: a.inflight.inflight,
        messages: a.messages.messages,
        ..Params::default()
    };
    let connect_gws = a.gateways.unwrap_or(1000);
    let pub_gws = a.gateways.unwrap_or(4);
    if quick {
        base.duration = Duration::from_secs(1);
        base.warmup = Duration::from_millis(500);
        base.messages = 5_000;
    }
    let o = &mut Opts {
        broker: BrokerArgs::default(),
        harness: a.harness,
        database_url: a.database.database_url,
        params: base.clone(),
    };
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
            "saturate-qos0",
            "saturate",
            Params {
                gateways: pub_gws,
                qos1: false,
                rate: 0,
                ..base.clone()
            },
        ),
        (
            "saturate-qos1",
            "saturate",
            Params {
                gateways: pub_gws,
                qos1: true,
                rate: 0,
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
    let plan: Vec<_> = match &a.only {
        Some(only) => {
            let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
            for w in &wanted {
                if !plan.iter().any(|(l, _, _)| l == w) {
                    return Err(format!(
                        "--only: no scenario {w:?} (one of: {})",
                        plan.iter()
                            .map(|(l, _, _)| *l)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            plan.into_iter()
                .filter(|(l, _, _)| wanted.contains(l))
                .collect()
        }
        None => plan,
    };
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
    if let Some(path) = &o.harness.json {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("gatehouse-bench").chain(args.iter().copied()))
            .map(|c| c.cmd)
    }

    fn error(args: &[&str]) -> String {
        parse(args).expect_err("must be rejected").to_string()
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scenario_defaults_are_the_documented_ones() {
        let Ok(Cmd::Connect(c)) = parse(&["connect"]) else {
            panic!("connect")
        };
        assert_eq!(c.broker.target, None);
        assert_eq!(c.broker.addr, None);
        assert_eq!(
            (c.gateways, c.concurrency.concurrency, c.count, c.duration),
            (1000, 8, 0, Duration::from_secs(10))
        );
        assert_eq!(c.harness.client_threads, 2);
        assert_eq!(c.harness.json, None);
        assert_eq!(c.harness.pki_dir, default_pki_dir());
        assert_eq!(c.harness.gatehouse, target::default_gatehouse());
        let Ok(Cmd::Publish(p)) = parse(&["publish"]) else {
            panic!("publish")
        };
        assert_eq!(
            (p.gateways, p.qos.qos1, p.rate.rate, p.inflight.inflight),
            (4, false, 0, 64)
        );
        assert_eq!(
            (p.window.duration, p.window.warmup),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
        let Ok(Cmd::Idle(i)) = parse(&["idle"]) else {
            panic!("idle")
        };
        assert_eq!((i.gateways, i.concurrency.concurrency), (1000, 8));
        let Ok(Cmd::Ingest(i)) = parse(&["ingest"]) else {
            panic!("ingest")
        };
        assert_eq!(
            (i.gateways, i.messages.messages, i.timeout),
            (4, 200_000, Duration::from_secs(10))
        );
        assert_eq!(i.database.database_url, None);
        let Ok(Cmd::Revoke(r)) = parse(&["revoke"]) else {
            panic!("revoke")
        };
        assert_eq!((r.count, r.timeout), (3, Duration::from_secs(3)));
        let Ok(Cmd::Pki(k)) = parse(&["pki"]) else {
            panic!("pki")
        };
        assert_eq!(k.gateways, 4);
        let Ok(Cmd::PluginCost(k)) = parse(&["plugin-cost"]) else {
            panic!("plugin-cost")
        };
        assert_eq!((k.clients, k.secs, k.rounds), (8, 5, 2));
        let Ok(Cmd::IngestSink(k)) = parse(&["ingest-sink"]) else {
            panic!("ingest-sink")
        };
        assert_eq!((k.rows, k.per_row), (200_000, 5_000));
        let Ok(Cmd::CrlLoad(k)) = parse(&["crl-load"]) else {
            panic!("crl-load")
        };
        assert_eq!(k.entries, 1_000_000);
        assert_eq!(k.dir, std::env::temp_dir().join("gatehouse-bench-crl"));
    }

    #[test]
    fn bench_sh_suite_command_line_parses() {
        let Ok(Cmd::Suite(s)) = parse(&[
            "suite",
            "--gatehouse",
            "/t/release/gatehouse",
            "--json",
            "/t/bench/results.json",
            "--pin-broker",
            "0",
            "--pin-client",
            "1",
            "--quick",
            "--rounds",
            "5",
        ]) else {
            panic!("suite")
        };
        assert!(s.quick);
        assert_eq!(s.rounds, Some(5));
        assert_eq!(s.gateways, None);
        assert_eq!(s.harness.gatehouse, PathBuf::from("/t/release/gatehouse"));
        assert_eq!(s.harness.json, Some(PathBuf::from("/t/bench/results.json")));
        assert_eq!(
            (s.harness.pin_broker, s.harness.pin_client),
            (Some(0), Some(1))
        );
        let Ok(Cmd::Suite(s)) = parse(&["suite"]) else {
            panic!("suite")
        };
        assert!(!s.quick);
        assert_eq!(s.rounds, None);
    }

    #[test]
    fn readme_examples_parse() {
        for line in [
            "publish --target embedded --qos 1 --gateways 8 --duration 10",
            "publish --target embedded --rate 20000",
            "publish --target mosquitto-plugin --qos 0",
            "saturate --target mosquitto-acl --qos 1",
            "connect --target mosquitto-acl --gateways 2000 --concurrency 16 --count 20000",
            "idle --target embedded --gateways 10000",
            "idle --target embedded --gateways 10000 --concurrency 16 --pin-broker 0 --pin-client 1",
            "ingest --target mosquitto-plugin --messages 500000",
            "revoke --target embedded --count 5",
            "pki --gateways 1000 --pki-dir /tmp/fleet",
            "publish --addr 127.0.0.1:8883 --ca server-ca.crt --cert-dir /tmp/fleet/gateways --broker-pid 1234",
            "crl-load --entries 1000000",
            "plugin-cost",
            "ingest-sink",
            "bare-server --port 1 --ca a --cert b --key c",
            "make-crl --entries 5 --dir /tmp/x",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            if let Err(e) = parse(&args) {
                panic!("{line}: {e}");
            }
        }
    }

    #[test]
    fn values_keep_their_formats() {
        let Ok(Cmd::Publish(p)) = parse(&[
            "publish",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--gateways",
            "0",
            "--qos",
            "1",
        ]) else {
            panic!("publish")
        };
        assert_eq!(p.window.duration, Duration::from_millis(500));
        assert_eq!(p.window.warmup, Duration::ZERO);
        assert_eq!(p.gateways, 1, "0 gateways counts as 1");
        assert!(p.qos.qos1);
        let Ok(Cmd::Connect(c)) = parse(&[
            "connect",
            "--addr",
            "127.0.0.1:8883",
            "--ca",
            "a",
            "--cert-dir",
            "b",
        ]) else {
            panic!("connect")
        };
        assert_eq!(
            c.broker.addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 8883)))
        );
        let Ok(Cmd::Revoke(r)) = parse(&["revoke", "--target", "mosquitto-acl"]) else {
            panic!("revoke")
        };
        assert_eq!(r.broker.target.map(Kind::from), Some(Kind::MosquittoAcl));
    }

    #[test]
    fn bad_input_names_the_flag() {
        assert!(error(&["connect", "--duration", "ten"]).contains("--duration"));
        assert!(error(&["connect", "--duration", "-1"]).contains("--duration"));
        assert!(error(&["publish", "--qos", "2"]).contains("--qos"));
        assert!(error(&["connect", "--gateways", "many"]).contains("--gateways"));
        assert!(error(&["connect", "--target", "nginx"]).contains("--target"));
        assert!(error(&["connect", "--addr", "127.0.0.1:1"]).contains("--ca"));
        let both = error(&[
            "connect",
            "--target",
            "embedded",
            "--addr",
            "127.0.0.1:1",
            "--ca",
            "a",
            "--cert-dir",
            "b",
        ]);
        assert!(
            both.contains("--target") && both.contains("--addr"),
            "{both}"
        );
        assert!(error(&["suite", "--target", "embedded"]).contains("--target"));
        assert!(error(&["connect", "--nope"]).contains("--nope"));
        assert!(parse(&[]).is_err(), "a command is required");
    }
}
