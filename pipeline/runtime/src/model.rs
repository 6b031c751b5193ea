//! The model a config asks for: manifest, file and thresholds, resolved once.

use std::path::PathBuf;

use retail_core::StreamId;
use retail_infer::{Accelerator, Detector, InferError, Manifest, Precision, TensorRtOptions};
use retail_ingest::{PixelOrder, SourceSpec};

use crate::{Config, RuntimeError};

/// The resolved model: manifest, model file and thresholds.
pub struct ModelChoice {
    pub manifest: Manifest,
    pub model_path: PathBuf,
    pub score_threshold: f32,
    pub min_score: f32,
    pub nms_iou: f32,
}

impl ModelChoice {
    /// The detector's score threshold for `config`: its own, or the model manifest's.
    pub fn score_threshold(config: &Config) -> Result<f32, RuntimeError> {
        let d = &config.detector;
        let manifest = match &d.manifest {
            Some(p) => Manifest::load(p)?,
            None => Manifest::bundled(),
        };
        Ok(d.score_threshold.unwrap_or(manifest.thresholds.score))
    }

    pub fn resolve(config: &Config) -> Result<Self, RuntimeError> {
        let d = &config.detector;
        let manifest = match &d.manifest {
            Some(p) => Manifest::load(p)?,
            None => Manifest::bundled(),
        };
        let mut model_path = manifest.resolve_model(d.model.as_deref(), d.manifest.as_deref(), d.precision)?;
        if d.batch_size > 1 && d.model.is_none() {
            model_path = batch_variant(model_path);
        }
        let score_threshold = d.score_threshold.unwrap_or(manifest.thresholds.score);
        let nms_iou = d.nms_iou.unwrap_or(manifest.thresholds.nms_iou);
        Ok(ModelChoice { min_score: d.min_score.min(score_threshold), manifest, model_path, score_threshold, nms_iou })
    }

    /// One single-threaded ONNX Runtime session on `accelerator`, taking up to `batch` frames
    /// per call (1 for a fixed-batch model).
    pub fn load_detector(&self, batch: usize, accelerator: &Accelerator) -> Result<Detector, InferError> {
        let mut d = Detector::load_on(
            &self.manifest,
            &self.model_path,
            1,
            vec![self.manifest.labels.person],
            (self.min_score, self.nms_iou),
            accelerator,
        )?;
        d.set_max_batch(batch);
        Ok(d)
    }

    /// Where the config's `detector.backend` runs the model.
    pub fn accelerator(config: &Config, batch: usize) -> Accelerator {
        let d = &config.detector;
        match d.backend {
            retail_infer::BackendKind::OnnxruntimeCpu => Accelerator::Cpu,
            retail_infer::BackendKind::Tensorrt => Accelerator::TensorRt(TensorRtOptions {
                device: d.gpu_device.min(i32::MAX as u32) as i32,
                // The quantised model's Q/DQ layers run in INT8; the float one in FP16.
                int8: d.precision == Precision::Int8,
                max_batch: batch,
                ..TensorRtOptions::default()
            }),
        }
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

/// The set-up's copy of `model` with a dynamic batch dimension (`<stem>-batch.onnx` beside
/// it), when there is one; else `model`, which then runs one frame per call.
fn batch_variant(model: PathBuf) -> PathBuf {
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let batch = model.with_file_name(format!("{stem}-batch.onnx"));
    if batch.is_file() {
        batch
    } else {
        tracing::warn!(model = %model.display(), "no -batch.onnx beside the model (scripts/setup.sh makes it): one frame per call");
        model
    }
}
