//! The registry store: gateways, certificates, bootstrap certificates,
//! registrations and the append-only audit log, on SQLite or PostgreSQL
//! through one query set (sqlx `Any`).
//!
//! Timestamps are stored as UTC RFC 3339 text (`2026-11-22T18:43:18Z`),
//! which compares chronologically in both databases.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Row, Transaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::StoreError;

/// The NOTIFY channel brokers sharing a PostgreSQL listen on for CRL changes.
pub const CRL_CHANNEL: &str = "gatehouse_crl";

/// Migration versions are in the 6_000_000 range so they can share
/// `_sqlx_migrations` with other Gatehouse parts in one PostgreSQL database.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    6_000_001,
    "registry",
    include_str!("../migrations/sqlite/6000001_registry.sql"),
)];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    6_000_001,
    "registry",
    include_str!("../migrations/postgres/6000001_registry.sql"),
)];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

type BoxDynError = Box<dyn std::error::Error + Send + Sync>;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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

/// Formats a timestamp the way the store keeps it.
pub fn ts(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    t.format(&Rfc3339)
        .expect("RFC 3339 formatting of a UTC time")
}

/// Parses a stored timestamp.
pub fn parse_ts(column: &'static str, text: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| StoreError::Corrupt {
        column,
        reason: format!("{text:?}: {e}"),
    })
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

/// A provisioned gateway.
#[derive(Debug, Clone, Serialize)]
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

/// An operational certificate. The PEMs are public material; no private key
/// is ever stored for it.
#[derive(Debug, Clone, Serialize)]
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

/// A bootstrap (factory batch) certificate. `Debug`/`Serialize` never show
/// the private key: only whether it is still held.
#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    pub id: i64,
    pub label: String,
    #[serde(skip)]
    pub certificate_pem: String,
    pub serial: String,
    pub fingerprint: String,
    pub not_after: String,
    pub is_active: bool,
    /// The private key is still held (not yet downloaded, not revoked).
    pub key_available: bool,
    pub downloaded_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    pub revoke_notes: Option<String>,
    pub created_at: String,
}

/// One audit-log line.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

/// A revoked serial for the CRL.
#[derive(Debug, Clone)]
pub struct RevokedRow {
    pub serial: String,
    pub revoked_at: String,
    pub reason: Option<String>,
}

const REGISTRATION_COLS: &str = "id, mac, serial, model, fw_version, source_ip, bootstrap_id, \
     bootstrap_fingerprint, csr_pem, status, gateway_id, certificate_id, processed_by, \
     processed_at, notes, created_at";
const GATEWAY_COLS: &str = "id, device_id, serial_number, mac, gateway_code, model, \
     hardware_version, firmware_version, name, tenant, is_online, last_seen, created_at";
const CERT_COLS: &str = "c.id, c.gateway_id, g.gateway_code, c.kind, c.serial, c.fingerprint, \
     c.certificate_pem, c.csr_pem, c.not_after, c.revoked_at, c.revoke_reason, c.revoke_notes, \
     c.renewal_scheduled, c.renewal_date, c.created_at";
const BOOTSTRAP_COLS: &str = "id, label, certificate_pem, serial, fingerprint, not_after, \
     is_active, private_key_pem IS NOT NULL AS key_available, downloaded_at, revoked_at, \
     revoke_reason, revoke_notes, created_at";

fn registration(row: &AnyRow) -> Result<Registration, StoreError> {
    let status: String = row.try_get("status")?;
    let csr_pem: Option<String> = row.try_get("csr_pem")?;
    Ok(Registration {
        id: row.try_get("id")?,
        mac: row.try_get("mac")?,
        serial: row.try_get("serial")?,
        model: row.try_get("model")?,
        fw_version: row.try_get("fw_version")?,
        source_ip: row.try_get("source_ip")?,
        bootstrap_id: row.try_get("bootstrap_id")?,
        bootstrap_fingerprint: row.try_get("bootstrap_fingerprint")?,
        has_csr: csr_pem.is_some(),
        csr_pem,
        status: status.parse().map_err(|reason| StoreError::Corrupt {
            column: "registrations.status",
            reason,
        })?,
        gateway_id: row.try_get("gateway_id")?,
        certificate_id: row.try_get("certificate_id")?,
        processed_by: row.try_get("processed_by")?,
        processed_at: row.try_get("processed_at")?,
        notes: row.try_get("notes")?,
        created_at: row.try_get("created_at")?,
    })
}

