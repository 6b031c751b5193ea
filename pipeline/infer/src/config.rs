use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Numeric precision of the model to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// The manifest's `int8-file` if it has one (faster on CPUs), else its float model.
    #[default]
    Int8,
    /// Always the float model.
    Fp32,
}

/// Which inference backend runs the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// ONNX Runtime on the CPU, one single-threaded session per worker.
    #[default]
    OnnxruntimeCpu,
    /// ONNX Runtime's TensorRT and CUDA execution providers on `gpu-device` (a build with
    /// feature `tensorrt` and ONNX Runtime's GPU build); an error where they are missing.
    Tensorrt,
}

/// `[detector]` section of the analysis config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DetectorConfig {
    /// `onnxruntime-cpu` (default) or `tensorrt`.
    pub backend: BackendKind,
    /// CUDA device the `tensorrt` backend runs on.
    pub gpu_device: u32,
    /// Model manifest; unset means the bundled NanoDet-g manifest.
    pub manifest: Option<PathBuf>,
    /// Model file; unset means the manifest's file for `precision`, next to the manifest or
    /// in the model cache.
    pub model: Option<PathBuf>,
    /// `int8` (default: the manifest's quantised model when it has one) or `fp32`.
    pub precision: Precision,
    /// Confident-detection threshold; unset means the manifest's `thresholds.score`.
    pub score_threshold: Option<f32>,
    /// Candidates down to this score are kept for the tracker's second association.
    pub min_score: f32,
    /// NMS IoU; unset means the manifest's `thresholds.nms-iou`.
    pub nms_iou: Option<f32>,
    /// Parallel inference sessions (one single-threaded session per core is fastest);
    /// 0 means one per available core.
    pub workers: usize,
    /// Frames per inference call, across streams; 1 (default) sends each frame as soon as it
    /// is decoded. Above 1, the set-up's `<model>-batch.onnx` (dynamic batch dimension) is
    /// used when `model` is not set; a model with a fixed batch of 1 runs frames one by one.
    pub batch_size: usize,
    /// How long a worker waits for a batch to fill after its first frame, milliseconds.
    pub batch_deadline_ms: u64,
    /// Frames each stream may have between decoding and analysis (queued, in inference,
    /// awaiting tracking); 0 means twice the workers times the batch size.
    pub queue_frames: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            backend: BackendKind::default(),
            gpu_device: 0,
            manifest: None,
            model: None,
            precision: Precision::default(),
            score_threshold: None,
            min_score: 0.1,
            nms_iou: None,
            workers: 0,
            batch_size: 1,
            batch_deadline_ms: 5,
            queue_frames: 0,
        }
    }
}

impl DetectorConfig {
    pub fn validate(&self) -> Result<(), String> {
        let unit = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) { Ok(()) } else { Err(format!("detector.{name} must be within 0..1, got {v}")) }
        };
        unit("min-score", self.min_score)?;
        if let Some(s) = self.score_threshold {
            unit("score-threshold", s)?;
            if s < self.min_score {
                return Err(format!(
                    "detector.score-threshold ({s}) must not be below detector.min-score ({})",
                    self.min_score
                ));
            }
        }
        if let Some(v) = self.nms_iou {
            unit("nms-iou", v)?;
        }
        if !(1..=256).contains(&self.batch_size) {
            return Err(format!("detector.batch-size must be within 1..256, got {}", self.batch_size));
        }
        if self.queue_frames != 0 && self.queue_frames < self.batch_size {
            return Err(format!(
                "detector.queue-frames ({}) must be at least detector.batch-size ({}), or a batch never fills",
                self.queue_frames, self.batch_size
            ));
        }
        if self.workers > 1024 {
            return Err(format!("detector.workers must be at most 1024, got {}", self.workers));
        }
        if self.batch_deadline_ms > 10_000 {
            return Err(format!("detector.batch-deadline-ms must be at most 10000, got {}", self.batch_deadline_ms));
        }
        Ok(())
    }

    /// Frames each stream may have outstanding between decoding and analysis.
    pub fn resolved_queue_frames(&self) -> usize {
        if self.queue_frames > 0 { self.queue_frames } else { 2 * self.resolved_workers() * self.batch_size.max(1) }
    }

    /// Number of inference sessions to run.
    pub fn resolved_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }
    }
}
