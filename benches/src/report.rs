//! Results: one [`Report`] per run (scenario × target), printed as a table
//! and written as JSON; the suite's medians and ratios; /proc sampling of
//! the broker; the progress line.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One figure of a run. `value: None` means "did not happen" (e.g. a
/// revoked session that was never cut).
#[derive(Debug, Clone)]
pub(crate) struct Metric {
    pub name: String,
    pub value: Option<f64>,
    pub unit: &'static str,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub scenario: String,
    pub target: String,
    pub params: String,
    pub metrics: Vec<Metric>,
    /// Set when the run failed; the metrics are then empty.
    pub error: Option<String>,
}

impl Report {
    pub(crate) fn new(scenario: &str, target: &str, params: String) -> Report {
        Report {
            scenario: scenario.into(),
            target: target.into(),
            params,
            metrics: Vec::new(),
            error: None,
        }
    }

    pub(crate) fn push(&mut self, name: &str, value: Option<f64>, unit: &'static str) {
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit,
        });
    }

    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.value)
    }

    pub(crate) fn print(&self) {
        println!("\n{} on {} ({})", self.scenario, self.target, self.params);
        if let Some(e) = &self.error {
            println!("  FAILED: {e}");
        }
        for m in &self.metrics {
            println!("  {:<28} {:>14} {}", m.name, fmt(m.value), m.unit);
        }
    }

    pub(crate) fn json(&self) -> Value {
        let metrics: serde_json::Map<String, Value> = self
            .metrics
            .iter()
            .map(|m| (m.name.clone(), json!({"value": m.value, "unit": m.unit})))
            .collect();
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "params": self.params,
            "error": self.error,
            "metrics": metrics,
        })
    }
}

/// A number for the table: thousands separators above 100, else 2 decimals.
pub(crate) fn fmt(v: Option<f64>) -> String {
    match v {
        None => "never".into(),
        Some(v) if !v.is_finite() => "-".into(),
        Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => {
            let s = format!("{:.0}", v.abs());
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            if v < 0.0 { format!("-{out}") } else { out }
        }
        Some(v) => format!("{v:.2}"),
    }
}

/// Median of the present values (None if there are none).
pub(crate) fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Percentile `p` (0..=100) of sorted samples.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(f64::from(sorted[rank.min(sorted.len() - 1)]))
}

/// CPU seconds (user + system, all threads) a process has used so far.
/// (steal, total) CPU time of the whole machine so far, in ticks
/// (`/proc/stat`): steal is time the hypervisor gave another guest.
pub(crate) fn machine_steal() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    Some((*ticks.get(7)?, ticks.iter().take(8).sum()))
}

/// Steal as a share of all CPU time between two [`machine_steal`] readings, %.
pub(crate) fn steal_percent(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    (t1 > t0).then(|| (s1 - s0) as f64 / (t1 - t0) as f64 * 100.0)
}

pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 3, utime 14, stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS every 200 ms on a thread; the peak on `stop`.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub(crate) fn start(pid: Option<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = pid.map(|pid| {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        });
        RssSampler { stop, peak, thread }
    }

    /// Peak RSS in MiB (None without a pid).
    pub(crate) fn finish(mut self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take()?;
        let _ = t.join();
        Some(self.peak.load(Ordering::Relaxed) as f64 / 1024.0)
    }
}

/// A progress line on stderr (only when stderr is a terminal): label,
/// elapsed time and a live counter, redrawn twice a second.
pub(crate) struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(label: String, counter: Arc<AtomicU64>, unit: &'static str) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut last = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    let n = counter.load(Ordering::Relaxed);
                    eprint!(
                        "\r\x1b[2K{label}  {:>5.1} s  {} {unit} ({} /s)",
                        started.elapsed().as_secs_f64(),
                        fmt(Some(n as f64)),
                        fmt(Some((n.saturating_sub(last)) as f64 * 2.0))
                    );
                    last = n;
                }
                eprint!("\r\x1b[2K");
            })
        });
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
