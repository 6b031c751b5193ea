//! `retail-ai worker`: live cameras from the config on the runtime's [`Worker`], with
//! `/metrics`, `/healthz` and `/readyz` on one HTTP address, the config reloaded on SIGHUP
//! and a clean stop (every stream finished, events delivered) on SIGTERM or Ctrl-C. With
//! the platform's database in `[server]` it also takes analysis jobs: one kind of worker
//! for cameras and uploads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};
use metrics_exporter_prometheus::PrometheusHandle;
use retail_ingest::CameraState;
use retail_runtime::{CameraReport, Config, RuntimeError, Summary, Worker};
use tracing::{error, info};

/// How often camera states are turned into metrics and stopped streams restarted.
const TICK: Duration = Duration::from_secs(1);
/// `/healthz` fails when the main loop has not ticked for this long (it is stuck).
const STUCK_AFTER: Duration = Duration::from_secs(30);

/// What the HTTP endpoints show; written by the main loop.
struct Shared {
    cameras: Vec<CameraReport>,
    last_tick: Instant,
    ready: bool,
}

enum Signal {
    Reload,
    Stop,
}

/// Runs until SIGTERM or Ctrl-C; each camera's summary, or why it failed, at the end.
pub fn run(config_path: &Path, addr: SocketAddr) -> anyhow::Result<Vec<(String, Result<Summary, RuntimeError>)>> {
    // A removed camera's gauges go after a minute without updates (counters stay).
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(Duration::from_secs(60)))
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot set up metrics: {e}"))?;
    let shared = Arc::new(Mutex::new(Shared { cameras: Vec::new(), last_tick: Instant::now(), ready: false }));
    let listener = TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot serve HTTP at {addr}: {e}"))?;
    info!(%addr, "serving /metrics, /healthz and /readyz");
    {
        let shared = shared.clone();
        std::thread::Builder::new().name("http".into()).spawn(move || serve(&listener, &handle, &shared))?;
    }
    let signals = signals()?;
    let config = Config::load(Some(config_path))?;
    let jobs = crate::jobs::JobThread::start(&config)?;
    let mut worker = Worker::start(config)?;
    info!(cameras = worker.cameras().len(), "worker started");
    let mut exporter = Exporter::default();
    loop {
        worker.tick();
        let cameras = worker.cameras();
        exporter.export(&cameras);
        {
            let mut s = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.cameras = cameras;
            s.last_tick = Instant::now();
            s.ready = true;
        }
        match signals.recv_timeout(TICK) {
            Ok(Signal::Reload) => reload(&mut worker, config_path),
            Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).ready = false;
    info!("stopping: finishing every camera's stream");
    if let Some(jobs) = jobs {
        jobs.stop();
    }
    Ok(worker.shutdown())
}

fn reload(worker: &mut Worker, path: &Path) {
    match Config::load(Some(path)) {
        Ok(config) => {
            let c = worker.reload(config);
            info!(added = ?c.added, removed = ?c.removed, restarted = ?c.restarted, "config reloaded");
        }
        // A bad edit must not take the running cameras down: keep the old config.
        Err(e) => error!(error = %e, "config reload failed; the running cameras are unchanged"),
    }
}

/// SIGHUP → reload; SIGTERM, SIGINT → stop.
fn signals() -> anyhow::Result<Receiver<Signal>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = unbounded();
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let mut hup = rt.block_on(async { signal(SignalKind::hangup()) })?;
    let mut term = rt.block_on(async { signal(SignalKind::terminate()) })?;
    let mut int = rt.block_on(async { signal(SignalKind::interrupt()) })?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        rt.block_on(async {
            loop {
                let sig = tokio::select! {
                    _ = hup.recv() => Signal::Reload,
                    _ = term.recv() => Signal::Stop,
                    _ = int.recv() => Signal::Stop,
                };
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    })?;
    Ok(rx)
}

