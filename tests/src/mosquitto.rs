//! A private Mosquitto 2.x with `libgatehouse_mosquitto.so` loaded: builds
//! the plugin, writes `mosquitto.conf` from [`MOSQUITTO_CONF_TEMPLATE`] (the
//! README's "Using with Mosquitto" block is the same template), starts
//! `/usr/sbin/mosquitto` on a free port, waits for it, keeps its log, and
//! kills it on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::mqtt::Endpoint;
use crate::pki::Pki;

/// The recommended `mosquitto.conf` for Gatehouse. `{listen}`, `{dir}` and
/// `{plugin}` are filled in by [`render_conf`].
pub const MOSQUITTO_CONF_TEMPLATE: &str = "\
# One mTLS listener; the Gatehouse plugin decides who gets in and what
# they may do. Do NOT set use_identity_as_username (Mosquitto would then
# skip the plugin's CONNECT check).
per_listener_settings false
listener {listen}
cafile {dir}/ca.crt
certfile {dir}/server.crt
keyfile {dir}/server.key
require_certificate true
tls_version tlsv1.2

plugin {plugin}
plugin_opt_config {dir}/gatehouse.toml
";

/// The template with its placeholders replaced.
pub fn render_conf(listen: &str, dir: &str, plugin: &str) -> String {
    MOSQUITTO_CONF_TEMPLATE
        .replace("{listen}", listen)
        .replace("{dir}", dir)
        .replace("{plugin}", plugin)
}

/// Path of the Mosquitto binary.
pub const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";

/// Environment variable naming an already built `libgatehouse_mosquitto.so`
/// (scripts/test.sh builds it before the tests and sets this).
pub const PLUGIN_ENV: &str = "GATEHOUSE_PLUGIN_SO";

/// The path of `libgatehouse_mosquitto.so`: [`PLUGIN_ENV`] when set, else
/// builds `gatehouse-mosquitto` (once per test process) in its own target
/// directory, so it never waits on the lock of the `cargo test` that runs us.
pub fn plugin_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(so) = std::env::var_os(PLUGIN_ENV).filter(|v| !v.is_empty()) {
            let so = PathBuf::from(so);
            assert!(so.is_file(), "{PLUGIN_ENV}={} is not a file", so.display());
            return so;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("plugin-for-tests");
        // A release harness (the benchmarks) measures a release plugin.
        let release = !cfg!(debug_assertions);
        let mut args = vec!["build", "--locked", "-p", "gatehouse-mosquitto"];
        if release {
            args.push("--release");
        }
        let status = Command::new(env!("CARGO"))
            .args(&args)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(root)
            .status()
            .expect("run cargo build -p gatehouse-mosquitto");
        assert!(status.success(), "building the Mosquitto plugin failed");
        let so = target
            .join(if release { "release" } else { "debug" })
            .join("libgatehouse_mosquitto.so");
        assert!(so.is_file(), "{} missing after build", so.display());
        so
    })
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Add `use_identity_as_username true` to the listener.
    pub use_identity_as_username: bool,
    /// Extra gatehouse.toml text (appended after `[tls]`).
    pub gatehouse_extra: String,
    /// Replace the whole gatehouse.toml with this text.
    pub gatehouse_toml: Option<String>,
    /// No plugin: Mosquitto's own `acl_file` with this text and
    /// `use_identity_as_username true` (the baseline of the plugin-cost
    /// benchmark).
    pub plain_acl_file: Option<String>,
    /// Extra `mosquitto.conf` lines (e.g. `set_tcp_nodelay true`).
    pub extra_conf: String,
    /// Log errors and warnings only (no line per connection: benchmarks).
    pub quiet: bool,
}

/// A running Mosquitto (killed on drop).
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub conf_path: PathBuf,
    pub gatehouse_toml: PathBuf,
    log_path: PathBuf,
    ca_path: PathBuf,
}

use crate::ports::free_port;

