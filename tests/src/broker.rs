//! A private `gatehouse serve` process for end-to-end tests: a config on
//! free ports using the [`Pki`] fixture files, the process started, waited
//! for, observed (log, metrics), stopped with SIGTERM, or killed with
//! SIGKILL and started again on the same config, ports and data directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Pki;

/// A running broker. Killed on drop.
#[derive(Debug)]
pub struct BrokerProcess {
    child: Option<Child>,
    pub mqtt: SocketAddr,
    pub metrics: SocketAddr,
    pub config_path: PathBuf,
    /// The broker's `data_dir` (dev state, ingest SQLite file and spool).
    pub data_dir: PathBuf,
    exe: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub use crate::ports::free_port;

impl BrokerProcess {
    /// Starts `exe serve --config <generated>` with the PKI's CA, server
    /// certificate and CRL (polled every 50 ms). `extra` is appended to the
    /// config: add `[mqtt]`, `[identity]`, `[acl.*]` sections there. The
    /// provisioning sidecar is off unless `extra` has a `[provisioning]`
    /// section.
    pub fn start(exe: &Path, pki: &Pki, extra: &str) -> BrokerProcess {
        Self::start_with_limit(exe, pki, 2000, extra)
    }

    /// [`BrokerProcess::start`] with `listeners.max_connections`.
    pub fn start_with_limit(
        exe: &Path,
        pki: &Pki,
        max_connections: usize,
        extra: &str,
    ) -> BrokerProcess {
        Self::start_custom(exe, pki, max_connections, "50ms", extra)
    }

    /// [`BrokerProcess::start_with_limit`] with `tls.crl_poll_interval`
    /// (e.g. `"250ms"`, the product default, for benchmarks).
    pub fn start_custom(
        exe: &Path,
        pki: &Pki,
        max_connections: usize,
        crl_poll_interval: &str,
        extra: &str,
    ) -> BrokerProcess {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-broker-")
            .tempdir()
            .expect("temp dir");
        let data_dir = dir.path().join("data");
        let mqtt: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "data_dir = {data:?}\n\n[tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\ncrl = {crl:?}\n\
             crl_poll_interval = {crl_poll_interval:?}\nhandshake_timeout = \"2s\"\n\n\
             [listeners]\nmqtt = \"{mqtt}\"\nmetrics = \"{metrics}\"\nmax_connections = {max_connections}\ndrain_timeout = \"3s\"\n\n{extra}\n{sidecar}",
            data = data_dir,
            ca = pki.ca_path,
            cert = pki.server.cert_path,
            key = pki.server.key_path,
            crl = pki.crl_path,
            sidecar = if extra.contains("[provisioning]") {
                ""
            } else {
                "\n[provisioning]\nenabled = false\n"
            },
        );
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("gatehouse.log");
        let mut broker = BrokerProcess {
            child: None,
            mqtt,
            metrics,
            config_path,
            data_dir,
            exe: exe.to_path_buf(),
            log_path,
            _dir: dir,
        };
        broker.restart();
        broker
    }

    /// Starts the (killed or terminated) broker again with the same config,
    /// ports and data directory, and waits until it serves. Its log is
    /// appended to the same file.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "gatehouse is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(&self.exe)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info,rumqttd=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.exe.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// SIGKILL: the process dies at once, with no shutdown work at all.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("broker running");
        child.kill().expect("SIGKILL gatehouse");
        let status = child.wait().expect("wait for gatehouse");
        assert!(
            !status.success(),
            "gatehouse exited cleanly instead of being killed"
        );
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "gatehouse exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            if TcpStream::connect(self.mqtt).is_ok() && self.http_get("/healthz").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse not ready after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (up to `timeout`) until `needle` appears at least `times` times
    /// in the log.
    pub fn wait_log(&self, needle: &str, times: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() >= times {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP: the broker re-reads [`Self::config_path`] and puts its
    /// `[identity]` and `[acl]` in force.
    pub fn reload(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -HUP failed");
    }

    /// Body of a GET on the metrics listener.
    pub fn http_get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(self.metrics).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        if !out.starts_with("HTTP/1.1 200") {
            return None;
        }
        out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
    }

    /// Value of one sample, e.g. `gatehouse_handshakes_total{result="ok"}`
    /// (labels exactly as rendered); 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.http_get("/metrics").expect("GET /metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// Polls `metric(sample)` until `pred` holds (up to 10 s); returns the value.
    pub fn wait_metric(&self, sample: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(sample);
            if pred(v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{sample} = {v} never satisfied the condition\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM and waits (up to `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("broker running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "gatehouse did not exit within {within:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
