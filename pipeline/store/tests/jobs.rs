//! Jobs and credits on both engines: the same body against SQLite and PostgreSQL, with
//! concurrent reservations and workers.

use std::sync::Arc;

use retail_store::{Db, JobOutcome, JobState, ManualClock, Movement, NewJob, Signup, StoreError};

async fn org(db: &Db, name: &str) -> String {
    let signup = Signup {
        org_name: name.into(),
        name: "Ada".into(),
        email: format!("ada@{name}.test"),
        password: "a long enough password".into(),
        adult: true,
    };
    db.signup(&signup).await.unwrap().org.id
}

async fn grant(db: &Db, org: &str, milli: i64) {
    let m = Movement {
        org_id: org,
        kind: "grant",
        amount: milli,
        job_id: None,
        actor: "test",
        reason: "trial credits",
        may_overdraw: false,
    };
    db.move_credits(&m).await.unwrap();
}

fn job<'a>(org: &'a str, reserve: i64) -> NewJob<'a> {
    NewJob { org_id: org, upload_id: "upl_x", config: "", annotate: false, actor: "usr_a", reserve, max_attempts: 2 }
}

async fn jobs_body(db: Db, clock: Arc<ManualClock>) {
    let a = org(&db, "acme").await;
    let b = org(&db, "bolt").await;
    grant(&db, &a, 10_000).await;

    // Twenty reservations of 1 credit race for 10 credits: exactly ten win.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (db, a) = (db.clone(), a.clone());
            tokio::spawn(async move { db.queue_job(&job(&a, 1_000)).await })
        })
        .collect();
    let mut queued = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(j) => queued.push(j),
            Err(e) => {
                assert!(matches!(e, StoreError::InsufficientCredits { .. }), "{e}");
                assert!(e.to_string().contains("this needs 1, the balance is 0"), "{e}");
            }
        }
    }
    assert_eq!(queued.len(), 10);
    assert_eq!(db.balance(&a).await.unwrap(), 0);
    assert_eq!(db.ledger_sum(&a).await.unwrap(), 0);
    assert_eq!(db.jobs(&b, 100).await.unwrap().len(), 0, "another tenant sees the jobs");

    // Three workers drain the queue; each job is run once, and settled: 0.4 credits
    // charged of each 1 reserved, the rest refunded.
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let name = format!("worker-{w}");
                let mut ran = Vec::new();
                while let Some(j) = db.claim_job(&name, 60_000_000).await.unwrap() {
                    assert!(db.heartbeat(&j.id, &name, 60_000_000, 10, Some(20)).await.unwrap());
                    let outcome = JobOutcome::Succeeded { processed_ms: 24_000, charge: 400 };
                    assert!(db.finish_job(&j, &name, &outcome).await.unwrap());
                    ran.push(j.id);
                }
                ran
            })
        })
        .collect();
    let mut ran = Vec::new();
    for w in workers {
        ran.extend(w.await.unwrap());
    }
    ran.sort();
    let mut ids: Vec<String> = queued.iter().map(|j| j.id.clone()).collect();
    ids.sort();
    assert_eq!(ran, ids, "every job ran exactly once");
    assert_eq!(db.balance(&a).await.unwrap(), 10_000 - 10 * 400);
    assert_eq!(db.ledger_sum(&a).await.unwrap(), db.balance(&a).await.unwrap());
    let ledger = db.ledger(&a, 1000).await.unwrap();
    assert_eq!(ledger.len(), 1 + 10 + 10);
    assert!(ledger.iter().all(|e| e.balance_after >= 0));
    assert!(ledger[0].reason.contains("charged 0.4 (1 reserved)"), "{:?}", ledger[0]);
    let done = db.job(&a, &queued[0].id).await.unwrap();
    assert_eq!((done.state, done.charged, done.attempts), (JobState::Succeeded, Some(400), 1));

    // A worker that dies: its lease runs out, another takes the job; the dead one is
    // fenced off. After the last attempt the job fails with the reason and is refunded.
    let j = db.queue_job(&job(&a, 1_000)).await.unwrap();
    let first = db.claim_job("dies", 10_000_000).await.unwrap().unwrap();
    assert_eq!(first.id, j.id);
    assert!(db.claim_job("other", 10_000_000).await.unwrap().is_none(), "a leased job was claimed");
    clock.advance_s(11);
    let second = db.claim_job("other", 10_000_000).await.unwrap().unwrap();
    assert_eq!((second.id.as_str(), second.attempts), (j.id.as_str(), 2));
    assert!(!db.heartbeat(&j.id, "dies", 10_000_000, 5, None).await.unwrap(), "a fenced worker renewed");
    let late = JobOutcome::Succeeded { processed_ms: 1, charge: 1 };
    assert!(!db.finish_job(&first, "dies", &late).await.unwrap(), "a fenced worker finished the job");
    clock.advance_s(11);
    assert!(db.claim_job("third", 10_000_000).await.unwrap().is_none());
    let failed = db.job(&a, &j.id).await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.reason.as_deref().unwrap().contains("stopped 2 times"), "{failed:?}");
    assert_eq!(db.balance(&a).await.unwrap(), 6_000, "the failed job was not refunded");
    assert_eq!(db.ledger_sum(&a).await.unwrap(), 6_000);

    // A failed job is refunded whole.
    let j = db.queue_job(&job(&a, 2_500)).await.unwrap();
    let c = db.claim_job("w", 10_000_000).await.unwrap().unwrap();
    let bad = JobOutcome::Failed { reason: "door.mp4: not a video".into() };
    assert!(db.finish_job(&c, "w", &bad).await.unwrap());
    assert_eq!(db.job(&a, &j.id).await.unwrap().reason.as_deref(), Some("door.mp4: not a video"));
    assert_eq!(db.balance(&a).await.unwrap(), 6_000);
    let err = db.queue_job(&job(&a, 6_001)).await.unwrap_err();
    assert!(err.to_string().contains("this needs 6.001, the balance is 6"), "{err}");

    // A video longer than its container said is charged all it took, beyond the reservation.
    let j = db.queue_job(&job(&a, 1_000)).await.unwrap();
    let c = db.claim_job("w", 10_000_000).await.unwrap().unwrap();
    let long = JobOutcome::Succeeded { processed_ms: 300_000, charge: 5_000 };
    assert!(db.finish_job(&c, "w", &long).await.unwrap());
    assert_eq!(db.job(&a, &j.id).await.unwrap().charged, Some(5_000));
    assert_eq!(db.balance(&a).await.unwrap(), 1_000);
    assert_eq!(db.ledger(&a, 1).await.unwrap()[0].kind, "charge");
    assert_eq!(db.ledger_sum(&a).await.unwrap(), 1_000);
}

