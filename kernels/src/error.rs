/// Everything that can go wrong preparing, compiling or running a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A frame of the batch cannot be read safely (size, pitch or plane length).
    #[error("frame {index} of the batch: {why}")]
    Frame { index: usize, why: String },
    /// A model input (size, normalisation) the kernels cannot produce.
    #[error("model input: {why}")]
    Input { why: String },
    /// A model output or decoder setting that does not fit the decoder.
    #[error("decoder input `{what}`: {why}")]
    Decoder { what: String, why: String },
    /// More candidates above the score threshold than the buffer holds.
    #[error(
        "{count} candidates above the score threshold, the buffer holds {capacity}: raise the threshold or the capacity"
    )]
    TooManyCandidates { count: u64, capacity: usize },
    /// No CUDA driver library (libcuda.so.1) on this machine.
    #[error("no CUDA driver (libcuda.so.1) on this machine: run on the CPU")]
    NoDriver,
    /// No NVRTC library to compile the kernels with.
    #[error(
        "no NVRTC library (libnvrtc.so.13) on the library path: install the nvidia-cuda-nvrtc wheel and add its lib folder to LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    /// NVRTC rejected a kernel source.
    #[error("compiling kernel source `{kernel}` for {arch}: {log}")]
    Compile { kernel: &'static str, arch: String, log: String },
    /// The model could not be opened or does not match its manifest.
    #[error("{source}")]
    Infer {
        #[source]
        source: retail_infer::InferError,
    },
    /// ONNX Runtime failed to allocate, bind or run the model's tensors.
    #[error("ONNX Runtime {what} for {path}: {reason}")]
    Runtime { what: &'static str, path: std::path::PathBuf, reason: String },
    /// A CUDA driver call failed.
    #[cfg(feature = "cuda")]
    #[error("CUDA {what}: {source}")]
    Driver {
        what: &'static str,
        #[source]
        source: cudarc::driver::DriverError,
    },
}
