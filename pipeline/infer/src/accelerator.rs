//! Where ONNX Runtime runs the model: on the CPU, or (feature `tensorrt`) in TensorRT, with
//! CUDA for the nodes TensorRT does not take. The same ONNX file and manifest serve both. A
//! GPU asked for and missing is an error naming what is missing, never a silent CPU run.
//!
//! Through ONNX Runtime's execution providers, not bindings of TensorRT's own API: the
//! `tensorrt-rs` crate (0.3) targets TensorRT 5/7 and does not build against TensorRT 10.

use std::path::PathBuf;

use ort::ep::ExecutionProviderDispatch;

use crate::InferError;

/// Where the model runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Accelerator {
    #[default]
    Cpu,
    TensorRt(TensorRtOptions),
}

/// TensorRT's settings for one session.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRtOptions {
    /// CUDA device ordinal.
    pub device: i32,
    /// Let TensorRT pick FP16 kernels for the float model.
    pub fp16: bool,
    /// Run a quantised (QDQ) model's INT8 layers in INT8.
    pub int8: bool,
    /// Built engines and timing caches: the first session on a machine builds the engine
    /// (tens of seconds to minutes), later ones load it.
    pub engine_cache: PathBuf,
    /// Most frames per call: the engine's optimisation profile covers batches 1 to this.
    pub max_batch: usize,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions {
            device: 0,
            fp16: true,
            int8: false,
            engine_cache: crate::cache_dir().join("tensorrt"),
            max_batch: 1,
        }
    }
}

impl Accelerator {
    /// The backend's name in logs and `doctor`.
    pub fn name(&self) -> &'static str {
        match self {
            Accelerator::Cpu => "onnxruntime-cpu",
            Accelerator::TensorRt(_) => "tensorrt",
        }
    }

    /// The execution providers a session registers, each one failing the session when it
    /// cannot be used; `input` is the model input's name and per-frame shape (C, H, W).
    pub(crate) fn providers(&self, input: (&str, [i64; 3])) -> Result<Vec<ExecutionProviderDispatch>, InferError> {
        match self {
            Accelerator::Cpu => Ok(Vec::new()),
            Accelerator::TensorRt(options) => tensorrt::providers(options, input),
        }
    }
}

#[cfg(feature = "tensorrt")]
mod tensorrt {
    use ort::ep::{CUDA, ExecutionProvider, ExecutionProviderDispatch, TensorRT};

    use super::TensorRtOptions;
    use crate::InferError;

    pub(super) fn providers(
        o: &TensorRtOptions,
        (name, [c, h, w]): (&str, [i64; 3]),
    ) -> Result<Vec<ExecutionProviderDispatch>, InferError> {
        for (provider, available) in [("TensorRT", TensorRT::is_available()), ("CUDA", CUDA::is_available())] {
            match available {
                Ok(true) => {}
                Ok(false) => {
                    return Err(InferError::Accelerator {
                        provider,
                        reason: format!(
                            "the ONNX Runtime library loaded has no {provider} execution provider (a CPU build); \
                             point ORT_DYLIB_PATH at ONNX Runtime's GPU build, with TensorRT 10 and CUDA 12 installed"
                        ),
                    });
                }
                Err(e) => return Err(InferError::Accelerator { provider, reason: e.to_string() }),
            }
        }
        std::fs::create_dir_all(&o.engine_cache).map_err(|e| InferError::Accelerator {
            provider: "TensorRT",
            reason: format!("engine cache {}: {e}", o.engine_cache.display()),
        })?;
        let cache = o.engine_cache.display().to_string();
        let shape = |n: usize| format!("{name}:{n}x{c}x{h}x{w}");
        let trt = TensorRT::default()
            .with_device_id(o.device)
            .with_fp16(o.fp16)
            .with_int8(o.int8)
            .with_engine_cache(true)
            .with_engine_cache_path(&cache)
            .with_timing_cache(true)
            .with_timing_cache_path(&cache)
            // One engine for every batch size the pipeline sends, instead of one rebuilt per size.
            .with_profile_min_shapes(shape(1))
            .with_profile_opt_shapes(shape(o.max_batch.max(1)))
            .with_profile_max_shapes(shape(o.max_batch.max(1)));
        let cuda = CUDA::default().with_device_id(o.device);
        Ok(vec![trt.build().error_on_failure(), cuda.build().error_on_failure()])
    }
}

#[cfg(not(feature = "tensorrt"))]
mod tensorrt {
    use ort::ep::ExecutionProviderDispatch;

    use super::TensorRtOptions;
    use crate::InferError;

    pub(super) fn providers(
        _: &TensorRtOptions,
        _: (&str, [i64; 3]),
    ) -> Result<Vec<ExecutionProviderDispatch>, InferError> {
        Err(InferError::Accelerator {
            provider: "TensorRT",
            reason: "this build has no TensorRT support: build retail-ai with `--features tensorrt`".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_registers_nothing_and_tensorrt_is_named() {
        assert!(Accelerator::Cpu.providers(("data", [3, 416, 416])).unwrap().is_empty());
        assert_eq!(Accelerator::TensorRt(TensorRtOptions::default()).name(), "tensorrt");
    }
}
