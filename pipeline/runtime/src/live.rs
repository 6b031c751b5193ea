//! Live cameras on the engine: what `retail-ai worker` runs.
//!
//! A [`Worker`] holds one [`Engine`] (so every camera shares the inference workers and their
//! cross-stream batches) and one stream per camera. Each camera's source reconnects by
//! itself (see [`retail_ingest::LiveCamera`]), so its tracker and counts carry on across
//! faults. Cameras are added, changed and removed while the others run ([`Worker::apply`]);
//! a stream that stops on its own (a bus error) is started again after a pause.
//!
//! Several workers share one file's cameras through a Kafka consumer group (`[live] group`):
//! each camera id maps to a partition of `live.cameras-topic`, and a worker runs the cameras
//! of the partitions the group gives it. No coordinator of our own: when a worker dies, the
//! broker hands its partitions to the others after the session timeout, and they start its
//! cameras at their next [`Worker::tick`]; a worker that joins takes its share the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use retail_bus::{BusUrl, RecordConsumer, partition_for};
use retail_ingest::{CameraMonitor, CameraSettings, CameraStatus, LiveCamera};
use serde::Serialize;
use tracing::{info, warn};

use crate::stream::{OutputSpec, SharedBus, StreamJob};
use crate::{CameraConfig, Config, Engine, ModelChoice, ProgressFn, RuntimeError, StageLatency, StreamHandle, Summary};

/// A stream that stopped on its own is started again after this long.
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// How long a worker keeps a camera whose partition it lost (see [`Worker::tick`]): longer
/// than a rebalance between live members takes, and far less than a session timeout, so a
/// camera that really moved runs on two workers for at most this long.
const LOST_GRACE: Duration = Duration::from_secs(4);

/// One camera's state, for metrics, `/readyz` and the API. Never holds its credentials.
#[derive(Clone, Debug, Serialize)]
pub struct CameraReport {
    pub tenant: String,
    pub camera: String,
    /// The camera's address with credentials masked.
    pub url: String,
    #[serde(flatten)]
    pub status: CameraStatus,
    /// Frames dropped because analysis fell behind (the oldest waiting frame goes).
    pub frames_dropped: u64,
    /// Frames analysed without inference (motion gating).
    pub frames_gated: u64,
    /// Mean time per analysed frame in each stage, over the current stream (queue and
    /// inference show how loaded the shared workers are; for a camera, "decode" includes
    /// waiting for the camera's next frame).
    pub latency: StageLatency,
    /// Times the camera's stream stopped on its own and was started again.
    pub restarts: u64,
    /// Why the stream last stopped on its own.
    pub last_error: Option<String>,
}

/// What [`Worker::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Cameras whose settings changed: stopped and started again.
    pub restarted: Vec<String>,
}

struct Camera {
    config: CameraConfig,
    monitor: Arc<CameraMonitor>,
    dropped: Arc<AtomicU64>,
    gated: Arc<AtomicU64>,
    latency: Arc<std::sync::Mutex<StageLatency>>,
    handle: Option<StreamHandle>,
    restarts: u64,
    last_error: Option<String>,
    /// When a stream that stopped on its own may start again.
    retry_at: Option<Instant>,
}

/// Many live cameras in one process.
pub struct Worker {
    config: Config,
    model: ModelChoice,
    bus: SharedBus,
    cameras: BTreeMap<String, Camera>,
    /// Membership of the workers' consumer group, when cameras are shared.
    group: Option<Box<dyn RecordConsumer>>,
    /// Partitions this worker holds; `None`: every camera is this worker's.
    owned: Option<Vec<i32>>,
    /// Partitions of the cameras topic, as the broker has it: cameras map over these.
    partitions: i32,
    /// Partitions lost, since when: their cameras run on for [`LOST_GRACE`], so that the
    /// moment of an eager rebalance when a member holds nothing does not restart them.
    lost: BTreeMap<i32, Instant>,
    // Declared last: dropped after every stream handle.
    engine: Engine,
}

