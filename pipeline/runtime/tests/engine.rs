//! The multi-stream engine with the real detector on real video: streams isolated from each
//! other, one cancelled without disturbing the rest, a live source that drops frames when
//! inference cannot keep up.

mod common;

use common::{config, memory_bus, vtest};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use retail_core::StreamId;
use retail_ingest::{Backpressure, FrameSource, IngestError, VideoFrame, VideoInfo};
use retail_runtime::{
    Config, Engine, ModelChoice, OutputSpec, RuntimeError, SharedBus, StreamJob, StreamProgress, file_job,
};

#[test]
fn a_cancelled_stream_leaves_nothing_and_the_other_finishes_unchanged() {
    let cfg = config();
    let model = ModelChoice::resolve(&cfg).unwrap();
    let engine = Engine::from_config(&cfg, &model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = memory_bus("cancel");
    let seen = Arc::new(AtomicU64::new(0));
    let progress = {
        let seen = seen.clone();
        Arc::new(move |p: &StreamProgress| seen.store(p.frames, Ordering::SeqCst))
    };
    let out = |name: &str| OutputSpec { out_dir: Some(dir.path().join(name)), ..Default::default() };
    let keep = file_job(&cfg, &model, &vtest(), "keep".into(), out("keep"), bus.clone(), None).unwrap();
    let stop = file_job(&cfg, &model, &vtest(), "stop".into(), out("stop"), bus, Some(progress)).unwrap();
    let keep = engine.start(keep).unwrap();
    let stop = engine.start(stop).unwrap();
    while seen.load(Ordering::SeqCst) < 50 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.cancel();
    let err = stop.join().unwrap_err();
    assert!(matches!(err, RuntimeError::Cancelled { ref stream } if stream == "stop"), "{err}");
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path().join("stop")).map(std::iter::Iterator::count).into_iter().collect();
    assert!(leftovers.iter().all(|n| *n == 0), "cancelled stream left files: {leftovers:?}");
    // The other stream gives what a lone analysis gives (tests/golden/vtest/int8): exactly on
    // the CPU kind the golden files were made on, within the golden tolerance elsewhere.
    let s = keep.join().unwrap();
    assert_eq!(s.frames, 795);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/vtest/int8");
    let same_kind = std::fs::read_to_string(golden.join("cpu-kind.txt")).unwrap().trim() == retail_testkit::cpu_kind();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("summary.json")).unwrap()).unwrap();
    let slack = if same_kind { 0 } else { 2 };
    let near = |got: u64, want: &serde_json::Value| got.abs_diff(want.as_u64().unwrap()) <= slack;
    assert!(near(s.lines["plaza"].ins, &want["lines"]["plaza"]["in"]), "{s:?}");
    assert!(near(s.lines["plaza"].outs, &want["lines"]["plaza"]["out"]), "{s:?}");
    assert!(near(s.zones["lower-left"].visits, &want["zones"]["lower-left"]["visits"]), "{s:?}");
    assert!(dir.path().join("keep/summary.json").is_file());
}

/// A camera that never waits: the same decoded frame, as fast as it is asked for.
struct FastCamera {
    frame: VideoFrame,
    info: VideoInfo,
    sent: Arc<AtomicU64>,
    limit: u64,
    /// `DropOldest` as a camera; `Wait` stands in for a file.
    policy: Backpressure,
}

impl FrameSource for FastCamera {
    fn info(&self) -> &VideoInfo {
        &self.info
    }
    fn next_frame(&mut self) -> Result<Option<VideoFrame>, IngestError> {
        let i = self.sent.fetch_add(1, Ordering::SeqCst);
        if i >= self.limit {
            self.sent.fetch_sub(1, Ordering::SeqCst);
            return Ok(None);
        }
        let mut f = self.frame.clone();
        f.index = i;
        f.pts_ns = i * 40_000_000;
        Ok(Some(f))
    }
    fn backpressure(&self) -> Backpressure {
        self.policy
    }
    fn describe(&self) -> String {
        "fast-camera".into()
    }
}