/// Turns camera reports into Prometheus series labelled by tenant and camera (never its URL).
/// The reports' totals start again from 0 when a camera's stream restarts or the camera
/// comes back to this worker; the counters must not (a Prometheus counter only goes up, and
/// `absolute` keeps the maximum, so it would stand still until the new total passed the old).
#[derive(Default)]
struct Exporter {
    /// Per (camera, counter): the report's total when last exported.
    last: std::collections::HashMap<(String, &'static str), u64>,
    /// Cameras exported at the last tick, with their labels.
    shown: std::collections::BTreeMap<String, [(&'static str, String); 2]>,
}

impl Exporter {
    fn export(&mut self, cameras: &[CameraReport]) {
        let mut shown = std::collections::BTreeMap::new();
        for c in cameras {
            let labels = [("tenant", c.tenant.clone()), ("camera", c.camera.clone())];
            let key = format!("{}/{}", c.tenant, c.camera);
            set_state(&labels, Some(c.status.state));
            self.bump(&key, "retail_camera_reconnects_total", &labels, c.status.reconnects);
            self.bump(&key, "retail_camera_stalls_total", &labels, c.status.stalls);
            self.bump(&key, "retail_camera_frames_total", &labels, c.status.frames);
            self.bump(&key, "retail_camera_frames_dropped_total", &labels, c.frames_dropped);
            self.bump(&key, "retail_camera_restarts_total", &labels, c.restarts);
            metrics::gauge!("retail_camera_last_frame_age_seconds", &labels)
                .set(c.status.last_frame_age_s.unwrap_or(f64::NAN));
            set_gpu_decode_failed(&labels, c.status.gpu_decode_failed);
            shown.insert(key, labels);
        }
        // A camera gone from this worker (removed, or moved to another) is in no state here.
        for (key, labels) in &self.shown {
            if !shown.contains_key(key) {
                set_state(labels, None);
                set_gpu_decode_failed(labels, false);
            }
        }
        self.shown = shown;
    }

    /// Adds to `name` what `total` grew by since the last export; a total lower than before
    /// started again from 0, so all of it is new.
    fn bump(&mut self, key: &str, name: &'static str, labels: &[(&'static str, String); 2], total: u64) {
        let last = self.last.entry((key.to_owned(), name)).or_insert(0);
        let delta = if total >= *last { total - *last } else { total };
        *last = total;
        metrics::counter!(name, labels).increment(delta);
    }
}

fn set_gpu_decode_failed(labels: &[(&'static str, String); 2], failed: bool) {
    metrics::gauge!("retail_camera_gpu_decode_failed", labels).set(if failed { 1.0 } else { 0.0 });
}

fn set_state(labels: &[(&'static str, String); 2], current: Option<CameraState>) {
    for state in CameraState::ALL {
        let mut l = labels.to_vec();
        l.push(("state", state.as_str().to_owned()));
        metrics::gauge!("retail_camera_state", &l).set(if current == Some(state) { 1.0 } else { 0.0 });
    }
}

/// Requests answered at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 8;
/// The whole request must arrive within this, however slowly it trickles in.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

fn serve(listener: &TcpListener, metrics: &PrometheusHandle, shared: &Arc<Mutex<Shared>>) {
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: do not spin.
                tracing::warn!(error = %e, "HTTP accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // A slow client holds one of a few threads, never the probes' only one.
        if busy.load(std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
            continue; // dropped: the client sees the connection close
        }
        busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (metrics, shared, mine) = (metrics.clone(), shared.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("http-conn".into()).spawn(move || {
            if let Err(e) = answer(conn, &metrics, &shared) {
                tracing::debug!(error = %e, "HTTP request failed");
            }
            mine.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
        if spawned.is_err() {
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn answer(mut conn: TcpStream, metrics: &PrometheusHandle, shared: &Mutex<Shared>) -> std::io::Result<()> {
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request too slow"));
        }
        conn.set_read_timeout(Some(left))?;
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = if method != "GET" {
        ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned())
    } else {
        route(path, metrics, shared)
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes())
}

fn route(path: &str, metrics: &PrometheusHandle, shared: &Mutex<Shared>) -> (&'static str, &'static str, String) {
    let s = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let json = |ok: bool, body: serde_json::Value| {
        (if ok { "200 OK" } else { "503 Service Unavailable" }, "application/json", format!("{body}\n"))
    };
    match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => {
            let ok = s.last_tick.elapsed() < STUCK_AFTER;
            json(ok, serde_json::json!({ "ok": ok, "last_tick_s": s.last_tick.elapsed().as_secs_f64() }))
        }
        // Ready once the model is loaded and the bus open, until the worker starts stopping;
        // cameras that are down do not make the worker unready (it is still doing its job:
        // retrying them), they are listed with their state and message.
        "/readyz" => json(s.ready, serde_json::json!({ "ready": s.ready, "cameras": s.cameras })),
        _ => ("404 Not Found", "text/plain", "not found: /metrics, /healthz, /readyz\n".to_owned()),
    }
}
