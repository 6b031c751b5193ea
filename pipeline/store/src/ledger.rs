//! Credits: one balance per organisation and an append-only ledger of every movement (who,
//! what, why, balance after). The balance changes only in the transaction that appends its
//! ledger row, by a guarded `UPDATE … RETURNING`, so concurrent jobs can neither overdraw
//! it nor make it differ from the ledger's sum. Amounts are millicredits.

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::db_err;
use crate::{Db, StoreError, new_id};

/// One movement of credits.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerEntry {
    pub id: String,
    pub org_id: String,
    /// The organisation's entry number, from 1.
    pub seq: i64,
    /// `grant`, `reserve`, `refund`, `charge`, `storage`.
    pub kind: String,
    /// Millicredits; negative takes from the balance.
    pub amount: i64,
    pub balance_after: i64,
    pub job_id: Option<String>,
    pub actor: String,
    pub reason: String,
    pub created_us: i64,
}

fn entry_from(row: &AnyRow) -> Result<LedgerEntry, StoreError> {
    let get = db_err("read ledger");
    Ok(LedgerEntry {
        id: row.try_get("id").map_err(&get)?,
        org_id: row.try_get("org_id").map_err(&get)?,
        seq: row.try_get("seq").map_err(&get)?,
        kind: row.try_get("kind").map_err(&get)?,
        amount: row.try_get("amount").map_err(&get)?,
        balance_after: row.try_get("balance_after").map_err(&get)?,
        job_id: row.try_get("job_id").map_err(&get)?,
        actor: row.try_get("actor").map_err(&get)?,
        reason: row.try_get("reason").map_err(&get)?,
        created_us: row.try_get("created_us").map_err(&get)?,
    })
}

/// A movement to make.
#[derive(Clone, Debug)]
pub struct Movement<'a> {
    pub org_id: &'a str,
    pub kind: &'a str,
    pub amount: i64,
    pub job_id: Option<&'a str>,
    pub actor: &'a str,
    pub reason: &'a str,
    /// Whether the balance may go below zero (storage is charged whatever the balance).
    pub may_overdraw: bool,
}

/// Millicredits as credits for messages: `12.5`.
pub fn credits(milli: i64) -> String {
    let s = format!("{:.3}", milli as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Db {
    /// Applies `m` and appends its ledger row, atomically; refuses a movement that would
    /// overdraw (unless allowed) with [`StoreError::InsufficientCredits`].
    pub async fn move_credits(&self, m: &Movement<'_>) -> Result<LedgerEntry, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err("move credits"))?;
        let entry = move_credits_on(&mut tx, m, self.now_us()).await?;
        tx.commit().await.map_err(db_err("move credits"))?;
        Ok(entry)
    }

    /// The organisation's balance in millicredits (0 before its first movement).
    pub async fn balance(&self, org_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT balance FROM credit_accounts WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("read balance"))?;
        row.map_or(Ok(0), |r| r.try_get("balance").map_err(db_err("read balance")))
    }

    /// The ledger, newest first.
    pub async fn ledger(&self, org_id: &str, limit: i64) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM ledger WHERE org_id = $1 ORDER BY seq DESC LIMIT $2")
            .bind(org_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("read ledger"))?;
        rows.iter().map(entry_from).collect()
    }

    /// The sum of every ledger amount of the organisation: always its balance.
    pub async fn ledger_sum(&self, org_id: &str) -> Result<i64, StoreError> {
        // PostgreSQL sums BIGINT as NUMERIC: cast back for both engines.
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS s FROM ledger WHERE org_id = $1")
            .bind(org_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("sum ledger"))?;
        row.try_get::<i64, _>("s").map_err(db_err("sum ledger"))
    }
}

/// [`Db::move_credits`] inside the caller's transaction, so that a job's state and the
/// credits it moves commit together or not at all. On an error the caller drops `conn`'s
/// transaction, rolling back whatever it did before.
pub(crate) async fn move_credits_on(
    conn: &mut AnyConnection,
    m: &Movement<'_>,
    now: i64,
) -> Result<LedgerEntry, StoreError> {
    sqlx::query(
        "INSERT INTO credit_accounts (org_id, balance, entries) VALUES ($1, 0, 0) ON CONFLICT (org_id) DO NOTHING",
    )
    .bind(m.org_id)
    .execute(&mut *conn)
    .await
    .map_err(db_err("move credits"))?;
    let row = sqlx::query(
        "UPDATE credit_accounts SET balance = balance + $1, entries = entries + 1
         WHERE org_id = $2 AND (balance + $1 >= 0 OR $3 = 1) RETURNING balance, entries",
    )
    .bind(m.amount)
    .bind(m.org_id)
    .bind(i64::from(m.may_overdraw))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("move credits"))?;
    let get = db_err("move credits");
    let Some(row) = row else {
        let balance = sqlx::query("SELECT balance FROM credit_accounts WHERE org_id = $1")
            .bind(m.org_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err("read balance"))?;
        let balance: i64 = balance.try_get("balance").map_err(db_err("read balance"))?;
        return Err(StoreError::InsufficientCredits { needed: credits(-m.amount), balance: credits(balance) });
    };
    let (balance, seq): (i64, i64) = (row.try_get("balance").map_err(&get)?, row.try_get("entries").map_err(&get)?);
    let id = new_id("led");
    sqlx::query(
        "INSERT INTO ledger (id, org_id, seq, kind, amount, balance_after, job_id, actor, reason, created_us)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(m.org_id)
    .bind(seq)
    .bind(m.kind)
    .bind(m.amount)
    .bind(balance)
    .bind(m.job_id)
    .bind(m.actor)
    .bind(m.reason)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_err("move credits"))?;
    Ok(LedgerEntry {
        id,
        org_id: m.org_id.to_owned(),
        seq,
        kind: m.kind.to_owned(),
        amount: m.amount,
        balance_after: balance,
        job_id: m.job_id.map(str::to_owned),
        actor: m.actor.to_owned(),
        reason: m.reason.to_owned(),
        created_us: now,
    })
}
