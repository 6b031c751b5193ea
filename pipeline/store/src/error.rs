use thiserror::Error;

/// What went wrong in the metadata store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database URL is not one this store opens.
    #[error("database url {url}: {reason}")]
    Url { url: String, reason: String },
    /// A query failed.
    #[error("database ({operation}): {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A schema migration failed; the database stays at the version before it.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The database was migrated by a newer build than this one.
    #[error("the database is at schema version {found}, newer than this build's {known}: upgrade retail-ai")]
    SchemaTooNew { found: i64, known: i64 },
    /// A request the store refuses, with the reason shown to the caller.
    #[error("{0}")]
    Invalid(String),
    /// Something that must be unique already exists.
    #[error("{what} already exists")]
    Conflict { what: String },
    /// No such row (or not the caller's: the same answer, so ids of other tenants leak nothing).
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// Wrong email or password (which of the two is not said).
    #[error("wrong email or password")]
    BadLogin,
    /// Password hashing failed.
    #[error("password hashing: {0}")]
    Hash(String),
    /// Encrypted bytes do not open: tampered, damaged, cut short, or the wrong key.
    #[error("encryption: {0}")]
    Crypto(String),
    /// The object store failed.
    #[error("object store {url}: {message}")]
    Objects { url: String, message: String },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An upload's bytes are neither video nor image (or cannot be decoded as such).
    #[error("{0}")]
    Unsupported(String),
    /// An upload is larger than allowed, or than it said it would be.
    #[error("{0}")]
    TooLarge(String),
    /// The organisation's credits do not cover what was asked.
    #[error("not enough credits: this needs {needed}, the balance is {balance}")]
    InsufficientCredits { needed: String, balance: String },
    /// A resumed upload started at the wrong offset.
    #[error("upload {id} has {expected} bytes; continue at offset {expected}, not {given}")]
    Offset { id: String, expected: i64, given: i64 },
    /// The request's body ended early; the bytes received are kept and the upload can resume.
    #[error("upload {id}: the request ended after {received} of {declared} bytes; resume at offset {received}")]
    Interrupted { id: String, received: i64, declared: i64 },
}

pub(crate) fn db_err(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| match &source {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict { what: operation.to_owned() },
        _ => StoreError::Database { operation, source },
    }
}
