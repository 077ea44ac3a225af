//! PostgreSQL / TimescaleDB: binary COPY into the telemetry table.

use std::time::Instant;

use gatehouse_config::{IngestSettings, redact_url};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::OnceCell;

use super::{Names, reject_reason};
use crate::decode::{Item, Kind};
use crate::error::IngestError;
use crate::pgcopy::{COLUMNS, CopyEncoder};
use crate::retry::schema_missing;

/// Makes the telemetry table a hypertable (no-op when it already is one;
/// an existing hypertable keeps its chunk interval, see below).
const CREATE_HYPERTABLE_SQL: &str = "SELECT create_hypertable($1::regclass, 'time', \
     chunk_time_interval => $2 * interval '1 second', if_not_exists => true, migrate_data => true)";

/// Chunk interval of the hypertable's `time` dimension, in seconds.
const CHUNK_INTERVAL_SQL: &str = "SELECT EXTRACT(EPOCH FROM d.time_interval)::int8 \
     FROM timescaledb_information.dimensions d \
     WHERE format('%I.%I', d.hypertable_schema, d.hypertable_name)::regclass = $1::regclass \
       AND d.column_name = 'time'";

/// Applies `ingest.chunk_interval` to an existing hypertable (chunks created
/// from now on; existing chunks keep their size).
const SET_CHUNK_INTERVAL_SQL: &str =
    "SELECT set_chunk_time_interval($1::regclass, $2 * interval '1 second')";

/// `Some(previous)` when the hypertable's chunk interval (seconds) differs
/// from the configured one and must be changed.
fn chunk_interval_change(current: Option<i64>, configured_s: u64) -> Option<Option<i64>> {
    (current != Some(configured_s as i64)).then_some(current)
}

#[derive(Debug)]
pub(crate) struct PgSink {
    pool: PgPool,
    names: Names,
    node: String,
    chunk_interval_s: u64,
    schema: OnceCell<()>,
    copy_sql: String,
    reject_sql: String,
    ledger_sql: String,
    committed_sql: String,
}

