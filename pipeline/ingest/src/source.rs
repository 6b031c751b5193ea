use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use retail_core::{CudaContextRef, DevicePicture, StreamId, YuvColour, YuvMatrix};

use crate::{IngestConfig, IngestError};

/// Layout of the frames handed to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelOrder {
    /// Packed 8-bit BGR at the spec's size.
    Bgr,
    /// Packed 8-bit RGB at the spec's size.
    Rgb,
    /// Planar YUV 4:2:0 at the video's own size (cropped to even sides): Y, then U, then V,
    /// rows packed, chroma planes half the size. For the GPU kernels, which resize and
    /// convert on the device; the spec's size is not used.
    I420,
    /// NV12 or I420 at the video's own size, left in GPU memory (`memory:CUDAMemory`, from
    /// NVDEC or uploaded by `cudaupload`) for the kernels: frames carry a
    /// [`DevicePicture`] and no host pixels. Needs the `cuda` feature and the spec's
    /// [`cuda`](SourceSpec::cuda) context.
    CudaYuv,
}

impl PixelOrder {
    /// The branch from the decoder to the model's appsink: scaled and converted by
    /// GStreamer for packed frames, only converted for I420. Its first element is `scale`.
    pub(crate) fn model_branch(self, (w, h): (u32, u32)) -> String {
        let format = match self {
            PixelOrder::Bgr => "BGR",
            PixelOrder::Rgb => "RGB",
            PixelOrder::I420 => return "videoscale name=scale ! videoconvert ! video/x-raw,format=I420".into(),
            // `cudaupload` passes CUDA memory through and uploads what a software decoder gave.
            PixelOrder::CudaYuv => {
                return "cudaupload name=scale ! cudaconvert ! \
                        video/x-raw(memory:CUDAMemory),format=(string){ NV12, I420 }"
                    .into();
            }
        };
        // Scale first, in the decoder's format (no format in the first caps), then convert.
        format!(
            "videoscale name=scale ! video/x-raw,width={w},height={h} ! videoconvert ! \
             video/x-raw,format={format},width={w},height={h}"
        )
    }

    /// What `decodebin` may hand on: any raw video for the CUDA branch (NVDEC's CUDA memory
    /// included), else system memory.
    pub(crate) fn decoded_caps(self) -> &'static str {
        match self {
            PixelOrder::CudaYuv => "\"video/x-raw(ANY)\"",
            _ => "video/x-raw",
        }
    }

    /// The order of the same frames decoded on the CPU: the CUDA branch's become I420,
    /// which the GPU kernels upload; the others stay as they are.
    pub fn on_cpu(self) -> PixelOrder {
        match self {
            PixelOrder::CudaYuv => PixelOrder::I420,
            order => order,
        }
    }

    /// GStreamer elements the model branch needs beyond the common ones.
    pub(crate) fn elements(self) -> &'static [&'static str] {
        match self {
            PixelOrder::CudaYuv => &["cudaupload", "cudaconvert", "cudadownload"],
            _ => &[],
        }
    }

    /// The start of the annotation branch: frames in CUDA memory are downloaded there, so
    /// that both branches of the tee accept CUDA memory and the decoder keeps it.
    pub(crate) fn display_head(self) -> &'static str {
        match self {
            PixelOrder::CudaYuv => "cudadownload ! videoconvert",
            _ => "videoconvert",
        }
    }

    /// A mapped sample's picture, rows packed. I420 is cropped to even sides (an odd last
    /// row or column dropped), as the GPU kernels sample chroma in 2x2 blocks.
    pub(crate) fn pack(self, data: &[u8], info: &gst_video::VideoInfo) -> Result<Packed, String> {
        let (w, h) = (info.width() as usize, info.height() as usize);
        let colour = yuv_colour(info);
        let plane = |p: usize, row: usize, rows: usize| -> Result<Vec<u8>, String> {
            let (offset, stride) = (info.offset()[p], info.stride()[p] as usize);
            let end = offset + stride * rows.saturating_sub(1) + row;
            let at = data.get(offset..).filter(|_| rows == 0 || end <= data.len()).ok_or_else(|| {
                format!("buffer of {} bytes is too short for plane {p} of a {w}x{h} frame", data.len())
            })?;
            Ok(pack_rows(at, stride, row, rows))
        };
        match self {
            PixelOrder::Bgr | PixelOrder::Rgb => {
                Ok(Packed { pixels: plane(0, w * 3, h)?, width: w as u32, height: h as u32, colour, device: None })
            }
            PixelOrder::I420 => {
                let (w, h) = (w & !1, h & !1);
                let mut pixels = plane(0, w, h)?;
                pixels.extend(plane(1, w / 2, h / 2)?);
                pixels.extend(plane(2, w / 2, h / 2)?);
                Ok(Packed { pixels, width: w as u32, height: h as u32, colour, device: None })
            }
            PixelOrder::CudaYuv => Err("pictures in CUDA memory are not packed on the host".into()),
        }
    }
}

