//! `audit_log`: the append-only record of administrative actions (the
//! databases refuse UPDATE and DELETE on it).

use serde::Serialize;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;

use super::{Store, ts};
use crate::error::StoreError;

/// One audit-log line.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

impl Store {
    /// Appends an audit line (inside the transaction of the action).
    pub async fn audit(
        &self,
        tx: &mut Transaction<'static, Any>,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(ts(now))
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, actor, action, subject, detail FROM audit_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