#[test]
fn a_live_source_that_outruns_inference_drops_frames_and_counts_them() {
    let mut cfg = config();
    cfg.detector.workers = 1;
    cfg.detector.queue_frames = 4;
    let model = ModelChoice::resolve(&cfg).unwrap();
    let mut src =
        retail_ingest::FileSource::open(&vtest(), model.source_spec("cam".into(), false), &cfg.ingest).unwrap();
    let frame = src.next_frame().unwrap().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let camera = FastCamera {
        frame,
        info: src.info().clone(),
        sent: sent.clone(),
        limit: 400,
        policy: Backpressure::DropOldest,
    };
    let last = Arc::new(Mutex::new(StreamProgress::default()));
    let progress = {
        let last = last.clone();
        Arc::new(move |p: &StreamProgress| *last.lock().unwrap() = p.clone())
    };
    let job = StreamJob {
        source: Box::new(camera),
        tenant: Default::default(),
        stream: StreamId::from("cam"),
        start_time_us: 0,
        analytics: cfg.analytics_config(),
        tracker: cfg.tracker.clone(),
        motion_threshold: None,
        track_gap_ns: None,
        first_track_id: 1,
        outputs: OutputSpec::default(),
        bus: memory_bus("live"),
        flush_timeout_s: Some(10),
        progress: Some(progress),
    };
    let engine = Engine::from_config(&cfg, &model).unwrap();
    let summary = engine.start(job).unwrap().join().unwrap();
    let p = last.lock().unwrap().clone();
    assert!(p.finished);
    assert!(p.frames_dropped > 0, "decoding outran one inference worker, yet nothing was dropped: {p:?}");
    assert_eq!(p.frames + p.frames_dropped, sent.load(Ordering::SeqCst), "every frame analysed or counted as dropped");
    assert_eq!(summary.frames, p.frames);
    assert!(p.latency.infer_ms > 0.0 && p.latency.analyse_ms >= 0.0, "{p:?}");
}

/// A stand-in detector for the engine's own logic: takes `max_batch` frames per call,
/// `delay` per call; fails a batch holding a frame whose first byte is 255 (or panics,
/// with `panic`).
struct FakeBackend {
    max_batch: usize,
    delay: std::time::Duration,
    panic: bool,
}

