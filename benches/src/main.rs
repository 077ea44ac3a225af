//! `gatehouse-bench`: measurements that criterion cannot make.
//!
//! `gatehouse-bench crl-load [--entries N]` writes a CRL with N entries
//! (default 1,000,000) in a child process, then loads and verifies it in this
//! process and reports the load time and the peak memory it took
//! (`VmHWM` growth), so generation costs do not pollute the figure.
//!
//! `gatehouse-bench mqtt-load --gatehouse target/release/gatehouse` measures
//! QoS 0 messages/s (20 publishers -> 1 subscriber, 100-byte payloads) and
//! mTLS connections/s against `gatehouse serve` and a local Mosquitto 2.0
//! (`require_certificate true`) started side by side.
//!
//! `gatehouse-bench ingest [--rows N] [--per-row M]` starts a private
//! PostgreSQL and compares telemetry rows/s: a raw binary COPY, the
//! gatehouse-ingest pipeline, and one INSERT per row (on the first M rows).

mod ingest;
mod mqtt_load;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use gatehouse_auth::{CrlVerifier, RevocationSet};
use gatehouse_bench::{bench_ca, crl_pem, serials};

const USAGE: &str = "usage: gatehouse-bench crl-load [--entries N] [--dir DIR]
       gatehouse-bench mqtt-load [--gatehouse BIN] [--mosquitto BIN] [--seconds N]
                                 [--publishers N] [--payload BYTES] [--connectors N]
       gatehouse-bench ingest [--rows N] [--per-row M]

  crl-load   generate a CRL of N entries (default 1000000) in a child process,
             then load + verify it here; prints seconds and peak RSS growth
  mqtt-load  QoS 0 msg/s (default 20 publishers -> 1 subscriber, 100-byte
             payloads) and mTLS connections/s (default 8 concurrent
             connectors), gatehouse (default target/release/gatehouse) next to
             mosquitto (default /usr/sbin/mosquitto), 5 s per measurement
  ingest     private PostgreSQL: rows/s of raw binary COPY vs gatehouse-ingest
             vs one INSERT per row, N rows (default 200000; INSERT on the
             first M, default 5000)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-bench: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    let mut entries = 1_000_000usize;
    let mut dir = std::env::temp_dir().join("gatehouse-bench-crl");
    let mut load = mqtt_load::Options {
        gatehouse: PathBuf::from("target/release/gatehouse"),
        mosquitto: PathBuf::from("/usr/sbin/mosquitto"),
        publishers: 20,
        payload: 100,
        seconds: 5,
        connectors: 8,
    };
    let number = |flag: &str, value: &str| -> Result<usize, String> {
        value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))
    };
    let mut rows = 200_000usize;
    let mut per_row = 5_000usize;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--entries" => {
                entries = value
                    .parse()
                    .map_err(|_| format!("--entries: not a number: {value}"))?
            }
            "--dir" => dir = PathBuf::from(value),
            "--gatehouse" => load.gatehouse = PathBuf::from(value),
            "--mosquitto" => load.mosquitto = PathBuf::from(value),
            "--seconds" => load.seconds = number(flag, value)? as u64,
            "--publishers" => load.publishers = number(flag, value)?,
            "--payload" => load.payload = number(flag, value)?,
            "--connectors" => load.connectors = number(flag, value)?,
            "--rows" => {
                rows = value
                    .parse()
                    .map_err(|_| format!("--rows: not a number: {value}"))?
            }
            "--per-row" => {
                per_row = value
                    .parse()
                    .map_err(|_| format!("--per-row: not a number: {value}"))?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    match cmd.as_str() {
        "crl-load" => crl_load(entries, &dir),
        "make-crl" => make_crl(entries, &dir),
        "mqtt-load" => mqtt_load::run(&load),
        "ingest" => ingest::run(rows, per_row),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}")),
    }
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
