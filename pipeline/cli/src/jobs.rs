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
        let shared = Arc::new(Shared::default());
        // The lease is renewed from claim to finish: decrypting a large input and storing
        // its results take time too.
        let work = async {
            let outcome = self.analyse(&job, &dir, shared.clone()).await;
            shared.done.store(true, Ordering::Relaxed);
            outcome
        };
        let (outcome, lost) = tokio::join!(work, self.heartbeat(&job, shared.clone()));
        let _ = std::fs::remove_dir_all(&dir);
        if lost {
            // Another worker has the job now.
            warn!(job = %job.id, "lease lost: stopped");
            return;
        }
        let outcome = outcome.unwrap_or_else(|reason| JobOutcome::Failed { reason });
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

    /// Runs one job, or says why it failed.
    async fn analyse(&self, job: &Job, dir: &Path, shared: Arc<Shared>) -> Result<JobOutcome, String> {
        let upload = self.storage.upload(&job.org_id, &job.upload_id).await.map_err(|e| e.to_string())?;
        let analysis: JobAnalysis = toml::from_str(&job.config).map_err(|e| format!("config: {e}"))?;
        let mut config = analysis.apply(&self.analysis).map_err(|e| format!("config: {e}"))?;
        config.stream.tenant = Some(retail_core::TenantId(job.org_id.clone()));
        config.stream.id = Some(retail_core::StreamId(upload.id.clone()));
        if config.stream.start_time.is_none() {
            config.stream.start_time = Some(retail_runtime::StartTime { us: upload.created_us });
        }
        let _ = std::fs::remove_dir_all(dir);
        private_dir(dir).map_err(|e| format!("scratch {}: {e}", dir.display()))?;
        let input = dir.join("input");
        self.storage.upload_to_file(&job.org_id, &upload.id, &input).await.map_err(|e| e.to_string())?;
        let out = dir.join("out");
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
        let result = tokio::task::spawn_blocking(move || retail_runtime::analyze_files(&req, Some(on_progress)))
            .await
            .map_err(|e| format!("the analysis stopped: {e}"))?;
        let summary = match result {
            Ok(mut per_file) => per_file.pop().ok_or("no result")?,
            Err(e) => Err(e),
        };
        // Messages name the upload's file, not the scratch path.
        let summary = summary.map_err(|e| e.to_string().replace(&input.display().to_string(), &upload.filename))?;
        self.store_results(job, upload.expires_us, &out).await?;
        // Deleted while it was analysed: its results go too.
        if self.storage.upload(&job.org_id, &job.upload_id).await.is_err() {
            self.drop_results(job, "its upload was deleted during the analysis").await?;
            return Err("the upload was deleted during the analysis".into());
        }
        let processed_ms = (summary.duration_s * 1000.0).round() as i64;
        let charge = (summary.duration_s / 60.0 * self.milli_per_minute as f64).ceil() as i64;
        Ok(JobOutcome::Succeeded { processed_ms, charge })
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

    /// Stores each output file as a result object of the job, streamed (an annotated video
    /// can be large); results of an earlier attempt are replaced.
    async fn store_results(&self, job: &Job, expires_us: i64, out: &Path) -> Result<(), String> {
        self.drop_results(job, "replaced by a later run of its job").await?;
        let files = [
            ("summary.json", out.join("summary.json")),
            ("events.jsonl", out.join("events.jsonl")),
            ("line_counts.parquet", out.join("aggregates/line_counts.parquet")),
            ("zone_occupancy.parquet", out.join("aggregates/zone_occupancy.parquet")),
            ("annotated.mp4", out.join("annotated.mp4")),
        ];
        for (name, path) in files {
            let Ok(mut file) = std::fs::File::open(&path) else { continue };
            let key = format!("{}/results/{}/{name}", job.org_id, job.id);
            let failed = |e: String| format!("storing {name}: {e}");
            let mut w = self
                .storage
                .create(&job.org_id, &key, RetentionClass::Result, &job.id, expires_us)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| failed(e.to_string()))?;
                if n == 0 {
                    break;
                }
                if let Err(e) = w.write(&buf[..n]).await {
                    let _ = w.abort().await;
                    return Err(failed(e.to_string()));
                }
            }
            w.finish().await.map_err(|e| failed(e.to_string()))?;
        }
        Ok(())
    }

    async fn drop_results(&self, job: &Job, reason: &str) -> Result<(), String> {
        let old = self.storage.objects_of(&job.org_id, &job.id).await.map_err(|e| e.to_string())?;
        for o in &old {
            self.storage.delete(o, reason).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Job workers on a thread of their own, for `retail-ai worker` (whose main loop is not async).
pub struct JobThread {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl JobThread {
    /// Starts `server.job-workers` workers when `server.database-url` names the platform's
    /// database; a shared database needs the shared master key, so it must be set.
    pub fn start(config: &Config) -> anyhow::Result<Option<Self>> {
        let s = &config.server;
        if s.database_url.is_none() || s.job_workers == 0 {
            return Ok(None);
        }
        anyhow::ensure!(
            s.master_key.is_some(),
            "server.master-key must be set to take jobs from a shared database (the one the API servers use)"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let storage = runtime.block_on(crate::serve::open_storage(s))?;
        let scratch = s.data_dir.join("worker-scratch");
        let _ = std::fs::remove_dir_all(&scratch);
        let stop = Arc::new(AtomicBool::new(false));
        let workers = workers(&storage, config, &scratch);
        info!(workers = workers.len(), "taking analysis jobs");
        let flag = stop.clone();
        let handle = std::thread::Builder::new().name("jobs".into()).spawn(move || {
            runtime.block_on(async move {
                let running: Vec<_> = workers.into_iter().map(|w| tokio::spawn(w.run(flag.clone()))).collect();
                for r in running {
                    let _ = r.await;
                }
            });
        })?;
        Ok(Some(JobThread { stop, handle }))
    }

    /// Stops taking jobs; a job in progress is left to its lease (another worker takes it).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.handle);
    }
}

/// The `server.job-workers` workers of this process.
pub fn workers(storage: &Storage, config: &Config, scratch: &Path) -> Vec<JobWorker> {
    let s = &config.server;
    let host = std::fs::read_to_string("/etc/hostname").map_or_else(|_| "worker".into(), |h| h.trim().to_owned());
    (0..s.job_workers)
        .map(|i| JobWorker {
            storage: storage.clone(),
            analysis: config.clone(),
            scratch: scratch.to_owned(),
            name: format!("{host}-{}-{i}", std::process::id()),
            lease: Duration::from_secs(s.job_lease_s),
            milli_per_minute: (s.credits_per_minute * 1000.0).round() as i64,
        })
        .collect()
}
