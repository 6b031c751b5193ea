//! One stream's analysis after inference: tracking, lines and zones, events to the bus and
//! the files, per-minute aggregates, the annotated video; and what it reports at the end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use retail_analytics::{AnalyticsConfig, Analyzer, Status};
use retail_bus::EventProducer;
use retail_core::{Detection, Event, StreamId, TenantId, pts_seconds};
use retail_ingest::{AnnotatedVideoWriter, DisplayFrame, EncoderSettings, FrameSource, VideoInfo};
use retail_lake::{MinuteAggregator, write_parquet_atomic};
use retail_track::{Tracker, TrackerConfig};
use tracing::debug;

use crate::draw::{Canvas, annotate};
use crate::outputs::{Outputs, format_time, output_err};
use crate::summary::{LineSummary, Summary, VideoSummary, ZoneSummary};
use crate::{ProgressFn, RuntimeError};

/// The event bus, shared by every stream of a process.
pub type SharedBus = Arc<Mutex<Box<dyn EventProducer>>>;

/// Where a stream's results go; every path is optional.
#[derive(Clone, Debug, Default)]
pub struct OutputSpec {
    /// Folder for `events.jsonl`, `aggregates/` and `summary.json`.
    pub out_dir: Option<PathBuf>,
    /// The video with boxes, tracks, lines and zones drawn.
    pub annotate: Option<PathBuf>,
    /// Every frame's detections as JSON lines.
    pub detections: Option<PathBuf>,
}

/// Everything one stream needs; see [`crate::Engine::start`].
pub struct StreamJob {
    pub source: Box<dyn FrameSource>,
    pub tenant: TenantId,
    pub stream: StreamId,
    /// Wall-clock time of the first frame, microseconds since the epoch.
    pub start_time_us: i64,
    pub analytics: AnalyticsConfig,
    pub tracker: TrackerConfig,
    /// Motion gating: a frame whose mean absolute difference (0..255 per byte of the packed
    /// frame handed to the CPU model; of the luma plane at the video's size on the GPU path)
    /// from the last frame sent to inference is below this, in every one of 64 bands of the
    /// frame, skips inference and reuses the previous frame's detections, keeping tracks
    /// alive (see `gate.rs`).
    /// `None`: every frame is inferred.
    pub motion_threshold: Option<f32>,
    /// A gap between two frames longer than this (a live camera's outage) ends every track,
    /// closing its visits when it was last seen, so nobody dwells through an outage and a
    /// person seen before it is a new track after. `None`: tracks end by frame count only.
    pub track_gap_ns: Option<u64>,
    /// The stream's first track id: 1 for a file; for a live camera its start time in
    /// microseconds, so a later run of the same camera never reuses an earlier run's ids.
    pub first_track_id: u64,
    pub outputs: OutputSpec,
    pub bus: SharedBus,
    /// How long to wait at the end for the bus to deliver, seconds. `None`: no wait (a live
    /// camera's events are spooled by the worker's producer, which outlives the stream and
    /// delivers them; its worker waits once, at shutdown).
    pub flush_timeout_s: Option<u64>,
    pub progress: Option<ProgressFn>,
}

/// A frame back from inference, in stream order.
pub(crate) struct Analysed<'a> {
    pub index: u64,
    pub pts_ns: u64,
    pub duration_ns: Option<u64>,
    pub detections: &'a [Detection],
    pub display: Option<DisplayFrame>,
}

/// The per-stream state after inference.
pub(crate) struct StreamAnalysis {
    input: String,
    tenant: TenantId,
    stream: StreamId,
    start_time_us: i64,
    info: VideoInfo,
    analytics: AnalyticsConfig,
    tracker: Tracker,
    track_gap_ns: Option<u64>,
    last_pts_ns: Option<u64>,
    analyzer: Analyzer,
    aggregator: MinuteAggregator,
    outputs: Outputs,
    encoder: Option<AnnotatedVideoWriter>,
    bus: SharedBus,
    flush_timeout_s: Option<u64>,
    labels: Vec<String>,
    model: String,
    workers: usize,
    pub frames: u64,
    pub last_end_ns: u64,
    events: u64,
    started: Instant,
}

/// What the engine knows of its model, for the per-stream stages.
#[derive(Clone, Debug)]
pub(crate) struct ModelFacts {
    pub name: String,
    pub labels: Vec<String>,
    pub score_threshold: f32,
    pub workers: usize,
    /// The GPU the sources decode into, when they do: motion gating of their pictures
    /// runs there.
    pub gpu: Option<usize>,
}

