//! GStreamer video sources and the annotated-video encoder.
//!
//! A [`FileSource`] decodes whatever `decodebin` handles (mp4, mkv, avi; H.264, H.265,
//! MPEG-4, ...), scales each frame to the model's input size *in the decoder's native pixel
//! format* and only then converts the small frame to packed BGR/RGB: converting full frames
//! first costs 35-40 % more CPU. Frames leave through an `appsink` with a bounded queue, so a
//! slow consumer stalls decoding instead of buffering without limit.
//!
//! A [`LiveCamera`] is an RTSP camera that reconnects on its own after faults; see its module.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod camera;
mod camera_url;
mod config;
mod cuda;
mod decoders;
mod encode;
mod error;
mod frame_source;
mod source;

pub use camera::{CameraMonitor, CameraSettings, CameraState, CameraStatus, LiveCamera, Transport};
pub use camera_url::CameraUrl;
pub use config::IngestConfig;
pub use cuda::cuda_memory_available;
pub use encode::{AnnotatedVideoWriter, EncoderSettings};
pub use error::IngestError;
pub use frame_source::{Backpressure, FrameSource};
pub use source::{DisplayFrame, FileSource, PixelOrder, SourceSpec, VideoFrame, VideoInfo};

/// Initialises GStreamer once per process; cheap to call again.
pub fn init() -> Result<(), IngestError> {
    gstreamer::init().map_err(|e| IngestError::Init { message: e.to_string() })
}

/// A clip encoded by `encode` (a launch line without its filesink) in a fresh folder named
/// for `test`: (the folder, the clip).
#[cfg(test)]
pub(crate) fn make_clip(test: &str, file: &str, encode: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use gstreamer::prelude::*;
    init().unwrap();
    let dir = std::env::temp_dir().join(format!("retail-ai-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join(file);
    let pipeline = gstreamer::parse::launch(&format!("{encode} ! filesink location={}", clip.display())).unwrap();
    pipeline.set_state(gstreamer::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let end = bus.timed_pop_filtered(gstreamer::ClockTime::from_seconds(30), &[gstreamer::MessageType::Eos]);
    pipeline.set_state(gstreamer::State::Null).unwrap();
    assert!(end.is_some(), "{encode}: no end of stream");
    (dir, clip)
}

/// Whether the GStreamer elements the pipeline needs are installed, as (element, found).
pub fn check_elements() -> Vec<(&'static str, bool)> {
    ["filesrc", "decodebin", "videoscale", "videoconvert", "appsink", "appsrc", "x264enc", "mp4mux", "avdec_h264"]
        .into_iter()
        .map(|name| (name, gstreamer::ElementFactory::find(name).is_some()))
        .collect()
}
