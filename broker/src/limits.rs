//! Start-up checks an operator would otherwise learn about in production:
//! the open-files limit (the common soft limit of 1024 makes accept fail
//! at about a thousand connections, silently) and rules that grant the
//! whole topic tree.

use gatehouse_config::Config;
use rlimit::Resource;

/// File descriptors the broker needs beyond one per connection: listeners,
/// the database, the CRL, ingest spool files, the metrics endpoint.
pub const RESERVED_FDS: u64 = 64;

/// The open-files limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_open_files() -> std::io::Result<OpenFiles> {
    let (before, hard) = Resource::NOFILE.get()?;
    if before < hard {
        Resource::NOFILE.set(hard, hard)?;
    }
    let (now, hard) = Resource::NOFILE.get()?;
    Ok(OpenFiles { before, now, hard })
}

/// Raises the open-files limit and logs what an operator must fix.
pub(crate) fn check_at_start(config: &Config) {
    let max = config.listeners.max_connections as u64;
    match raise_open_files() {
        Ok(files) => {
            if files.now > files.before {
                tracing::info!(
                    from = files.before,
                    to = files.now,
                    "open-files limit raised to the hard limit"
                );
            }
            if files.now < max + RESERVED_FDS {
                tracing::warn!(
                    limit = files.now,
                    max_connections = max,
                    "open-files limit {} is below listeners.max_connections ({max}) + {RESERVED_FDS}: accept() will fail at about {} connections. Raise the hard limit (systemd LimitNOFILE=, `ulimit -Hn`, /etc/security/limits.conf) or lower listeners.max_connections",
                    files.now,
                    files.now.saturating_sub(RESERVED_FDS),
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}