impl StreamAnalysis {
    /// Creates the outputs (in staging) and the stages. `job.source` is left to the caller.
    pub fn new(job: &StreamJob, model: &ModelFacts) -> Result<Self, RuntimeError> {
        let info = job.source.info().clone();
        let outputs = Outputs::create(job.outputs.out_dir.as_deref(), job.outputs.detections.as_deref())?;
        let encoder = match &job.outputs.annotate {
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
        let analyzer = Analyzer::new(&job.analytics, job.tenant.clone(), job.stream.clone(), job.start_time_us);
        let aggregator = MinuteAggregator::new(&job.stream.0, analyzer.line_names(), analyzer.zone_names());
        Ok(StreamAnalysis {
            input: job.source.describe(),
            tenant: job.tenant.clone(),
            stream: job.stream.clone(),
            start_time_us: job.start_time_us,
            info,
            analytics: job.analytics.clone(),
            tracker: Tracker::new(job.tracker.clone(), model.score_threshold).first_id(job.first_track_id),
            track_gap_ns: job.track_gap_ns,
            last_pts_ns: None,
            analyzer,
            aggregator,
            outputs,
            encoder,
            bus: job.bus.clone(),
            flush_timeout_s: job.flush_timeout_s,
            labels: model.labels.clone(),
            model: model.name.clone(),
            workers: model.workers,
            frames: 0,
            last_end_ns: 0,
            events: 0,
            started: Instant::now(),
        })
    }

    pub fn process(&mut self, frame: Analysed<'_>) -> Result<(), RuntimeError> {
        if let (Some(gap), Some(last)) = (self.track_gap_ns, self.last_pts_ns)
            && frame.pts_ns.saturating_sub(last) > gap
        {
            let ended = self.tracker.finish();
            debug!(stream = %self.stream, tracks = ended.len(), gap_s = pts_seconds(frame.pts_ns - last), "gap in the stream: tracks ended");
            let events = self.analyzer.end_tracks(&ended);
            self.publish(&events)?;
        }
        self.last_pts_ns = Some(frame.pts_ns);
        // Detections in an ignore mask never reach the tracker (nor detections.jsonl).
        let unmasked: Vec<Detection>;
        let detections = if self.analytics.masks.is_empty() {
            frame.detections
        } else {
            unmasked = frame.detections.iter().filter(|d| !self.analytics.masked(&d.bbox)).copied().collect();
            &unmasked
        };
        let tracks = self.tracker.update(detections);
        let out = self.analyzer.process(frame.pts_ns, &tracks.active, &tracks.ended);
        self.publish(&out.events)?;
        let size = (self.info.width, self.info.height);
        let status: Vec<Option<Status>> =
            tracks.assignments.iter().map(|t| t.and_then(|id| self.analyzer.status(id))).collect();
        self.outputs.write_detections(
            (frame.index, frame.pts_ns, detections),
            size,
            (&tracks.assignments, &status),
            &self.labels,
        )?;
        if let (Some(enc), Some(mut display)) = (self.encoder.as_mut(), frame.display) {
            let mut canvas =
                Canvas { width: display.width as usize, height: display.height as usize, rgbx: &mut display.rgbx };
            annotate(&mut canvas, &self.analytics.lines, &self.analytics.zones, &tracks.active);
            enc.push(display.rgbx, frame.pts_ns, frame.duration_ns)?;
        }
        metrics::counter!("retail_frames_analyzed_total").increment(1);
        metrics::counter!("retail_detections_total").increment(frame.detections.len() as u64);
        self.frames += 1;
        self.last_end_ns = frame.pts_ns + frame.duration_ns.unwrap_or(0);
        Ok(())
    }

    /// Sends events to the bus (spooled to disk for Kafka, so an outage does not block; a
    /// full spool stops the stream here with an error that says so), the aggregates and
    /// `events.jsonl`.
    fn publish(&mut self, events: &[Event]) -> Result<(), RuntimeError> {
        if events.is_empty() {
            return Ok(());
        }
        self.bus.lock().map_err(|_| RuntimeError::Internal("event bus lock poisoned".into()))?.send(events)?;
        for e in events {
            self.aggregator.observe_event(e);
            self.outputs.write_event(e)?;
            debug!(stream = %self.stream, track = e.track_id, pts_s = pts_seconds(e.pts_ns), kind = ?e.kind, "event");
        }
        self.events += events.len() as u64;
        Ok(())
    }

    /// Closes open visits, writes the aggregates and the summary, waits for the bus, and
    /// moves the files into place.
    pub fn finish(mut self) -> Result<Summary, RuntimeError> {
        let last = self.analyzer.finish();
        self.publish(&last)?;
        let elapsed = self.started.elapsed().as_secs_f64();
        let s = self.analyzer.summary();
        let summary = Summary {
            input: self.input.clone(),
            tenant: self.tenant.0.clone(),
            stream: self.stream.0.clone(),
            start_time: format_time(self.start_time_us),
            frames: self.frames,
            duration_s: self.last_end_ns as f64 / 1e9,
            fps: self.frames as f64 / elapsed.max(1e-9),
            elapsed_s: elapsed,
            people: self.analyzer.people(),
            events: self.events,
            lines: s.lines.iter().map(|l| (l.name.clone(), LineSummary { ins: l.ins, outs: l.outs })).collect(),
            zones: s
                .zones
                .iter()
                .map(|z| (z.name.clone(), ZoneSummary { peak: z.peak, visits: z.visits, mean_dwell_s: z.mean_dwell_s }))
                .collect(),
            video: VideoSummary { width: self.info.width, height: self.info.height, fps: self.info.fps },
            model: self.model.clone(),
            workers: self.workers,
        };
        if let Some(path) = self.outputs.staging_path("aggregates/line_counts.parquet") {
            write_parquet_atomic(&path, &[self.aggregator.line_counts()?])?;
        }
        if let Some(path) = self.outputs.staging_path("aggregates/zone_occupancy.parquet") {
            write_parquet_atomic(&path, &[self.aggregator.zone_occupancy()?])?;
        }
        if let Some(path) = self.outputs.staging_path("summary.json") {
            let text = serde_json::to_string_pretty(&summary).map_err(|e| RuntimeError::Internal(e.to_string()))?;
            std::fs::write(&path, text + "\n").map_err(output_err(&path))?;
        }
        // Waited for without holding the shared producer: a stream waiting for the broker
        // must not stop the other streams from sending.
        if let Some(timeout_s) = self.flush_timeout_s {
            let bus = self.bus.lock().map_err(|_| RuntimeError::Internal("event bus lock poisoned".into()))?;
            let flusher = bus.flusher();
            drop(bus);
            flusher.wait(std::time::Duration::from_secs(timeout_s))?;
        }
        // After the flush: a stream whose events could not be delivered leaves no video.
        if let Some(enc) = self.encoder.take() {
            enc.finish()?;
        }
        self.outputs.commit()?;
        Ok(summary)
    }
}
