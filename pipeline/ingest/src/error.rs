use std::path::PathBuf;

/// Everything that can go wrong turning a file into frames or frames into a video.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// GStreamer itself could not be initialised (libraries missing or broken).
    #[error("cannot initialise GStreamer: {message}")]
    Init { message: String },
    /// A GStreamer element the pipeline needs is not installed.
    #[error("GStreamer element `{element}` is missing (install the GStreamer plugin packages; see README)")]
    MissingElement { element: String },
    /// The input file does not exist or cannot be read.
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    /// GStreamer could not recognise the file as media it can decode.
    #[error("{}: not a video GStreamer can decode ({message})", path.display())]
    NotVideo { path: PathBuf, message: String },
    /// The file holds no video stream, or the stream ended before the first frame.
    #[error("{}: no video frames", path.display())]
    NoFrames { path: PathBuf },
    /// The file is media, but none of its streams is video GStreamer can decode.
    #[error("{}: no decodable video stream in the file ({detail})", path.display())]
    NoVideoStream { path: PathBuf, detail: String },
    /// Decoding failed part-way through (corrupt data).
    #[error("{}: decoding failed after {frames} frames at {position_s:.2} s: {message}", path.display())]
    Decode { path: PathBuf, frames: u64, position_s: f64, message: String },
    /// The file is shorter than the size its own header declares (an interrupted upload or copy).
    #[error("{}: truncated video: the file has {actual} bytes but its header declares {declared}", path.display())]
    TruncatedFile { path: PathBuf, actual: u64, declared: u64 },
    /// The stream ended well before the duration its container announces.
    #[error(
        "{}: truncated video: frames end at {decoded_s:.2} s but the container says {duration_s:.2} s",
        path.display()
    )]
    Truncated { path: PathBuf, decoded_s: f64, duration_s: f64 },
    /// Building or running an internal GStreamer pipeline failed.
    #[error("GStreamer pipeline for {context}: {message}")]
    Pipeline { context: String, message: String },
    /// Encoding the annotated video failed.
    #[error("{}: writing annotated video failed: {message}", path.display())]
    Encode { path: PathBuf, message: String },
}
