//! Errors of the provisioning layers: the store and the service on top.

use gatehouse_ca::CaError;

/// Registry store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the provisioning store: {source}; check [provisioning] database_url and that \
         the database (or the SQLite file's directory) is reachable and writable"
    )]
    Open {
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply the provisioning store migrations: {source}")]
    Migrate {
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("provisioning store query failed: {source}")]
    Query {
        #[from]
        source: sqlx::Error,
    },
    #[error("stored value in {column} is invalid: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
}

/// Errors of provisioning operations (store + CA + CRL publication).
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "bootstrap {id}'s private key was already downloaded once and erased; issue a new \
         bootstrap certificate (`gatehouse bootstrap issue`) if the bundle was lost"
    )]
    Gone { id: i64 },
    #[error(
        "revocation is recorded, but the CRL could not be written to {path}: {source}; fix the \
         path/permissions and run `gatehouse crl write`"
    )]
    CrlWrite {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the bundle: {0}")]
    Bundle(String),
}

impl From<sqlx::Error> for ProvisioningError {
    fn from(e: sqlx::Error) -> Self {
        ProvisioningError::Store(StoreError::Query { source: e })
    }
}