impl Worker {
    /// Loads the model, opens the bus, starts the engine and the config's cameras. A camera
    /// that is down is not an error: it is retried in the background.
    pub fn start(config: Config) -> Result<Self, RuntimeError> {
        let model = ModelChoice::resolve(&config)?;
        let bus: SharedBus = Arc::new(std::sync::Mutex::new(retail_bus::open_producer(&config.bus)?));
        let engine = Engine::from_config(&config, &model)?;
        let group = open_group(&config)?;
        let partitions = group_partitions(&config, group.as_deref())?;
        // In a group nothing is ours until the group says so.
        let owned = group.as_ref().map(|_| Vec::new());
        let cameras = config.cameras.clone();
        let lost = BTreeMap::new();
        let mut worker =
            Worker { config, model, bus, cameras: BTreeMap::new(), group, owned, partitions, lost, engine };
        worker.apply(&cameras);
        worker.tick();
        Ok(worker)
    }

    /// Whether this worker runs `cam` (always, outside a group).
    fn owns(&self, cam: &CameraConfig) -> bool {
        let Some(parts) = &self.owned else { return true };
        let p = partition_for(cam.id.0.as_bytes(), self.partitions);
        parts.contains(&p) || (self.lost.contains_key(&p) && self.cameras.contains_key(&cam.id.0))
    }

    /// Partitions this worker holds in its group (`None` outside a group).
    pub fn owned_partitions(&self) -> Option<&[i32]> {
        self.owned.as_deref()
    }

    /// Makes `cameras` the worker's camera list and the running cameras those of them this
    /// worker owns: removes the others, restarts the ones whose settings changed, starts the
    /// new ones. The rest are not touched.
    pub fn apply(&mut self, cameras: &[CameraConfig]) -> Changes {
        self.config.cameras = cameras.to_vec();
        self.sync()
    }

    fn sync(&mut self) -> Changes {
        let mut changes = Changes::default();
        let cameras: Vec<CameraConfig> = self.config.cameras.iter().filter(|c| self.owns(c)).cloned().collect();
        let wanted: BTreeMap<&str, &CameraConfig> = cameras.iter().map(|c| (c.id.0.as_str(), c)).collect();
        let gone: Vec<String> = self.cameras.keys().filter(|id| !wanted.contains_key(id.as_str())).cloned().collect();
        // Every stream told first, then each waited for: they finish side by side.
        for id in &gone {
            self.cameras[id].monitor.stop();
        }
        for id in gone {
            self.stop(&id);
            changes.removed.push(id);
        }
        for (id, cam) in wanted {
            match self.cameras.get(id) {
                Some(running) if running.config == *cam => {}
                Some(_) => {
                    self.stop(id);
                    self.add(cam);
                    changes.restarted.push(id.to_owned());
                }
                None => {
                    self.add(cam);
                    changes.added.push(id.to_owned());
                }
            }
        }
        changes
    }

    /// A new config file's cameras and `[live]` settings. Other sections (model, bus) need a
    /// restart of the worker: a change to them is logged and left for then.
    pub fn reload(&mut self, config: Config) -> Changes {
        if config.detector != self.config.detector || config.bus != self.config.bus {
            warn!("the new config changes [detector] or [bus]: those take effect when the worker restarts");
        }
        if config.live.group != self.config.live.group
            || config.live.cameras_topic != self.config.live.cameras_topic
            || config.live.cameras_partitions != self.config.live.cameras_partitions
        {
            warn!("the new config changes the workers' group: that takes effect when the worker restarts");
        }
        let mut live = config.live.clone();
        (live.group, live.cameras_topic, live.cameras_partitions) = (
            self.config.live.group.clone(),
            self.config.live.cameras_topic.clone(),
            self.config.live.cameras_partitions,
        );
        let live_changed = live != self.config.live
            || config.tracker != self.config.tracker
            || config.analytics != self.config.analytics;
        let cameras = config.cameras.clone();
        self.config.live = live;
        self.config.tracker = config.tracker;
        self.config.analytics = config.analytics;
        self.config.cameras = cameras.clone();
        if live_changed {
            // Every camera's source was built with the old settings.
            let ids: Vec<String> = self.cameras.keys().cloned().collect();
            for id in &ids {
                self.stop(id);
            }
        }
        self.apply(&cameras)
    }