fn gateway(row: &AnyRow) -> Result<Gateway, StoreError> {
    Ok(Gateway {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        serial_number: row.try_get("serial_number")?,
        mac: row.try_get("mac")?,
        gateway_code: row.try_get("gateway_code")?,
        model: row.try_get("model")?,
        hardware_version: row.try_get("hardware_version")?,
        firmware_version: row.try_get("firmware_version")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        is_online: row.try_get::<i64, _>("is_online")? != 0,
        last_seen: row.try_get("last_seen")?,
        created_at: row.try_get("created_at")?,
    })
}

fn certificate(row: &AnyRow) -> Result<Certificate, StoreError> {
    Ok(Certificate {
        id: row.try_get("id")?,
        gateway_id: row.try_get("gateway_id")?,
        gateway_code: row.try_get("gateway_code")?,
        kind: row.try_get("kind")?,
        serial: row.try_get("serial")?,
        fingerprint: row.try_get("fingerprint")?,
        certificate_pem: row.try_get("certificate_pem")?,
        csr_pem: row.try_get("csr_pem")?,
        not_after: row.try_get("not_after")?,
        revoked_at: row.try_get("revoked_at")?,
        revoke_reason: row.try_get("revoke_reason")?,
        revoke_notes: row.try_get("revoke_notes")?,
        renewal_scheduled: row.try_get::<i64, _>("renewal_scheduled")? != 0,
        renewal_date: row.try_get("renewal_date")?,
        created_at: row.try_get("created_at")?,
    })
}

