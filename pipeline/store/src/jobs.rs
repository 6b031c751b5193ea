//! Analysis jobs, queued in the database: workers (in `serve` or separate processes) claim
//! one at a time under a lease that they renew while they work. A worker that dies stops
//! renewing; its job is claimed again after the lease, at most `max_attempts` times in all,
//! then failed with the reason. Credits are reserved when a job is queued and settled when
//! it ends: the processed minutes charged, the rest refunded.

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::db_err;
use crate::ledger::{Movement, credits, move_credits_on};
use crate::{Db, StoreError, new_id};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            _ => JobState::Queued,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub org_id: String,
    pub upload_id: String,
    pub state: JobState,
    /// The analysis config (lines, zones) as TOML, already validated.
    pub config: String,
    pub annotate: bool,
    pub attempts: i64,
    pub max_attempts: i64,
    /// Frames analysed, and expected when known.
    pub frames: i64,
    pub expected_frames: Option<i64>,
    pub reason: Option<String>,
    /// Millicredits reserved when queued, and charged when finished.
    pub reserved: i64,
    pub charged: Option<i64>,
    pub processed_ms: Option<i64>,
    pub created_by: String,
    pub queued_us: i64,
    pub started_us: Option<i64>,
    pub finished_us: Option<i64>,
}

fn job_from(row: &AnyRow) -> Result<Job, StoreError> {
    let get = db_err("read job");
    let state: String = row.try_get("state").map_err(&get)?;
    Ok(Job {
        id: row.try_get("id").map_err(&get)?,
        org_id: row.try_get("org_id").map_err(&get)?,
        upload_id: row.try_get("upload_id").map_err(&get)?,
        state: JobState::parse(&state),
        config: row.try_get("config").map_err(&get)?,
        annotate: row.try_get::<i64, _>("annotate").map_err(&get)? != 0,
        attempts: row.try_get("attempts").map_err(&get)?,
        max_attempts: row.try_get("max_attempts").map_err(&get)?,
        frames: row.try_get("frames").map_err(&get)?,
        expected_frames: row.try_get("expected_frames").map_err(&get)?,
        reason: row.try_get("reason").map_err(&get)?,
        reserved: row.try_get("reserved").map_err(&get)?,
        charged: row.try_get("charged").map_err(&get)?,
        processed_ms: row.try_get("processed_ms").map_err(&get)?,
        created_by: row.try_get("created_by").map_err(&get)?,
        queued_us: row.try_get("queued_us").map_err(&get)?,
        started_us: row.try_get("started_us").map_err(&get)?,
        finished_us: row.try_get("finished_us").map_err(&get)?,
    })
}

/// A job to queue.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    pub org_id: &'a str,
    pub upload_id: &'a str,
    pub config: &'a str,
    pub annotate: bool,
    pub actor: &'a str,
    /// Millicredits to reserve.
    pub reserve: i64,
    pub max_attempts: i64,
}

/// How a job ended.
#[derive(Clone, Debug)]
pub enum JobOutcome {
    /// Analysed `processed_ms` of video; charged `charge` millicredits (at most the reservation).
    Succeeded {
        processed_ms: i64,
        charge: i64,
    },
    Failed {
        reason: String,
    },
}