impl retail_infer::InferenceBackend for FakeBackend {
    fn name(&self) -> &str {
        "fake"
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn frame_bytes(&self) -> usize {
        0
    }
    fn detect_batch(
        &mut self,
        frames: &[retail_infer::FrameRef<'_>],
    ) -> Result<Vec<Vec<retail_core::Detection>>, retail_infer::InferError> {
        std::thread::sleep(self.delay);
        if frames.iter().any(|f| f.pixels.first() == Some(&255)) {
            assert!(!self.panic, "fake backend panics on a marked frame");
            return Err(retail_infer::InferError::FrameSize { got: 255, expected: 0 });
        }
        Ok(frames.iter().map(|_| Vec::new()).collect())
    }
}

fn fake_engine(workers: usize, batch: usize, queue_frames: usize, delay_ms: u64, panic: bool) -> Engine {
    let model = ModelChoice::resolve(&Config::default()).unwrap();
    let backends: Vec<Box<dyn retail_infer::InferenceBackend>> = (0..workers)
        .map(|_| {
            Box::new(FakeBackend { max_batch: batch, delay: std::time::Duration::from_millis(delay_ms), panic })
                as Box<dyn retail_infer::InferenceBackend>
        })
        .collect();
    let batching =
        retail_runtime::Batching { max_frames: batch, deadline: std::time::Duration::from_millis(5), queue_frames };
    Engine::new(backends, batching, &model).unwrap()
}

fn camera_job(
    name: &str,
    limit: u64,
    marked: bool,
    policy_live: bool,
    progress: Option<retail_runtime::ProgressFn>,
) -> StreamJob {
    camera_job_on(memory_bus(name), name, limit, marked, policy_live, progress)
}

fn camera_job_on(
    bus: SharedBus,
    name: &str,
    limit: u64,
    marked: bool,
    policy_live: bool,
    progress: Option<retail_runtime::ProgressFn>,
) -> StreamJob {
    let info = VideoInfo { width: 64, height: 48, fps: Some(25.0), duration_ns: None };
    let frame = VideoFrame {
        stream: StreamId::from(name),
        index: 0,
        pts_ns: 0,
        duration_ns: Some(40_000_000),
        pixels: vec![if marked { 255 } else { 0 }; 16],
        width: 4,
        height: 4,
        colour: Default::default(),
        device: None,
        display: None,
    };
    let policy = if policy_live { Backpressure::DropOldest } else { Backpressure::Wait };
    let source: Box<dyn FrameSource> =
        Box::new(FastCamera { frame, info, sent: Arc::new(AtomicU64::new(0)), limit, policy });
    StreamJob {
        source,
        tenant: Default::default(),
        stream: StreamId::from(name),
        start_time_us: 0,
        analytics: Default::default(),
        tracker: Default::default(),
        motion_threshold: None,
        track_gap_ns: None,
        first_track_id: 1,
        outputs: OutputSpec::default(),
        bus,
        flush_timeout_s: Some(10),
        progress,
    }
}

/// A live stream's backlog stays within its bound however far the camera outruns
/// inference (each dropped frame must not free a place it never held).
#[test]
fn a_live_backlog_never_grows_past_its_bound() {
    let engine = fake_engine(1, 1, 3, 15, false);
    let most = Arc::new(AtomicU64::new(0));
    let progress: retail_runtime::ProgressFn = {
        let most = most.clone();
        Arc::new(move |p: &StreamProgress| {
            most.fetch_max(p.frames_waiting as u64, Ordering::SeqCst);
        })
    };
    let job = camera_job("cam", 3000, false, true, Some(progress));
    let s = engine.start(job).unwrap().join().unwrap();
    assert!(s.frames > 0);
    assert!(most.load(Ordering::SeqCst) <= 3, "backlog reached {} frames, bound 3", most.load(Ordering::SeqCst));
}

/// A batch that fails because of one stream's frame is retried frame by frame: that
/// stream stops with the error, the stream sharing its batches loses nothing.
#[test]
fn a_failing_frame_stops_only_its_own_stream() {
    for panic in [false, true] {
        let engine = fake_engine(1, 4, 8, 2, panic);
        let bad = engine.start(camera_job("bad", 200, true, false, None)).unwrap();
        let good = engine.start(camera_job("good", 200, false, false, None)).unwrap();
        let err = bad.join().unwrap_err().to_string();
        assert!(err.contains("stream bad") && err.contains("inference failed"), "{err}");
        let s = good.join().unwrap_or_else(|e| panic!("panic={panic}: the good stream failed: {e}"));
        assert_eq!(s.frames, 200, "panic={panic}");
    }
}

/// A bus whose first flush waits until the test releases it (a broker slow to
/// acknowledge); later flushes return at once.
struct SlowFirstFlush {
    flushes: std::sync::atomic::AtomicUsize,
    waiting: Arc<std::sync::atomic::AtomicBool>,
    release: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl retail_bus::EventProducer for SlowFirstFlush {
    fn send(&mut self, _: &[retail_core::Event]) -> Result<(), retail_bus::BusError> {
        Ok(())
    }
    fn send_raw(&mut self, _: &str, _: Option<&[u8]>, _: &[u8]) -> Result<(), retail_bus::BusError> {
        Ok(())
    }
    fn flush(&mut self, _: std::time::Duration) -> Result<(), retail_bus::BusError> {
        Ok(())
    }
    fn flusher(&self) -> retail_bus::Flusher {
        if self.flushes.fetch_add(1, Ordering::SeqCst) > 0 {
            return retail_bus::Flusher::nothing_to_wait_for();
        }
        let (release, waiting) = (self.release.clone(), self.waiting.clone());
        retail_bus::Flusher::new(move |_| {
            waiting.store(true, Ordering::SeqCst);
            let (lock, cv) = &*release;
            let released =
                cv.wait_timeout_while(lock.lock().unwrap(), std::time::Duration::from_secs(20), |r| !*r).unwrap();
            if *released.0 {
                Ok(())
            } else {
                Err(retail_bus::BusError::Kafka {
                    brokers: "test".into(),
                    operation: "flush".into(),
                    reason: "first flush never released".into(),
                })
            }
        })
    }
}

/// One stream waiting for the broker at its end does not hold up another stream that
/// shares the producer: the second runs and finishes while the first still waits.
#[test]
fn a_stream_waiting_for_delivery_does_not_block_the_others() {
    let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let waiting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = SlowFirstFlush { flushes: Default::default(), waiting: waiting.clone(), release: release.clone() };
    let bus: SharedBus = Arc::new(Mutex::new(Box::new(slow)));
    let engine = fake_engine(1, 1, 4, 1, false);
    let first = engine.start(camera_job_on(bus.clone(), "first", 10, false, false, None)).unwrap();
    while !waiting.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = engine.start(camera_job_on(bus, "second", 100, false, false, None)).unwrap();
    let s = second.join().expect("the second stream finishes while the first waits for delivery");
    assert_eq!(s.frames, 100);
    *release.0.lock().unwrap() = true;
    release.1.notify_all();
    let f = first.join().expect("the first stream's wait was released, not timed out");
    assert_eq!(f.frames, 10);
}

/// A still scene: one real frame over and over, every other copy with a little sensor noise.
struct StillCamera {
    frame: VideoFrame,
    info: VideoInfo,
    next: u64,
    limit: u64,
    /// Frames from this index on come 10 s later (an outage of the camera).
    gap_from: Option<u64>,
}

const OUTAGE_NS: u64 = 10_000_000_000;

impl FrameSource for StillCamera {
    fn info(&self) -> &VideoInfo {
        &self.info
    }
    fn next_frame(&mut self) -> Result<Option<VideoFrame>, IngestError> {
        if self.next >= self.limit {
            return Ok(None);
        }
        let mut f = self.frame.clone();
        if self.next % 2 == 1 {
            f.pixels.iter_mut().for_each(|p| *p = p.saturating_add(1));
        }
        f.index = self.next;
        f.pts_ns = self.next * 100_000_000;
        if self.gap_from.is_some_and(|g| self.next >= g) {
            f.pts_ns += OUTAGE_NS;
        }
        self.next += 1;
        Ok(Some(f))
    }
    fn backpressure(&self) -> Backpressure {
        Backpressure::Wait
    }
    fn describe(&self) -> String {
        "still-camera".into()
    }
}

#[test]
fn motion_gating_skips_inference_on_a_still_scene_and_keeps_its_people() {
    let cfg = config();
    let model = ModelChoice::resolve(&cfg).unwrap();
    let engine = Engine::from_config(&cfg, &model).unwrap();
    let mut file =
        retail_ingest::FileSource::open(&vtest(), model.source_spec("still".into(), false), &cfg.ingest).unwrap();
    let frame = (0..100).map(|_| file.next_frame().unwrap().unwrap()).last().unwrap();
    let run = |gate: Option<f32>| {
        let last = Arc::new(Mutex::new(StreamProgress::default()));
        let progress: retail_runtime::ProgressFn = {
            let last = last.clone();
            Arc::new(move |p: &StreamProgress| *last.lock().unwrap() = p.clone())
        };
        let mut job = camera_job("still", 0, false, false, Some(progress));
        job.source = Box::new(StillCamera {
            frame: frame.clone(),
            info: file.info().clone(),
            next: 0,
            limit: 40,
            gap_from: None,
        });
        job.analytics = cfg.analytics_config();
        // One frame over and over: nobody moves, so every track counts (the static rule off).
        job.analytics.static_rule.min_move = 0.0;
        job.motion_threshold = gate;
        let summary = engine.start(job).unwrap().join().unwrap();
        let p = last.lock().unwrap().clone();
        (summary, p)
    };
    let (plain, p_plain) = run(None);
    let (gated, p_gated) = run(Some(2.0));
    assert_eq!(p_plain.frames_gated, 0);
    assert_eq!(p_gated.frames_gated, 39, "the first frame is inferred, the 39 like it are not: {p_gated:?}");
    assert_eq!(gated.frames, 40);
    assert!(plain.people > 0, "no people on vtest frame 100: {plain:?}");
    assert_eq!(gated.people, plain.people, "gated frames keep their people tracked");
    assert_eq!(gated.zones["lower-left"].peak, plain.zones["lower-left"].peak);
    // Change beyond the threshold is inferred: with a threshold below the noise, every frame
    // differs enough from the last inferred one.
    let (_, p_noisy) = run(Some(0.5));
    assert_eq!(p_noisy.frames_gated, 0, "{p_noisy:?}");
}

/// A live camera's outage longer than tracks live ends every track: visits close when the
/// person was last seen (nobody dwells through the outage) and the people seen after it are
/// new tracks, with new ids.
#[test]
fn an_outage_longer_than_a_track_lives_ends_the_tracks_and_their_visits() {
    let cfg = config();
    let model = ModelChoice::resolve(&cfg).unwrap();
    let engine = Engine::from_config(&cfg, &model).unwrap();
    let mut file =
        retail_ingest::FileSource::open(&vtest(), model.source_spec("gap".into(), false), &cfg.ingest).unwrap();
    let frame = (0..100).map(|_| file.next_frame().unwrap().unwrap()).last().unwrap();
    let run = |name: &str, track_gap_ns: Option<u64>| {
        let bus = memory_bus(name);
        let mut job = camera_job_on(bus, name, 0, false, false, None);
        job.source = Box::new(StillCamera {
            frame: frame.clone(),
            info: file.info().clone(),
            next: 0,
            limit: 40,
            gap_from: Some(20),
        });
        job.analytics = cfg.analytics_config();
        // One frame over and over: nobody moves, so every track counts (the static rule off).
        job.analytics.static_rule.min_move = 0.0;
        // The whole frame: everyone seen is on a visit.
        job.analytics.zones[0].polygon = vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        job.track_gap_ns = track_gap_ns;
        let summary = engine.start(job).unwrap().join().unwrap();
        let config = retail_bus::BusConfig::default();
        let events: Vec<retail_core::Event> = retail_bus::MemoryBus::named(name, config.partitions)
            .messages(&config.topic)
            .iter()
            .map(|m| retail_bus::decode_event(m).unwrap())
            .collect();
        (summary, events)
    };
    let dwells = |events: &[retail_core::Event]| -> Vec<f64> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                retail_core::EventKind::ZoneExit { dwell_s, .. } => Some(*dwell_s),
                _ => None,
            })
            .collect()
    };
    // Without the gap rule the tracks ride through the outage, and so do their visits.
    let (through, through_events) = run("gap-through", None);
    assert!(dwells(&through_events).iter().any(|d| *d > 10.0), "{through:?} {through_events:?}");

    let (ended, events) = run("gap-ended", Some(3_000_000_000));
    let d = dwells(&events);
    assert!(!d.is_empty() && d.iter().all(|d| *d < 2.0), "a visit spans the 10 s outage: {d:?}");
    let before: Vec<u64> =
        events.iter().filter(|e| e.pts_ns < OUTAGE_NS && e.track_id > 0).map(|e| e.track_id).collect();
    let after: Vec<u64> =
        events.iter().filter(|e| e.pts_ns > OUTAGE_NS && e.track_id > 0).map(|e| e.track_id).collect();
    assert!(!before.is_empty() && !after.is_empty(), "{events:?}");
    assert!(after.iter().all(|a| before.iter().all(|b| a > b)), "an id from before the outage is reused after it");
    assert!(ended.people > through.people, "{} people with the gap rule, {} without", ended.people, through.people);
    // Every zone entry is closed once: entries before the outage closed at it, the rest at the end.
    let count = |kind: &str| events.iter().filter(|e| format!("{:?}", e.kind).starts_with(kind)).count();
    assert_eq!(count("ZoneEnter"), count("ZoneExit"));
}
