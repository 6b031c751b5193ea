//! The multi-stream engine with the real detector on real video: streams isolated from each
//! other, one cancelled without disturbing the rest, a live source that drops frames when
//! inference cannot keep up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use retail_core::StreamId;
use retail_infer::cache_dir;
use retail_ingest::{Backpressure, FrameSource, IngestError, VideoFrame, VideoInfo};
use retail_runtime::{
    Config, Engine, ModelChoice, OutputSpec, RuntimeError, SharedBus, StreamJob, StreamProgress, file_job,
};

fn vtest() -> PathBuf {
    let p = cache_dir().join("media/vtest.avi");
    assert!(p.is_file(), "{} missing: run scripts/setup.sh first", p.display());
    p
}

fn config() -> Config {
    Config::load(Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vtest.toml"))).unwrap()
}

fn memory_bus(name: &str) -> SharedBus {
    let cfg = retail_bus::BusConfig { url: format!("memory://{name}"), ..Default::default() };
    Arc::new(Mutex::new(retail_bus::open_producer(&cfg).unwrap()))
}

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
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("stop")).map(|d| d.count()).into_iter().collect();
    assert!(leftovers.iter().all(|n| *n == 0), "cancelled stream left files: {leftovers:?}");
    // The other stream gives exactly what a lone analysis gives (tests/golden/vtest/int8).
    let s = keep.join().unwrap();
    assert_eq!(s.frames, 795);
    assert_eq!((s.lines["plaza"].ins, s.lines["plaza"].outs), (14, 15));
    assert_eq!(s.zones["lower-left"].visits, 12);
    assert!(dir.path().join("keep/summary.json").is_file());
}

/// A camera that never waits: the same decoded frame, as fast as it is asked for.
struct FastCamera {
    frame: VideoFrame,
    info: VideoInfo,
    sent: Arc<AtomicU64>,
    limit: u64,
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
        Backpressure::DropOldest
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
    let camera = FastCamera { frame, info: src.info().clone(), sent: sent.clone(), limit: 400 };
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
        outputs: OutputSpec::default(),
        bus: memory_bus("live"),
        flush_timeout_s: 10,
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
