//! `crl_state` and the revoked serials of both certificate tables: what the
//! CRL is signed from, and the PostgreSQL NOTIFY that tells brokers.

use time::OffsetDateTime;

use super::{Backend, CRL_CHANNEL, Store, parse_ts, ts};
use crate::error::StoreError;

/// A revoked serial for the CRL.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevokedRow {
    pub serial: String,
    pub revoked_at: String,
    #[sqlx(rename = "revoke_reason")]
    pub reason: Option<String>,
}

impl Store {
    /// Every revoked serial (operational and bootstrap).
    pub async fn revoked(&self) -> Result<Vec<RevokedRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT serial, revoked_at, revoke_reason FROM certificates WHERE revoked_at IS NOT NULL \
             UNION ALL \
             SELECT serial, revoked_at, revoke_reason FROM bootstrap_certificates \
             WHERE revoked_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes the next CRL number (at least `floor`) and records its thisUpdate.
    pub async fn next_crl_number(
        &self,
        this_update: OffsetDateTime,
        floor: u64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE crl_state SET number = CASE WHEN number + 1 > $2 THEN number + 1 ELSE $2 END, \
             this_update = $1 WHERE id = 1",
        )
        .bind(ts(this_update))
        .bind(i64::try_from(floor).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        let n: i64 = sqlx::query_scalar("SELECT number FROM crl_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n as u64)
    }

    /// Number and thisUpdate of the last CRL signed.
    pub async fn crl_state(&self) -> Result<(u64, Option<OffsetDateTime>), StoreError> {
        let (n, t): (i64, Option<String>) =
            sqlx::query_as("SELECT number, this_update FROM crl_state WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let t = t
            .map(|t| parse_ts("crl_state.this_update", &t))
            .transpose()?;
        Ok((n as u64, t))
    }

    /// `NOTIFY gatehouse_crl, '<payload>'` on PostgreSQL; nothing on SQLite.
    pub async fn notify_crl(&self, payload: &str) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)::text AS sent")
                .bind(CRL_CHANNEL)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