/// A sample's picture as the spec asks: packed on the host, or left in GPU memory.
pub(crate) fn picture(
    spec: &SourceSpec,
    buffer: &gst::BufferRef,
    info: &gst_video::VideoInfo,
) -> Result<Packed, String> {
    if spec.order == PixelOrder::CudaYuv {
        let device = crate::cuda::picture(spec, buffer.to_owned(), (info.width(), info.height()))?;
        let (width, height) = (device.width, device.height);
        return Ok(Packed { pixels: Vec::new(), width, height, colour: yuv_colour(info), device: Some(device) });
    }
    let map = buffer.map_readable().map_err(|e| e.to_string())?;
    spec.order.pack(map.as_slice(), info)
}

/// A decoded picture, packed.
pub(crate) struct Packed {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub colour: YuvColour,
    pub device: Option<DevicePicture>,
}

/// The video's YUV colorimetry, as GStreamer negotiated it (it fills in a default for video
/// that does not say).
pub(crate) fn yuv_colour(info: &gst_video::VideoInfo) -> YuvColour {
    let c = info.colorimetry();
    let matrix = match c.matrix() {
        gst_video::VideoColorMatrix::Bt709 => YuvMatrix::Bt709,
        gst_video::VideoColorMatrix::Bt2020 => YuvMatrix::Bt2020,
        _ => YuvMatrix::Bt601,
    };
    YuvColour { matrix, full_range: c.range() == gst_video::VideoColorRange::Range0_255 }
}

/// What a source should produce.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Stream the frames belong to; every frame carries it.
    pub stream: StreamId,
    /// Size of the model-input frames (plain resize, no letterbox).
    pub width: u32,
    pub height: u32,
    pub order: PixelOrder,
    /// Also hand on each frame at its original size as RGBx, for drawing an annotated video.
    pub display: bool,
    /// For [`PixelOrder::CudaYuv`]: the kernels' CUDA context, which the decoder must
    /// allocate in.
    pub cuda: Option<CudaContextRef>,
    /// Keep the GPU's decoders (nvcodec's NVDEC ones) out of `decodebin`'s choice: set by
    /// [`SourceSpec::on_cpu`].
    pub software_decoding: bool,
}

impl SourceSpec {
    /// The same source decoded on the CPU, after a fault of the GPU's decoding: software
    /// decoders only, frames in host memory ([`PixelOrder::on_cpu`]). `None` when this one
    /// decodes on the CPU already.
    pub fn on_cpu(&self) -> Option<SourceSpec> {
        (!self.software_decoding).then(|| SourceSpec {
            order: self.order.on_cpu(),
            cuda: None,
            software_decoding: true,
            ..self.clone()
        })
    }
}

/// Facts about the decoded stream, known after preroll.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Decoded frame size before scaling.
    pub width: u32,
    pub height: u32,
    /// Frames per second from the caps, when the stream declares one.
    pub fps: Option<f64>,
    /// Duration the container announces.
    pub duration_ns: Option<u64>,
}

impl VideoInfo {
    /// Frame count estimated from duration and rate, for progress reporting.
    pub fn estimated_frames(&self) -> Option<u64> {
        Some((self.duration_ns? as f64 / 1e9 * self.fps?).round() as u64)
    }
}

/// A full-size frame in packed RGBx, for annotation.
#[derive(Clone, Debug)]
pub struct DisplayFrame {
    pub width: u32,
    pub height: u32,
    /// `width * height * 4` bytes, rows packed.
    pub rgbx: Vec<u8>,
}

