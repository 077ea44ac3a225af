//! The registry store: gateways, certificates, bootstrap certificates,
//! registrations and the append-only audit log, on SQLite or PostgreSQL
//! through one query set (sqlx `Any`).
//!
//! Timestamps are stored as UTC RFC 3339 text (`2026-11-22T18:43:18Z`),
//! which compares chronologically in both databases.
//!
//! One file per table, each with the row types it reads and writes and one
//! `impl Store` block: `registrations`, `gateways`, `certificates`,
//! `bootstrap` (bootstrap certificates), `audit` and `crl` (the revoked
//! serials of both certificate tables and the CRL counter). Rows are read
//! with `#[derive(sqlx::FromRow)]`; integer/boolean flags go through `Flag`.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use sqlx::any::{AnyPoolOptions, AnyTypeInfo, AnyTypeInfoKind, AnyValueRef};
use sqlx::decode::Decode;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::types::Type;
use sqlx::{Any, AnyPool, Transaction, ValueRef};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::StoreError;

mod audit;
mod bootstrap;
mod certificates;
mod crl;
mod gateways;
mod registrations;

pub use audit::AuditEntry;
pub use bootstrap::Bootstrap;
pub use certificates::{Certificate, NewCertificate};
pub use crl::RevokedRow;
pub use gateways::{Gateway, NewGateway};
pub use registrations::{NewRegistration, Registration, Status};

/// The NOTIFY channel brokers sharing a PostgreSQL listen on for CRL changes.
pub const CRL_CHANNEL: &str = "gatehouse_crl";

/// Migration versions are in the 6_000_000 range so they can share
/// `_sqlx_migrations` with other Gatehouse parts in one PostgreSQL database.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    6_000_001,
    "registry",
    include_str!("../../migrations/sqlite/6000001_registry.sql"),
)];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    6_000_001,
    "registry",
    include_str!("../../migrations/postgres/6000001_registry.sql"),
)];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

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

/// A flag column read as `bool`: BOOLEAN (PostgreSQL expressions such as
/// `x IS NOT NULL`) or INTEGER 0/1 (the stored flags, and every boolean on
/// SQLite). Used with `#[sqlx(try_from = "Flag")]` on `bool` fields.
#[derive(Debug, Clone, Copy)]
struct Flag(bool);

impl From<Flag> for bool {
    fn from(f: Flag) -> bool {
        f.0
    }
}

impl Type<Any> for Flag {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        ty.kind() == AnyTypeInfoKind::Bool || ty.kind().is_integer()
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.type_info().kind() == AnyTypeInfoKind::Bool {
            Ok(Flag(<bool as Decode<Any>>::decode(value)?))
        } else {
            Ok(Flag(<i64 as Decode<Any>>::decode(value)? != 0))
        }
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
}
