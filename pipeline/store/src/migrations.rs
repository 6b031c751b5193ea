//! The schema, as numbered steps applied in order and recorded in `schema_migrations`. A
//! step never changes once released: a change is a new step. The SQL is the common subset of
//! SQLite and PostgreSQL (TEXT, BIGINT; times in Unix microseconds; no booleans or blobs).

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "identity",
    statements: &[
        "CREATE TABLE orgs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_us BIGINT NOT NULL,
            upload_retention_days BIGINT NOT NULL
        )",
        "CREATE TABLE users (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            name TEXT NOT NULL,
            email TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            adult_attested_us BIGINT NOT NULL,
            email_verified_us BIGINT,
            created_us BIGINT NOT NULL
        )",
        "CREATE INDEX users_org ON users(org_id)",
        "CREATE TABLE email_tokens (
            token_sha256 TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id),
            expires_us BIGINT NOT NULL
        )",
        "CREATE TABLE outbox (
            id TEXT PRIMARY KEY,
            to_address TEXT NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            created_us BIGINT NOT NULL,
            sent_us BIGINT
        )",
        "CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            secret_sha256 TEXT NOT NULL UNIQUE,
            created_by TEXT NOT NULL,
            created_us BIGINT NOT NULL,
            revoked_us BIGINT,
            last_used_us BIGINT
        )",
        "CREATE INDEX api_keys_org ON api_keys(org_id)",
    ],
}];
