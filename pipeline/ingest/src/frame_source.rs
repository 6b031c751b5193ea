//! The frame-source seam: where a stream's frames come from. The GStreamer file source
//! implements it now; RTSP cameras and device-memory (GPU) frames plug in beside it without
//! touching the stages after it.

use crate::{FileSource, IngestError, VideoFrame, VideoInfo};

/// What to do with a new frame when the pipeline behind a source is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait for room: a file loses nothing by waiting.
    Wait,
    /// Drop the oldest waiting frame and count it: a live camera must stay current.
    DropOldest,
}

/// A source of decoded frames for one stream.
pub trait FrameSource: Send {
    /// Size, rate and (for files) length of the video.
    fn info(&self) -> &VideoInfo;
    /// The next frame, or `None` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<VideoFrame>, IngestError>;
    /// How the pipeline treats this source when it cannot keep up.
    fn backpressure(&self) -> Backpressure;
    /// A name for logs and errors (a file path, a camera URL without credentials).
    fn describe(&self) -> String;
}

impl FrameSource for FileSource {
    fn info(&self) -> &VideoInfo {
        FileSource::info(self)
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, IngestError> {
        FileSource::next_frame(self)
    }

    fn backpressure(&self) -> Backpressure {
        Backpressure::Wait
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}
