//! `gateways`: provisioned gateways and their presence (online / last seen).

use serde::Serialize;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;

use super::{Flag, Store, is_unique_violation, ts};
use crate::error::StoreError;

/// A provisioned gateway.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Gateway {
    pub id: i64,
    pub device_id: String,
    pub serial_number: Option<String>,
    pub mac: String,
    pub gateway_code: String,
    pub model: Option<String>,
    pub hardware_version: Option<String>,
    pub firmware_version: Option<String>,
    pub name: Option<String>,
    pub tenant: String,
    #[sqlx(try_from = "Flag")]
    pub is_online: bool,
    pub last_seen: Option<String>,
    pub created_at: String,
}

/// A new gateway.
#[derive(Debug, Clone)]
pub struct NewGateway {
    pub device_id: String,
    pub serial_number: Option<String>,
    pub mac: String,
    pub gateway_code: String,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub name: Option<String>,
    pub tenant: String,
}

const GATEWAY_COLS: &str = "id, device_id, serial_number, mac, gateway_code, model, \
     hardware_version, firmware_version, name, tenant, is_online, last_seen, created_at";

impl Store {
    /// Inserts a gateway; `Ok(None)` when its device_id or gateway_code exists.
    pub async fn insert_gateway(
        &self,
        tx: &mut Transaction<'static, Any>,
        g: &NewGateway,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, StoreError> {
        let res = sqlx::query_scalar::<_, i64>(
            "INSERT INTO gateways (device_id, serial_number, mac, gateway_code, model, \
             firmware_version, name, tenant, is_online, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9) RETURNING id",
        )
        .bind(&g.device_id)
        .bind(&g.serial_number)
        .bind(&g.mac)
        .bind(&g.gateway_code)
        .bind(&g.model)
        .bind(&g.firmware_version)
        .bind(&g.name)
        .bind(&g.tenant)
        .bind(ts(now))
        .fetch_one(&mut **tx)
        .await;
        match res {
            Ok(id) => Ok(Some(id)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn gateways(&self) -> Result<Vec<Gateway>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {GATEWAY_COLS} FROM gateways ORDER BY id"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn gateway_by_code(&self, code: &str) -> Result<Option<Gateway>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {GATEWAY_COLS} FROM gateways WHERE gateway_code = $1"
        ))
        .bind(code)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Presence: the gateway opened a session. `false` if the code is unknown.
    pub async fn mark_online(
        &self,
        gateway_code: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.presence(gateway_code, true, at).await
    }

    /// Presence: the gateway's session ended.
    pub async fn mark_offline(
        &self,
        gateway_code: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.presence(gateway_code, false, at).await
    }

    async fn presence(
        &self,
        code: &str,
        online: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE gateways SET is_online = $1, last_seen = $2 WHERE gateway_code = $3",
        )
        .bind(i64::from(online))
        .bind(ts(at))
        .bind(code)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
