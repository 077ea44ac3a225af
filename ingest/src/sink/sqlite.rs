//! SQLite: the embedded default. WAL journal, `synchronous = FULL` (a commit
//! is durable), one transaction per batch, the same columns as PostgreSQL
//! (times as RFC 3339 text in UTC with microseconds, payload as JSON text).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use gatehouse_config::IngestSettings;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use time::OffsetDateTime;
use time::macros::format_description;

use super::{Names, reject_reason};
use crate::decode::{Item, Kind};
use crate::error::IngestError;

/// Rows per multi-row INSERT (5 parameters each, well under SQLite's limit).
const CHUNK: usize = 400;

#[derive(Debug)]
pub(crate) struct SqliteSink {
    pool: SqlitePool,
    names: Names,
    node: String,
    insert_full: String,
}

impl SqliteSink {
    pub(crate) async fn open(
        path: &Path,
        settings: &IngestSettings,
        names: Names,
        node: &str,
    ) -> Result<SqliteSink, IngestError> {
        let err = |source| IngestError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        // Telemetry is data: the file and its -wal/-shm (SQLite gives them
        // the database file's mode) are 0600, a created directory 0700.
        gatehouse_config::secure_fs::prepare_sqlite_file(path)
            .map_err(|e| err(sqlx::Error::Io(e)))?;
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.connect_timeout.max(Duration::from_secs(5)))
            .connect_with(opts)
            .await
            .map_err(err)?;
        let sink = SqliteSink {
            insert_full: insert_sql(&names.table, CHUNK),
            pool,
            names,
            node: node.to_string(),
        };
        sink.create_schema().await.map_err(err)?;
        Ok(sink)
    }

    async fn create_schema(&self) -> Result<(), sqlx::Error> {
        let n = &self.names;
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS {} (time TEXT NOT NULL, gateway_code TEXT NOT NULL, \
                 topic TEXT NOT NULL, payload TEXT NOT NULL, received_at TEXT NOT NULL)",
                n.table
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} (gateway_code, time DESC)",
                n.index, n.table
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (received_at TEXT NOT NULL, gateway_code TEXT NOT NULL, \
                 topic TEXT NOT NULL, payload BLOB NOT NULL, reason TEXT NOT NULL)",
                n.rejects
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (node TEXT NOT NULL, batch INTEGER NOT NULL, \
                 committed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (node, batch))",
                n.ledger
            ),
            format!(
                "DELETE FROM {} WHERE committed_at < datetime('now', '-7 days')",
                n.ledger
            ),
        ] {
            sqlx::query(&ddl).execute(&self.pool).await?;
        }
        Ok(())
    }

    pub(crate) async fn write(&self, units: &[i64], items: &[Item]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<&Item> = items
            .iter()
            .filter(|i| matches!(i.kind, Kind::Row { .. }))
            .collect();
        for chunk in rows.chunks(CHUNK) {
            let sql;
            let sql = if chunk.len() == CHUNK {
                &self.insert_full
            } else {
                sql = insert_sql(&self.names.table, chunk.len());
                &sql
            };
            let mut q = sqlx::query(sql);
            for item in chunk {
                let Kind::Row { time_us } = item.kind else {
                    continue;
                };
                q = q
                    .bind(rfc3339(time_us))
                    .bind(&item.gateway_code)
                    .bind(&item.topic)
                    .bind(std::str::from_utf8(&item.payload).unwrap_or_default())
                    .bind(rfc3339(item.received_us));
            }
            q.execute(&mut *tx).await?;
        }
        for item in items {
            if let Some(reason) = reject_reason(item) {
                sqlx::query(&format!(
                    "INSERT INTO {} (received_at, gateway_code, topic, payload, reason) VALUES (?, ?, ?, ?, ?)",
                    self.names.rejects
                ))
                .bind(rfc3339(item.received_us))
                .bind(&item.gateway_code)
                .bind(&item.topic)
                .bind(&item.payload)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            }
        }
        for unit in units {
            sqlx::query(&format!(
                "INSERT INTO {} (node, batch) VALUES (?, ?)",
                self.names.ledger
            ))
            .bind(&self.node)
            .bind(unit)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    pub(crate) async fn committed(&self, units: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
        let marks = vec!["?"; units.len()].join(", ");
        let sql = format!(
            "SELECT batch FROM {} WHERE node = ? AND batch IN ({marks})",
            self.names.ledger
        );
        let mut q = sqlx::query_scalar(&sql).bind(&self.node);
        for u in units {
            q = q.bind(u);
        }
        q.fetch_all(&self.pool).await
    }

    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

fn insert_sql(table: &str, rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?)"; rows].join(", ");
    format!("INSERT INTO {table} (time, gateway_code, topic, payload, received_at) VALUES {values}")
}

/// `2026-11-22T18:43:29.123456Z`: sortable as text.
pub(crate) fn rfc3339(unix_us: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(unix_us as i128 * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_fixed_width_utc() {
        assert_eq!(
            super::rfc3339(1_700_000_000_000_001),
            "2023-11-14T22:13:20.000001Z"
        );
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000Z");
    }
}
