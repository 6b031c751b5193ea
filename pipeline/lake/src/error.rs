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
    /// Building an Arrow record batch failed (a bug: the schema and columns disagree).
    #[error("arrow batch `{table}`: {message}")]
    Arrow { table: String, message: String },
}
