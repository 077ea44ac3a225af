//! `[ingest]`: where telemetry lands and how it is batched, spooled and
//! acknowledged. The ingest crate consumes [`IngestSettings`]; the broker and
//! the Mosquitto plugin use `topic_filter` to decide what to hand it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::load::Validator;
use crate::raw::choice;

pub(crate) const DATABASE_FILE: &str = "telemetry.db";
pub(crate) const SPOOL_DIR: &str = "spool";
pub(crate) const TABLE: &str = "telemetry";
pub(crate) const REJECT_TABLE: &str = "telemetry_rejects";
pub(crate) const TOPIC_FILTER: &str = "telemetry/+/data";
pub(crate) const TIME_FIELD: &str = "ts";
pub(crate) const BATCH_ROWS: usize = 5_000;
pub(crate) const BATCH_BYTES: usize = 4 * 1024 * 1024;
pub(crate) const BATCH_AGE: &str = "200ms";
pub(crate) const WRITERS: usize = 2;
pub(crate) const QUEUE_CAPACITY: usize = 100_000;
pub(crate) const BLOCK_TIMEOUT: &str = "5s";
pub(crate) const SPOOL_MAX_BYTES: usize = 1024 * 1024 * 1024;
pub(crate) const SPOOL_SEGMENT_BYTES: usize = 32 * 1024 * 1024;
pub(crate) const RETRY_MIN: &str = "100ms";
pub(crate) const RETRY_MAX: &str = "30s";
pub(crate) const CONNECT_TIMEOUT: &str = "2s";
pub(crate) const WRITE_TIMEOUT: &str = "30s";
pub(crate) const CHUNK_INTERVAL: &str = "1day";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngest {
    pub database_url: Option<String>,
    pub sqlite_path: Option<String>,
    pub table: Option<String>,
    pub reject_table: Option<String>,
    pub topic_filter: Option<String>,
    pub time_field: Option<String>,
    #[serde(default, deserialize_with = "choice")]
    pub time_format: Option<TimeFormat>,
    pub batch_rows: Option<i64>,
    pub batch_bytes: Option<i64>,
    pub batch_age: Option<String>,
    pub writers: Option<i64>,
    pub queue_capacity: Option<i64>,
    #[serde(default, deserialize_with = "choice")]
    pub when_full: Option<WhenFull>,
    pub block_timeout: Option<String>,
    pub spool_dir: Option<String>,
    pub spool_max_bytes: Option<i64>,
    pub spool_segment_bytes: Option<i64>,
    #[serde(default, deserialize_with = "choice")]
    pub when_spool_full: Option<WhenSpoolFull>,
    pub retry_min: Option<String>,
    pub retry_max: Option<String>,
    pub connect_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "choice")]
    pub ack: Option<AckMode>,
    pub chunk_interval: Option<String>,
}

/// `[ingest]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSettings {
    /// Where rows are written.
    pub database: IngestDatabase,
    /// Telemetry table (optionally `schema.table`), created if absent.
    pub table: String,
    /// Table for payloads that could not be decoded or written, with the reason.
    pub reject_table: String,
    /// MQTT topic filter whose PUBLISHes are ingested (applied by the broker / plugin).
    pub topic_filter: String,
    /// Top-level JSON field holding the event time; `None`: always the receive time.
    pub time_field: Option<String>,
    pub time_format: TimeFormat,
    /// A batch is flushed when it holds this many rows ...
    pub batch_rows: usize,
    /// ... or this many payload bytes ...
    pub batch_bytes: usize,
    /// ... or its oldest record is this old.
    pub batch_age: Duration,
    /// Parallel database writers (connections doing COPY).
    pub writers: usize,
    /// Records the in-memory queue holds before `when_full` applies.
    pub queue_capacity: usize,
    pub when_full: WhenFull,
    /// With `when_full = "block"`: longest a caller waits before the record is dropped.
    pub block_timeout: Duration,
    /// Durable spool for when the database is unreachable or the queue is full.
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_segment_bytes: u64,
    pub when_spool_full: WhenSpoolFull,
    /// Capped exponential backoff between database retries.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How long to wait for a database connection before treating it as down.
    pub connect_timeout: Duration,
    /// Longest a batch write (or ledger lookup) may take before the database
    /// is treated as down and the batch is spooled.
    pub write_timeout: Duration,
    /// Whether telemetry is ingested at all (both shapes); default `true`.
    pub enabled: bool,
    pub ack: AckMode,
    /// TimescaleDB hypertable chunk interval.
    pub chunk_interval: Duration,
}