impl PgSink {
    pub(crate) fn open(
        url: &str,
        settings: &IngestSettings,
        names: Names,
        node: &str,
    ) -> Result<PgSink, IngestError> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.writers as u32 + 2)
            .acquire_timeout(settings.connect_timeout)
            .connect_lazy(url)
            .map_err(|source| IngestError::DatabaseUrl {
                url: redact_url(url),
                source,
            })?;
        Ok(PgSink {
            copy_sql: format!(
                "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
                names.table
            ),
            reject_sql: format!(
                "INSERT INTO {} (received_at, gateway_code, topic, payload, reason) \
                 VALUES ('epoch'::timestamptz + $1 * interval '1 microsecond', $2, $3, $4, $5)",
                names.rejects
            ),
            ledger_sql: format!(
                "INSERT INTO {} (node, batch) SELECT $1, unnest($2::int8[])",
                names.ledger
            ),
            committed_sql: format!(
                "SELECT batch FROM {} WHERE node = $1 AND batch = ANY($2)",
                names.ledger
            ),
            pool,
            names,
            node: node.to_string(),
            chunk_interval_s: settings.chunk_interval.as_secs().max(1),
            schema: OnceCell::new(),
        })
    }

    async fn ensure_schema(&self) -> Result<(), sqlx::Error> {
        self.schema
            .get_or_try_init(|| async {
                let started = Instant::now();
                self.create_schema().await?;
                tracing::info!(table = %self.names.plain, elapsed = ?started.elapsed(), "ingest: PostgreSQL schema ready");
                Ok::<(), sqlx::Error>(())
            })
            .await
            .map(|_| ())
    }

    async fn create_schema(&self) -> Result<(), sqlx::Error> {
        let n = &self.names;
        let mut tx = self.pool.begin().await?;
        // Several writers / nodes may start at once: serialise the DDL.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('gatehouse_ingest_schema'))")
            .execute(&mut *tx)
            .await?;
        let timescale: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut hypertable = false;
        if timescale {
            sqlx::query("SAVEPOINT ext").execute(&mut *tx).await?;
            match sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .execute(&mut *tx)
                .await
            {
                Ok(_) => hypertable = true,
                Err(e) => {
                    tracing::warn!(error = %e, "ingest: timescaledb is installed but cannot be enabled (shared_preload_libraries?); using a plain table");
                    sqlx::query("ROLLBACK TO SAVEPOINT ext")
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (\
               time timestamptz NOT NULL, gateway_code text NOT NULL, topic text NOT NULL, \
               payload jsonb NOT NULL, received_at timestamptz NOT NULL)",
            n.table
        ))
        .execute(&mut *tx)
        .await?;
        if hypertable {
            sqlx::query(CREATE_HYPERTABLE_SQL)
                .bind(&n.table)
                .bind(self.chunk_interval_s as i64)
                .execute(&mut *tx)
                .await?;
            // create_hypertable leaves an existing hypertable's interval as
            // it is: apply a changed ingest.chunk_interval explicitly.
            let current: Option<i64> = sqlx::query_scalar(CHUNK_INTERVAL_SQL)
                .bind(&n.table)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
            if let Some(previous) = chunk_interval_change(current, self.chunk_interval_s) {
                sqlx::query(SET_CHUNK_INTERVAL_SQL)
                    .bind(&n.table)
                    .bind(self.chunk_interval_s as i64)
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(
                    table = %n.plain,
                    previous_s = ?previous,
                    chunk_interval_s = self.chunk_interval_s,
                    "ingest: hypertable chunk interval changed to ingest.chunk_interval (applies to chunks created from now on)"
                );
            }
            tracing::info!(table = %n.plain, chunk_interval_s = self.chunk_interval_s, "ingest: telemetry table is a TimescaleDB hypertable");
        } else {
            tracing::info!(table = %n.plain, "ingest: TimescaleDB extension not available; telemetry is a plain PostgreSQL table");
        }
        for ddl in [
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} (gateway_code, time DESC)",
                n.index, n.table
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (\
                   received_at timestamptz NOT NULL, gateway_code text NOT NULL, topic text NOT NULL, \
                   payload bytea NOT NULL, reason text NOT NULL)",
                n.rejects
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (node text NOT NULL, batch int8 NOT NULL, \
                   committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (node, batch))",
                n.ledger
            ),
            // The ledger only has to outlive a replay; keep a week.
            format!(
                "DELETE FROM {} WHERE committed_at < now() - interval '7 days'",
                n.ledger
            ),
        ] {
            sqlx::query(&ddl).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// The tables were dropped under us (database recreated, restored, or
    /// a new server behind the same URL): create them again.
    async fn recreate_schema(&self, cause: &sqlx::Error) -> Result<(), sqlx::Error> {
        tracing::warn!(
            table = %self.names.plain,
            error = %cause,
            "ingest: a telemetry table is gone (database recreated or restored?); creating the tables again and retrying"
        );
        self.create_schema().await.inspect_err(|e| {
            tracing::error!(
                table = %self.names.plain,
                error = %e,
                "ingest: cannot recreate the telemetry tables; records stay in the spool and are retried (create the schema or grant CREATE to the ingest user)"
            )
        })
    }

    /// Commits `items` and the ledger entries for `units`; recreates the
    /// tables once and retries if they turned out to be missing.
    pub(crate) async fn write(&self, units: &[i64], items: &[Item]) -> Result<(), sqlx::Error> {
        self.ensure_schema().await?;
        match self.write_once(units, items).await {
            Err(e) if schema_missing(&e) => {
                self.recreate_schema(&e).await?;
                self.write_once(units, items).await
            }
            other => other,
        }
    }

    async fn write_once(&self, units: &[i64], items: &[Item]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let rows: usize = items
            .iter()
            .filter(|i| matches!(i.kind, Kind::Row { .. }))
            .count();
        if rows > 0 {
            let bytes: usize = items.iter().map(|i| i.size() + 64).sum();
            let mut enc = CopyEncoder::with_capacity(bytes);
            for item in items {
                if let Kind::Row { time_us } = item.kind {
                    enc.row(
                        time_us,
                        &item.gateway_code,
                        &item.topic,
                        &item.payload,
                        item.received_us,
                    );
                }
            }
            let mut copy = tx.copy_in_raw(&self.copy_sql).await?;
            if let Err(e) = copy.send(enc.finish()).await {
                let _ = copy.abort("gatehouse: send failed").await;
                return Err(e);
            }
            copy.finish().await?;
        }
        for item in items {
            if let Some(reason) = reject_reason(item) {
                sqlx::query(&self.reject_sql)
                    .bind(item.received_us)
                    .bind(&item.gateway_code)
                    .bind(&item.topic)
                    .bind(&item.payload)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if !units.is_empty() {
            sqlx::query(&self.ledger_sql)
                .bind(&self.node)
                .bind(units)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    pub(crate) async fn committed(&self, units: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
        self.ensure_schema().await?;
        let query = || {
            sqlx::query_scalar(&self.committed_sql)
                .bind(&self.node)
                .bind(units)
                .fetch_all(&self.pool)
        };
        match query().await {
            Err(e) if schema_missing(&e) => {
                self.recreate_schema(&e).await?;
                query().await
            }
            other => other,
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        self.ensure_schema().await?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Debian 12 ships no TimescaleDB, so the hypertable path is checked at
    // the SQL level here; the rest of the sink runs against a real server in
    // the gatehouse-tests crate.
    #[test]
    fn a_changed_chunk_interval_is_applied_not_ignored() {
        assert_eq!(chunk_interval_change(Some(86_400), 86_400), None);
        assert_eq!(
            chunk_interval_change(Some(604_800), 86_400),
            Some(Some(604_800))
        );
        // Not found (cannot happen after create_hypertable): set it anyway.
        assert_eq!(chunk_interval_change(None, 3_600), Some(None));
        assert!(CREATE_HYPERTABLE_SQL.contains("if_not_exists => true"));
        assert!(CREATE_HYPERTABLE_SQL.contains("chunk_time_interval => $2 * interval '1 second'"));
        assert!(CHUNK_INTERVAL_SQL.contains("timescaledb_information.dimensions"));
        assert!(CHUNK_INTERVAL_SQL.contains("= $1::regclass"));
        assert!(CHUNK_INTERVAL_SQL.contains("d.column_name = 'time'"));
        assert_eq!(
            SET_CHUNK_INTERVAL_SQL,
            "SELECT set_chunk_time_interval($1::regclass, $2 * interval '1 second')"
        );
    }
}
