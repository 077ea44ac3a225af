//! `registrations`: device self-registrations and their PENDENTE →
//! PROVISIONADO / REJEITADO lifecycle.

use std::str::FromStr;

use serde::Serialize;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;

use super::{Store, is_unique_violation, ts};
use crate::error::StoreError;

/// Registration states, spelled as the reference API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "PENDENTE")]
    Pendente,
    #[serde(rename = "PROVISIONADO")]
    Provisionado,
    #[serde(rename = "REJEITADO")]
    Rejeitado,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pendente => "PENDENTE",
            Status::Provisionado => "PROVISIONADO",
            Status::Rejeitado => "REJEITADO",
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PENDENTE" => Ok(Status::Pendente),
            "PROVISIONADO" => Ok(Status::Provisionado),
            "REJEITADO" => Ok(Status::Rejeitado),
            _ => Err(format!(
                "unknown status {s:?}: expected PENDENTE, PROVISIONADO or REJEITADO"
            )),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A self-registration record.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    pub id: i64,
    pub mac: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub fw_version: Option<String>,
    pub source_ip: Option<String>,
    pub bootstrap_id: Option<i64>,
    pub bootstrap_fingerprint: Option<String>,
    pub has_csr: bool,
    #[serde(skip)]
    pub csr_pem: Option<String>,
    pub status: Status,
    pub gateway_id: Option<i64>,
    pub certificate_id: Option<i64>,
    pub processed_by: Option<String>,
    pub processed_at: Option<String>,
    pub notes: Option<String>,
    pub created_at: String,
}

/// What a device sends, after validation.
#[derive(Debug, Clone, Default)]
pub struct NewRegistration {
    pub mac: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub fw_version: Option<String>,
    pub source_ip: Option<String>,
    pub bootstrap_id: Option<i64>,
    pub bootstrap_fingerprint: Option<String>,
    pub csr_pem: Option<String>,
}

const REGISTRATION_COLS: &str = "id, mac, serial, model, fw_version, source_ip, bootstrap_id, \
     bootstrap_fingerprint, csr_pem, status, gateway_id, certificate_id, processed_by, \
     processed_at, notes, created_at";

/// A `registrations` row as stored: `status` is still text (a bad value is
/// [`StoreError::Corrupt`], not a decode error) and `has_csr` is derived.
#[derive(sqlx::FromRow)]
struct RegistrationRow {
    id: i64,
    mac: String,
    serial: Option<String>,
    model: Option<String>,
    fw_version: Option<String>,
    source_ip: Option<String>,
    bootstrap_id: Option<i64>,
    bootstrap_fingerprint: Option<String>,
    csr_pem: Option<String>,
    status: String,
    gateway_id: Option<i64>,
    certificate_id: Option<i64>,
    processed_by: Option<String>,
    processed_at: Option<String>,
    notes: Option<String>,
    created_at: String,
}

impl TryFrom<RegistrationRow> for Registration {
    type Error = StoreError;

    fn try_from(r: RegistrationRow) -> Result<Registration, StoreError> {
        Ok(Registration {
            id: r.id,
            mac: r.mac,
            serial: r.serial,
            model: r.model,
            fw_version: r.fw_version,
            source_ip: r.source_ip,
            bootstrap_id: r.bootstrap_id,
            bootstrap_fingerprint: r.bootstrap_fingerprint,
            has_csr: r.csr_pem.is_some(),
            csr_pem: r.csr_pem,
            status: r.status.parse().map_err(|reason| StoreError::Corrupt {
                column: "registrations.status",
                reason,
            })?,
            gateway_id: r.gateway_id,
            certificate_id: r.certificate_id,
            processed_by: r.processed_by,
            processed_at: r.processed_at,
            notes: r.notes,
            created_at: r.created_at,
        })
    }
}

