//! Video files as streams: what `retail-ai analyze` (and an upload job) starts.

use std::path::Path;

use retail_core::StreamId;
use retail_ingest::FileSource;

use crate::stream::{OutputSpec, SharedBus, StreamJob};
use crate::{Config, ModelChoice, ProgressFn, RuntimeError};

/// The stream id of a file: the one given, else the config's, else the file's stem. The
/// lake refuses ids it could not store, so a bad one is an error now rather than dead
/// letters later.
pub fn stream_id_for(config: &Config, input: &Path, given: Option<StreamId>) -> Result<StreamId, RuntimeError> {
    if let Some(id) = given.or_else(|| config.stream.id.clone()) {
        return Ok(id);
    }
    let stem = input.file_stem().map_or_else(|| "stream".into(), |s| s.to_string_lossy().into_owned());
    StreamId::parse(&stem).map_err(|e| RuntimeError::Usage(format!("{}: {e}: pass --stream-id", input.display())))
}

/// Opens `input` and describes its analysis. The video is opened (and a bad one refused)
/// before anything is written.
pub fn file_job(
    config: &Config,
    model: &ModelChoice,
    input: &Path,
    stream: StreamId,
    outputs: OutputSpec,
    bus: SharedBus,
    progress: Option<ProgressFn>,
) -> Result<StreamJob, RuntimeError> {
    let spec = model.source_spec(stream.clone(), outputs.annotate.is_some());
    let source = FileSource::open(input, spec, &config.ingest)?;
    let info = source.info();
    tracing::info!(input = %input.display(), stream = %stream, width = info.width, height = info.height,
        fps = ?info.fps, duration_s = ?info.duration_ns.map(|d| d as f64 / 1e9), "opened video");
    Ok(StreamJob {
        source: Box::new(source),
        tenant: config.stream.tenant.clone().unwrap_or_default(),
        stream,
        start_time_us: config.stream.start_time.map_or_else(|| chrono::Utc::now().timestamp_micros(), |t| t.us),
        analytics: config.analytics_config(),
        tracker: config.tracker.clone(),
        motion_threshold: None,
        track_gap_ns: None,
        first_track_id: 1,
        outputs,
        bus,
        flush_timeout_s: Some(config.bus.flush_timeout_s),
        progress,
    })
}

/// Several video files analysed at once, as `retail-ai analyze a.mp4 b.mp4` does.
#[derive(Clone, Debug)]
pub struct FilesRequest {
    pub inputs: Vec<std::path::PathBuf>,
    pub config: Config,
    /// With one input, the output folder itself; with several, one sub-folder per stream.
    /// `None` writes nothing (benchmarks).
    pub out_dir: Option<std::path::PathBuf>,
    /// Annotated video (one input only).
    pub annotate: Option<std::path::PathBuf>,
    /// Per-frame detections (one input only).
    pub detections: Option<std::path::PathBuf>,
    /// Set (e.g. by Ctrl-C) to cancel every stream: each then fails with
    /// [`RuntimeError::Cancelled`] and leaves nothing in its output folder.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Receives each stream's progress, by input position.
pub type FilesProgress = std::sync::Arc<dyn Fn(usize, &crate::StreamProgress) + Send + Sync>;

/// Runs every input through one engine. Setting up (config, model, bus) fails as a whole
/// before anything is written; each file then succeeds or fails on its own (a video that
/// cannot be opened included), and a failed one leaves nothing in its output folder.
pub fn analyze_files(
    req: &FilesRequest,
    progress: Option<FilesProgress>,
) -> Result<Vec<Result<crate::Summary, RuntimeError>>, RuntimeError> {
    let config = &req.config;
    let several = req.inputs.len() > 1;
    if several && (req.annotate.is_some() || req.detections.is_some()) {
        return Err(RuntimeError::Usage(
            "--annotate and --detections name one file: give them with one input at a time".into(),
        ));
    }
    if several && config.stream.id.is_some() {
        return Err(RuntimeError::Usage(format!(
            "stream id {:?} names one stream, but {} files were given: each file is named after itself",
            config.stream.id.as_ref().map(|s| s.0.as_str()).unwrap_or_default(),
            req.inputs.len()
        )));
    }
    let mut ids = Vec::new();
    for input in &req.inputs {
        let id = stream_id_for(config, input, None)?;
        if ids.contains(&id) {
            return Err(RuntimeError::Usage(format!(
                "two inputs are both stream {id} (their file names match): give them different names"
            )));
        }
        ids.push(id);
    }
    let model = ModelChoice::resolve(config)?;
    let bus: SharedBus = std::sync::Arc::new(std::sync::Mutex::new(retail_bus::open_producer(&config.bus)?));
    let mut jobs = Vec::new();
    for (i, (input, id)) in req.inputs.iter().zip(&ids).enumerate() {
        let out_dir = req.out_dir.as_ref().map(|d| if several { d.join(&id.0) } else { d.clone() });
        let outputs = OutputSpec { out_dir, annotate: req.annotate.clone(), detections: req.detections.clone() };
        let progress = progress.clone().map(|f| -> ProgressFn { std::sync::Arc::new(move |p| f(i, p)) });
        // A video that cannot be opened fails alone: the others are still analysed.
        jobs.push(file_job(config, &model, input, id.clone(), outputs, bus.clone(), progress));
    }
    if jobs.iter().all(Result::is_err) {
        // Nothing to run. One input: its error is the run's error, as before; several:
        // each input's error, without loading the model.
        let mut errors: Vec<RuntimeError> = jobs.into_iter().filter_map(Result::err).collect();
        if !several && let Some(e) = errors.pop() {
            return Err(e);
        }
        return Ok(errors.into_iter().map(Err).collect());
    }
    let engine = crate::Engine::from_config(config, &model)?;
    let handles: Vec<_> = jobs.into_iter().map(|job| job.and_then(|job| engine.start(job))).collect();
    if let Some(stop) = &req.stop {
        let running = || handles.iter().any(|h| h.as_ref().is_ok_and(|h| !h.is_finished()));
        while running() {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                handles.iter().flatten().for_each(crate::StreamHandle::cancel);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(handles.into_iter().map(|h| h.and_then(crate::StreamHandle::join)).collect())
}
