//! A private PostgreSQL for tests and benchmarks: `initdb` into a temporary
//! directory owned by the unprivileged `postgres` user (PostgreSQL refuses to
//! run as root), listening on a random free port on 127.0.0.1 with its unix
//! socket inside that directory, trust authentication, one database
//! `gatehouse`. It can be stopped and started again on the same port (to
//! simulate an outage) and is killed when dropped.
//!
//! Needs the Debian `postgresql` package (scripts/test.sh installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The user PostgreSQL runs as.
const PG_USER: &str = "postgres";
/// The database tests use.
pub const DATABASE: &str = "gatehouse";

/// A running (or stopped) private PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Postgres {
    /// initdb + start + `CREATE DATABASE gatehouse`. Panics with a clear
    /// message when PostgreSQL is not installed.
    pub fn start() -> Postgres {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        chown_to_postgres(dir.path());
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            child: None,
        };
        pg.start_again();
        pg.psql_db("postgres", &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/gatehouse`.
    pub fn database_url(&self) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Ingest settings pointing at this cluster, with test-friendly timings
    /// (short batch age, fast retries) and the spool in `spool_dir`.
    pub fn ingest_settings(&self, spool_dir: &Path) -> gatehouse_config::IngestSettings {
        let mut s = gatehouse_config::Config::defaults().ingest;
        s.database = gatehouse_config::IngestDatabase::Postgres {
            url: self.database_url(),
        };
        s.spool_dir = spool_dir.to_path_buf();
        s.batch_age = Duration::from_millis(20);
        s.retry_min = Duration::from_millis(50);
        s.retry_max = Duration::from_millis(500);
        s.connect_timeout = Duration::from_millis(500);
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Fast shutdown (SIGINT: open transactions are rolled back, clients
    /// disconnected), waiting until the server has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "INT");
            let _ = child.wait();
        }
    }

    /// Starts the (stopped) cluster again on the same port and waits until it
    /// accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres log file");
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .psql_cmd("postgres", "SELECT 1")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited at start ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not become ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL in the `gatehouse` database; returns unaligned, tuples-only
    /// output (`|`-separated columns, one row per line), trimmed.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db(DATABASE, sql)
    }

    /// Starts `psql` running `sql` in the `gatehouse` database without
    /// waiting for it (e.g. a transaction that holds a lock for a while).
    pub fn spawn_psql(&self, sql: &str) -> std::process::Child {
        self.psql_cmd(DATABASE, sql)
            .stdout(Stdio::null())
            .spawn()
            .expect("run psql")
    }

    /// Drops the `gatehouse` database (terminating every connection to it)
    /// and creates it again, empty: a restored or recreated database.
    pub fn recreate_database(&self) {
        self.psql_db(
            "postgres",
            &format!("DROP DATABASE {DATABASE} WITH (FORCE)"),
        );
        self.psql_db("postgres", &format!("CREATE DATABASE {DATABASE}"));
    }

    fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = self.psql_cmd(db, sql).output().expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn psql_cmd(&self, db: &str, sql: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &self.port.to_string(),
            "-U",
            PG_USER,
            "-d",
            db,
            "-c",
            sql,
        ])
        .stdin(Stdio::null());
        c
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown; SIGKILL if it lingers.
            signal(child.id(), "QUIT");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn find_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: install the Debian `postgresql` package (scripts/test.sh does)")
}

/// A command run as the `postgres` user (directly exec'd, so the child's pid
/// is the server's own and signals reach it).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={PG_USER}"),
            &format!("--regid={PG_USER}"),
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_to_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let status = Command::new("chown")
        .arg(format!("{PG_USER}:{PG_USER}"))
        .arg(path)
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "chown {} to {PG_USER} failed (is the postgresql package installed?)",
        path.display()
    );
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

use crate::ports::free_port;