/// The sink behind ingest.
#[derive(Clone, PartialEq, Eq)]
pub enum IngestDatabase {
    /// PostgreSQL / TimescaleDB (`postgres://…`). The URL may hold a password:
    /// its `Debug` form hides it.
    Postgres { url: String },
    /// Embedded SQLite file (default when `database_url` is empty).
    Sqlite { path: PathBuf },
}

impl std::fmt::Debug for IngestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestDatabase::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .finish(),
            IngestDatabase::Sqlite { path } => {
                f.debug_struct("Sqlite").field("path", path).finish()
            }
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, safe to log.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

/// How the time field is read (`ingest.time_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `"auto"` (default): RFC 3339 string, or a number: epoch milliseconds
    /// when its magnitude is at least 10^11, else epoch seconds (fractions allowed).
    Auto,
    /// `"rfc3339"`.
    Rfc3339,
    /// `"epoch_s"`.
    #[serde(rename = "epoch_s")]
    EpochSeconds,
    /// `"epoch_ms"`.
    #[serde(rename = "epoch_ms")]
    EpochMillis,
}

/// What `submit` does when the in-memory queue is full (`ingest.when_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// `"block"` (default): wait for room, at most `block_timeout`; then drop (counted).
    Block,
    /// `"spool"`: append the record to the durable spool instead (replayed later).
    Spool,
    /// `"drop_newest"`: drop the new record (counted).
    DropNewest,
}

/// What happens when the spool reaches `spool_max_bytes` (`ingest.when_spool_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenSpoolFull {
    /// `"drop_newest"` (default): refuse new records (their acks fail, they
    /// are counted as dropped).
    DropNewest,
    /// `"drop_oldest"`: delete the oldest segment to make room (its records
    /// are counted as dropped).
    DropOldest,
}

/// When an acknowledgement fires (`ingest.ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// `"none"` (default): as soon as the record is accepted into the queue.
    None,
    /// `"durable"`: once the record is durable: spool fsync or database commit.
    Durable,
}