/// One decoded frame, scaled to the model's input size.
#[derive(Clone, Debug)]
pub struct VideoFrame {
    pub stream: StreamId,
    /// 0-based position in the stream.
    pub index: u64,
    pub pts_ns: u64,
    pub duration_ns: Option<u64>,
    /// The picture in the spec's [`PixelOrder`], rows packed: `width * height * 3` bytes of
    /// BGR or RGB, or the three planes of I420.
    pub pixels: Vec<u8>,
    /// Size of the picture in `pixels`: the spec's, or the video's own for I420.
    pub width: u32,
    pub height: u32,
    /// The decoded video's YUV colorimetry (what I420 `pixels` are in).
    pub colour: YuvColour,
    /// For [`PixelOrder::CudaYuv`]: the picture in GPU memory (`pixels` is then empty).
    pub device: Option<DevicePicture>,
    pub display: Option<DisplayFrame>,
}

/// Decodes one video file into frames; see the crate docs for the pipeline.
pub struct FileSource {
    path: PathBuf,
    pipeline: gst::Pipeline,
    model_sink: gst_app::AppSink,
    display_sink: Option<gst_app::AppSink>,
    info: VideoInfo,
    spec: SourceSpec,
    config: IngestConfig,
    next_index: u64,
    last_end_ns: u64,
    /// The last frame handed on, where decoding on the CPU resumes after a GPU fault.
    last_pts_ns: Option<u64>,
    /// The first frame of the CPU's decoding after a GPU fault, not yet handed on.
    pending: Option<VideoFrame>,
    /// Set when the last error was a fault of the GPU's decoding (see [`crate::decoders`]).
    gpu_fault: std::cell::Cell<bool>,
    finished: bool,
}

const PREROLL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

