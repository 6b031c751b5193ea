//! From frames to detections: model manifests, preprocessing (the CPU reference), ONNX
//! Runtime inference, model-output decoders and non-maximum suppression.
//!
//! A model is described by a TOML [`Manifest`] (input name, shape, layout, channel order,
//! normalisation, output decoder, labels). The decoder is chosen by the manifest through the
//! [`OutputDecoder`] trait, so a customer's YOLOv8-style export works without code changes.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod accelerator;
mod backend;
mod config;
mod decode;
mod detector;
mod error;
mod manifest;
mod nms;
mod preprocess;
mod runtime;

pub use accelerator::{Accelerator, TensorRtOptions};
pub use backend::{FrameRef, InferenceBackend};
pub use config::{BackendKind, DetectorConfig, Precision};
pub use decode::{NanoDetDecoder, OutputDecoder, TensorView, YoloV8Decoder, decoder_for};
pub use detector::{Detector, ModelSession, open_session};
pub use error::InferError;
pub use manifest::{ChannelOrder, DecoderSpec, InputSpec, LevelSpec, Manifest, Thresholds};
pub use nms::nms;
pub use preprocess::Normalizer;
pub use runtime::{RuntimeInfo, cache_dir, find_onnxruntime, init_runtime};
