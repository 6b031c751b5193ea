use std::path::PathBuf;

/// Everything that can go wrong building or writing aggregates.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A file or directory could not be created, written or renamed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The Parquet writer or reader failed.
    #[error("{}: parquet: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
    /// The object store (local directory or S3) refused an operation.
    #[error("lake {url}: {message}")]
    Store { url: String, message: String },
    /// The event bus failed while aggregating.
    #[error(transparent)]
    Bus(#[from] retail_bus::BusError),
    /// A SQL query failed (syntax, unknown table or column, forbidden statement).
    #[error("query: {0}")]
    Query(String),
    /// A query needed more memory or time than it may use.
    #[error("query stopped: it needs more than {limit} (lake.query-memory-mb / lake.query-timeout-s): {detail}")]
    QueryLimit { limit: String, detail: String },
    /// The tenant has no data in this lake (or the id is malformed).
    #[error("unknown tenant `{tenant}`: {reason}")]
    UnknownTenant { tenant: String, reason: String },
    /// Building an Arrow record batch failed (a bug: the schema and columns disagree).
    #[error("arrow batch `{table}`: {message}")]
    Arrow { table: String, message: String },
}
