//! `retail-ai analyze`: one video file in, people analytics out.
//!
//! Threads: the decoder (GStreamer, bounded appsink) feeds a bounded channel; one inference
//! worker per core, each with its own single-threaded ONNX Runtime session, takes frames in
//! parallel; the collector puts results back in frame order and runs tracking, analytics and
//! the writers. Every queue is bounded, so a slow stage slows decoding instead of filling
//! memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam_channel::bounded;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use retail_analytics::Analyzer;
use retail_bus::{BusError, EventProducer};
use retail_core::{Detection, Event, StreamId, TenantId, TrackedObject, pts_seconds};
use retail_infer::{Detector, InferError, Manifest};
use retail_ingest::{
    AnnotatedVideoWriter, DisplayFrame, EncoderSettings, FileSource, IngestError, PixelOrder, SourceSpec, VideoFrame,
};
use retail_lake::{LakeError, MinuteAggregator, write_parquet_atomic};
use retail_track::Tracker;
use serde::Serialize;
use tracing::{debug, info};

use crate::config::{Config, ConfigError};
use crate::draw::{Canvas, annotate};

/// Why an analysis failed. Each message names the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The video could not be decoded (missing, not a video, truncated, corrupt).
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The model or ONNX Runtime failed.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// Writing the Parquet aggregates failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Publishing events failed (spool full, broker unreachable at the end of the run).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// An output file could not be created or written.
    #[error("{}: {source}", path.display())]
    Output { path: PathBuf, source: std::io::Error },
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// A pipeline thread stopped unexpectedly (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to analyse and where to put the results.
#[derive(Clone, Debug)]
pub struct AnalyzeRequest {
    pub input: PathBuf,
    pub config: Config,
    /// Directory for `events.jsonl`, `aggregates/` and `summary.json`; `None` writes nothing
    /// (benchmarks).
    pub out_dir: Option<PathBuf>,
    pub annotate: Option<PathBuf>,
    pub detections: Option<PathBuf>,
    pub progress: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LineSummary {
    #[serde(rename = "in")]
    pub ins: u64,
    #[serde(rename = "out")]
    pub outs: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ZoneSummary {
    pub peak: usize,
    pub visits: u64,
    pub mean_dwell_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VideoSummary {
    pub width: u32,
    pub height: u32,
    pub fps: Option<f64>,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub input: String,
    pub tenant: String,
    pub stream: String,
    pub start_time: String,
    /// Frames decoded and analysed.
    pub frames: u64,
    /// Length of the video analysed, seconds.
    pub duration_s: f64,
    /// Processing rate, frames per second of wall-clock time.
    pub fps: f64,
    pub elapsed_s: f64,
    /// Distinct people (confirmed tracks).
    pub people: u64,
    pub events: u64,
    pub lines: BTreeMap<String, LineSummary>,
    pub zones: BTreeMap<String, ZoneSummary>,
    pub video: VideoSummary,
    pub model: String,
    pub workers: usize,
}

struct Inferred {
    index: u64,
    pts_ns: u64,
    duration_ns: Option<u64>,
    detections: Vec<Detection>,
    display: Option<DisplayFrame>,
}

/// Output files being written in a staging directory, moved into place only on success.
struct Outputs {
    out_dir: Option<PathBuf>,
    created_out_dir: bool,
    staging: Option<PathBuf>,
    events: Option<(PathBuf, BufWriter<File>)>,
    detections: Option<(PathBuf, PathBuf, BufWriter<File>)>,
    committed: bool,
}

fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn output_err(path: &Path) -> impl Fn(std::io::Error) -> AnalyzeError + '_ {
    move |source| AnalyzeError::Output { path: path.to_owned(), source }
}

impl Outputs {
    fn create(out_dir: Option<&Path>, detections: Option<&Path>) -> Result<Self, AnalyzeError> {
        let mut o = Outputs {
            out_dir: out_dir.map(Path::to_owned),
            created_out_dir: false,
            staging: None,
            events: None,
            detections: None,
            committed: false,
        };
        if let Some(dir) = out_dir {
            o.created_out_dir = !dir.exists();
            std::fs::create_dir_all(dir).map_err(output_err(dir))?;
            let staging = dir.join(format!(".retail-ai-partial-{}", std::process::id()));
            std::fs::create_dir_all(staging.join("aggregates")).map_err(output_err(&staging))?;
            let events = staging.join("events.jsonl");
            let file = File::create(&events).map_err(output_err(&events))?;
            o.events = Some((events, BufWriter::new(file)));
            o.staging = Some(staging);
        }
        if let Some(path) = detections {
            let partial = partial_of(path);
            let file = File::create(&partial).map_err(output_err(&partial))?;
            o.detections = Some((path.to_owned(), partial, BufWriter::new(file)));
        }
        Ok(o)
    }

    fn write_event(&mut self, event: &Event) -> Result<(), AnalyzeError> {
        if let Some((path, w)) = &mut self.events {
            let mut v = serde_json::to_value(event).map_err(|e| AnalyzeError::Internal(e.to_string()))?;
            v["pts_s"] = serde_json::json!(pts_seconds(event.pts_ns));
            v["time"] = serde_json::json!(format_time(event.time_us));
            writeln!(w, "{v}").map_err(output_err(path))?;
        }
        Ok(())
    }

    fn write_detections(
        &mut self,
        frame: &Inferred,
        size: (u32, u32),
        assignments: &[Option<u64>],
        labels: &[String],
    ) -> Result<(), AnalyzeError> {
        let Some((_, partial, w)) = &mut self.detections else {
            return Ok(());
        };
        let (fw, fh) = (size.0 as f32, size.1 as f32);
        let round = |v: f32| (v as f64 * 10.0).round() / 10.0;
        let dets: Vec<_> = frame
            .detections
            .iter()
            .zip(assignments)
            .map(|(d, id)| {
                serde_json::json!({
                    "box": [round(d.bbox.x1 * fw), round(d.bbox.y1 * fh), round(d.bbox.x2 * fw), round(d.bbox.y2 * fh)],
                    "score": (d.score as f64 * 1000.0).round() / 1000.0,
                    "class": labels.get(d.class as usize).map(String::as_str).unwrap_or("?"),
                    "track_id": id,
                })
            })
            .collect();
        let line = serde_json::json!({ "frame": frame.index, "pts_s": pts_seconds(frame.pts_ns), "detections": dets });
        writeln!(w, "{line}").map_err(output_err(partial))
    }

    fn staging_path(&self, name: &str) -> Option<PathBuf> {
        self.staging.as_ref().map(|s| s.join(name))
    }

    /// Flushes everything and moves the files to their final names.
    fn commit(&mut self) -> Result<Vec<PathBuf>, AnalyzeError> {
        let mut written = Vec::new();
        if let Some((path, mut w)) = self.events.take() {
            w.flush().map_err(output_err(&path))?;
        }
        if let Some((path, partial, mut w)) = self.detections.take() {
            w.flush().map_err(output_err(&partial))?;
            std::fs::rename(&partial, &path).map_err(output_err(&path))?;
            written.push(path);
        }
        if let (Some(staging), Some(out)) = (self.staging.clone(), self.out_dir.clone()) {
            std::fs::create_dir_all(out.join("aggregates")).map_err(output_err(&out))?;
            for name in
                ["events.jsonl", "aggregates/line_counts.parquet", "aggregates/zone_occupancy.parquet", "summary.json"]
            {
                let from = staging.join(name);
                if from.exists() {
                    let to = out.join(name);
                    std::fs::rename(&from, &to).map_err(output_err(&to))?;
                    written.push(to);
                }
            }
            let _ = std::fs::remove_dir_all(&staging);
        }
        self.committed = true;
        Ok(written)
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Some((_, partial, _)) = self.detections.take() {
            let _ = std::fs::remove_file(partial);
        }
        if let Some(staging) = &self.staging {
            let _ = std::fs::remove_dir_all(staging);
        }
        if self.created_out_dir
            && let Some(out) = &self.out_dir
        {
            let _ = std::fs::remove_dir(out);
        }
    }
}

fn format_time(time_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(time_us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The resolved model: manifest, model file and thresholds.
pub struct ModelChoice {
    pub manifest: Manifest,
    pub model_path: PathBuf,
    pub score_threshold: f32,
    pub min_score: f32,
    pub nms_iou: f32,
}

impl ModelChoice {
    pub fn resolve(config: &Config) -> Result<Self, AnalyzeError> {
        let d = &config.detector;
        let manifest = match &d.manifest {
            Some(p) => Manifest::load(p)?,
            None => Manifest::bundled(),
        };
        let model_path = manifest.resolve_model(d.model.as_deref(), d.manifest.as_deref(), d.precision)?;
        let score_threshold = d.score_threshold.unwrap_or(manifest.thresholds.score);
        let nms_iou = d.nms_iou.unwrap_or(manifest.thresholds.nms_iou);
        Ok(ModelChoice { min_score: d.min_score.min(score_threshold), manifest, model_path, score_threshold, nms_iou })
    }

    pub fn load_detector(&self) -> Result<Detector, InferError> {
        Detector::load(
            &self.manifest,
            &self.model_path,
            1,
            vec![self.manifest.labels.person],
            self.min_score,
            self.nms_iou,
        )
    }

    pub fn source_spec(&self, stream: StreamId, display: bool) -> SourceSpec {
        let (width, height) = self.manifest.input_size();
        let order = match self.manifest.input.channel_order {
            retail_infer::ChannelOrder::Bgr => PixelOrder::Bgr,
            retail_infer::ChannelOrder::Rgb => PixelOrder::Rgb,
        };
        SourceSpec { stream, width, height, order, display }
    }
}

/// Runs the whole analysis. On error nothing is left in the output locations.
pub fn analyze(req: &AnalyzeRequest) -> Result<Summary, AnalyzeError> {
    let config = &req.config;
    let model = ModelChoice::resolve(config)?;
    let workers = config.detector.resolved_workers();
    let stream_id = config.stream.id.clone().unwrap_or_else(|| {
        req.input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "stream".into())
    });
    // The lake refuses ids it could not store; say so now rather than dead-letter every event.
    let stream = StreamId::parse(&stream_id).map_err(|e| AnalyzeError::Usage(format!("{e}: pass --stream-id")))?;
    let tenant = match &config.stream.tenant {
        Some(t) => TenantId::parse(t).map_err(AnalyzeError::Usage)?,
        None => TenantId::default(),
    };
    let start_time_us = match &config.stream.start_time {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| AnalyzeError::Usage(format!("start time {t:?}: {e}")))?
            .timestamp_micros(),
        None => chrono::Utc::now().timestamp_micros(),
    };

    // Open the video and the models before creating any output: bad input fails cleanly.
    let source =
        FileSource::open(&req.input, model.source_spec(stream.clone(), req.annotate.is_some()), &config.ingest)?;
    let info = source.info().clone();
    info!(input = %req.input.display(), width = info.width, height = info.height, fps = ?info.fps,
          duration_s = ?info.duration_ns.map(|d| d as f64 / 1e9), "opened video");
    let mut detectors = Vec::with_capacity(workers);
    for _ in 0..workers {
        detectors.push(model.load_detector()?);
    }
    info!(model = %model.model_path.display(), workers, "model loaded");

    let mut bus: Box<dyn EventProducer> = retail_bus::open_producer(&config.bus)?;
    let mut outputs = Outputs::create(req.out_dir.as_deref(), req.detections.as_deref())?;
    let mut encoder = match &req.annotate {
        Some(path) => Some(AnnotatedVideoWriter::create(
            path,
            &EncoderSettings {
                width: info.width,
                height: info.height,
                fps: info.fps.unwrap_or(25.0),
                speed_preset: "veryfast",
            },
        )?),
        None => None,
    };

    let analytics_config = config.analytics_config();
    let mut tracker = Tracker::new(config.tracker.clone(), model.score_threshold);
    let mut analyzer = Analyzer::new(&analytics_config, tenant.clone(), stream.clone(), start_time_us);
    let mut aggregator = MinuteAggregator::new(&stream.0, analyzer.line_names(), analyzer.zone_names());
    let labels = model.manifest.labels.names.clone();

    let progress = if req.progress {
        ProgressBar::with_draw_target(info.estimated_frames(), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );

    let started = Instant::now();
    let mut frames = 0u64;
    let mut last_end_ns = 0u64;
    let mut events = 0u64;
    let queue = 2 * workers;
    let (frame_tx, frame_rx) = bounded::<VideoFrame>(queue);
    let (result_tx, result_rx) = bounded::<Result<Inferred, InferError>>(queue);

    let collected: Result<(), AnalyzeError> = std::thread::scope(|scope| {
        let decoder = scope.spawn(move || -> Result<(), IngestError> {
            let mut source = source;
            while let Some(frame) = source.next_frame()? {
                if frame_tx.send(frame).is_err() {
                    break; // the collector stopped; its error is reported instead
                }
            }
            Ok(())
        });
        for mut detector in detectors {
            let (rx, tx) = (frame_rx.clone(), result_tx.clone());
            scope.spawn(move || {
                for frame in rx {
                    let result = detector.detect(&frame.pixels).map(|detections| Inferred {
                        index: frame.index,
                        pts_ns: frame.pts_ns,
                        duration_ns: frame.duration_ns,
                        detections,
                        display: frame.display,
                    });
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop((frame_rx, result_tx));

        let mut pending: BTreeMap<u64, Inferred> = BTreeMap::new();
        let mut process = |frame: Inferred| -> Result<(), AnalyzeError> {
            let tracks = tracker.update(&frame.detections);
            let out = analyzer.process(frame.pts_ns, &tracks.active, &tracks.ended);
            // Spooled to disk for Kafka: a broker outage does not block decoding, and a
            // full spool stops the run here with an error that says so.
            bus.send(&out.events)?;
            for e in &out.events {
                aggregator.observe_event(e);
                outputs.write_event(e)?;
                debug!(track = e.track_id, pts_s = pts_seconds(e.pts_ns), kind = ?e.kind, "event");
            }
            events += out.events.len() as u64;
            outputs.write_detections(&frame, (info.width, info.height), &tracks.assignments, &labels)?;
            if let (Some(enc), Some(mut display)) = (encoder.as_mut(), frame.display) {
                draw_frame(&mut display, &analytics_config.lines, &analytics_config.zones, &tracks.active);
                enc.push(display.rgbx, frame.pts_ns, frame.duration_ns)?;
            }
            metrics::counter!("retail_frames_analyzed_total").increment(1);
            metrics::counter!("retail_detections_total").increment(frame.detections.len() as u64);
            frames += 1;
            last_end_ns = frame.pts_ns + frame.duration_ns.unwrap_or(0);
            progress.inc(1);
            Ok(())
        };
        let mut next = 0u64;
        for result in result_rx {
            let frame = result?;
            pending.insert(frame.index, frame);
            while let Some(frame) = pending.remove(&next) {
                process(frame)?;
                next += 1;
            }
        }
        match decoder.join() {
            Ok(r) => r?,
            Err(_) => return Err(AnalyzeError::Internal("decoder thread panicked".into())),
        }
        if !pending.is_empty() {
            return Err(AnalyzeError::Internal(format!("{} frames lost between stages", pending.len())));
        }
        Ok(())
    });
    collected?;
    let last = analyzer.finish();
    bus.send(&last)?;
    for e in &last {
        aggregator.observe_event(e);
        outputs.write_event(e)?;
        events += 1;
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    let s = analyzer.summary();
    let summary = Summary {
        input: req.input.display().to_string(),
        tenant: tenant.0.clone(),
        stream: stream.0.clone(),
        start_time: format_time(start_time_us),
        frames,
        duration_s: last_end_ns as f64 / 1e9,
        fps: frames as f64 / elapsed.max(1e-9),
        elapsed_s: elapsed,
        people: tracker.confirmed_count(),
        events,
        lines: s.lines.iter().map(|l| (l.name.clone(), LineSummary { ins: l.ins, outs: l.outs })).collect(),
        zones: s
            .zones
            .iter()
            .map(|z| (z.name.clone(), ZoneSummary { peak: z.peak, visits: z.visits, mean_dwell_s: z.mean_dwell_s }))
            .collect(),
        video: VideoSummary { width: info.width, height: info.height, fps: info.fps },
        model: model.manifest.name.clone(),
        workers,
    };

    if let Some(path) = outputs.staging_path("aggregates/line_counts.parquet") {
        write_parquet_atomic(&path, &[aggregator.line_counts()?])?;
    }
    if let Some(path) = outputs.staging_path("aggregates/zone_occupancy.parquet") {
        write_parquet_atomic(&path, &[aggregator.zone_occupancy()?])?;
    }
    if let Some(path) = outputs.staging_path("summary.json") {
        let text = serde_json::to_string_pretty(&summary).map_err(|e| AnalyzeError::Internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(output_err(&path))?;
    }
    if let Some(enc) = encoder.take() {
        enc.finish()?;
    }
    bus.flush(std::time::Duration::from_secs(config.bus.flush_timeout_s))?;
    let written = outputs.commit()?;
    info!(frames, fps = summary.fps, files = written.len(), "analysis complete");
    Ok(summary)
}

fn draw_frame(
    display: &mut DisplayFrame,
    lines: &[retail_analytics::LineConfig],
    zones: &[retail_analytics::ZoneConfig],
    tracks: &[TrackedObject],
) {
    let mut canvas = Canvas { width: display.width as usize, height: display.height as usize, rgbx: &mut display.rgbx };
    annotate(&mut canvas, lines, zones, tracks);
}

/// The summary as a terminal table.
pub fn render_table(s: &Summary, out_dir: Option<&Path>) -> String {
    let mut t = String::new();
    let row = |t: &mut String, k: &str, v: String| t.push_str(&format!("  {k:<22} {v}\n"));
    t.push_str(&format!("retail-ai analyze: {}\n", s.input));
    row(&mut t, "frames", format!("{} ({:.1} s of video)", s.frames, s.duration_s));
    row(&mut t, "processing rate", format!("{:.1} fps ({:.1} s, {} workers)", s.fps, s.elapsed_s, s.workers));
    row(&mut t, "people (unique tracks)", s.people.to_string());
    for (name, l) in &s.lines {
        row(&mut t, &format!("line {name}"), format!("in {}  out {}", l.ins, l.outs));
    }
    for (name, z) in &s.zones {
        let dwell = z.mean_dwell_s.map(|d| format!("{d:.1} s")).unwrap_or_else(|| "-".into());
        row(&mut t, &format!("zone {name}"), format!("peak {}  visits {}  mean dwell {dwell}", z.peak, z.visits));
    }
    if let Some(dir) = out_dir {
        row(&mut t, "outputs", dir.display().to_string());
    }
    t
}
