use std::path::PathBuf;

/// Everything that can go wrong loading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The manifest file cannot be read.
    #[error("{}: cannot read model manifest: {reason}", path.display())]
    ManifestUnreadable { path: PathBuf, reason: String },
    /// The manifest is not valid TOML or has a wrong or unknown key.
    #[error("{}: invalid model manifest: {reason}", path.display())]
    ManifestInvalid { path: PathBuf, reason: String },
    /// The model file does not exist.
    #[error("model file {} not found ({hint})", path.display())]
    ModelMissing { path: PathBuf, hint: String },
    /// The model's inputs or outputs disagree with its manifest.
    #[error("model {} does not match its manifest: {reason}", path.display())]
    ModelMismatch { path: PathBuf, reason: String },
    /// The ONNX Runtime shared library cannot be found or loaded.
    #[error("ONNX Runtime library: {reason}")]
    Runtime { reason: String },
    /// ONNX Runtime rejected the model or failed while running it.
    #[error("ONNX Runtime, model {}: {reason}", path.display())]
    Session { path: PathBuf, reason: String },
    /// A GPU execution provider was asked for and cannot be used.
    #[error("{provider} was asked for (detector.backend) and cannot be used: {reason}")]
    Accelerator { provider: &'static str, reason: String },
    /// A frame does not have the size the model input needs.
    #[error("frame has {got} bytes, the model input needs {expected}")]
    FrameSize { got: usize, expected: usize },
    /// Another backend (the GPU kernels) failed; `backend` names it.
    #[error("{backend}: {reason}")]
    Backend { backend: String, reason: String },
    /// An output tensor has a shape the decoder cannot read.
    #[error("output `{output}` has shape {shape:?}, expected {expected}")]
    OutputShape { output: String, shape: Vec<i64>, expected: String },
}