fn bootstrap(row: &AnyRow) -> Result<Bootstrap, StoreError> {
    Ok(Bootstrap {
        id: row.try_get("id")?,
        label: row.try_get("label")?,
        certificate_pem: row.try_get("certificate_pem")?,
        serial: row.try_get("serial")?,
        fingerprint: row.try_get("fingerprint")?,
        not_after: row.try_get("not_after")?,
        is_active: row.try_get::<i64, _>("is_active")? != 0,
        key_available: bool_of(row, "key_available")?,
        downloaded_at: row.try_get("downloaded_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoke_reason: row.try_get("revoke_reason")?,
        revoke_notes: row.try_get("revoke_notes")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A boolean expression column: INTEGER on SQLite, BOOLEAN on PostgreSQL.
fn bool_of(row: &AnyRow, col: &str) -> Result<bool, StoreError> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(col)? != 0),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The registry store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating it if needed) a SQLite file and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        // The store holds undownloaded bootstrap private keys: the file (and
        // the journal files SQLite makes with its mode) is 0600, its
        // directory 0700 when created here.
        gatehouse_config::secure_fs::prepare_sqlite_file(path).map_err(|e| StoreError::Open {
            source: sqlx::Error::Io(e),
        })?;
        let url = format!("sqlite://{}?mode=rwc", path.display());
        // One connection: SQLite has one writer anyway, and this keeps
        // transactions from tripping over each other's locks.
        Self::open(&url, Backend::Sqlite, 1).await
    }

    /// Connects to PostgreSQL and applies migrations.
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        Self::open(url, Backend::Postgres, 8).await
    }

    /// Opens the store named by `[provisioning] database_url`.
    pub async fn open_settings(
        store: &gatehouse_config::ProvisioningStore,
    ) -> Result<Store, StoreError> {
        match store {
            gatehouse_config::ProvisioningStore::Sqlite(path) => Self::open_sqlite(path).await,
            gatehouse_config::ProvisioningStore::Postgres(url) => Self::open_postgres(url).await,
        }
    }

    async fn open(url: &str, backend: Backend, max: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(url)
            .await
            .map_err(|source| StoreError::Open { source })?;
        let source = match backend {
            Backend::Sqlite => Embedded(SQLITE_MIGRATIONS),
            Backend::Postgres => Embedded(POSTGRES_MIGRATIONS),
        };
        let mut migrator = Migrator::new(source)
            .await
            .map_err(|source| StoreError::Migrate { source })?;
        // Other parts of Gatehouse keep their own migrations in the same table.
        migrator.set_ignore_missing(true);
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { source })?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool (PostgreSQL NOTIFY, tests).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    // ---- registrations -------------------------------------------------

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
            let inserted = sqlx::query(
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
                Ok(row) => {
                    let id: i64 = row.try_get("id")?;
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
        let row = sqlx::query(&format!(
            "SELECT {REGISTRATION_COLS} FROM registrations \
             WHERE mac = $1 AND status <> 'REJEITADO' ORDER BY id LIMIT 1"
        ))
        .bind(mac)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(registration).transpose()
    }

    pub async fn registration(&self, id: i64) -> Result<Option<Registration>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {REGISTRATION_COLS} FROM registrations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(registration).transpose()
    }

    /// Registrations, oldest first, optionally of one status.
    pub async fn registrations(
        &self,
        status: Option<Status>,
    ) -> Result<Vec<Registration>, StoreError> {
        let rows =
            match status {
                Some(s) => sqlx::query(&format!(
                    "SELECT {REGISTRATION_COLS} FROM registrations WHERE status = $1 ORDER BY id"
                ))
                .bind(s.as_str())
                .fetch_all(&self.pool)
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {REGISTRATION_COLS} FROM registrations ORDER BY id"
                    ))
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        rows.iter().map(registration).collect()
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

    // ---- gateways --------------------------------------------------------

    /// Inserts a gateway; `Ok(None)` when its device_id or gateway_code exists.
    pub async fn insert_gateway(
        &self,
        tx: &mut Transaction<'static, Any>,
        g: &NewGateway,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, StoreError> {
        let res = sqlx::query(
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
            Ok(row) => Ok(Some(row.try_get("id")?)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn gateways(&self) -> Result<Vec<Gateway>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {GATEWAY_COLS} FROM gateways ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(gateway).collect()
    }

    pub async fn gateway_by_code(&self, code: &str) -> Result<Option<Gateway>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {GATEWAY_COLS} FROM gateways WHERE gateway_code = $1"
        ))
        .bind(code)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(gateway).transpose()
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

    // ---- certificates ------------------------------------------------------

    pub async fn insert_certificate(
        &self,
        tx: &mut Transaction<'static, Any>,
        gateway_id: i64,
        c: &NewCertificate,
        now: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
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
        .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn certificate(&self, id: i64) -> Result<Option<Certificate>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CERT_COLS} FROM certificates c JOIN gateways g ON g.id = c.gateway_id \
             WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(certificate).transpose()
    }

    pub async fn certificates(&self) -> Result<Vec<Certificate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CERT_COLS} FROM certificates c JOIN gateways g ON g.id = c.gateway_id \
             ORDER BY c.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(certificate).collect()
    }

    /// Certificates marked renewal-scheduled and not revoked.
    pub async fn certificates_due(&self) -> Result<Vec<Certificate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CERT_COLS} FROM certificates c JOIN gateways g ON g.id = c.gateway_id \
             WHERE c.renewal_scheduled = 1 AND c.revoked_at IS NULL ORDER BY c.not_after, c.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(certificate).collect()
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

    // ---- bootstrap certificates --------------------------------------------

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
        let row = sqlx::query(
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
        .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn bootstrap(&self, id: i64) -> Result<Option<Bootstrap>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BOOTSTRAP_COLS} FROM bootstrap_certificates WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(bootstrap).transpose()
    }

    pub async fn bootstrap_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<Bootstrap>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BOOTSTRAP_COLS} FROM bootstrap_certificates WHERE fingerprint = $1"
        ))
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(bootstrap).transpose()
    }

    pub async fn bootstraps(&self) -> Result<Vec<Bootstrap>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BOOTSTRAP_COLS} FROM bootstrap_certificates ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(bootstrap).collect()
    }

    /// Takes the bootstrap private key out of the store, erasing it in the
    /// same transaction. `None` when it is gone (downloaded or revoked).
    pub async fn take_bootstrap_key(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        let row = sqlx::query(
            "SELECT private_key_pem FROM bootstrap_certificates \
             WHERE id = $1 AND private_key_pem IS NOT NULL AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key: String = row.try_get("private_key_pem")?;
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

    // ---- CRL -------------------------------------------------------------

    /// Every revoked serial (operational and bootstrap).
    pub async fn revoked(&self) -> Result<Vec<RevokedRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revoke_reason FROM certificates WHERE revoked_at IS NOT NULL \
             UNION ALL \
             SELECT serial, revoked_at, revoke_reason FROM bootstrap_certificates \
             WHERE revoked_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RevokedRow {
                    serial: r.try_get("serial")?,
                    revoked_at: r.try_get("revoked_at")?,
                    reason: r.try_get("revoke_reason")?,
                })
            })
            .collect()
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
        let row = sqlx::query("SELECT number FROM crl_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let n: i64 = row.try_get("number")?;
        Ok(n as u64)
    }

    /// Number and thisUpdate of the last CRL signed.
    pub async fn crl_state(&self) -> Result<(u64, Option<OffsetDateTime>), StoreError> {
        let row = sqlx::query("SELECT number, this_update FROM crl_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("number")?;
        let t: Option<String> = row.try_get("this_update")?;
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

    // ---- audit -----------------------------------------------------------

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
        let rows =
            sqlx::query("SELECT id, at, actor, action, subject, detail FROM audit_log ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