/// Writes the config files for `pki` into its directory.
fn write_files(pki: &Pki, port: u16, opts: &Options) -> (PathBuf, PathBuf) {
    let dir = pki.dir();
    // The template names fixed file names; the fixture's are the same
    // (ca.crt, server.crt, server.key, ca.crl).
    let toml = match &opts.gatehouse_toml {
        Some(t) => t.clone(),
        None => format!(
            "[tls]\nca = \"ca.crt\"\ncert = \"server.crt\"\nkey = \"server.key\"\ncrl = \"ca.crl\"\ncrl_poll_interval = \"250ms\"\n\n{}",
            opts.gatehouse_extra
        ),
    };
    let toml_path = dir.join("gatehouse.toml");
    std::fs::write(&toml_path, toml).expect("write gatehouse.toml");
    let mut conf = match &opts.plain_acl_file {
        None => render_conf(
            &format!("{port} 127.0.0.1"),
            &dir.display().to_string(),
            &plugin_path().display().to_string(),
        ),
        Some(acl) => {
            let acl_path = dir.join(format!("acl-{port}"));
            std::fs::write(&acl_path, acl).expect("write acl_file");
            let d = dir.display();
            format!(
                "per_listener_settings false\nlistener {port} 127.0.0.1\ncafile {d}/ca.crt\n\
                 certfile {d}/server.crt\nkeyfile {d}/server.key\nrequire_certificate true\n\
                 crlfile {d}/ca.crl\ntls_version tlsv1.2\nuse_identity_as_username true\nacl_file {}\n",
                acl_path.display()
            )
        }
    };
    if opts.use_identity_as_username {
        conf.push_str("use_identity_as_username true\n");
    }
    conf.push_str(&opts.extra_conf);
    // Test-only: stay root (the temp dir is private to root), log to stderr.
    conf.push_str("\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\n");
    if !opts.quiet {
        conf.push_str("log_type notice\nlog_type information\n");
    }
    conf.push_str("log_timestamp_format %H:%M:%S\n");
    let conf_path = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
    (conf_path, toml_path)
}

impl Mosquitto {
    /// Starts Mosquitto with the plugin and waits until it accepts TCP
    /// connections. Panics with its log if it exits instead.
    pub fn start(pki: &Pki, opts: &Options) -> Mosquitto {
        match Self::try_start(pki, opts) {
            Ok(m) => m,
            Err(log) => panic!("mosquitto did not start:\n{log}"),
        }
    }

    /// Like [`Mosquitto::start`], but returns Mosquitto's log when it exits
    /// before listening (a refused configuration).
    pub fn try_start(pki: &Pki, opts: &Options) -> Result<Mosquitto, String> {
        let port = free_port();
        let (conf_path, gatehouse_toml) = write_files(pki, port, opts);
        let log_path = pki.dir().join(format!("mosquitto-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(MOSQUITTO_BIN)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {MOSQUITTO_BIN}: {e} (install the mosquitto package)")
            });
        let mut m = Mosquitto {
            child,
            port,
            conf_path,
            gatehouse_toml,
            log_path,
            ca_path: pki.ca_path.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = m.child.try_wait().expect("wait mosquitto") {
                return Err(format!("exited with {status}\n{}", m.log()));
            }
            // Not just "something answers on the port": parallel tests pick
            // free ports too, so the listener must be this Mosquitto's.
            if listens_on(m.child.id(), port) {
                return Ok(m);
            }
            if Instant::now() > deadline {
                return Err(format!("not listening after 10 s\n{}", m.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where MQTT clients connect.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: self.port,
            ca_file: self.ca_path.clone(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything Mosquitto logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Polls the log until it contains `needle` (up to `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP (Mosquitto reloads its config and calls the plugin's
    /// RELOAD callback).
    pub fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }
}

impl Mosquitto {
    /// SIGTERM, then waits (up to 10 s) for Mosquitto to exit: its plugin
    /// cleanup runs on the way out. Returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait mosquitto") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` holds a TCP socket listening on `port` (from
/// `/proc/<pid>/fd` and `/proc/net/tcp{,6}`).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address, state 0A = LISTEN, inode
                f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" && inodes.contains(f[9])
            })
    })
}

/// Mosquitto with the plugin's `/metrics` listener on a free port and
/// `extra` appended to gatehouse.toml; the listener's address.
pub fn start_with_metrics(pki: &Pki, extra: &str) -> (Mosquitto, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mosq = Mosquitto::start(
        pki,
        &Options {
            gatehouse_extra: format!("{extra}\n[plugin]\nmetrics = \"{addr}\"\n"),
            ..Options::default()
        },
    );
    (mosq, addr)
}

/// The whole HTTP response (status line, headers, body) to a `GET path` on
/// a plain HTTP listener such as the plugin's `[plugin] metrics`.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    out
}
