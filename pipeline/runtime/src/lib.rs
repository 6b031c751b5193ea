//! The pipeline as a library: one engine that the CLI, the server and camera workers drive
//! the same way.
//!
//! - [`FrameSource`](retail_ingest::FrameSource) is where frames come from (files now;
//!   cameras and device memory plug in beside them).
//! - [`InferenceBackend`](retail_infer::InferenceBackend) turns a batch of frames of any
//!   streams into detections (ONNX Runtime on the CPU now).
//! - [`Engine`] runs any number of streams over a shared pool of inference workers, with
//!   cross-stream batching and bounded queues; each stream has its own tracker, analytics,
//!   event time and outputs, can be cancelled alone, and reports [`StreamProgress`] values.
//! - [`Worker`] runs live cameras on the engine, adding and removing them while it runs.
//! - [`Config`] is the one TOML file, loaded and validated without the CLI.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod config;
mod draw;
mod engine;
mod error;
mod files;
mod gate;
mod live;
mod model;
mod outputs;
mod progress;
pub mod queue;
mod stream;
mod summary;

pub use config::{
    AnalyticsSettings, CameraConfig, Config, ConfigError, JobAnalysis, JobStream, LiveSettings, ServerSettings,
    StartTime, StreamConfig,
};
pub use engine::{Batching, Engine, StreamHandle};
pub use error::RuntimeError;
pub use files::{FilesProgress, FilesRequest, analyze_files, file_job, stream_id_for};
pub use live::{CameraReport, Changes, Worker};
pub use model::ModelChoice;
pub use outputs::format_time;
pub use progress::{PROGRESS_EVERY, ProgressFn, StageLatency, StreamProgress};
pub use stream::{OutputSpec, SharedBus, StreamJob};
pub use summary::{LineSummary, Summary, VideoSummary, ZoneSummary};