impl Db {
    /// Reserves the credits and queues the job, in one transaction, or refuses it (402)
    /// and queues nothing.
    pub async fn queue_job(&self, j: &NewJob<'_>) -> Result<Job, StoreError> {
        let id = new_id("job");
        let reason = format!("reserved for job {id}");
        let now = self.now_us();
        let mut tx = self.pool.begin().await.map_err(db_err("queue job"))?;
        let reserve = Movement {
            org_id: j.org_id,
            kind: "reserve",
            amount: -j.reserve,
            job_id: Some(&id),
            actor: j.actor,
            reason: &reason,
            may_overdraw: false,
        };
        move_credits_on(&mut tx, &reserve, now).await?;
        // The job comes back from this transaction: reading it after the commit could fail
        // and make a client retry a job that is queued and paid for.
        let row = sqlx::query(
            "INSERT INTO jobs (id, org_id, upload_id, state, config, annotate, attempts, max_attempts, frames, reserved, created_by, queued_us)
             VALUES ($1, $2, $3, 'queued', $4, $5, 0, $6, 0, $7, $8, $9) RETURNING *",
        )
        .bind(&id)
        .bind(j.org_id)
        .bind(j.upload_id)
        .bind(j.config)
        .bind(i64::from(j.annotate))
        .bind(j.max_attempts)
        .bind(j.reserve)
        .bind(j.actor)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("queue job"))?;
        let job = job_from(&row)?;
        tx.commit().await.map_err(db_err("queue job"))?;
        Ok(job)
    }

    pub async fn job(&self, org_id: &str, id: &str) -> Result<Job, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("read job"))?;
        job_from(&row.ok_or_else(|| StoreError::NotFound { what: "job", id: id.to_owned() })?)
    }

    /// The organisation's jobs, newest first (at most `limit`).
    pub async fn jobs(&self, org_id: &str, limit: i64) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE org_id = $1 ORDER BY queued_us DESC, id LIMIT $2")
            .bind(org_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("list jobs"))?;
        rows.iter().map(job_from).collect()
    }

    /// The jobs of an upload (for deleting its results with it).
    pub async fn jobs_of_upload(&self, org_id: &str, upload_id: &str) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE org_id = $1 AND upload_id = $2")
            .bind(org_id)
            .bind(upload_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("list jobs"))?;
        rows.iter().map(job_from).collect()
    }

    /// Claims the oldest job that is queued or whose worker's lease ran out, for `worker`
    /// until `lease_us` from now. Jobs out of attempts are failed (and refunded) first.
    pub async fn claim_job(&self, worker: &str, lease_us: i64) -> Result<Option<Job>, StoreError> {
        self.fail_abandoned().await?;
        let now = self.now_us();
        let claimable = "(state = 'queued' OR (state = 'running' AND lease_until_us < $3)) AND attempts < max_attempts";
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', worker = $1, lease_until_us = $2, attempts = attempts + 1,
                 started_us = COALESCE(started_us, $3), frames = 0
             WHERE id = (SELECT id FROM jobs WHERE {claimable} ORDER BY queued_us, id LIMIT 1) AND {claimable}
             RETURNING *"
        ))
        .bind(worker)
        .bind(now + lease_us)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("claim job"))?;
        row.as_ref().map(job_from).transpose()
    }

    /// Fails running jobs whose lease ran out with no attempt left, each refunded in the
    /// transaction that fails it. One that cannot be settled stays running (and is tried
    /// again at the next claim) without holding up the others or the queue.
    async fn fail_abandoned(&self) -> Result<(), StoreError> {
        let now = self.now_us();
        let ids = sqlx::query(
            "SELECT id FROM jobs WHERE state = 'running' AND lease_until_us < $1 AND attempts >= max_attempts",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("find abandoned jobs"))?;
        for row in ids {
            let id: String = row.try_get("id").map_err(db_err("find abandoned jobs"))?;
            if let Err(e) = self.give_up(&id, now).await {
                tracing::error!(job = %id, error = %e, "an abandoned job could not be failed and refunded; retried later");
                metrics::counter!("retail_job_settle_failures_total").increment(1);
            }
        }
        Ok(())
    }

    async fn give_up(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err("fail abandoned job"))?;
        let row = sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_us = $1, charged = 0,
                 reason = 'its worker stopped ' || CAST(attempts AS TEXT) || ' times before finishing; given up'
             WHERE id = $2 AND state = 'running' AND lease_until_us < $1 AND attempts >= max_attempts RETURNING *",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("fail abandoned job"))?;
        // Another server gave it up first.
        let Some(row) = row else { return Ok(()) };
        let job = job_from(&row)?;
        settle(&mut tx, &job, 0, "job failed: refunded", now).await?;
        tx.commit().await.map_err(db_err("fail abandoned job"))?;
        tracing::warn!(job = %job.id, org = %job.org_id, attempts = job.attempts, "job given up");
        Ok(())
    }

    /// Renews `worker`'s lease and records progress; `false` when the job is no longer
    /// this worker's (its lease ran out and another took it): the worker must stop.
    pub async fn heartbeat(
        &self,
        job_id: &str,
        worker: &str,
        lease_us: i64,
        frames: i64,
        expected: Option<i64>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until_us = $1, frames = $2, expected_frames = $3
             WHERE id = $4 AND worker = $5 AND state = 'running'",
        )
        .bind(self.now_us() + lease_us)
        .bind(frames)
        .bind(expected)
        .bind(job_id)
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_err("job heartbeat"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends `worker`'s job and settles its credits, in one transaction; `false` if the job
    /// was no longer its own.
    pub async fn finish_job(&self, job: &Job, worker: &str, outcome: &JobOutcome) -> Result<bool, StoreError> {
        let (state, reason, processed, charge) = match outcome {
            // The minutes processed are charged even beyond the reservation (a container can
            // understate its duration): the excess is taken, overdrawing if need be.
            JobOutcome::Succeeded { processed_ms, charge } => {
                ("succeeded", None, Some(*processed_ms), (*charge).max(0))
            }
            JobOutcome::Failed { reason } => ("failed", Some(reason.as_str()), None, 0),
        };
        let now = self.now_us();
        let mut tx = self.pool.begin().await.map_err(db_err("finish job"))?;
        let done = sqlx::query(
            "UPDATE jobs SET state = $1, reason = $2, processed_ms = $3, charged = $4, finished_us = $5
             WHERE id = $6 AND worker = $7 AND state = 'running'",
        )
        .bind(state)
        .bind(reason)
        .bind(processed)
        .bind(charge)
        .bind(now)
        .bind(&job.id)
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db_err("finish job"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let why = match outcome {
            JobOutcome::Succeeded { processed_ms, .. } => format!(
                "job {} analysed {:.2} min: charged {} ({} reserved)",
                job.id,
                *processed_ms as f64 / 60_000.0,
                credits(charge),
                credits(job.reserved)
            ),
            JobOutcome::Failed { .. } => format!("job {} failed: refunded", job.id),
        };
        settle(&mut tx, job, charge, &why, now).await?;
        tx.commit().await.map_err(db_err("finish job"))?;
        Ok(true)
    }
}

/// Settles `job`'s reservation against `charge`: refunds the rest, or takes the excess
/// (overdrawing if need be), inside the transaction that ends the job.
async fn settle(conn: &mut AnyConnection, job: &Job, charge: i64, why: &str, now: i64) -> Result<(), StoreError> {
    let amount = job.reserved - charge;
    if amount == 0 {
        return Ok(());
    }
    let movement = Movement {
        org_id: &job.org_id,
        kind: if amount > 0 { "refund" } else { "charge" },
        amount,
        job_id: Some(&job.id),
        actor: "system",
        reason: why,
        may_overdraw: true,
    };
    move_credits_on(conn, &movement, now).await.map(|_| ())
}
