//! `bootstrap_certificates`: factory-batch certificates, the one-time
//! download of their private key, and emergency revocation.

use serde::Serialize;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;

use super::{Flag, Store, ts};
use crate::error::StoreError;

/// A bootstrap (factory batch) certificate. `Debug`/`Serialize` never show
/// the private key: only whether it is still held.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Bootstrap {
    pub id: i64,
    pub label: String,
    #[serde(skip)]
    pub certificate_pem: String,
    pub serial: String,
    pub fingerprint: String,
    pub not_after: String,
    #[sqlx(try_from = "Flag")]
    pub is_active: bool,
    /// The private key is still held (not yet downloaded, not revoked).
    #[sqlx(try_from = "Flag")]
    pub key_available: bool,
    pub downloaded_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    pub revoke_notes: Option<String>,
    pub created_at: String,
}

/// `key_available` is an expression: BOOLEAN on PostgreSQL, INTEGER on
/// SQLite (hence [`Flag`]).
const BOOTSTRAP_COLS: &str = "id, label, certificate_pem, serial, fingerprint, not_after, \
     is_active, private_key_pem IS NOT NULL AS key_available, downloaded_at, revoked_at, \
     revoke_reason, revoke_notes, created_at";

impl Store {
    /// Inserts a new bootstrap certificate as the only active one.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_bootstrap(
        &self,
        tx: &mut Transaction<'static, Any>,
        label: &str,
        certificate_pem: &str,
        private_key_pem: &str,
        serial: &str,
        fingerprint: &str,
        not_after: &str,
        now: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        sqlx::query("UPDATE bootstrap_certificates SET is_active = 0 WHERE is_active = 1")
            .execute(&mut **tx)
            .await?;
        Ok(sqlx::query_scalar(
            "INSERT INTO bootstrap_certificates (label, certificate_pem, private_key_pem, serial, \
             fingerprint, not_after, is_active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7) RETURNING id",
        )
        .bind(label)
        .bind(certificate_pem)
        .bind(private_key_pem)
        .bind(serial)
        .bind(fingerprint)
        .bind(not_after)
        .bind(ts(now))
        .fetch_one(&mut **tx)
        .await?)
    }

    pub async fn bootstrap(&self, id: i64) -> Result<Option<Bootstrap>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {BOOTSTRAP_COLS} FROM bootstrap_certificates WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn bootstrap_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<Bootstrap>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {BOOTSTRAP_COLS} FROM bootstrap_certificates WHERE fingerprint = $1"
        ))
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn bootstraps(&self) -> Result<Vec<Bootstrap>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {BOOTSTRAP_COLS} FROM bootstrap_certificates ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes the bootstrap private key out of the store, erasing it in the
    /// same transaction. `None` when it is gone (downloaded or revoked).
    pub async fn take_bootstrap_key(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        let key: Option<String> = sqlx::query_scalar(
            "SELECT private_key_pem FROM bootstrap_certificates \
             WHERE id = $1 AND private_key_pem IS NOT NULL AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(key) = key else { return Ok(None) };
        let key = zeroize::Zeroizing::new(key);
        let done = sqlx::query(
            "UPDATE bootstrap_certificates SET private_key_pem = NULL, downloaded_at = $1 \
             WHERE id = $2 AND private_key_pem IS NOT NULL",
        )
        .bind(ts(now))
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok((done.rows_affected() == 1).then_some(key))
    }

    /// Emergency revocation of a bootstrap certificate (its key is erased
    /// too); `false` if already revoked.
    pub async fn revoke_bootstrap(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        reason: &str,
        notes: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE bootstrap_certificates SET revoked_at = $1, revoke_reason = $2, \
             revoke_notes = $3, is_active = 0, private_key_pem = NULL \
             WHERE id = $4 AND revoked_at IS NULL",
        )
        .bind(ts(now))
        .bind(reason)
        .bind(notes)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