impl Validator<'_> {
    pub(crate) fn ingest(
        &self,
        raw: RawIngest,
        data_dir: &std::path::Path,
    ) -> Result<IngestSettings, ConfigError> {
        let database = match raw.database_url.as_deref().map(str::trim) {
            None | Some("") => IngestDatabase::Sqlite {
                path: self
                    .non_empty_path("ingest.sqlite_path", raw.sqlite_path)?
                    .unwrap_or_else(|| data_dir.join(DATABASE_FILE)),
            },
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(self.invalid(
                        "ingest.database_url",
                        format!(
                            "expected a PostgreSQL URL \"postgres://user@host:5432/db\" (or \"\" for the embedded SQLite file), got {:?}",
                            redact_url(url)
                        ),
                    ));
                }
                if raw.sqlite_path.is_some() {
                    return Err(self.invalid(
                        "ingest.sqlite_path",
                        "sqlite_path is only used when database_url is empty; remove one of them",
                    ));
                }
                IngestDatabase::Postgres {
                    url: url.to_string(),
                }
            }
        };
        let table = self.table_name("ingest.table", raw.table, TABLE)?;
        let reject_table =
            self.table_name("ingest.reject_table", raw.reject_table, REJECT_TABLE)?;
        if table == reject_table {
            return Err(self.invalid("ingest.reject_table", "reject_table must differ from table"));
        }
        let topic_filter = raw.topic_filter.unwrap_or_else(|| TOPIC_FILTER.into());
        if let Err(why) = crate::rule::parse_rule(&topic_filter) {
            return Err(self.invalid("ingest.topic_filter", format!("{topic_filter:?}: {why}")));
        }
        if topic_filter.contains('{') {
            return Err(self.invalid(
                "ingest.topic_filter",
                "placeholders are not used here; write a plain filter such as \"telemetry/+/data\"",
            ));
        }
        let time_field = match raw.time_field {
            None => Some(TIME_FIELD.to_string()),
            Some(f) if f.is_empty() => None,
            Some(f) => Some(f),
        };
        let retry_min = self.duration("ingest.retry_min", raw.retry_min, RETRY_MIN)?;
        let retry_max = self.duration("ingest.retry_max", raw.retry_max, RETRY_MAX)?;
        if retry_max < retry_min {
            return Err(self.invalid(
                "ingest.retry_max",
                format!("retry_max ({retry_max:?}) is shorter than retry_min ({retry_min:?})"),
            ));
        }
        let spool_max_bytes = self.positive(
            "ingest.spool_max_bytes",
            raw.spool_max_bytes,
            SPOOL_MAX_BYTES,
            usize::MAX,
        )? as u64;
        let spool_segment_bytes = self.positive(
            "ingest.spool_segment_bytes",
            raw.spool_segment_bytes,
            SPOOL_SEGMENT_BYTES,
            1 << 30,
        )? as u64;
        if spool_segment_bytes > spool_max_bytes {
            return Err(self.invalid(
                "ingest.spool_segment_bytes",
                "spool_segment_bytes must not exceed spool_max_bytes",
            ));
        }
        Ok(IngestSettings {
            database,
            table,
            reject_table,
            topic_filter,
            time_field,
            time_format: raw.time_format.unwrap_or(TimeFormat::Auto),
            batch_rows: self.positive(
                "ingest.batch_rows",
                raw.batch_rows,
                BATCH_ROWS,
                1_000_000,
            )?,
            batch_bytes: self.positive(
                "ingest.batch_bytes",
                raw.batch_bytes,
                BATCH_BYTES,
                1 << 30,
            )?,
            batch_age: self.duration("ingest.batch_age", raw.batch_age, BATCH_AGE)?,
            writers: self.positive("ingest.writers", raw.writers, WRITERS, 64)?,
            queue_capacity: self.positive(
                "ingest.queue_capacity",
                raw.queue_capacity,
                QUEUE_CAPACITY,
                100_000_000,
            )?,
            when_full: raw.when_full.unwrap_or(WhenFull::Block),
            block_timeout: self.duration(
                "ingest.block_timeout",
                raw.block_timeout,
                BLOCK_TIMEOUT,
            )?,
            spool_dir: self
                .non_empty_path("ingest.spool_dir", raw.spool_dir)?
                .unwrap_or_else(|| data_dir.join(SPOOL_DIR)),
            spool_max_bytes,
            spool_segment_bytes,
            when_spool_full: raw.when_spool_full.unwrap_or(WhenSpoolFull::DropNewest),
            retry_min,
            retry_max,
            connect_timeout: self.duration(
                "ingest.connect_timeout",
                raw.connect_timeout,
                CONNECT_TIMEOUT,
            )?,
            write_timeout: self.duration(
                "ingest.write_timeout",
                raw.write_timeout,
                WRITE_TIMEOUT,
            )?,
            enabled: raw.enabled.unwrap_or(true),
            ack: raw.ack.unwrap_or(AckMode::None),
            chunk_interval: self.duration(
                "ingest.chunk_interval",
                raw.chunk_interval,
                CHUNK_INTERVAL,
            )?,
        })
    }

    /// `name` or `schema.name`, each part a plain SQL identifier.
    fn table_name(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<String, ConfigError> {
        let name = value.unwrap_or_else(|| default.to_string());
        let parts: Vec<&str> = name.split('.').collect();
        let ident_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if parts.len() > 2 || !parts.iter().all(|p| ident_ok(p)) {
            return Err(self.invalid(
                key,
                format!("expected a table name such as \"telemetry\" or \"public.telemetry\" (lower-case letters, digits, `_`, at most 63 each), got {name:?}"),
            ));
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