impl Store {
    /// Records a registration unless the MAC already has an open (PENDENTE or
    /// PROVISIONADO) one, which is returned instead. `true` = newly created.
    pub async fn register(
        &self,
        new: &NewRegistration,
        now: OffsetDateTime,
    ) -> Result<(Registration, bool), StoreError> {
        for _ in 0..3 {
            if let Some(existing) = self.open_registration(&new.mac).await? {
                return Ok((existing, false));
            }
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO registrations (mac, serial, model, fw_version, source_ip, \
                 bootstrap_id, bootstrap_fingerprint, csr_pem, status, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDENTE', $9) RETURNING id",
            )
            .bind(&new.mac)
            .bind(&new.serial)
            .bind(&new.model)
            .bind(&new.fw_version)
            .bind(&new.source_ip)
            .bind(new.bootstrap_id)
            .bind(&new.bootstrap_fingerprint)
            .bind(&new.csr_pem)
            .bind(ts(now))
            .fetch_one(&self.pool)
            .await;
            match inserted {
                Ok(id) => {
                    let reg = self.registration(id).await?.ok_or(StoreError::Corrupt {
                        column: "registrations.id",
                        reason: "inserted row vanished".into(),
                    })?;
                    return Ok((reg, true));
                }
                // A concurrent POST for the same MAC won the race: return its record.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Corrupt {
            column: "registrations.mac",
            reason: "could not settle a registration after 3 attempts".into(),
        })
    }

    /// A device presenting a bootstrap certificate claims a PENDENTE record
    /// that was made anonymously for its MAC: its fields (CSR included)
    /// replace the anonymous ones. `false` when the record is no longer
    /// PENDENTE or was already made with a bootstrap certificate.
    pub async fn claim_registration(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        new: &NewRegistration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE registrations SET serial = $1, model = $2, fw_version = $3, source_ip = $4, \
             bootstrap_id = $5, bootstrap_fingerprint = $6, csr_pem = $7 \
             WHERE id = $8 AND status = 'PENDENTE' AND bootstrap_id IS NULL",
        )
        .bind(&new.serial)
        .bind(&new.model)
        .bind(&new.fw_version)
        .bind(&new.source_ip)
        .bind(new.bootstrap_id)
        .bind(&new.bootstrap_fingerprint)
        .bind(&new.csr_pem)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn open_registration(&self, mac: &str) -> Result<Option<Registration>, StoreError> {
        let row = sqlx::query_as::<_, RegistrationRow>(&format!(
            "SELECT {REGISTRATION_COLS} FROM registrations \
             WHERE mac = $1 AND status <> 'REJEITADO' ORDER BY id LIMIT 1"
        ))
        .bind(mac)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Registration::try_from).transpose()
    }

    pub async fn registration(&self, id: i64) -> Result<Option<Registration>, StoreError> {
        let row = sqlx::query_as::<_, RegistrationRow>(&format!(
            "SELECT {REGISTRATION_COLS} FROM registrations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Registration::try_from).transpose()
    }

    /// Registrations, oldest first, optionally of one status.
    pub async fn registrations(
        &self,
        status: Option<Status>,
    ) -> Result<Vec<Registration>, StoreError> {
        let rows =
            match status {
                Some(s) => sqlx::query_as::<_, RegistrationRow>(&format!(
                    "SELECT {REGISTRATION_COLS} FROM registrations WHERE status = $1 ORDER BY id"
                ))
                .bind(s.as_str())
                .fetch_all(&self.pool)
                .await?,
                None => {
                    sqlx::query_as::<_, RegistrationRow>(&format!(
                        "SELECT {REGISTRATION_COLS} FROM registrations ORDER BY id"
                    ))
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        rows.into_iter().map(Registration::try_from).collect()
    }

    /// PENDENTE → REJEITADO. `false` when the record is not PENDENTE.
    pub async fn reject(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        actor: &str,
        notes: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE registrations SET status = 'REJEITADO', processed_by = $1, processed_at = $2, \
             notes = $3 WHERE id = $4 AND status = 'PENDENTE'",
        )
        .bind(actor)
        .bind(ts(now))
        .bind(notes)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// PENDENTE → PROVISIONADO with its gateway and certificate.
    #[allow(clippy::too_many_arguments)]
    pub async fn mark_provisioned(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        gateway_id: i64,
        certificate_id: i64,
        actor: &str,
        notes: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE registrations SET status = 'PROVISIONADO', gateway_id = $1, \
             certificate_id = $2, processed_by = $3, processed_at = $4, notes = $5 \
             WHERE id = $6 AND status = 'PENDENTE'",
        )
        .bind(gateway_id)
        .bind(certificate_id)
        .bind(actor)
        .bind(ts(now))
        .bind(notes)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
