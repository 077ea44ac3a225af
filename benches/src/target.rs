//! The brokers a scenario runs against: `gatehouse serve` (embedded),
//! Mosquitto + the Gatehouse plugin, plain Mosquitto with the same rules in
//! `acl_file`, or any broker given by address. Our own targets are started
//! fresh for every run with the same certificates and equivalent rules.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use gatehouse_tests::broker::BrokerProcess;
use gatehouse_tests::mosquitto::{Mosquitto, Options};
use gatehouse_tests::pki::Pki;

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Embedded,
    MosquittoPlugin,
    MosquittoAcl,
    /// A bare rustls mTLS server answering CONNACK (`connect` floor).
    Bare,
    External,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "embedded",
            Kind::MosquittoPlugin => "mosquitto-plugin",
            Kind::MosquittoAcl => "mosquitto-acl",
            Kind::Bare => "rustls",
            Kind::External => "external",
        }
    }
}

/// The ACL every one of our targets enforces: a gateway publishes under its
/// own `telemetry/{cn}/#`; reading every gateway's data topic is allowed so
/// that one subscriber can watch the whole fleet.
const ACL_TOML: &str = "[acl.operational]\n\
    publish = [\"telemetry/{cn}/#\"]\n\
    subscribe = [\"telemetry/{cn}/#\", \"telemetry/+/data\"]\n\
    receive = [\"telemetry/{cn}/#\", \"telemetry/+/data\"]\n";

/// The same rules for Mosquitto's `acl_file` (username = CN).
pub(crate) const PLAIN_ACL: &str =
    "pattern readwrite telemetry/%u/#\npattern read telemetry/+/data\n";

/// Mosquitto settings shared by both Mosquitto contenders (its best
/// configuration for latency: Nagle off).
const MOSQUITTO_EXTRA: &str = "set_tcp_nodelay true\n";

/// How to start one of our targets.
pub(crate) struct Start<'a> {
    pub kind: Kind,
    pub gatehouse: &'a Path,
    pub pki: &'a Pki,
    /// PostgreSQL URL to ingest `telemetry/+/data` into; `None`: the ingest
    /// filter matches nothing (publish/connect runs measure the broker).
    pub ingest_url: Option<&'a str>,
    /// Scratch directory for spool / SQLite files.
    pub scratch: &'a Path,
    /// Pin the broker (all its threads) to this CPU.
    pub pin: Option<usize>,
}

/// A running target (stopped on drop).
pub(crate) struct Running {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// Whether `telemetry/+/data` lands in the database.
    pub ingests: bool,
    _embedded: Option<BrokerProcess>,
    _mosquitto: Option<Mosquitto>,
    _bare: Option<ChildGuard>,
}

/// A child process killed on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ingest_toml(url: Option<&str>, scratch: &Path) -> String {
    let spool = scratch.join("spool");
    match url {
        Some(url) => format!(
            "[ingest]\ndatabase_url = {url:?}\ntable = \"telemetry\"\n\
             topic_filter = \"telemetry/+/data\"\nspool_dir = {spool:?}\n"
        ),
        // Not an ingest scenario: the plain-Mosquitto baseline stores
        // nothing, so neither do our targets.
        None => "[ingest]\nenabled = false\n".to_string(),
    }
}