impl FileSource {
    /// Opens `path` and prerolls the pipeline, so that a file that is not a video fails here,
    /// before any output is written.
    ///
    /// Where the GPU's decoding fails (NVDEC out of sessions, a CUDA error; see
    /// [`crate::decoders`]), here or in the middle of the file, the file is decoded on the
    /// CPU instead ([`SourceSpec::on_cpu`]), from the frame after the last one handed on.
    pub fn open(path: &Path, spec: SourceSpec, config: &IngestConfig) -> Result<Self, IngestError> {
        crate::init()?;
        let meta = std::fs::metadata(path)
            .map_err(|e| IngestError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
        if !meta.is_file() {
            return Err(IngestError::Unreadable { path: path.to_owned(), reason: "not a regular file".into() });
        }
        if meta.len() == 0 {
            return Err(IngestError::NotVideo { path: path.to_owned(), message: "file is empty".into() });
        }
        check_declared_size(path, meta.len())?;
        let mut source = Self::build(path, spec, config)?;
        match source.preroll() {
            Ok(()) => Ok(source),
            Err(e) => match source.spec.on_cpu().filter(|_| source.gpu_fault.get()) {
                Some(host) => {
                    drop(source);
                    gpu_fallback_warning(path, &e);
                    let mut source = Self::build(path, host, config)?;
                    source.preroll()?;
                    metrics::counter!("retail_gpu_decode_fallbacks_total").increment(1);
                    Ok(source)
                }
                None => Err(e),
            },
        }
    }

    /// The pipeline for `spec`, not started.
    fn build(path: &Path, spec: SourceSpec, config: &IngestConfig) -> Result<Self, IngestError> {
        let common = ["filesrc", "decodebin", "videoscale", "videoconvert", "appsink"];
        for &element in common.iter().chain(spec.order.elements()) {
            if gst::ElementFactory::find(element).is_none() {
                return Err(IngestError::MissingElement { element: element.into() });
            }
        }
        let caps = spec.order.decoded_caps();
        let model_branch = format!("{} ! appsink name=model", spec.order.model_branch((spec.width, spec.height)));
        // decodebin stops at raw video; other streams (audio, subtitles) come out undecoded
        // and go to a fakesink, so they cost nothing and never stall the demuxer.
        let desc = if spec.display {
            format!(
                "filesrc name=src ! decodebin name=dec caps={caps}  tee name=head \
                 head. ! queue max-size-buffers=4 ! {model_branch} \
                 head. ! queue max-size-buffers=4 ! {display} ! video/x-raw,format=RGBx ! appsink name=display",
                display = spec.order.display_head()
            )
        } else {
            format!("filesrc name=src ! decodebin name=dec caps={caps}  {model_branch}")
        };
        let pipeline_err = |message: String| IngestError::Pipeline { context: path.display().to_string(), message };
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| pipeline_err(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| pipeline_err("not a pipeline".into()))?;
        let head = pipeline
            .by_name(if spec.display { "head" } else { "scale" })
            .ok_or_else(|| pipeline_err("no head element".into()))?;
        let decodebin = pipeline.by_name("dec").ok_or_else(|| pipeline_err("no decodebin".into()))?;
        if spec.order == PixelOrder::CudaYuv {
            crate::cuda::attach(&pipeline, &decodebin, &spec).map_err(pipeline_err)?;
        } else if spec.software_decoding {
            crate::decoders::software_decoders_only(&decodebin);
        }
        link_video_only(&decodebin, head, &pipeline);
        let src = pipeline.by_name("src").ok_or_else(|| pipeline_err("no filesrc".into()))?;
        src.set_property("location", path.to_string_lossy().as_ref());
        let sink = |name: &str| -> Result<gst_app::AppSink, IngestError> {
            let sink = pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                .ok_or_else(|| pipeline_err(format!("no appsink {name}")))?;
            sink.set_max_buffers(config.queue_frames);
            sink.set_drop(false);
            sink.set_property("sync", false);
            Ok(sink)
        };
        let model_sink = sink("model")?;
        let display_sink = if spec.display { Some(sink("display")?) } else { None };

        Ok(FileSource {
            path: path.to_owned(),
            pipeline,
            model_sink,
            display_sink,
            info: VideoInfo { width: 0, height: 0, fps: None, duration_ns: None },
            spec,
            config: config.clone(),
            next_index: 0,
            last_end_ns: 0,
            last_pts_ns: None,
            pending: None,
            gpu_fault: std::cell::Cell::new(false),
            finished: false,
        })
    }

    fn preroll(&mut self) -> Result<(), IngestError> {
        if let Err(e) = self.pipeline.set_state(gst::State::Paused) {
            return Err(self.bus_error().unwrap_or_else(|| self.not_video(e.to_string())));
        }
        let bus = self.pipeline.bus().expect("a pipeline always has a bus");
        let deadline = Instant::now() + PREROLL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.not_video(format!("no video stream found within {} s", PREROLL_TIMEOUT.as_secs())));
            }
            let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(left.as_millis() as u64),
                &[gst::MessageType::Error, gst::MessageType::AsyncDone, gst::MessageType::Eos],
            ) else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Error(err) => {
                    self.gpu_fault.set(crate::decoders::gpu_fault(err, &self.pipeline));
                    let video_linked = self
                        .pipeline
                        .by_name(if self.spec.display { "head" } else { "scale" })
                        .and_then(|e| e.static_pad("sink"))
                        .is_some_and(|p| p.is_linked());
                    let from_decodebin = err.src().is_some_and(|s| s.name() == "dec");
                    if !video_linked && from_decodebin {
                        return Err(IngestError::NoVideoStream { path: self.path.clone(), detail: error_text(err) });
                    }
                    return Err(self.not_video(error_text(err)));
                }
                gst::MessageView::Eos(_) => {
                    return Err(IngestError::NoFrames { path: self.path.clone() });
                }
                gst::MessageView::AsyncDone(_) => break,
                _ => {}
            }
        }
        let caps = self
            .pipeline
            .by_name("scale")
            .and_then(|s| s.static_pad("sink"))
            .and_then(|p| p.current_caps())
            .ok_or_else(|| IngestError::NoFrames { path: self.path.clone() })?;
        let info = gst_video::VideoInfo::from_caps(&caps).map_err(|e| self.not_video(e.to_string()))?;
        let fps = info.fps();
        self.info = VideoInfo {
            width: info.width(),
            height: info.height(),
            fps: (fps.numer() > 0 && fps.denom() > 0).then(|| fps.numer() as f64 / fps.denom() as f64),
            duration_ns: self.pipeline.query_duration::<gst::ClockTime>().map(gstreamer::ClockTime::nseconds),
        };
        self.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| self.bus_error().unwrap_or_else(|| self.not_video(e.to_string())))?;
        Ok(())
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn not_video(&self, message: String) -> IngestError {
        IngestError::NotVideo { path: self.path.clone(), message }
    }

    fn bus_error(&self) -> Option<IngestError> {
        let msg = self.pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
        let gst::MessageView::Error(err) = msg.view() else { return None };
        // Every error after preroll passes here: `next_frame` reads this.
        self.gpu_fault.set(crate::decoders::gpu_fault(err, &self.pipeline));
        Some(IngestError::Decode {
            path: self.path.clone(),
            frames: self.next_index,
            position_s: self.last_end_ns as f64 / 1e9,
            message: error_text(err),
        })
    }

    fn pull(&self, sink: &gst_app::AppSink) -> Result<Option<gst::Sample>, IngestError> {
        loop {
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64)) {
                return Ok(Some(sample));
            }
            // An upstream error does not wake appsink, so look at the bus between polls.
            if let Some(err) = self.bus_error() {
                return Err(err);
            }
            if sink.is_eos() {
                return Ok(None);
            }
        }
    }

    /// The next frame, or `None` at the end of the stream. Errors name the file and position.
    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>, IngestError> {
        if let Some(frame) = self.pending.take() {
            return Ok(Some(self.hand_on(frame)));
        }
        if self.finished {
            return Ok(None);
        }
        let frame = match self.read_frame() {
            Ok(frame) => frame,
            Err(e) => match self.spec.on_cpu().filter(|_| self.gpu_fault.get()) {
                Some(host) => {
                    gpu_fallback_warning(&self.path, &e);
                    if let Err(resume) = self.resume_with(host) {
                        // The GPU's fault is the cause worth reporting.
                        tracing::warn!(path = %self.path.display(), error = %resume, "the CPU could not take over");
                        return Err(e);
                    }
                    metrics::counter!("retail_gpu_decode_fallbacks_total").increment(1);
                    self.pending.take()
                }
                None => return Err(e),
            },
        };
        let Some(frame) = frame else {
            self.finished = true;
            self.check_complete()?;
            return Ok(None);
        };
        Ok(Some(self.hand_on(frame)))
    }

    /// Numbers `frame` in the stream and moves the position past it.
    fn hand_on(&mut self, mut frame: VideoFrame) -> VideoFrame {
        frame.index = self.next_index;
        self.next_index += 1;
        self.last_end_ns = frame.pts_ns + frame.duration_ns.unwrap_or(0);
        self.last_pts_ns = Some(frame.pts_ns);
        metrics::counter!("retail_ingest_frames_total").increment(1);
        frame
    }

    /// After the GPU's decoding failed: decodes the file again as `spec` says (on the CPU),
    /// in place of this pipeline, skipping as many frames as were handed on, and keeps the
    /// next in `pending` (`None` when the failure came after the last frame). Skipped by
    /// count, not by timestamp, which files may lack, repeat or restart; a last skipped frame
    /// whose timestamp is not the last one handed on is logged (the decoders disagree).
    fn resume_with(&mut self, spec: SourceSpec) -> Result<(), IngestError> {
        let mut fresh = Self::build(&self.path, spec, &self.config)?;
        fresh.preroll()?;
        let mut last_skipped = None;
        for _ in 0..self.next_index {
            match fresh.skip_frame()? {
                Some(pts) => last_skipped = pts,
                None => break,
            }
        }
        if let (Some(skipped), Some(last)) = (last_skipped, self.last_pts_ns)
            && skipped != last
        {
            tracing::warn!(path = %self.path.display(), frames = self.next_index, skipped_s = skipped as f64 / 1e9, last_s = last as f64 / 1e9, "the CPU's decoding does not line up with the GPU's; resumed by frame count");
        }
        (fresh.next_index, fresh.last_end_ns) = (self.next_index, self.last_end_ns);
        let resumed = fresh.read_frame()?;
        // The fresh pipeline takes this one's place; the old one stops as `fresh` drops.
        std::mem::swap(&mut self.pipeline, &mut fresh.pipeline);
        std::mem::swap(&mut self.model_sink, &mut fresh.model_sink);
        std::mem::swap(&mut self.display_sink, &mut fresh.display_sink);
        std::mem::swap(&mut self.spec, &mut fresh.spec);
        self.gpu_fault.set(false);
        self.pending = resumed;
        Ok(())
    }

    /// Pulls the next frame (and its display frame) without unpacking it: `Some` with its
    /// timestamp, or `None` at the end.
    fn skip_frame(&self) -> Result<Option<Option<u64>>, IngestError> {
        let Some(sample) = self.pull(&self.model_sink)? else { return Ok(None) };
        if let Some(sink) = &self.display_sink {
            self.pull(sink)?.ok_or_else(|| self.decode_err("display branch ended early"))?;
        }
        Ok(Some(sample.buffer().and_then(gst::BufferRef::pts).map(gst::ClockTime::nseconds)))
    }

    /// The next decoded frame, not yet numbered (see [`Self::hand_on`]); `None` at the end.
    fn read_frame(&self) -> Result<Option<VideoFrame>, IngestError> {
        let Some(sample) = self.pull(&self.model_sink)? else { return Ok(None) };
        let buffer = sample.buffer().ok_or_else(|| self.decode_err("sample without buffer"))?;
        let pts_ns = buffer.pts().map_or(self.last_end_ns, gstreamer::ClockTime::nseconds);
        let duration_ns = buffer.duration().map(gstreamer::ClockTime::nseconds);
        let caps = sample.caps().ok_or_else(|| self.decode_err("sample without caps"))?;
        let vinfo = gst_video::VideoInfo::from_caps(caps).map_err(|e| self.decode_err(&e.to_string()))?;
        let Packed { pixels, width, height, colour, device } = picture(&self.spec, buffer, &vinfo).map_err(|e| {
            // Mapping a picture of the CUDA branch failed: a fault of the GPU's decoding.
            self.gpu_fault.set(self.spec.order == PixelOrder::CudaYuv);
            self.decode_err(&e)
        })?;
        let display = match &self.display_sink {
            Some(sink) => Some(self.read_display(sink)?),
            None => None,
        };
        let (stream, index) = (self.spec.stream.clone(), 0);
        Ok(Some(VideoFrame { stream, index, pts_ns, duration_ns, pixels, width, height, colour, device, display }))
    }

    /// The display branch's frame that goes with the model branch's last one.
    fn read_display(&self, sink: &gst_app::AppSink) -> Result<DisplayFrame, IngestError> {
        let sample = self.pull(sink)?.ok_or_else(|| self.decode_err("display branch ended early"))?;
        let buffer = sample.buffer().ok_or_else(|| self.decode_err("sample without buffer"))?;
        let caps = sample.caps().ok_or_else(|| self.decode_err("sample without caps"))?;
        let dinfo = gst_video::VideoInfo::from_caps(caps).map_err(|e| self.decode_err(&e.to_string()))?;
        let map = buffer.map_readable().map_err(|e| self.decode_err(&e.to_string()))?;
        let (width, height) = (dinfo.width(), dinfo.height());
        let rgbx = pack_rows(map.as_slice(), dinfo.stride()[0] as usize, width as usize * 4, height as usize);
        Ok(DisplayFrame { width, height, rgbx })
    }

    fn decode_err(&self, message: &str) -> IngestError {
        IngestError::Decode {
            path: self.path.clone(),
            frames: self.next_index,
            position_s: self.last_end_ns as f64 / 1e9,
            message: message.to_owned(),
        }
    }

    fn check_complete(&self) -> Result<(), IngestError> {
        if self.next_index == 0 {
            return Err(IngestError::NoFrames { path: self.path.clone() });
        }
        if let Some(duration) = self.info.duration_ns {
            // One frame of slack: containers round their durations.
            let frame_ns = self.info.fps.map_or(0, |f| (1e9 / f) as u64);
            let decoded = self.last_end_ns + frame_ns;
            // The container's duration covers all streams; audio often runs a little longer
            // than video, so a short gap is not truncation.
            let missing = duration.saturating_sub(decoded);
            if (decoded as f64) < duration as f64 * self.config.min_decoded_fraction && missing > 2_000_000_000 {
                return Err(IngestError::Truncated {
                    path: self.path.clone(),
                    decoded_s: self.last_end_ns as f64 / 1e9,
                    duration_s: duration as f64 / 1e9,
                });
            }
        }
        Ok(())
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Containers that declare their own size (RIFF: AVI, WAV) reveal a cut-off file before any
/// decoding; demuxers happily play what is there, so this is checked up front.
fn check_declared_size(path: &Path, actual: u64) -> Result<(), IngestError> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if read.is_ok() && &head[..4] == b"RIFF" {
        let declared = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64 + 8;
        // Writers pad to an even size; allow that byte.
        if actual + 1 < declared {
            return Err(IngestError::TruncatedFile { path: path.to_owned(), actual, declared });
        }
    }
    Ok(())
}

