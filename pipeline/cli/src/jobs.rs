//! The job worker: claims analysis jobs from the database, runs each on the pipeline library
//! (`analyze_files`, so its events reach the bus as the CLI's do), stores the results
//! encrypted beside the upload with the upload's expiry, and settles the credits from the
//! minutes processed. It renews its lease while it works and stops at once if the lease was
//! lost (another worker then has the job).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use retail_runtime::{Config, FilesRequest, JobAnalysis, StreamProgress};
use retail_store::{Job, JobOutcome, RetentionClass, Storage};
use tracing::{error, info, warn};

/// What a worker needs besides the database.
#[derive(Clone)]
pub struct JobWorker {
    pub storage: Storage,
    /// The operator's analysis config (detector, bus, ...); jobs add lines and zones.
    pub analysis: Config,
    /// Private scratch space: inputs are decrypted here while analysed.
    pub scratch: PathBuf,
    pub name: String,
    pub lease: Duration,
    /// Millicredits per minute of video processed.
    pub milli_per_minute: i64,
}

/// Progress shared between the analysis thread and the heartbeat.
#[derive(Default)]
struct Shared {
    frames: AtomicU64,
    /// 0 when unknown.
    expected: AtomicU64,
    /// Set by the heartbeat when the lease is lost: the analysis stops.
    stop: Arc<AtomicBool>,
    /// Set when the analysis has ended: the heartbeat stops.
    done: AtomicBool,
}

impl JobWorker {
    /// Takes and runs jobs until `stop` is set.
    pub async fn run(self, stop: Arc<AtomicBool>) {
        info!(worker = %self.name, "job worker started");
        while !stop.load(Ordering::Relaxed) {
            match self.storage.db().claim_job(&self.name, self.lease.as_micros() as i64).await {
                Ok(Some(job)) => self.run_job(job).await,
                Ok(None) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => {
                    warn!(worker = %self.name, error = %e, "cannot claim jobs; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    async fn run_job(&self, job: Job) {
        info!(job = %job.id, org = %job.org_id, attempt = job.attempts, "job started");
        metrics::counter!("retail_jobs_started_total").increment(1);
        let dir = self.scratch.join(&job.id);
        let outcome = self.analyse(&job, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        let outcome = match outcome {
            Ok(Some(outcome)) => outcome,
            // The lease was lost: another worker has the job now.
            Ok(None) => return,
            Err(reason) => JobOutcome::Failed { reason },
        };
        let state = if matches!(outcome, JobOutcome::Succeeded { .. }) { "succeeded" } else { "failed" };
        match self.storage.db().finish_job(&job, &self.name, &outcome).await {
            Ok(true) => {
                info!(job = %job.id, state, "job finished");
                metrics::counter!("retail_jobs_finished_total", "state" => state).increment(1);
            }
            Ok(false) => warn!(job = %job.id, "job was taken over before it finished here"),
            Err(e) => error!(job = %job.id, error = %e, "cannot record the job's end; its lease will run out"),
        }
    }

    /// Runs one job; `Ok(None)` if the lease was lost, `Err` with the reason it failed.
    async fn analyse(&self, job: &Job, dir: &Path) -> Result<Option<JobOutcome>, String> {
        let upload = self.storage.upload(&job.org_id, &job.upload_id).await.map_err(|e| e.to_string())?;
        let analysis: JobAnalysis = toml::from_str(&job.config).map_err(|e| format!("config: {e}"))?;
        let mut config = analysis.apply(&self.analysis).map_err(|e| format!("config: {e}"))?;
        config.stream.tenant = Some(retail_core::TenantId(job.org_id.clone()));
        config.stream.id = Some(retail_core::StreamId(upload.id.clone()));
        if config.stream.start_time.is_none() {
            config.stream.start_time = Some(retail_runtime::StartTime { us: upload.created_us });
        }
        private_dir(dir).map_err(|e| format!("scratch {}: {e}", dir.display()))?;
        let input = dir.join("input");
        self.storage.upload_to_file(&job.org_id, &upload.id, &input).await.map_err(|e| e.to_string())?;
        let out = dir.join("out");
        let shared = Arc::new(Shared::default());
        let req = FilesRequest {
            inputs: vec![input.clone()],
            config,
            out_dir: Some(out.clone()),
            annotate: job.annotate.then(|| out.join("annotated.mp4")),
            detections: None,
            stop: Some(shared.stop.clone()),
        };
        let progress = shared.clone();
        let on_progress: retail_runtime::FilesProgress = Arc::new(move |_, p: &StreamProgress| {
            progress.frames.store(p.frames, Ordering::Relaxed);
            progress.expected.store(p.expected_frames.unwrap_or(0), Ordering::Relaxed);
        });
        let ended = shared.clone();
        let analysis = async move {
            let r = tokio::task::spawn_blocking(move || retail_runtime::analyze_files(&req, Some(on_progress))).await;
            ended.done.store(true, Ordering::Relaxed);
            r
        };
        let heartbeat = self.heartbeat(job, shared.clone());
        let (result, lost) = tokio::join!(analysis, heartbeat);
        if lost {
            warn!(job = %job.id, "lease lost: stopped");
            return Ok(None);
        }
        let result = result.map_err(|e| format!("the analysis stopped: {e}"))?;
        let summary = match result {
            Ok(mut per_file) => per_file.pop().ok_or("no result")?,
            Err(e) => Err(e),
        };
        // Messages name the upload's file, not the scratch path.
        let summary = summary.map_err(|e| e.to_string().replace(&input.display().to_string(), &upload.filename))?;
        self.store_results(job, upload.expires_us, &out).await?;
        let processed_ms = (summary.duration_s * 1000.0).round() as i64;
        let charge = (summary.duration_s / 60.0 * self.milli_per_minute as f64).ceil() as i64;
        Ok(Some(JobOutcome::Succeeded { processed_ms, charge }))
    }

    /// Renews the lease until the analysis ends; `true` if the lease was lost.
    async fn heartbeat(&self, job: &Job, shared: Arc<Shared>) -> bool {
        let every = self.lease / 3;
        let lease_us = self.lease.as_micros() as i64;
        loop {
            // Looks for the end often; renews on the lease's rhythm.
            for _ in 0..(every.as_millis() / 100).max(1) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if shared.done.load(Ordering::Relaxed) {
                    return false;
                }
            }
            let frames = shared.frames.load(Ordering::Relaxed) as i64;
            let expected = Some(shared.expected.load(Ordering::Relaxed) as i64).filter(|&e| e > 0);
            match self.storage.db().heartbeat(&job.id, &self.name, lease_us, frames, expected).await {
                Ok(true) => {}
                Ok(false) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    return true;
                }
                Err(e) => warn!(job = %job.id, error = %e, "heartbeat failed; retrying"),
            }
        }
    }

    /// Stores each output file as a result object of the job.
    async fn store_results(&self, job: &Job, expires_us: i64, out: &Path) -> Result<(), String> {
        let files = [
            ("summary.json", out.join("summary.json")),
            ("events.jsonl", out.join("events.jsonl")),
            ("line_counts.parquet", out.join("aggregates/line_counts.parquet")),
            ("zone_occupancy.parquet", out.join("aggregates/zone_occupancy.parquet")),
            ("annotated.mp4", out.join("annotated.mp4")),
        ];
        for (name, path) in files {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let key = format!("{}/results/{}/{name}", job.org_id, job.id);
            self.storage
                .put(&job.org_id, &key, RetentionClass::Result, &job.id, expires_us, &bytes)
                .await
                .map_err(|e| format!("storing {name}: {e}"))?;
        }
        Ok(())
    }
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
