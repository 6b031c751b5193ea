//! The model a config asks for: manifest, file and thresholds, resolved once.

use std::path::PathBuf;

use retail_core::{CudaContextRef, StreamId};
use retail_infer::{Accelerator, Detector, InferError, InferenceBackend, Manifest, Precision, TensorRtOptions};
use retail_ingest::{PixelOrder, SourceSpec};

use crate::{Config, RuntimeError};

/// The resolved model: manifest, model file and thresholds.
pub struct ModelChoice {
    pub manifest: Manifest,
    pub model_path: PathBuf,
    pub score_threshold: f32,
    pub min_score: f32,
    pub nms_iou: f32,
    /// The sources hand the model I420 frames at their own size, which the GPU kernels
    /// resize and convert (`detector.backend = "tensorrt"` in a build with the `tensorrt`
    /// feature); else packed pixels at the model's input size.
    pub yuv_frames: bool,
    /// With [`yuv_frames`](Self::yuv_frames), where GStreamer can decode into CUDA memory
    /// (nvcodec's elements, a driver): the GPU's context, shared with the decoders, and the
    /// frames stay on the GPU. Else they are decoded on the CPU and uploaded as I420.
    pub cuda: Option<CudaContextRef>,
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
        let yuv_frames = cfg!(feature = "tensorrt") && d.backend == retail_infer::BackendKind::Tensorrt;
        let cuda = if yuv_frames { cuda_memory(d.gpu_device) } else { None };
        Ok(ModelChoice {
            min_score: d.min_score.min(score_threshold),
            manifest,
            model_path,
            score_threshold,
            nms_iou,
            yuv_frames,
            cuda,
        })
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

    /// One inference worker's backend: the ONNX Runtime detector fed packed pixels, or (with
    /// [`yuv_frames`](Self::yuv_frames)) the GPU kernels with TensorRT fed I420.
    pub fn load_backend(
        &self,
        config: &Config,
        batch: usize,
        accelerator: &Accelerator,
    ) -> Result<Box<dyn InferenceBackend>, InferError> {
        if self.yuv_frames {
            return self.load_gpu(config, batch, accelerator);
        }
        Ok(Box::new(self.load_detector(batch, accelerator)?))
    }

    #[cfg(feature = "tensorrt")]
    fn load_gpu(
        &self,
        config: &Config,
        batch: usize,
        accelerator: &Accelerator,
    ) -> Result<Box<dyn InferenceBackend>, InferError> {
        use retail_kernels::{DecodeSettings, Resize, YuvDetector, gpu::Gpu};
        let settings = DecodeSettings {
            classes: vec![self.manifest.labels.person],
            min_score: self.min_score,
            nms_iou: self.nms_iou,
        };
        let kernels = |e: retail_kernels::KernelError| InferError::Backend {
            backend: "GPU kernels".into(),
            reason: e.to_string(),
        };
        let gpu = Gpu::new(config.detector.gpu_device as usize).map_err(kernels)?;
        let mut d = YuvDetector::load(gpu, &self.manifest, &self.model_path, accelerator, Resize::Stretch, settings)
            .map_err(kernels)?;
        d.set_max_batch(batch);
        Ok(Box::new(d))
    }

    #[cfg(not(feature = "tensorrt"))]
    fn load_gpu(&self, _: &Config, _: usize, _: &Accelerator) -> Result<Box<dyn InferenceBackend>, InferError> {
        Err(InferError::Accelerator {
            provider: "TensorRT",
            reason: "this build has no TensorRT support: build retail-ai with `--features tensorrt`".into(),
        })
    }

    pub fn source_spec(&self, stream: StreamId, display: bool) -> SourceSpec {
        let (width, height) = self.manifest.input_size();
        let order = match self.manifest.input.channel_order {
            _ if self.cuda.is_some() => PixelOrder::CudaYuv,
            _ if self.yuv_frames => PixelOrder::I420,
            retail_infer::ChannelOrder::Bgr => PixelOrder::Bgr,
            retail_infer::ChannelOrder::Rgb => PixelOrder::Rgb,
        };
        SourceSpec { stream, width, height, order, display, cuda: self.cuda.clone(), software_decoding: false }
    }
}

/// The GPU's context for decoding into CUDA memory, where GStreamer can (see
/// [`ModelChoice::cuda`]).
#[cfg(feature = "tensorrt")]
fn cuda_memory(ordinal: u32) -> Option<CudaContextRef> {
    if !retail_ingest::cuda_memory_available() {
        tracing::info!("no GStreamer CUDA elements here: frames are decoded on the CPU and uploaded as I420");
        return None;
    }
    match retail_kernels::gpu::shared_context(ordinal as usize) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            tracing::warn!(error = %e, "no CUDA context for the decoders: frames are decoded on the CPU");
            None
        }
    }
}

#[cfg(not(feature = "tensorrt"))]
fn cuda_memory(_: u32) -> Option<CudaContextRef> {
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tensorrt_config() -> Config {
        let mut config = Config::default();
        config.detector.backend = retail_infer::BackendKind::Tensorrt;
        config
    }

    #[test]
    fn the_cpu_backend_takes_packed_frames_at_the_model_size() {
        let model = ModelChoice::resolve(&Config::default()).unwrap();
        assert!(!model.yuv_frames);
        let spec = model.source_spec("s".into(), false);
        assert_eq!((spec.order, spec.width, spec.height), (PixelOrder::Bgr, 416, 416));
    }

    /// With the feature, TensorRT is fed I420 by the GPU kernels; without a driver that is an
    /// error naming what is missing, not a CPU detector.
    #[cfg(feature = "tensorrt")]
    #[test]
    fn tensorrt_takes_i420_for_the_gpu_kernels_or_says_what_is_missing() {
        let config = tensorrt_config();
        let model = ModelChoice::resolve(&config).unwrap();
        assert!(model.yuv_frames);
        let spec = model.source_spec("s".into(), false);
        if retail_ingest::cuda_memory_available() && retail_kernels::gpu::driver_present() {
            // nvcodec works here: decoded into CUDA memory in the kernels' context.
            assert_eq!(spec.order, PixelOrder::CudaYuv);
            assert_eq!(spec.cuda.map(|c| c.device), Some(0));
        } else {
            // No nvcodec CUDA elements (no driver): decoded on the CPU, uploaded as I420.
            assert!(model.cuda.is_none() && spec.cuda.is_none());
            assert_eq!(spec.order, PixelOrder::I420);
        }
        if retail_kernels::gpu::driver_present() {
            return; // a GPU machine: the session's own errors are tested by retail-infer
        }
        let err = model.load_backend(&config, 4, &ModelChoice::accelerator(&config, 4)).err().unwrap();
        assert!(err.to_string().starts_with("GPU kernels: no CUDA driver"), "{err}");
    }

    #[cfg(not(feature = "tensorrt"))]
    #[test]
    fn without_the_feature_tensorrt_is_an_error_naming_it() {
        let config = tensorrt_config();
        let model = ModelChoice::resolve(&config).unwrap();
        assert!(!model.yuv_frames);
        let err = model.load_backend(&config, 4, &ModelChoice::accelerator(&config, 4)).err().unwrap();
        assert!(err.to_string().contains("--features tensorrt"), "{err}");
    }
}
