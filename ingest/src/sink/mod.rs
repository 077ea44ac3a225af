//! Where batches are committed: PostgreSQL / TimescaleDB (binary COPY) or
//! SQLite. Both write rows, rejects and the batch ledger in one transaction,
//! so a batch is committed whole or not at all, and the ledger lets a replay
//! skip batches whose commit succeeded although the client never heard so.

mod postgres;
mod sqlite;

use gatehouse_config::{IngestDatabase, IngestSettings};

use crate::decode::{Item, Kind};
use crate::error::IngestError;

/// A database sink.
#[derive(Debug)]
pub(crate) enum Sink {
    Postgres(postgres::PgSink),
    Sqlite(sqlite::SqliteSink),
}

impl Sink {
    /// Builds the sink without connecting: the database may be down at start.
    pub(crate) async fn open(settings: &IngestSettings, node: &str) -> Result<Sink, IngestError> {
        let names = Names::new(&settings.table, &settings.reject_table);
        Ok(match &settings.database {
            IngestDatabase::Postgres { url } => {
                Sink::Postgres(postgres::PgSink::open(url, settings, names, node)?)
            }
            IngestDatabase::Sqlite { path } => {
                Sink::Sqlite(sqlite::SqliteSink::open(path, settings, names, node).await?)
            }
        })
    }

    /// Commits `items` (rows and rejects) and records `units` in the ledger, atomically.
    pub(crate) async fn write(&self, units: &[i64], items: &[Item]) -> Result<(), sqlx::Error> {
        match self {
            Sink::Postgres(s) => s.write(units, items).await,
            Sink::Sqlite(s) => s.write(units, items).await,
        }
    }

    /// Which of `units` are already committed (ledger lookup).
    pub(crate) async fn committed(&self, units: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Sink::Postgres(s) => s.committed(units).await,
            Sink::Sqlite(s) => s.committed(units).await,
        }
    }

    /// Cheap round trip to see whether the database is back.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Sink::Postgres(s) => s.ping().await,
            Sink::Sqlite(s) => s.ping().await,
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Sink::Postgres(s) => s.close().await,
            Sink::Sqlite(s) => s.close().await,
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