    /// Keeps the worker's group membership alive and follows its assignment, and starts again,
    /// after a pause, the streams that stopped on their own. Call it often (the worker's main
    /// loop does, every second; a member that does not poll for `max.poll.interval.ms` is
    /// dropped from the group).
    pub fn tick(&mut self) {
        if let Some(group) = self.group.as_mut() {
            if let Err(e) = group.poll(64, Duration::ZERO) {
                warn!(error = %e, "workers' group: poll failed; keeping the cameras this worker has");
            }
            let owned = group.assignment().map(|mut p| {
                p.sort_unstable();
                p
            });
            // Fenced: another worker may run these cameras already, so no grace.
            let fenced = group.take_assignment_lost();
            let now = Instant::now();
            let expired = self.lost.len();
            self.lost.retain(|_, since| !fenced && now.duration_since(*since) < LOST_GRACE);
            let expired = expired != self.lost.len();
            if owned != self.owned || expired {
                let (old, new) = (self.owned.clone().unwrap_or_default(), owned.clone().unwrap_or_default());
                for p in old.iter().filter(|p| !new.contains(p) && !fenced) {
                    self.lost.entry(*p).or_insert(now);
                }
                self.lost.retain(|p, _| !new.contains(p));
                if owned != self.owned {
                    info!(partitions = ?owned, "camera assignment changed");
                    if !new.is_empty() {
                        self.partitions = refreshed_partition_count(group.as_ref(), self.partitions);
                    }
                }
                self.owned = owned;
                let c = self.sync();
                if !c.added.is_empty() || !c.removed.is_empty() {
                    info!(added = ?c.added, removed = ?c.removed, "cameras moved");
                }
            }
        }
        self.restart_stopped();
    }

    fn restart_stopped(&mut self) {
        let ids: Vec<String> = self.cameras.keys().cloned().collect();
        for id in ids {
            let cam = self.cameras.get_mut(&id).expect("id from the map");
            if cam.handle.as_ref().is_some_and(StreamHandle::is_finished) {
                let handle = cam.handle.take().expect("checked above");
                // The collector has ended, but the decoder may sit in the source's backoff:
                // only a stop of the monitor ends that wait.
                cam.monitor.stop();
                let error = match handle.join() {
                    Ok(_) => "the stream ended".to_owned(),
                    Err(e) => e.to_string(),
                };
                warn!(camera = %id, error = %error, "camera stream stopped; starting it again shortly");
                cam.last_error = Some(error);
                cam.restarts += 1;
                cam.retry_at = Some(Instant::now() + RESTART_AFTER);
            }
            if cam.retry_at.is_some_and(|t| Instant::now() >= t) {
                cam.retry_at = None;
                let config = cam.config.clone();
                self.start_stream(&config);
            }
        }
    }

    /// Every camera's state, by id.
    pub fn cameras(&self) -> Vec<CameraReport> {
        self.cameras
            .values()
            .map(|c| CameraReport {
                tenant: c.config.tenant.0.clone(),
                camera: c.config.id.0.clone(),
                url: c.config.url.to_string(),
                status: c.monitor.status(),
                frames_dropped: c.dropped.load(Ordering::Relaxed),
                frames_gated: c.gated.load(Ordering::Relaxed),
                latency: c.latency.lock().map(|l| l.clone()).unwrap_or_default(),
                restarts: c.restarts,
                last_error: c.last_error.clone(),
            })
            .collect()
    }

