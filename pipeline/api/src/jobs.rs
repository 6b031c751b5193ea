//! Analysis jobs over HTTP: queue one for a ready upload with its lines and zones (checked
//! with the config file's rules and messages; credits reserved from the video's duration or
//! 402), follow its state and progress, download its results; and the credit ledger.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use retail_store::{Action, Job, JobState, LedgerEntry, NewJob, UploadState, credits as credits_text};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::identity::Body;
use crate::uploads::streamed;
use crate::{ApiError, AppState, Caller, ErrorBody};

/// Result files a job can produce, as named in downloads.
pub const RESULT_FILES: [(&str, &str); 5] = [
    ("summary.json", "application/json"),
    ("events.jsonl", "application/x-ndjson"),
    ("line_counts.parquet", "application/vnd.apache.parquet"),
    ("zone_occupancy.parquet", "application/vnd.apache.parquet"),
    ("annotated.mp4", "video/mp4"),
];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    upload_id: String,
    /// Lines, zones, masks, `[analytics]` and `[stream] start-time`, in the config file's TOML.
    #[serde(default)]
    config: String,
    /// Also render an annotated video.
    #[serde(default)]
    annotate: bool,
}

#[derive(Serialize, ToSchema)]
pub struct JobView {
    id: String,
    upload_id: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    state: String,
    /// Frames analysed, and expected when known.
    frames: i64,
    expected_frames: Option<i64>,
    attempts: i64,
    /// Why it failed.
    reason: Option<String>,
    reserved_credits: f64,
    charged_credits: Option<f64>,
    processed_minutes: Option<f64>,
    queued_us: i64,
    started_us: Option<i64>,
    finished_us: Option<i64>,
    /// Result files to download from `/v1/jobs/{id}/results/{name}`.
    results: Vec<String>,
}

fn view(job: Job, results: Vec<String>) -> JobView {
    JobView {
        id: job.id,
        upload_id: job.upload_id,
        state: job.state.as_str().to_owned(),
        frames: job.frames,
        expected_frames: job.expected_frames,
        attempts: job.attempts,
        reason: job.reason,
        reserved_credits: job.reserved as f64 / 1000.0,
        charged_credits: job.charged.map(|c| c as f64 / 1000.0),
        processed_minutes: job.processed_ms.map(|ms| ms as f64 / 60_000.0),
        queued_us: job.queued_us,
        started_us: job.started_us,
        finished_us: job.finished_us,
        results,
    }
}

/// The names of a job's stored results.
async fn results_of(s: &AppState, job: &Job) -> Result<Vec<String>, ApiError> {
    if job.state != JobState::Succeeded {
        return Ok(Vec::new());
    }
    let objects = s.storage.objects_of(&job.org_id, &job.id).await?;
    Ok(objects.into_iter().filter_map(|o| o.key.rsplit('/').next().map(str::to_owned)).collect())
}

/// Queues an analysis of a ready upload; credits for its whole duration are reserved.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = CreateJobRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_job(
    State(s): State<AppState>,
    caller: Caller,
    Body(r): Body<CreateJobRequest>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    caller.require(Action::Analyse)?;
    let upload = s.storage.upload(&caller.org_id, &r.upload_id).await?;
    if upload.state != UploadState::Ready {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!(
                "upload {} is not complete ({} of {} bytes)",
                upload.id, upload.received_bytes, upload.declared_bytes
            ),
        ));
    }
    let analysis = retail_runtime::JobAnalysis::parse(&r.config, &s.config.analysis)
        .map_err(|reason| ApiError::bad_request(format!("config: {reason}")))?;
    let config = toml::to_string(&analysis).map_err(|e| ApiError::internal(e.to_string()))?;
    // A still image counts as one second.
    let duration_ms = upload.duration_ms.unwrap_or(1000).max(1000);
    let reserve = (duration_ms as f64 / 60_000.0 * s.config.milli_per_minute as f64).ceil() as i64;
    let job =
        s.db.queue_job(&NewJob {
            org_id: &caller.org_id,
            upload_id: &upload.id,
            config: &config,
            annotate: r.annotate,
            actor: &caller.actor(),
            reserve,
            max_attempts: s.config.job_attempts,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(view(job, Vec::new()))))
}

/// The organisation's jobs, newest first (at most 500).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = [JobView]), (status = 403, body = ErrorBody)))]
pub async fn list_jobs(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<JobView>>, ApiError> {
    caller.require(Action::Read)?;
    let mut out = Vec::new();
    for job in s.db.jobs(&caller.org_id, 500).await? {
        let results = results_of(&s, &job).await?;
        out.push(view(job, results));
    }
    Ok(Json(out))
}

/// One job: its state with timestamps, progress, the reason it failed, its results.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "the job's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Action::Read)?;
    let job = s.db.job(&caller.org_id, &id).await?;
    let results = results_of(&s, &job).await?;
    Ok(Json(view(job, results)))
}

/// Downloads one result file of a finished job.
#[utoipa::path(get, path = "/v1/jobs/{id}/results/{name}", tag = "jobs",
    params(("id" = String, Path, description = "the job's id"), ("name" = String, Path, description = "a name from the job's `results`")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)))]
pub async fn job_result(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Action::Read)?;
    let job = s.db.job(&caller.org_id, &id).await?;
    if job.state != JobState::Succeeded {
        return Err(ApiError::not_found("result", &name));
    }
    let Some((_, media_type)) = RESULT_FILES.iter().find(|(n, _)| *n == name) else {
        return Err(ApiError::not_found("result", &name));
    };
    let key = format!("{}/results/{}/{name}", job.org_id, job.id);
    let object = s.storage.object(&caller.org_id, &key).await.map_err(|_| ApiError::not_found("result", &name))?;
    let reader = s.storage.reader_of(&caller.org_id, vec![key]);
    Ok((
        [
            (header::CONTENT_TYPE, (*media_type).to_owned()),
            (header::CONTENT_LENGTH, object.bytes.unwrap_or(0).to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        streamed(reader),
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct LedgerView {
    seq: i64,
    kind: String,
    credits: f64,
    balance_after: f64,
    job_id: Option<String>,
    actor: String,
    reason: String,
    created_us: i64,
}

impl From<LedgerEntry> for LedgerView {
    fn from(e: LedgerEntry) -> Self {
        LedgerView {
            seq: e.seq,
            kind: e.kind,
            credits: e.amount as f64 / 1000.0,
            balance_after: e.balance_after as f64 / 1000.0,
            job_id: e.job_id,
            actor: e.actor,
            reason: e.reason,
            created_us: e.created_us,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreditsView {
    /// Credits, as text too (`12.5`), exact.
    balance: f64,
    balance_text: String,
    /// The newest movements first (at most 1000).
    ledger: Vec<LedgerView>,
}

/// The credit balance and its ledger.
#[utoipa::path(get, path = "/v1/credits", tag = "jobs", security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = CreditsView), (status = 403, body = ErrorBody)))]
pub async fn credits(State(s): State<AppState>, caller: Caller) -> Result<Json<CreditsView>, ApiError> {
    caller.require(Action::ManageSettings)?;
    let balance = s.db.balance(&caller.org_id).await?;
    let ledger = s.db.ledger(&caller.org_id, 1000).await?.into_iter().map(LedgerView::from).collect();
    Ok(Json(CreditsView { balance: balance as f64 / 1000.0, balance_text: credits_text(balance), ledger }))
}
