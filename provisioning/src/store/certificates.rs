//! `certificates`: operational certificates, their revocation and renewal
//! scheduling.

use serde::Serialize;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;

use super::{Flag, Store, ts};
use crate::error::StoreError;

/// An operational certificate. The PEMs are public material; no private key
/// is ever stored for it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Certificate {
    pub id: i64,
    pub gateway_id: i64,
    pub gateway_code: String,
    /// `csr` or `legacy`.
    pub kind: String,
    pub serial: String,
    pub fingerprint: String,
    #[serde(skip)]
    pub certificate_pem: String,
    #[serde(skip)]
    pub csr_pem: Option<String>,
    pub not_after: String,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    pub revoke_notes: Option<String>,
    #[sqlx(try_from = "Flag")]
    pub renewal_scheduled: bool,
    pub renewal_date: Option<String>,
    pub created_at: String,
}

/// A new operational certificate.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    pub kind: &'static str,
    pub serial: String,
    pub fingerprint: String,
    pub certificate_pem: String,
    pub csr_pem: Option<String>,
    pub not_after: String,
}

const CERT_COLS: &str = "c.id, c.gateway_id, g.gateway_code, c.kind, c.serial, c.fingerprint, \
     c.certificate_pem, c.csr_pem, c.not_after, c.revoked_at, c.revoke_reason, c.revoke_notes, \
     c.renewal_scheduled, c.renewal_date, c.created_at";

impl Store {
    pub async fn insert_certificate(
        &self,
        tx: &mut Transaction<'static, Any>,
        gateway_id: i64,
        c: &NewCertificate,
        now: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO certificates (gateway_id, kind, serial, fingerprint, certificate_pem, \
             csr_pem, not_after, renewal_scheduled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) RETURNING id",
        )
        .bind(gateway_id)
        .bind(c.kind)
        .bind(&c.serial)
        .bind(&c.fingerprint)
        .bind(&c.certificate_pem)
        .bind(&c.csr_pem)
        .bind(&c.not_after)
        .bind(ts(now))
        .fetch_one(&mut **tx)
        .await?)
    }

    pub async fn certificate(&self, id: i64) -> Result<Option<Certificate>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {CERT_COLS} FROM certificates c JOIN gateways g ON g.id = c.gateway_id \
             WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn certificates(&self) -> Result<Vec<Certificate>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {CERT_COLS} FROM certificates c JOIN gateways g ON g.id = c.gateway_id \
             ORDER BY c.id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Certificates marked renewal-scheduled and not revoked.
    pub async fn certificates_due(&self) -> Result<Vec<Certificate>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {CERT_COLS} FROM certificates c JOIN gateways g ON g.id = c.gateway_id \
             WHERE c.renewal_scheduled = 1 AND c.revoked_at IS NULL ORDER BY c.not_after, c.id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks live certificates expiring before `horizon`; returns how many
    /// were newly marked.
    pub async fn schedule_renewals(
        &self,
        horizon: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE certificates SET renewal_scheduled = 1, renewal_date = $1 \
             WHERE renewal_scheduled = 0 AND revoked_at IS NULL AND not_after <= $2",
        )
        .bind(ts(now))
        .bind(ts(horizon))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Revokes a certificate; `false` if it was already revoked.
    pub async fn revoke_certificate(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        reason: &str,
        notes: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE certificates SET revoked_at = $1, revoke_reason = $2, revoke_notes = $3 \
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
