//! Opening the database by URL and bringing its schema up to date.

use std::str::FromStr;
use std::sync::{Arc, Once};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};
use tracing::info;

use crate::error::db_err;
use crate::migrations::MIGRATIONS;
use crate::{Clock, StoreError, SystemClock};

/// Which engine a [`Db`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// The metadata database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    kind: DbKind,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Held while migrating, so that two servers starting together do not both migrate.
const MIGRATION_LOCK: i64 = 0x7265_7461_696c; // "retail"

impl Db {
    /// Opens `url` (`sqlite:///path/file.db`, `sqlite://relative.db`, `postgres://…`), creating
    /// a SQLite file if missing, and applies the migrations it lacks.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with_clock(url, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let bad = |reason: String| StoreError::Url { url: redact(url), reason };
        let (kind, connect) = if url.starts_with("sqlite:") {
            let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
            if path.is_empty() {
                return Err(bad("no file path".into()));
            }
            if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
            }
            (DbKind::Sqlite, format!("sqlite://{path}?mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (DbKind::Postgres, url.to_owned())
        } else {
            return Err(bad("expected sqlite:// or postgres://".into()));
        };
        let options = AnyConnectOptions::from_str(&connect).map_err(|e| bad(e.to_string()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == DbKind::Sqlite { 4 } else { 16 })
            // A server that cannot reach its database says so soon, not after sqlx's 30 s.
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == DbKind::Sqlite {
                        // WAL: readers do not wait for the writer; a busy writer is waited for.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let db = Db { pool, kind, clock };
        db.migrate().await?;
        Ok(db)
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub fn now_us(&self) -> i64 {
        self.clock.now_us()
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("schema version"))?;
        row.try_get::<i64, _>("v").map_err(db_err("schema version"))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err("migrate"))?;
        if self.kind == DbKind::Postgres {
            sqlx::query(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(&mut *conn)
                .await
                .map_err(db_err("migration lock"))?;
        }
        let result = self.migrate_on(&mut conn).await;
        if self.kind == DbKind::Postgres {
            let _ = sqlx::query(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut *conn).await;
        }
        result
    }

    async fn migrate_on(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_us BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await
        .map_err(db_err("create schema_migrations"))?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err("schema version"))?;
        let current: i64 = row.try_get("v").map_err(db_err("schema version"))?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        if current > known {
            return Err(StoreError::SchemaTooNew { found: current, known });
        }
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            let failed = |source| StoreError::Migration { version: m.version, name: m.name, source };
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(failed)?;
            for statement in m.statements {
                sqlx::query(statement).execute(&mut *tx).await.map_err(failed)?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_us) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(self.clock.now_us())
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            info!(version = m.version, name = m.name, "database migrated");
        }
        Ok(())
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:…@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_in_messages_carry_no_password() {
        assert_eq!(super::redact("postgres://app:hunter2@db:5432/x"), "postgres://app:…@db:5432/x");
        assert_eq!(super::redact("sqlite://data/retail.db"), "sqlite://data/retail.db");
    }
}
