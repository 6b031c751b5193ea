use std::path::PathBuf;
use std::sync::Arc;

use retail_bus::BusError;
use retail_infer::InferError;
use retail_ingest::IngestError;
use retail_lake::LakeError;

use crate::ConfigError;

/// Why a stream (or the engine) failed. Each message names the file, key, stream or value at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The video could not be decoded (missing, not a video, truncated, corrupt).
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The model or ONNX Runtime failed to load.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// Inference failed on a batch holding frames of this stream.
    #[error("stream {stream}: inference failed: {source}")]
    Inference {
        stream: String,
        #[source]
        source: Arc<InferError>,
    },
    /// An inference worker gave no result for a frame of this stream (it panicked, or
    /// returned the wrong number of results).
    #[error("stream {stream}: inference failed: {reason}")]
    InferenceWorker { stream: String, reason: String },
    /// Writing the Parquet aggregates failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Publishing events failed (spool full, broker unreachable at the end of the run).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// An output file could not be created or written.
    #[error("{}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value given by the caller is invalid (stream id, output folder).
    #[error("{0}")]
    Usage(String),
    /// The stream was cancelled before it finished; nothing was written.
    #[error("stream {stream}: cancelled")]
    Cancelled { stream: String },
    /// A pipeline thread stopped unexpectedly (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}
