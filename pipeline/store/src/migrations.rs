//! The schema, as numbered steps applied in order and recorded in `schema_migrations`. A
//! step never changes once released: a change is a new step. The SQL is the common subset of
//! SQLite and PostgreSQL (TEXT, BIGINT; times in Unix microseconds; no booleans or blobs).

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

pub(crate) const MIGRATIONS: &[Migration] = &[IDENTITY, STORAGE, JOBS_AND_CREDITS];

const IDENTITY: Migration = Migration {
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
};

const STORAGE: Migration = Migration {
    version: 2,
    name: "encrypted storage, uploads, purge log",
    statements: &[
        "CREATE TABLE data_keys (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            master_key_id TEXT NOT NULL,
            wrapped TEXT NOT NULL,
            created_us BIGINT NOT NULL
        )",
        "CREATE INDEX data_keys_org ON data_keys(org_id)",
        "CREATE TABLE objects (
            key TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            class TEXT NOT NULL,
            owner TEXT NOT NULL,
            bytes BIGINT,
            created_us BIGINT NOT NULL,
            expires_us BIGINT NOT NULL
        )",
        "CREATE INDEX objects_owner ON objects(org_id, owner)",
        "CREATE INDEX objects_expiry ON objects(expires_us)",
        "CREATE TABLE purge_log (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL,
            object_key TEXT NOT NULL,
            class TEXT NOT NULL,
            bytes BIGINT NOT NULL,
            reason TEXT NOT NULL,
            deleted_us BIGINT NOT NULL
        )",
        "CREATE INDEX purge_log_org ON purge_log(org_id, deleted_us)",
        "CREATE TABLE uploads (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            filename TEXT NOT NULL,
            declared_bytes BIGINT NOT NULL,
            received_bytes BIGINT NOT NULL,
            kind TEXT,
            media_type TEXT,
            state TEXT NOT NULL,
            duration_ms BIGINT,
            width BIGINT,
            height BIGINT,
            created_by TEXT NOT NULL,
            created_us BIGINT NOT NULL,
            completed_us BIGINT,
            expires_us BIGINT NOT NULL
        )",
        "CREATE INDEX uploads_org ON uploads(org_id, created_us)",
        "CREATE INDEX uploads_expiry ON uploads(expires_us)",
        "CREATE TABLE upload_parts (
            upload_id TEXT NOT NULL REFERENCES uploads(id),
            idx BIGINT NOT NULL,
            start_bytes BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            object_key TEXT NOT NULL,
            PRIMARY KEY (upload_id, idx)
        )",
    ],
};

const JOBS_AND_CREDITS: Migration = Migration {
    version: 3,
    name: "jobs, credits, storage metering",
    statements: &[
        "CREATE TABLE credit_accounts (
            org_id TEXT PRIMARY KEY REFERENCES orgs(id),
            balance BIGINT NOT NULL,
            entries BIGINT NOT NULL
        )",
        "CREATE TABLE ledger (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            seq BIGINT NOT NULL,
            kind TEXT NOT NULL,
            amount BIGINT NOT NULL,
            balance_after BIGINT NOT NULL,
            job_id TEXT,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_us BIGINT NOT NULL,
            UNIQUE (org_id, seq)
        )",
        "CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            upload_id TEXT NOT NULL,
            state TEXT NOT NULL,
            config TEXT NOT NULL,
            annotate BIGINT NOT NULL,
            attempts BIGINT NOT NULL,
            max_attempts BIGINT NOT NULL,
            worker TEXT,
            lease_until_us BIGINT,
            frames BIGINT NOT NULL,
            expected_frames BIGINT,
            reason TEXT,
            reserved BIGINT NOT NULL,
            charged BIGINT,
            processed_ms BIGINT,
            created_by TEXT NOT NULL,
            queued_us BIGINT NOT NULL,
            started_us BIGINT,
            finished_us BIGINT
        )",
        "CREATE INDEX jobs_org ON jobs(org_id, queued_us)",
        "CREATE INDEX jobs_state ON jobs(state, queued_us)",
        "CREATE TABLE storage_charges (
            org_id TEXT NOT NULL REFERENCES orgs(id),
            day BIGINT NOT NULL,
            class TEXT NOT NULL,
            bytes BIGINT NOT NULL,
            PRIMARY KEY (org_id, day, class)
        )",
    ],
};
