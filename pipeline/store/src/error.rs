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
}

pub(crate) fn db_err(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| match &source {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict { what: operation.to_owned() },
        _ => StoreError::Database { operation, source },
    }
}