/// Statements that make the database refuse every refund, and that undo it.
struct RefundFault {
    inject: &'static [&'static str],
    clear: &'static [&'static str],
}

const SQLITE_FAULT: RefundFault = RefundFault {
    inject: &["CREATE TRIGGER no_refund BEFORE INSERT ON ledger WHEN NEW.kind = 'refund'
               BEGIN SELECT RAISE(ABORT, 'refunds refused by the test'); END"],
    clear: &["DROP TRIGGER no_refund"],
};

const POSTGRES_FAULT: RefundFault = RefundFault {
    inject: &[
        "CREATE OR REPLACE FUNCTION no_refund() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.kind = 'refund' THEN RAISE EXCEPTION 'refunds refused by the test'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER no_refund BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION no_refund()",
    ],
    clear: &["DROP TRIGGER no_refund ON ledger"],
};

async fn run_sql(conn: &mut sqlx::AnyConnection, statements: &[&str]) {
    for s in statements {
        sqlx::query(s).execute(&mut *conn).await.unwrap();
    }
}

/// A job's end and its refund commit together: when the refund cannot be written, the job
/// is still running and still the worker's, so finishing it again later refunds it; nothing
/// is lost in between (a crash there is the same as this failure).
async fn settling_body(db: Db, clock: Arc<ManualClock>, url: &str, fault: RefundFault) {
    use sqlx::Connection;
    let mut raw = sqlx::AnyConnection::connect(url).await.unwrap();
    let a = org(&db, "acme").await;
    grant(&db, &a, 5_000).await;

    let j = db.queue_job(&job(&a, 2_000)).await.unwrap();
    let c = db.claim_job("w", 10_000_000).await.unwrap().unwrap();
    run_sql(&mut raw, fault.inject).await;
    let bad = JobOutcome::Failed { reason: "door.mp4: cut short".into() };
    let err = db.finish_job(&c, "w", &bad).await.unwrap_err();
    assert!(matches!(err, StoreError::Database { operation: "move credits", .. }), "{err:?}");
    assert_eq!(db.job(&a, &j.id).await.unwrap().state, JobState::Running, "the job ended without its refund");
    assert_eq!(db.balance(&a).await.unwrap(), 3_000);
    run_sql(&mut raw, fault.clear).await;
    assert!(db.finish_job(&c, "w", &bad).await.unwrap(), "the worker could not finish it after the failure");
    assert_eq!(db.balance(&a).await.unwrap(), 5_000);

    // The same for a job given up after its last attempt; the queue goes on meanwhile.
    let j = db.queue_job(&job(&a, 1_000)).await.unwrap();
    db.claim_job("w1", 1_000_000).await.unwrap().unwrap();
    clock.advance_s(2);
    db.claim_job("w2", 1_000_000).await.unwrap().unwrap();
    clock.advance_s(2);
    run_sql(&mut raw, fault.inject).await;
    let next = db.queue_job(&job(&a, 500)).await.unwrap();
    let claimed = db.claim_job("w3", 1_000_000).await.unwrap().expect("the queue stalled behind an unsettled job");
    assert_eq!(claimed.id, next.id);
    assert_eq!(db.job(&a, &j.id).await.unwrap().state, JobState::Running, "the job was given up without its refund");
    run_sql(&mut raw, fault.clear).await;
    assert!(db.claim_job("w4", 1_000_000).await.unwrap().is_none());
    assert!(db.finish_job(&claimed, "w3", &JobOutcome::Failed { reason: "x".into() }).await.unwrap());
    assert_eq!(db.job(&a, &j.id).await.unwrap().state, JobState::Failed);
    assert_eq!(db.balance(&a).await.unwrap(), 5_000);
    assert_eq!(db.ledger_sum(&a).await.unwrap(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_and_credits_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let url = format!("sqlite://{}", dir.path().join("retail.db").display());
    jobs_body(Db::open_with_clock(&url, clock.clone()).await.unwrap(), clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_and_credits_on_postgres() {
    let pg = retail_testkit::Postgres::start();
    let clock = Arc::new(ManualClock::starting_now());
    jobs_body(Db::open_with_clock(&pg.new_database(), clock.clone()).await.unwrap(), clock).await;
}

#[tokio::test]
async fn a_refund_that_cannot_be_written_leaves_the_job_running_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let url = format!("sqlite://{}", dir.path().join("retail.db").display());
    settling_body(Db::open_with_clock(&url, clock.clone()).await.unwrap(), clock, &url, SQLITE_FAULT).await;
}

#[tokio::test]
async fn a_refund_that_cannot_be_written_leaves_the_job_running_on_postgres() {
    let pg = retail_testkit::Postgres::start();
    let clock = Arc::new(ManualClock::starting_now());
    let url = pg.new_database();
    settling_body(Db::open_with_clock(&url, clock.clone()).await.unwrap(), clock, &url, POSTGRES_FAULT).await;
}
