//! Where batches are committed: PostgreSQL / TimescaleDB (binary COPY) or
//! SQLite. Both write rows, rejects and the batch ledger in one transaction,
//! so a batch is committed whole or not at all, and the ledger lets a replay
//! skip batches whose commit succeeded although the client never heard so.

mod postgres;
mod sqlite;

use std::time::Duration;

use gatehouse_config::{IngestDatabase, IngestSettings};

use crate::decode::{Item, Kind};
use crate::error::IngestError;

/// A database sink. Every call is bounded by `ingest.write_timeout`: a
/// database that accepts connections but stops answering (hung, stalled
/// disk, network black hole) is treated like one that is down, so batches go
/// to the spool instead of piling up behind a writer that never returns.
#[derive(Debug)]
pub(crate) struct Sink {
    db: Db,
    timeout: Duration,
}

#[derive(Debug)]
enum Db {
    Postgres(postgres::PgSink),
    Sqlite(sqlite::SqliteSink),
}

impl Sink {
    /// Builds the sink without connecting: the database may be down at start.
    pub(crate) async fn open(settings: &IngestSettings, node: &str) -> Result<Sink, IngestError> {
        let names = Names::new(&settings.table, &settings.reject_table);
        let db = match &settings.database {
            IngestDatabase::Postgres { url } => {
                Db::Postgres(postgres::PgSink::open(url, settings, names, node)?)
            }
            IngestDatabase::Sqlite { path } => {
                Db::Sqlite(sqlite::SqliteSink::open(path, settings, names, node).await?)
            }
        };
        Ok(Sink {
            db,
            timeout: settings.write_timeout,
        })
    }

    /// `f` within the write timeout; a timeout is an I/O error (retriable).
    /// An abandoned transaction is rolled back; if its commit went through
    /// after all, the batch ledger makes the replay skip it.
    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the database did not answer within ingest.write_timeout ({:?})",
                    self.timeout
                ),
            ))),
        }
    }

    /// Commits `items` (rows and rejects) and records `units` in the ledger, atomically.
    pub(crate) async fn write(&self, units: &[i64], items: &[Item]) -> Result<(), sqlx::Error> {
        match &self.db {
            Db::Postgres(s) => self.bounded(s.write(units, items)).await,
            Db::Sqlite(s) => self.bounded(s.write(units, items)).await,
        }
    }

    /// Which of `units` are already committed (ledger lookup).
    pub(crate) async fn committed(&self, units: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        match &self.db {
            Db::Postgres(s) => self.bounded(s.committed(units)).await,
            Db::Sqlite(s) => self.bounded(s.committed(units)).await,
        }
    }

    /// Cheap round trip to see whether the database is back.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        match &self.db {
            Db::Postgres(s) => self.bounded(s.ping()).await,
            Db::Sqlite(s) => self.bounded(s.ping()).await,
        }
    }

    pub(crate) async fn close(&self) {
        let close = async {
            match &self.db {
                Db::Postgres(s) => s.close().await,
                Db::Sqlite(s) => s.close().await,
            }
        };
        if tokio::time::timeout(self.timeout, close).await.is_err() {
            tracing::warn!("ingest: closing the database connections timed out");
        }
    }
}

/// Quoted SQL names derived from the configured tables.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// `"schema"."table"` or `"table"`.
    pub table: String,
    pub rejects: String,
    pub ledger: String,
    pub index: String,
    /// The table as written in the config (for create_hypertable / messages).
    pub plain: String,
}

impl Names {
    fn new(table: &str, rejects: &str) -> Names {
        let quote = |name: &str| {
            name.split('.')
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(".")
        };
        let base = table.rsplit('.').next().unwrap_or(table);
        Names {
            table: quote(table),
            rejects: quote(rejects),
            ledger: quote(&format!("{table}_batches")),
            index: format!("\"{base}_gateway_time_idx\""),
            plain: table.to_string(),
        }
    }
}

/// The reject reason of an item, if it is a reject.
pub(crate) fn reject_reason(item: &Item) -> Option<&str> {
    match &item.kind {
        Kind::Reject { reason, .. } => Some(reason),
        Kind::Row { .. } => None,
    }
}
