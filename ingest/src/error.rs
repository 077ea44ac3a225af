use std::path::PathBuf;

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "cannot use spool directory {path}: {source} (make it writable by the gatehouse user or set ingest.spool_dir)"
    )]
    SpoolDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot open the SQLite file {path}: {source} (check ingest.sqlite_path and its directory permissions)"
    )]
    Sqlite {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid ingest.database_url ({url}): {source}")]
    DatabaseUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot register ingest metrics: {0} (is another ingest already registered in this registry?)"
    )]
    Metrics(#[from] prometheus::Error),
    #[error(
        "ingest must be started inside a tokio runtime (call start() from async code or within Runtime::enter)"
    )]
    NoRuntime,
}