    /// Takes one camera off the list and stops it: its stream finishes (open visits are
    /// closed and published) and its summary comes back. `None` if this worker was not
    /// running it.
    pub fn remove(&mut self, id: &str) -> Option<Result<Summary, RuntimeError>> {
        self.config.cameras.retain(|c| c.id.0 != id);
        self.stop(id)
    }

    /// Stops every camera, each finishing its stream, then waits (up to `bus.flush-timeout-s`)
    /// for the bus to deliver their events; what it could not deliver stays spooled for the
    /// next run.
    pub fn shutdown(mut self) -> Vec<(String, Result<Summary, RuntimeError>)> {
        let ids: Vec<String> = self.cameras.keys().cloned().collect();
        for cam in self.cameras.values() {
            cam.monitor.stop(); // all at once, then wait for each
        }
        let summaries = ids.into_iter().filter_map(|id| self.stop(&id).map(|r| (id, r))).collect();
        let flusher = self.bus.lock().map(|bus| bus.flusher());
        match flusher.map(|f| f.wait(Duration::from_secs(self.config.bus.flush_timeout_s))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "events not delivered at shutdown stay spooled for the next run"),
            Err(_) => warn!("event bus lock poisoned at shutdown"),
        }
        summaries
    }

    fn add(&mut self, cam: &CameraConfig) {
        self.cameras.insert(
            cam.id.0.clone(),
            Camera {
                config: cam.clone(),
                monitor: Arc::new(CameraMonitor::default()),
                dropped: Arc::new(AtomicU64::new(0)),
                gated: Arc::new(AtomicU64::new(0)),
                latency: Arc::default(),
                handle: None,
                restarts: 0,
                last_error: None,
                retry_at: None,
            },
        );
        self.start_stream(cam);
    }

    fn stop(&mut self, id: &str) -> Option<Result<Summary, RuntimeError>> {
        let cam = self.cameras.remove(id)?;
        cam.monitor.stop();
        let result = cam.handle.map(StreamHandle::join);
        match &result {
            Some(Err(e)) => warn!(camera = %id, error = %e, "camera stopped; its stream failed at the end"),
            _ => info!(camera = %id, "camera stopped"),
        }
        result
    }

    /// Starts (or restarts) the stream of a camera already in the map.
    fn start_stream(&mut self, cam: &CameraConfig) {
        let Some(entry) = self.cameras.get_mut(&cam.id.0) else { return };
        // A fresh monitor: the old stream's source may still hold the stopped one.
        entry.monitor = Arc::new(CameraMonitor::default());
        let job = camera_job(&self.config, &self.model, cam, entry, self.bus.clone());
        match job.and_then(|job| self.engine.start(job)) {
            Ok(handle) => {
                info!(camera = %cam.id, url = %cam.url, "camera started");
                entry.handle = Some(handle);
            }
            Err(e) => {
                warn!(camera = %cam.id, error = %e, "camera cannot start; retrying shortly");
                entry.last_error = Some(e.to_string());
                entry.retry_at = Some(Instant::now() + RESTART_AFTER);
            }
        }
    }
}

impl Drop for Worker {
    /// Without [`Worker::shutdown`] (an early return, a panic): the sources stop first, so
    /// that no stream handle waits out a camera's backoff before it can go.
    fn drop(&mut self) {
        for cam in self.cameras.values() {
            cam.monitor.stop();
        }
    }
}

/// The workers' group consumer, when `[live] group` is set and the bus is Kafka.
fn open_group(config: &Config) -> Result<Option<Box<dyn RecordConsumer>>, RuntimeError> {
    let Some(group) = &config.live.group else { return Ok(None) };
    if !matches!(BusUrl::parse(&config.bus.url)?, BusUrl::Kafka { .. }) {
        info!("live.group is set but the bus is not Kafka: this worker runs every camera");
        return Ok(None);
    }
    let mut bus = config.bus.clone();
    bus.topic.clone_from(&config.live.cameras_topic);
    bus.partitions = config.live.cameras_partitions;
    Ok(Some(retail_bus::open_consumer(&bus, group)?))
}

