//! The privacy policy's rights: a copy of everything the platform holds about an
//! organisation (export), and erasure of the organisation on request (done at once, inside
//! the policy's 30 days). Erasure keeps what the law requires: the credit ledger and billing
//! objects (7 years); everything else goes, and the data keys with it, so any ciphertext a
//! failure left behind can no longer be read.

use serde::Serialize;

use crate::error::db_err;
use crate::storage::RetentionClass;
use crate::{ApiKey, Job, LedgerEntry, Org, PurgeRecord, Storage, StoreError, Upload, User};

/// Everything held about an organisation, as JSON for its owner.
#[derive(Clone, Debug, Serialize)]
pub struct Export {
    pub organisation: Org,
    pub users: Vec<User>,
    pub api_keys: Vec<ApiKey>,
    pub uploads: Vec<Upload>,
    pub jobs: Vec<Job>,
    pub ledger: Vec<LedgerEntry>,
    pub purge_log: Vec<PurgeRecord>,
    pub balance_millicredits: i64,
}

/// What an erasure removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Erasure {
    pub uploads: usize,
    pub objects: usize,
    pub users: u64,
    pub api_keys: u64,
    pub jobs: u64,
}

impl Storage {
    pub async fn export(&self, org_id: &str) -> Result<Export, StoreError> {
        let db = &self.db;
        Ok(Export {
            organisation: db.org(org_id).await?,
            users: db.users(org_id).await?,
            api_keys: db.api_keys(org_id).await?,
            uploads: self.uploads(org_id).await?,
            jobs: db.jobs(org_id, i64::MAX).await?,
            ledger: db.ledger(org_id, i64::MAX).await?,
            purge_log: self.purge_log(org_id, i64::MAX).await?,
            balance_millicredits: db.balance(org_id).await?,
        })
    }

    /// Erases the organisation: its uploads and results (bytes first, each logged), members,
    /// keys, jobs, mail and data keys. The ledger, billing objects and the purge log stay.
    pub async fn erase_org(&self, org_id: &str, actor: &str) -> Result<Erasure, StoreError> {
        let reason = format!("organisation erased on request by {actor}");
        let mut done = Erasure::default();
        for upload in self.uploads(org_id).await? {
            done.objects += self.delete_upload(org_id, &upload.id, &reason).await?;
            done.uploads += 1;
        }
        let rows = sqlx::query("SELECT * FROM objects WHERE org_id = $1 AND class <> $2")
            .bind(org_id)
            .bind(RetentionClass::Billing.as_str())
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_err("erase organisation"))?;
        for row in &rows {
            self.delete(&crate::storage::object_from(row)?, &reason).await?;
            done.objects += 1;
        }
        let mut tx = self.db.pool.begin().await.map_err(db_err("erase organisation"))?;
        let gone = |r: sqlx::any::AnyQueryResult| r.rows_affected();
        for sql in [
            "DELETE FROM email_tokens WHERE user_id IN (SELECT id FROM users WHERE org_id = $1)",
            "DELETE FROM outbox WHERE to_address IN (SELECT email FROM users WHERE org_id = $1)",
        ] {
            sqlx::query(sql).bind(org_id).execute(&mut *tx).await.map_err(db_err("erase organisation"))?;
        }
        let run = |sql: &'static str| sqlx::query(sql).bind(org_id);
        done.api_keys =
            gone(run("DELETE FROM api_keys WHERE org_id = $1").execute(&mut *tx).await.map_err(db_err("erase keys"))?);
        done.users =
            gone(run("DELETE FROM users WHERE org_id = $1").execute(&mut *tx).await.map_err(db_err("erase users"))?);
        done.jobs =
            gone(run("DELETE FROM jobs WHERE org_id = $1").execute(&mut *tx).await.map_err(db_err("erase jobs"))?);
        // Billing objects stay readable for their 7 years, so their keys do too.
        run("DELETE FROM data_keys WHERE org_id = $1 AND NOT EXISTS (SELECT 1 FROM objects WHERE org_id = $1)")
            .execute(&mut *tx)
            .await
            .map_err(db_err("erase data keys"))?;
        run("UPDATE orgs SET name = '(erased)' WHERE id = $1").execute(&mut *tx).await.map_err(db_err("erase name"))?;
        tx.commit().await.map_err(db_err("erase organisation"))?;
        tracing::info!(org = %org_id, uploads = done.uploads, objects = done.objects, users = done.users, "organisation erased");
        Ok(done)
    }
}
