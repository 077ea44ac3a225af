//! Errors of the provisioning layers: the store and the service on top.

use gatehouse_ca::CaError;

use crate::service::RevokeTarget;
use crate::store::Status;

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

    // ---- the record's state forbids the action --------------------------
    #[error("registration {id} is {status}, only PENDENTE records can be allocated")]
    NotAllocatable { id: i64, status: Status },
    #[error("registration {id} is {status}, only PENDENTE records can be rejected")]
    NotRejectable { id: i64, status: Status },
    #[error("registration {id} was processed by someone else meanwhile")]
    ProcessedMeanwhile { id: i64 },
    #[error(
        "a gateway with device_id {device_id:?} or gateway code {gateway_code:?} already exists"
    )]
    GatewayExists {
        device_id: String,
        gateway_code: String,
    },
    #[error("{target} is already revoked")]
    AlreadyRevoked { target: RevokeTarget },

    // ---- invalid request ---------------------------------------------------
    #[error("tenant must not be empty")]
    EmptyTenant,
    #[error("device_id {device_id:?} is invalid: use 1 to 24 characters A-Z a-z 0-9 _ . -")]
    InvalidDeviceId { device_id: String },
    #[error("stored MAC {mac:?} is invalid")]
    InvalidStoredMac { mac: String },
    #[error("label must be 1 to 100 characters")]
    InvalidLabel,
    #[error("bootstrap key missing")]
    BootstrapKeyMissing,

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
    #[error("cannot write {path}: {source} (check the directory exists and is writable)")]
    WriteFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random number generator failed; is /dev/urandom readable?")]
    Random,
    #[error("the CA issued a server certificate without its key; run `gatehouse ca init --force`")]
    ServerKeyMissing,
    #[error("cannot build the bundle: {source}")]
    Bundle {
        #[source]
        source: zip::result::ZipError,
    },
}

/// What kind of failure a [`ProvisioningError`] is, for the layers that
/// answer for it (the admin API's HTTP status and error `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The record does not exist (404 `not_found`).
    NotFound,
    /// The record's state forbids the action (409 `conflict`).
    Conflict,
    /// The request is invalid, or the CA refused it (400 `invalid_request`).
    Invalid,
    /// The one-time bootstrap key is spent (410 `gone`).
    Gone,
    /// Store, CRL file or bundle failure (500 `server_error`).
    Internal,
}

impl ProvisioningError {
    /// The kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use ProvisioningError as E;
        match self {
            E::NotFound { .. } => ErrorKind::NotFound,
            E::NotAllocatable { .. }
            | E::NotRejectable { .. }
            | E::ProcessedMeanwhile { .. }
            | E::GatewayExists { .. }
            | E::AlreadyRevoked { .. } => ErrorKind::Conflict,
            E::EmptyTenant
            | E::InvalidDeviceId { .. }
            | E::InvalidStoredMac { .. }
            | E::InvalidLabel
            | E::BootstrapKeyMissing
            | E::Ca(_) => ErrorKind::Invalid,
            E::Gone { .. } => ErrorKind::Gone,
            E::Store(_)
            | E::CrlWrite { .. }
            | E::Bundle { .. }
            | E::WriteFile { .. }
            | E::Random
            | E::ServerKeyMissing => ErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for ProvisioningError {
    fn from(e: sqlx::Error) -> Self {
        ProvisioningError::Store(StoreError::Query { source: e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin API sends these texts as the error `message`: they must not drift.
    #[test]
    fn messages_and_kinds() {
        use ProvisioningError as E;
        let cases = [
            (
                E::NotAllocatable {
                    id: 3,
                    status: Status::Rejeitado,
                },
                "registration 3 is REJEITADO, only PENDENTE records can be allocated",
                ErrorKind::Conflict,
            ),
            (
                E::NotRejectable {
                    id: 4,
                    status: Status::Provisionado,
                },
                "registration 4 is PROVISIONADO, only PENDENTE records can be rejected",
                ErrorKind::Conflict,
            ),
            (
                E::ProcessedMeanwhile { id: 5 },
                "registration 5 was processed by someone else meanwhile",
                ErrorKind::Conflict,
            ),
            (
                E::GatewayExists {
                    device_id: "GW1".into(),
                    gateway_code: "GW1-AABB".into(),
                },
                "a gateway with device_id \"GW1\" or gateway code \"GW1-AABB\" already exists",
                ErrorKind::Conflict,
            ),
            (
                E::AlreadyRevoked {
                    target: RevokeTarget::Certificate(7),
                },
                "certificate 7 is already revoked",
                ErrorKind::Conflict,
            ),
            (
                E::AlreadyRevoked {
                    target: RevokeTarget::Bootstrap(2),
                },
                "bootstrap 2 is already revoked",
                ErrorKind::Conflict,
            ),
            (
                E::EmptyTenant,
                "tenant must not be empty",
                ErrorKind::Invalid,
            ),
            (
                E::InvalidDeviceId {
                    device_id: "a b".into(),
                },
                "device_id \"a b\" is invalid: use 1 to 24 characters A-Z a-z 0-9 _ . -",
                ErrorKind::Invalid,
            ),
            (
                E::InvalidStoredMac { mac: "zz".into() },
                "stored MAC \"zz\" is invalid",
                ErrorKind::Invalid,
            ),
            (
                E::InvalidLabel,
                "label must be 1 to 100 characters",
                ErrorKind::Invalid,
            ),
            (
                E::BootstrapKeyMissing,
                "bootstrap key missing",
                ErrorKind::Invalid,
            ),
            (
                E::NotFound {
                    what: "certificate",
                    id: 9,
                },
                "certificate 9 does not exist",
                ErrorKind::NotFound,
            ),
            (
                E::Bundle {
                    source: zip::result::ZipError::FileNotFound,
                },
                "cannot build the bundle: specified file not found in archive",
                ErrorKind::Internal,
            ),
        ];
        for (e, message, kind) in cases {
            assert_eq!(e.to_string(), message);
            assert_eq!(e.kind(), kind, "{message}");
        }
    }
}
