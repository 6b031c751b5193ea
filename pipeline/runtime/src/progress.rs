//! Progress and usage as values: what each stream has processed, delivered to the caller
//! (the CLI draws its bars from it; billing reads processed minutes from it). The library
//! never prints.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Mean time per frame in each stage, milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageLatency {
    /// Decoding and scaling one frame.
    pub decode_ms: f64,
    /// Waiting in the shared inference queue.
    pub queue_ms: f64,
    /// Inference, per frame (a batch's time divided among its frames).
    pub infer_ms: f64,
    /// Tracking, analytics and output writing.
    pub analyse_ms: f64,
}

/// Where one stream stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StreamProgress {
    /// Frames analysed.
    pub frames: u64,
    /// Frames dropped because the pipeline could not keep up (live sources only).
    pub frames_dropped: u64,
    /// Frames analysed without inference because they changed too little since the last
    /// inferred one (motion gating); they reuse the previous frame's detections.
    pub frames_gated: u64,
    /// Frames waiting for inference now: a live stream's backlog.
    pub frames_waiting: usize,
    /// Frames the source is expected to give (files), when known.
    pub expected_frames: Option<u64>,
    /// Seconds of video processed: the end of the last frame analysed.
    pub video_s: f64,
    /// Wall-clock seconds since the stream started.
    pub elapsed_s: f64,
    pub latency: StageLatency,
    /// The last report of the stream (it finished, failed or was cancelled).
    pub finished: bool,
}

/// Receives a stream's progress, at most every [`PROGRESS_EVERY`] and once at the end.
pub type ProgressFn = Arc<dyn Fn(&StreamProgress) + Send + Sync>;

pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Running totals behind [`StageLatency`].
#[derive(Default)]
pub(crate) struct StageTotals {
    pub decode: Duration,
    pub queue: Duration,
    pub infer: Duration,
    pub analyse: Duration,
}

impl StageTotals {
    pub fn means(&self, frames: u64) -> StageLatency {
        let ms = |d: Duration| if frames == 0 { 0.0 } else { d.as_secs_f64() * 1000.0 / frames as f64 };
        StageLatency {
            decode_ms: ms(self.decode),
            queue_ms: ms(self.queue),
            infer_ms: ms(self.infer),
            analyse_ms: ms(self.analyse),
        }
    }
}
