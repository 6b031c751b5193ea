use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::IngestError;

/// How the annotated video is encoded.
#[derive(Clone, Debug)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    /// Frame rate written into the container; frames carry their own timestamps.
    pub fps: f64,
    /// x264 speed preset; the faster, the less CPU is taken from analysis.
    pub speed_preset: &'static str,
}

/// Encodes RGBx frames to H.264 in an MP4 (or MKV, by extension) through GStreamer.
///
/// Writes to `<path>.partial` and renames on [`finish`](Self::finish), so an aborted run
/// leaves no half-written video behind.
pub struct AnnotatedVideoWriter {
    path: PathBuf,
    partial: PathBuf,
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    finished: bool,
}

impl AnnotatedVideoWriter {
    pub fn create(path: &Path, settings: &EncoderSettings) -> Result<Self, IngestError> {
        crate::init()?;
        let mux = match path.extension().and_then(|e| e.to_str()) {
            Some("mkv") => "matroskamux",
            _ => "mp4mux",
        };
        for element in ["appsrc", "videoconvert", "x264enc", mux, "filesink"] {
            if gst::ElementFactory::find(element).is_none() {
                return Err(IngestError::MissingElement { element: element.into() });
            }
        }
        let partial = partial_path(path);
        let err = |message: String| IngestError::Encode { path: path.to_owned(), message };
        let (num, den) = fps_fraction(settings.fps);
        let desc = format!(
            "appsrc name=src format=time ! video/x-raw,format=RGBx,width={},height={},framerate={num}/{den} ! \
             videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset={} ! h264parse ! {mux} ! filesink name=sink",
            settings.width, settings.height, settings.speed_preset
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| err(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| err("not a pipeline".into()))?;
        pipeline
            .by_name("sink")
            .ok_or_else(|| err("no filesink".into()))?
            .set_property("location", partial.to_string_lossy().as_ref());
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| err("no appsrc".into()))?;
        // Bounded: pushing blocks while the encoder is behind.
        src.set_max_bytes(settings.width as u64 * settings.height as u64 * 4 * 8);
        src.set_block(true);
        pipeline.set_state(gst::State::Playing).map_err(|e| err(e.to_string()))?;
        Ok(AnnotatedVideoWriter { path: path.to_owned(), partial, pipeline, src, finished: false })
    }

    /// Queues one frame (`width * height * 4` bytes of RGBx) for encoding.
    pub fn push(&mut self, rgbx: Vec<u8>, pts_ns: u64, duration_ns: Option<u64>) -> Result<(), IngestError> {
        let mut buffer = gst::Buffer::from_mut_slice(rgbx);
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(pts_ns));
            if let Some(d) = duration_ns {
                b.set_duration(gst::ClockTime::from_nseconds(d));
            }
        }
        self.src.push_buffer(buffer).map_err(|e| IngestError::Encode {
            path: self.path.clone(),
            message: self.bus_error().unwrap_or_else(|| format!("{e:?}")),
        })?;
        Ok(())
    }

    fn bus_error(&self) -> Option<String> {
        let msg = self.pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        }
    }

    /// Flushes the encoder, closes the file and moves it to its final name.
    pub fn finish(mut self) -> Result<PathBuf, IngestError> {
        let err = |message: String| IngestError::Encode { path: self.path.clone(), message };
        self.src.end_of_stream().map_err(|e| err(format!("{e:?}")))?;
        let bus = self.pipeline.bus().ok_or_else(|| err("no bus".into()))?;
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(120), &[gst::MessageType::Eos, gst::MessageType::Error]);
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {}
            Some(gst::MessageView::Error(e)) => return Err(err(e.error().to_string())),
            _ => return Err(err("encoder did not finish within 120 s".into())),
        }
        self.pipeline.set_state(gst::State::Null).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| err(e.to_string()))?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for AnnotatedVideoWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.pipeline.set_state(gst::State::Null);
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn fps_fraction(fps: f64) -> (i32, i32) {
    if !(fps.is_finite() && fps > 0.0) {
        return (25, 1);
    }
    let den = 1000;
    ((fps * den as f64).round() as i32, den)
}