impl Running {
    pub(crate) fn start(s: &Start<'_>) -> Result<Running, String> {
        let ingest = ingest_toml(s.ingest_url, s.scratch);
        let mut running = match s.kind {
            Kind::Embedded => {
                if !s.gatehouse.is_file() {
                    return Err(format!(
                        "{} not found: build it (cargo build --release -p gatehouse-broker) \
                         or pass --gatehouse BIN",
                        s.gatehouse.display()
                    ));
                }
                let b = BrokerProcess::start_custom(
                    s.gatehouse,
                    s.pki,
                    200_000,
                    "250ms",
                    &format!("{ACL_TOML}\n{ingest}"),
                );
                Running {
                    kind: s.kind,
                    addr: b.mqtt,
                    pid: Some(b.pid()),
                    ingests: s.ingest_url.is_some(),
                    _embedded: Some(b),
                    _mosquitto: None,
                    _bare: None,
                }
            }
            Kind::MosquittoPlugin | Kind::MosquittoAcl => {
                let plain = s.kind == Kind::MosquittoAcl;
                let opts = Options {
                    gatehouse_extra: format!("{ACL_TOML}\n{ingest}"),
                    plain_acl_file: plain.then(|| PLAIN_ACL.to_string()),
                    extra_conf: MOSQUITTO_EXTRA.into(),
                    quiet: true,
                    ..Options::default()
                };
                let m = Mosquitto::try_start(s.pki, &opts)?;
                Running {
                    kind: s.kind,
                    addr: SocketAddr::from(([127, 0, 0, 1], m.port)),
                    pid: Some(m.pid()),
                    ingests: !plain && s.ingest_url.is_some(),
                    _embedded: None,
                    _mosquitto: Some(m),
                    _bare: None,
                }
            }
            Kind::Bare => {
                let port = gatehouse_tests::broker::free_port();
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let child = Command::new(exe)
                    .arg("bare-server")
                    .args(["--port", &port.to_string(), "--ca"])
                    .arg(&s.pki.ca_path)
                    .arg("--cert")
                    .arg(&s.pki.server.cert_path)
                    .arg("--key")
                    .arg(&s.pki.server.key_path)
                    .spawn()
                    .map_err(|e| format!("starting bare-server: {e}"))?;
                let mut guard = ChildGuard(child);
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while std::net::TcpStream::connect(addr).is_err() {
                    if let Ok(Some(status)) = guard.0.try_wait() {
                        return Err(format!("bare-server exited: {status}"));
                    }
                    if std::time::Instant::now() > deadline {
                        return Err("bare-server not listening after 10 s".into());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Running {
                    kind: s.kind,
                    addr,
                    pid: Some(guard.0.id()),
                    ingests: false,
                    _embedded: None,
                    _mosquitto: None,
                    _bare: Some(guard),
                }
            }
            Kind::External => return Err("an external broker is not started by the bench".into()),
        };
        if let (Some(cpu), Some(pid)) = (s.pin, running.pid) {
            pin(pid, cpu)?;
        }
        running.kind = s.kind;
        Ok(running)
    }

    /// A broker somebody else runs.
    pub(crate) fn external(addr: SocketAddr, pid: Option<u32>, ingests: bool) -> Running {
        Running {
            kind: Kind::External,
            addr,
            pid,
            ingests,
            _embedded: None,
            _mosquitto: None,
            _bare: None,
        }
    }
}

/// `taskset -a -p -c CPU PID`: every thread of `pid` on one CPU.
pub(crate) fn pin(pid: u32, cpu: usize) -> Result<(), String> {
    // A thread started while taskset walks the process's threads can keep
    // the old mask (its creator was not pinned yet): check every thread and
    // go again until none is left outside.
    for _ in 0..5 {
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .output()
            .map_err(|e| format!("taskset: {e} (install util-linux)"))?;
        if !out.status.success() {
            return Err(format!(
                "taskset -c {cpu} {pid} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if unpinned_threads(pid, cpu).is_empty() {
            return Ok(());
        }
    }
    Err(format!(
        "threads of {pid} still run outside CPU {cpu}: {:?}",
        unpinned_threads(pid, cpu)
    ))
}

/// Threads of `pid` allowed on any CPU but `cpu` (`Cpus_allowed_list` in
/// `/proc/<pid>/task/<tid>/status`).
pub(crate) fn unpinned_threads(pid: u32, cpu: usize) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let want = cpu.to_string();
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_owned();
            (allowed != want).then_some(tid)
        })
        .collect()
}

/// Default path of the `gatehouse` binary: next to this executable.
pub(crate) fn default_gatehouse() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("gatehouse")))
        .unwrap_or_else(|| PathBuf::from("target/release/gatehouse"))
}
