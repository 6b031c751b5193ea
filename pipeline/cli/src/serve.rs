//! `retail-ai serve`: the platform's HTTP API on the config's `[server]` settings. With no
//! settings it runs on its embedded defaults: SQLite, a local object store and generated
//! secrets under `server.data-dir` (mode 0700), no other service. `retail-ai purge` runs
//! the purge that `serve` also runs on a timer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use retail_core::Secret;
use retail_runtime::{Config, ServerSettings};
use tracing::{info, warn};

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config))
}

/// Deletes what has expired, once, and prints what went as JSON.
pub fn purge(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let storage = open_storage(&config.server).await?;
        housekeeping(&storage, &config.server).await
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// What one housekeeping round did.
#[derive(serde::Serialize)]
struct Housekeeping {
    #[serde(flatten)]
    purged: retail_store::PurgeReport,
    /// Storage charges made (one per organisation and retention class per day).
    storage_charges: usize,
}

/// Deletes what has expired, then meters the day's storage.
async fn housekeeping(storage: &retail_store::Storage, s: &ServerSettings) -> anyhow::Result<Housekeeping> {
    let purged = storage.purge().await?;
    let milli = s.credits_per_gb_day * 1000.0;
    // Aggregates and billing records are the platform's to keep: not charged.
    let rate = move |c: retail_store::RetentionClass| match c {
        retail_store::RetentionClass::Upload | retail_store::RetentionClass::Result => milli,
        _ => 0.0,
    };
    let storage_charges = storage.meter_storage(&rate).await?;
    Ok(Housekeeping { purged, storage_charges })
}

/// The data dir, private to this user (0700): the SQLite files, generated secrets and
/// decode-check scratch files in it are then out of other users' reach whatever their modes.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data dir was open to others; made it 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(())
}

/// The metadata database and the encrypted object store of `s`.
pub(crate) async fn open_storage(s: &ServerSettings) -> anyhow::Result<retail_store::Storage> {
    private_dir(&s.data_dir).with_context(|| "server.data-dir".to_owned())?;
    let database_url = match &s.database_url {
        Some(url) => url.clone(),
        None => Secret::new(format!("sqlite://{}", s.data_dir.join("retail.db").display())),
    };
    let db = retail_store::Db::open(database_url.expose()).await?;
    let master = match &s.master_key {
        Some(key) => key.clone(),
        None => generated_secret(&s.data_dir.join("secrets/master.key"), retail_store::MasterKey::generate)?,
    };
    let master = retail_store::MasterKey::parse(master.expose()).context("server.master-key")?;
    let objects = match &s.objects_url {
        Some(url) => url.clone(),
        None => s.data_dir.join("objects").display().to_string(),
    };
    info!(objects = %objects, master_key_id = master.id(), "object store");
    Ok(retail_store::Storage::open(db, &objects, &s.s3, master)?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let s = config.server.clone();
    let storage = open_storage(&s).await?;
    let jwt_secret = match &s.jwt_secret {
        Some(secret) => secret.clone(),
        None => generated_secret(&s.data_dir.join("secrets/jwt.key"), || retail_store::new_secret("jwt"))?,
    };
    let scratch_dir = s.data_dir.join("scratch");
    // Decode checks that a crash interrupted leave decrypted files here.
    let _ = std::fs::remove_dir_all(&scratch_dir);
    private_dir(&scratch_dir)?;
    let api = retail_api::ApiConfig {
        jwt_secret,
        session_ttl: Duration::from_secs(u64::from(s.session_hours) * 3600),
        cookie_secure: s.cookie_secure,
        login_per_minute: s.login_per_minute,
        requests_per_second: s.requests_per_second,
        burst: s.burst,
        max_upload_bytes: i64::try_from(s.max_upload_mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX),
        scratch_dir: scratch_dir.clone(),
        analysis: config.clone(),
        milli_per_minute: (s.credits_per_minute * 1000.0).round() as i64,
        signup_credits: (s.signup_credits * 1000.0).round() as i64,
        job_attempts: i64::from(s.job_attempts),
    };
    tokio::spawn(housekeeping_every(storage.clone(), s.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    for worker in crate::jobs::workers(&storage, &config, &scratch_dir.join("jobs")) {
        tokio::spawn(worker.run(stop.clone()));
    }
    let state = retail_api::AppState::new(storage, api).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .with_context(|| format!("cannot listen on server.listen {}", s.listen))?;
    info!(addr = %listener.local_addr()?, "serving the API (OpenAPI document at /openapi.json)");
    retail_api::serve(listener, state, shutdown_signal()).await?;
    // A job still running is left to its lease: another worker (or this one, restarted) takes it.
    stop.store(true, Ordering::Relaxed);
    info!("stopped");
    Ok(())
}

/// The scheduled purge and storage metering.
async fn housekeeping_every(storage: retail_store::Storage, s: ServerSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(s.purge_interval_s));
    loop {
        tick.tick().await;
        if let Err(e) = housekeeping(&storage, &s).await {
            warn!(error = %e, "purge or metering failed; retried at the next tick");
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// A secret kept in `path` (made by `make`, written with mode 0600, on first use).
fn generated_secret(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<Secret> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim().to_owned();
            anyhow::ensure!(text.len() >= 32, "{} holds a secret shorter than 32 bytes", path.display());
            return Ok(Secret::new(text));
        }
        // Only a missing file is made anew: any other failure must not replace a key that
        // still seals data.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
    let dir = path.parent().context("secret path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let secret = make();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
    }
    // A hard link fails if another process made the file meanwhile: then theirs is kept.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = linked {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Secret::new(text.trim()));
        }
        return Err(anyhow::anyhow!("cannot write {}: {e}", path.display()));
    }
    warn!(path = %path.display(), "generated a secret; set it in the config or environment when running more than one server");
    Ok(Secret::new(secret))
}