/// Links the first raw-video pad `decodebin` (or `uridecodebin`) exposes to `head`; any
/// further stream (audio, subtitles) goes to a fakesink, so it costs nothing and never
/// stalls the demuxer.
pub(crate) fn link_video_only(decodebin: &gst::Element, head: gst::Element, pipeline: &gst::Pipeline) {
    let weak_pipeline = pipeline.downgrade();
    decodebin.connect_pad_added(move |_, pad| {
        let is_video = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/x-raw")))
            .unwrap_or(false);
        if let Some(sink) = head.static_pad("sink")
            && is_video
            && !sink.is_linked()
        {
            let _ = pad.link(&sink);
            return;
        }
        let Some(pipeline) = weak_pipeline.upgrade() else {
            return;
        };
        if let Ok(fake) = gst::ElementFactory::make("fakesink").property("sync", false).build() {
            let _ = pipeline.add(&fake);
            let _ = fake.sync_state_with_parent();
            if let Some(fsink) = fake.static_pad("sink") {
                let _ = pad.link(&fsink);
            }
        }
    });
}

/// Says that the GPU's decoding of `path` failed and the CPU takes over.
fn gpu_fallback_warning(path: &Path, cause: &IngestError) {
    tracing::warn!(path = %path.display(), error = %cause, "the GPU's decoding failed: the file is decoded on the CPU from here");
}