/// The partitions cameras are mapped over: the topic's real count, which every worker of
/// the group reads alike. A topic made by hand with fewer partitions than
/// `live.cameras-partitions` would otherwise leave the cameras of the missing ones unrun.
fn group_partitions(config: &Config, group: Option<&dyn RecordConsumer>) -> Result<i32, RuntimeError> {
    let configured = config.live.cameras_partitions;
    let Some(real) = group.map(RecordConsumer::partition_count).transpose()?.flatten() else {
        return Ok(configured);
    };
    if real != configured {
        warn!(
            topic = %config.live.cameras_topic,
            partitions = real,
            configured,
            "the cameras topic has another partition count than live.cameras-partitions: cameras are spread over the topic's"
        );
    }
    Ok(real)
}

/// The cameras topic's partition count, read again when the assignment changes: partitions
/// added to the topic reach the group as a new assignment, and every worker must map cameras
/// over the new count, as the workers started after them do. Kept when it cannot be read.
fn refreshed_partition_count(group: &dyn RecordConsumer, current: i32) -> i32 {
    match group.partition_count() {
        Ok(Some(n)) if n != current => {
            warn!(from = current, to = n, "the cameras topic's partition count changed");
            n
        }
        Ok(_) => current,
        Err(e) => {
            warn!(error = %e, "cannot read the cameras topic's partition count; keeping the last");
            current
        }
    }
}

/// The engine job of one camera: its source, tracker tuned to its analysis rate, its lines
/// and zones, events to the shared bus, and no files.
fn camera_job(
    config: &Config,
    model: &ModelChoice,
    cam: &CameraConfig,
    entry: &Camera,
    bus: SharedBus,
) -> Result<StreamJob, RuntimeError> {
    let live = &config.live;
    let settings = CameraSettings {
        url: cam.url.clone(),
        transport: cam.transport,
        analysis_fps: (cam.analysis_fps > 0).then_some(cam.analysis_fps),
        watchdog: Duration::from_secs_f64(live.watchdog_s),
        connect_timeout: Duration::from_secs_f64(live.connect_timeout_s),
        backoff_min: Duration::from_secs_f64(live.backoff_min_s),
        backoff_max: Duration::from_secs_f64(live.backoff_max_s),
        latency_ms: live.latency_ms,
    };
    let start_time_us = chrono::Utc::now().timestamp_micros();
    let spec = model.source_spec(cam.id.clone(), false);
    let source = LiveCamera::new(&cam.id.0, settings, spec, start_time_us, entry.monitor.clone())?;
    let mut tracker = config.tracker.clone();
    if cam.analysis_fps > 0 {
        tracker.max_lost_frames = (live.max_lost_s * f64::from(cam.analysis_fps)).ceil().max(1.0) as u32;
    }
    // Counted over the camera's life, across restarts of its stream.
    let (dropped, before) = (entry.dropped.clone(), entry.dropped.load(Ordering::Relaxed));
    let (gated, gated_before) = (entry.gated.clone(), entry.gated.load(Ordering::Relaxed));
    let latency = entry.latency.clone();
    let progress: ProgressFn = Arc::new(move |p| {
        dropped.store(before + p.frames_dropped, Ordering::Relaxed);
        gated.store(gated_before + p.frames_gated, Ordering::Relaxed);
        if let Ok(mut l) = latency.lock() {
            *l = p.latency.clone();
        }
    });
    Ok(StreamJob {
        source: Box::new(source),
        tenant: cam.tenant.clone(),
        stream: cam.id.clone(),
        start_time_us,
        analytics: config.camera_analytics(cam),
        tracker,
        motion_threshold: (cam.motion_threshold > 0.0).then_some(cam.motion_threshold),
        track_gap_ns: Some((live.max_lost_s * 1e9) as u64),
        first_track_id: u64::try_from(start_time_us).unwrap_or(1),
        outputs: OutputSpec::default(),
        bus,
        flush_timeout_s: None,
        progress: Some(progress),
    })
}
