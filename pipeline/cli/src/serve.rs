//! `retail-ai serve`: the platform's HTTP API on the config's `[server]` settings. With no
//! settings it runs on its embedded defaults: SQLite and generated secrets under
//! `server.data-dir`, no other service.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use retail_core::Secret;
use retail_runtime::{Config, ServerSettings};
use tracing::{info, warn};

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let settings = config.server;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(settings))
}

async fn serve(s: ServerSettings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create server.data-dir {}", s.data_dir.display()))?;
    let database_url = match &s.database_url {
        Some(url) => url.clone(),
        None => Secret::new(format!("sqlite://{}", s.data_dir.join("retail.db").display())),
    };
    let db = retail_store::Db::open(database_url.expose()).await?;
    let jwt_secret = match &s.jwt_secret {
        Some(secret) => secret.clone(),
        None => generated_secret(&s.data_dir.join("secrets/jwt.key"))?,
    };
    let api = retail_api::ApiConfig {
        jwt_secret,
        session_ttl: Duration::from_secs(u64::from(s.session_hours) * 3600),
        cookie_secure: s.cookie_secure,
        login_per_minute: s.login_per_minute,
        requests_per_second: s.requests_per_second,
        burst: s.burst,
    };
    let state = retail_api::AppState::new(db, api).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .with_context(|| format!("cannot listen on server.listen {}", s.listen))?;
    info!(addr = %listener.local_addr()?, "serving the API (OpenAPI document at /openapi.json)");
    retail_api::serve(listener, state, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
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

/// A secret kept in `path` (created with 256 random bits, mode 0600, on first use).
fn generated_secret(path: &Path) -> anyhow::Result<Secret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim().to_owned();
        anyhow::ensure!(text.len() >= 32, "{} holds a secret shorter than 32 bytes", path.display());
        return Ok(Secret::new(text));
    }
    let dir = path.parent().context("secret path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let secret = retail_store::new_secret("jwt");
    let tmp = path.with_extension("tmp");
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
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    warn!(path = %path.display(), "generated a JWT secret; set server.jwt-secret when running more than one server");
    Ok(Secret::new(secret))
}