pub(crate) fn error_text(err: &gst::message::Error) -> String {
    let mut text = err.error().to_string();
    if let Some(src) = err.src() {
        text = format!("{text} (from {})", src.name());
    }
    text
}

/// Copies `rows` rows of `row_bytes` out of a buffer whose rows are `stride` apart.
pub(crate) fn pack_rows(data: &[u8], stride: usize, row_bytes: usize, rows: usize) -> Vec<u8> {
    if stride == row_bytes {
        return data[..row_bytes * rows].to_vec();
    }
    let mut out = Vec::with_capacity(row_bytes * rows);
    for r in 0..rows {
        out.extend_from_slice(&data[r * stride..r * stride + row_bytes]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(colorimetry: &str) -> gst_video::VideoInfo {
        crate::init().unwrap();
        gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 64, 48)
            .colorimetry(&colorimetry.parse().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn the_videos_colorimetry_becomes_the_frames_colour() {
        let c = |s| yuv_colour(&info(s));
        assert_eq!(c("bt601"), YuvColour { matrix: YuvMatrix::Bt601, full_range: false });
        assert_eq!(c("bt709"), YuvColour { matrix: YuvMatrix::Bt709, full_range: false });
        assert_eq!(c("bt2020"), YuvColour { matrix: YuvMatrix::Bt2020, full_range: false });
        // JPEG (MJPEG cameras): BT.601 over the full range (range:matrix:transfer:primaries).
        assert_eq!(c("1:4:0:0"), YuvColour { matrix: YuvMatrix::Bt601, full_range: true });
    }

    /// The CUDA branch's description parses, and asks for CUDA memory in NV12 or I420 from a
    /// `decodebin` that may hand on any memory (nvcodec's elements stand in as `identity`
    /// where there is no driver).
    #[test]
    fn the_cuda_branch_asks_for_nv12_or_i420_in_cuda_memory() {
        crate::init().unwrap();
        let order = PixelOrder::CudaYuv;
        let branch =
            order.model_branch((416, 416)).replace("cudaupload", "identity").replace("cudaconvert", "identity");
        let desc = format!("filesrc ! decodebin name=dec caps={} {branch} ! fakesink", order.decoded_caps());
        let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let dec_caps = pipeline.by_name("dec").unwrap().property::<gst::Caps>("caps");
        assert!(dec_caps.features(0).is_some_and(gst::CapsFeaturesRef::is_any), "{dec_caps}");
        let filter = pipeline
            .iterate_elements()
            .into_iter()
            .filter_map(Result::ok)
            .find(|e| e.factory().is_some_and(|f| f.name() == "capsfilter"))
            .unwrap();
        let caps = filter.property::<gst::Caps>("caps");
        assert!(caps.features(0).is_some_and(|f| f.contains("memory:CUDAMemory")), "{caps}");
        let formats: Vec<String> =
            caps.structure(0).unwrap().get::<gst::List>("format").unwrap().iter().map(|v| v.get().unwrap()).collect();
        assert_eq!(formats, ["NV12", "I420"]);
        assert_eq!(order.elements(), ["cudaupload", "cudaconvert", "cudadownload"]);
        assert!(order.display_head().starts_with("cudadownload !"));
        assert!(order.pack(&[0u8; 64], &info("bt601")).is_err(), "CUDA pictures are never packed");
    }

    #[test]
    fn a_short_buffer_is_an_error_not_a_panic() {
        let info = info("bt601");
        let err = PixelOrder::I420.pack(&[0u8; 100], &info).err().unwrap();
        assert!(err.contains("too short for plane 0 of a 64x48 frame"), "{err}");
        let whole = vec![7u8; info.size()];
        let packed = PixelOrder::I420.pack(&whole, &info).unwrap();
        assert_eq!((packed.width, packed.height, packed.pixels.len()), (64, 48, 64 * 48 * 3 / 2));
    }

    /// A GPU fault in the middle of a file hands decoding to a fresh CPU pipeline: the frames
    /// handed on are those of one uninterrupted decoding, none lost and none twice, with the
    /// display frames still paired. Resumed before the first frame, between two key frames
    /// (B-frames reordered) and after the last.
    #[test]
    fn decoding_resumed_on_a_fresh_pipeline_hands_on_every_frame_once() {
        crate::init().unwrap();
        let (dir, clip) = crate::make_clip(
            "resume",
            "ball.mp4",
            "videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=96,height=64,framerate=10/1 ! \
             x264enc bframes=2 key-int-max=10 ! mp4mux",
        );

        let spec = SourceSpec {
            stream: "s".into(),
            width: 0,
            height: 0,
            order: PixelOrder::I420,
            display: true,
            cuda: None,
            software_decoding: false,
        };
        let config = IngestConfig::default();
        let read_all = |src: &mut FileSource, into: &mut Vec<VideoFrame>| {
            while let Some(f) = src.next_frame().unwrap() {
                into.push(f);
            }
        };
        let mut whole = Vec::new();
        read_all(&mut FileSource::open(&clip, spec.clone(), &config).unwrap(), &mut whole);
        assert_eq!(whole.len(), 30);
        let key = |f: &VideoFrame| (f.index, f.pts_ns, f.pixels.clone(), f.display.as_ref().map(|d| d.rgbx.clone()));
        for cut in [0, 13, 30] {
            let mut src = FileSource::open(&clip, spec.clone(), &config).unwrap();
            let mut got: Vec<VideoFrame> = (0..cut).map(|_| src.next_frame().unwrap().unwrap()).collect();
            src.resume_with(spec.on_cpu().unwrap()).unwrap();
            read_all(&mut src, &mut got);
            assert_eq!(got.len(), whole.len(), "resumed after {cut} frames");
            for (g, w) in got.iter().zip(&whole) {
                assert!(key(g) == key(w), "resumed after {cut}: frame {} differs from frame {}", g.index, w.index);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The CPU's decoding after a GPU fault: I420 for the CUDA branch (uploaded by the
    /// kernels), no context, NVDEC left out; and nothing further to fall back on.
    #[test]
    fn a_spec_decoded_on_the_cpu_has_nothing_further_to_fall_back_on() {
        let gpu = SourceSpec {
            stream: "s".into(),
            width: 416,
            height: 416,
            order: PixelOrder::CudaYuv,
            display: true,
            cuda: None,
            software_decoding: false,
        };
        let cpu = gpu.on_cpu().unwrap();
        assert_eq!((cpu.order, cpu.software_decoding, cpu.display), (PixelOrder::I420, true, true));
        assert!(cpu.on_cpu().is_none());
        let packed = SourceSpec { order: PixelOrder::Bgr, ..gpu };
        assert_eq!(packed.on_cpu().unwrap().order, PixelOrder::Bgr, "NVDEC may decode for the CPU's model too");
    }
}
