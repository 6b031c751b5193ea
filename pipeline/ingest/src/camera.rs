//! A live RTSP camera as a [`FrameSource`] that survives camera faults.
//!
//! One [`LiveCamera`] is one camera for the life of its stream. Behind it, a GStreamer
//! connection (`uridecodebin` → `rtspsrc`) is built, and torn down on an error, an end of
//! stream, or no frame for the watchdog interval; the next is built after a capped
//! exponential backoff with jitter. The stream after the source never sees the faults: its
//! frame indices and timestamps continue across connections, so its tracker, counts and
//! event ids do too.
//!
//! Time: each frame is placed at the camera's clock when the camera sends RTCP sender
//! reports (NTP, through the jitter buffer's reference-timestamp meta), else at the time it
//! was received (the pipeline runs on the real-time clock). Timestamps are made strictly
//! increasing, so a new connection can never reuse an earlier one's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use serde::{Deserialize, Serialize};

use crate::source::{error_text, link_video_only};
use crate::{Backpressure, CameraUrl, FrameSource, IngestError, PixelOrder, SourceSpec, VideoFrame, VideoInfo};

/// How RTP reaches us from the camera.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection: works through NAT and firewalls, no loss.
    #[default]
    Tcp,
    /// RTP over UDP: lower latency, may lose packets.
    Udp,
    /// UDP first, TCP when UDP gets nothing (`rtspsrc`'s own choice).
    Auto,
}

impl Transport {
    fn protocols(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp+udp-mcast",
            Transport::Auto => "udp+udp-mcast+tcp",
        }
    }
}

/// How one camera is reached and watched.
#[derive(Clone, Debug)]
pub struct CameraSettings {
    pub url: CameraUrl,
    pub transport: Transport,
    /// Frames per second handed on for analysis (the camera's others are dropped right after
    /// decoding, before scaling); `None` hands on every frame.
    pub analysis_fps: Option<u32>,
    /// A live connection that delivers no frame for this long is torn down.
    pub watchdog: Duration,
    /// A new connection that delivers no frame for this long is torn down.
    pub connect_timeout: Duration,
    /// First wait before reconnecting; doubled after each failed try up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The RTSP jitter buffer's latency.
    pub latency_ms: u32,
}

/// Where a camera is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraState {
    /// A connection is being set up; no frame yet.
    Connecting,
    /// Frames are arriving.
    Live,
    /// The watchdog found no frame for its interval (the connection is then torn down).
    Stalled,
    /// Waiting before the next connection attempt.
    BackingOff,
    /// The stream was stopped (camera removed or worker shutting down).
    Stopped,
}

impl CameraState {
    pub const ALL: [CameraState; 5] = [
        CameraState::Connecting,
        CameraState::Live,
        CameraState::Stalled,
        CameraState::BackingOff,
        CameraState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Live => "live",
            CameraState::Stalled => "stalled",
            CameraState::BackingOff => "backing-off",
            CameraState::Stopped => "stopped",
        }
    }
}

/// A snapshot of a camera's health, for metrics, `/readyz` and the API.
#[derive(Clone, Debug, Serialize)]
pub struct CameraStatus {
    pub state: CameraState,
    /// Why the last connection failed or ended, e.g. `401 unauthorized from rtsp://…@host/x`
    /// (credentials masked).
    pub message: Option<String>,
    /// Connections started (the first one included).
    pub connections: u64,
    /// Connections that ended in a fault and were retried.
    pub reconnects: u64,
    /// Times the watchdog fired.
    pub stalls: u64,
    /// Frames handed on for analysis.
    pub frames: u64,
    /// Seconds since the last frame, once there was one.
    pub last_frame_age_s: Option<f64>,
    /// Whether frame times come from the camera's NTP clock (else from the receive time).
    pub camera_clock: bool,
    /// Whether the camera is decoded on the CPU because the GPU's decoding failed (until its
    /// stream is started again).
    pub gpu_decode_failed: bool,
}

struct Health {
    state: CameraState,
    message: Option<String>,
    connections: u64,
    reconnects: u64,
    stalls: u64,
    frames: u64,
    last_frame: Option<Instant>,
    camera_clock: bool,
    gpu_decode_failed: bool,
}

/// Shared between a camera's source (which updates it) and whoever watches or stops it.
pub struct CameraMonitor {
    health: Mutex<Health>,
    stop: AtomicBool,
}

impl Default for CameraMonitor {
    fn default() -> Self {
        CameraMonitor {
            health: Mutex::new(Health {
                state: CameraState::Connecting,
                message: None,
                connections: 0,
                reconnects: 0,
                stalls: 0,
                frames: 0,
                last_frame: None,
                camera_clock: false,
                gpu_decode_failed: false,
            }),
            stop: AtomicBool::new(false),
        }
    }
}

impl CameraMonitor {
    pub fn status(&self) -> CameraStatus {
        let h = self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        CameraStatus {
            state: h.state,
            message: h.message.clone(),
            connections: h.connections,
            reconnects: h.reconnects,
            stalls: h.stalls,
            frames: h.frames,
            last_frame_age_s: h.last_frame.map(|t| t.elapsed().as_secs_f64()),
            camera_clock: h.camera_clock,
            gpu_decode_failed: h.gpu_decode_failed,
        }
    }

    /// Ends the stream: the source returns no more frames (within a poll interval, even while
    /// it is connecting or backing off), so the stream finishes normally.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn update(&self, f: impl FnOnce(&mut Health)) {
        f(&mut self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

const POLL: Duration = Duration::from_millis(100);
/// A connection live this long has proved itself: the next fault starts the backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Seconds between 1900-01-01 (NTP) and 1970-01-01 (Unix).
const NTP_TO_UNIX_S: u64 = 2_208_988_800;
/// A camera clock further than this from ours is taken to be wrong, and ignored: kept small,
/// so that moving between the camera's clock and the receive time (when the camera's
/// reports start or stop) never jumps far.
const MAX_CLOCK_SKEW_NS: i128 = 2 * 1_000_000_000;

/// A live camera; see the module docs.
pub struct LiveCamera {
    name: String,
    settings: CameraSettings,
    spec: SourceSpec,
    monitor: Arc<CameraMonitor>,
    conn: Option<Connection>,
    info: VideoInfo,
    /// Wall-clock time (Unix ns) of pts 0: the stream's start time.
    origin_ns: i128,
    next_index: u64,
    last_pts_ns: Option<u64>,
    backoff: Duration,
    rng: u64,
}

impl LiveCamera {
    /// A camera named `name` (its stream id, for messages) whose pts 0 is `origin_us` (Unix
    /// microseconds). Nothing connects yet: the first [`next_frame`](FrameSource::next_frame)
    /// does, so a camera that is down at start-up is retried like any other fault.
    pub fn new(
        name: &str,
        settings: CameraSettings,
        spec: SourceSpec,
        origin_us: i64,
        monitor: Arc<CameraMonitor>,
    ) -> Result<Self, IngestError> {
        crate::init()?;
        let common = ["rtspsrc", "uridecodebin", "videorate", "videoscale", "videoconvert", "appsink"];
        for &element in common.iter().chain(spec.order.elements()) {
            if gst::ElementFactory::find(element).is_none() {
                return Err(IngestError::MissingElement { element: element.into() });
            }
        }
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
        Ok(LiveCamera {
            name: name.to_owned(),
            backoff: settings.backoff_min,
            settings,
            spec,
            monitor,
            conn: None,
            info: VideoInfo { width: 0, height: 0, fps: None, duration_ns: None },
            origin_ns: i128::from(origin_us) * 1000,
            next_index: 0,
            last_pts_ns: None,
            rng: seed,
        })
    }

    pub fn monitor(&self) -> &Arc<CameraMonitor> {
        &self.monitor
    }

    /// A fault: when the GPU's decoding failed, the camera is decoded on the CPU from now on
    /// (a GPU out of decoder sessions would fail again at every reconnect); then the
    /// connection is torn down and retried as after any fault.
    fn failed(&mut self, state: CameraState, fault: Fault) {
        if fault.gpu
            && let Some(on_cpu) = self.spec.on_cpu()
        {
            tracing::warn!(camera = %self.name, reason = %fault.reason, "the GPU's decoding failed: this camera is decoded on the CPU from now on");
            metrics::counter!("retail_gpu_decode_fallbacks_total").increment(1);
            self.spec = on_cpu;
            self.monitor.update(|h| h.gpu_decode_failed = true);
        }
        self.fault(state, &fault.reason);
    }

    /// Tears the connection down, records why, and waits out the backoff (or a stop).
    fn fault(&mut self, state: CameraState, reason: &str) {
        let stable = self.conn.as_ref().and_then(|c| c.first_frame).is_some_and(|t| t.elapsed() >= STABLE_AFTER);
        self.conn = None;
        if stable {
            self.backoff = self.settings.backoff_min;
        }
        let message = format!("camera {}: {reason} from {}", self.name, self.settings.url);
        tracing::warn!(camera = %self.name, state = state.as_str(), reason, "camera fault; reconnecting");
        let wait = self.jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(self.settings.backoff_max);
        self.monitor.update(|h| {
            // A stall stays visible as such while the camera waits to reconnect.
            h.state = if state == CameraState::Stalled { CameraState::Stalled } else { CameraState::BackingOff };
            h.message = Some(message);
            h.reconnects += 1;
            if state == CameraState::Stalled {
                h.stalls += 1;
            }
        });
        metrics::counter!("retail_camera_faults_total", "camera" => self.name.clone(), "kind" => state.as_str())
            .increment(1);
        let until = Instant::now() + wait;
        while Instant::now() < until && !self.monitor.is_stopped() {
            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// `d` ± 20 %, so that cameras dropped together do not all come back at once.
    fn jittered(&mut self, d: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng % 10_000) as f64 / 10_000.0; // 0..1
        d.mul_f64(0.8 + 0.4 * unit)
    }

    fn connect(&mut self) -> Result<(), Fault> {
        self.monitor.update(|h| {
            h.state = CameraState::Connecting;
            h.connections += 1;
        });
        self.conn = Some(Connection::open(&self.settings, &self.spec)?);
        Ok(())
    }

    /// Turns a sample into a frame, placing it in time (see the module docs).
    fn frame(&mut self, sample: &gst::Sample, conn: &Connection) -> Result<VideoFrame, Fault> {
        let buffer = sample.buffer().ok_or("sample without buffer")?;
        let caps = sample.caps().ok_or("sample without caps")?;
        let vinfo = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
        let received_ns = conn.wall_time_ns(sample, buffer);
        let camera_ns = camera_time_ns(buffer).filter(|t| (t - received_ns).abs() <= MAX_CLOCK_SKEW_NS);
        let wall_ns = camera_ns.unwrap_or(received_ns);
        let mut pts_ns = u64::try_from(wall_ns - self.origin_ns).unwrap_or(0);
        if let Some(last) = self.last_pts_ns {
            pts_ns = pts_ns.max(last + 1);
        }
        self.last_pts_ns = Some(pts_ns);
        let crate::source::Packed { pixels, width, height, colour, device } =
            crate::source::picture(&self.spec, buffer, &vinfo).map_err(|reason| Fault {
                reason,
                // Mapping a picture of the CUDA branch failed: a fault of the GPU's decoding.
                gpu: self.spec.order == PixelOrder::CudaYuv,
            })?;
        let index = self.next_index;
        self.next_index += 1;
        self.monitor.update(|h| {
            h.state = CameraState::Live;
            h.frames += 1;
            h.last_frame = Some(Instant::now());
            h.camera_clock = camera_ns.is_some();
        });
        metrics::counter!("retail_ingest_frames_total").increment(1);
        Ok(VideoFrame {
            stream: self.spec.stream.clone(),
            index,
            pts_ns,
            duration_ns: buffer.duration().map(gst::ClockTime::nseconds),
            pixels,
            width,
            height,
            colour,
            device,
            display: None,
        })
    }
}

impl FrameSource for LiveCamera {
    fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, IngestError> {
        loop {
            if self.monitor.is_stopped() {
                self.conn = None;
                self.monitor.update(|h| h.state = CameraState::Stopped);
                return Ok(None);
            }
            if self.conn.is_none()
                && let Err(fault) = self.connect()
            {
                self.failed(CameraState::Connecting, fault);
                continue;
            }
            let Some(conn) = self.conn.as_mut() else { continue };
            match conn.pull() {
                Pulled::Frame(sample) => {
                    let conn = self.conn.take().expect("connection checked above");
                    let frame = self.frame(&sample, &conn);
                    if self.info.width == 0
                        && let Some(info) = conn.info()
                    {
                        self.info = info;
                    }
                    self.conn = Some(conn);
                    match frame {
                        Ok(f) => return Ok(Some(f)),
                        Err(fault) => self.failed(CameraState::Live, fault),
                    }
                }
                Pulled::Nothing => {
                    if let Some((state, reason)) = conn.overdue(&self.settings) {
                        self.fault(state, &reason);
                    }
                }
                Pulled::Ended => self.fault(CameraState::Live, "the camera ended the stream"),
                Pulled::Failed(fault) => self.failed(CameraState::Connecting, fault),
            }
        }
    }

    fn backpressure(&self) -> Backpressure {
        Backpressure::DropOldest
    }

    fn describe(&self) -> String {
        format!("camera {} ({})", self.name, self.settings.url)
    }
}

impl Drop for LiveCamera {
    fn drop(&mut self) {
        self.monitor.update(|h| h.state = CameraState::Stopped);
    }
}

enum Pulled {
    Frame(gst::Sample),
    Nothing,
    Ended,
    Failed(Fault),
}

/// Why a connection failed, and whether the GPU's decoding did (see [`crate::decoders`]).
struct Fault {
    reason: String,
    gpu: bool,
}

impl From<String> for Fault {
    fn from(reason: String) -> Self {
        Fault { reason, gpu: false }
    }
}

impl From<&str> for Fault {
    fn from(reason: &str) -> Self {
        Fault { reason: reason.to_owned(), gpu: false }
    }
}

/// One RTSP session's GStreamer pipeline.
struct Connection {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    started: Instant,
    first_frame: Option<Instant>,
    last_frame: Instant,
    /// Texts scrubbed from GStreamer's messages: the password and the URL's query.
    secrets: Vec<String>,
}

impl Connection {
    fn open(settings: &CameraSettings, spec: &SourceSpec) -> Result<Self, Fault> {
        // Frames beyond the analysis rate are dropped right after decoding, before scaling.
        let rate = settings
            .analysis_fps
            .map_or_else(String::new, |fps| format!("videorate drop-only=true max-rate={fps} name=head ! "));
        let head = if rate.is_empty() { "scale" } else { "head" };
        let desc = format!(
            "uridecodebin name=dec caps={}  {rate}{} ! appsink name=model max-buffers=2 drop=true sync=false",
            spec.order.decoded_caps(),
            spec.order.model_branch((spec.width, spec.height))
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("cannot build the pipeline: {e}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline".to_owned())?;
        let by_name = |n: &str| pipeline.by_name(n).ok_or_else(|| format!("no element {n}"));
        let dec = by_name("dec")?;
        if spec.order == PixelOrder::CudaYuv {
            crate::cuda::attach(&pipeline, &dec, spec)?;
        } else if spec.software_decoding {
            crate::decoders::software_decoders_only(&dec);
        }
        link_video_only(&dec, by_name(head)?, &pipeline);
        dec.set_property("uri", settings.url.location());
        let (user, password) = settings.url.credentials();
        let (user, password) = (user.map(str::to_owned), password.map(str::to_owned));
        let (protocols, latency) = (settings.transport.protocols(), settings.latency_ms);
        dec.connect("source-setup", false, move |args| {
            let src = args.get(1)?.get::<gst::Element>().ok()?;
            if src.has_property("protocols") {
                src.set_property_from_str("protocols", protocols);
                src.set_property("latency", latency);
                if let Some(u) = &user {
                    src.set_property("user-id", u);
                }
                if let Some(p) = &password {
                    src.set_property("user-pw", p);
                }
                if src.has_property("add-reference-timestamp-meta") {
                    src.set_property("add-reference-timestamp-meta", true);
                }
            }
            None
        });
        // The real-time clock, so that base time + running time is the receive time.
        let clock =
            gst::glib::Object::builder::<gst::SystemClock>().property("clock-type", gst::ClockType::Realtime).build();
        pipeline.use_clock(Some(&clock));
        let sink =
            by_name("model")?.downcast::<gst_app::AppSink>().map_err(|_| "model is not an appsink".to_owned())?;
        let now = Instant::now();
        let conn = Connection {
            pipeline,
            sink,
            started: now,
            first_frame: None,
            last_frame: now,
            secrets: settings.url.secrets().into_iter().filter(|s| !s.is_empty()).collect(),
        };
        if let Err(e) = conn.pipeline.set_state(gst::State::Playing) {
            return Err(conn.bus_error().unwrap_or_else(|| format!("cannot start: {e}").into()));
        }
        Ok(conn)
    }

    fn pull(&mut self) -> Pulled {
        if let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64)) {
            let now = Instant::now();
            self.first_frame.get_or_insert(now);
            self.last_frame = now;
            return Pulled::Frame(sample);
        }
        if let Some(fault) = self.bus_error() {
            return Pulled::Failed(fault);
        }
        if self.sink.is_eos() { Pulled::Ended } else { Pulled::Nothing }
    }

    /// Whether the watchdog (or, before the first frame, the connect timeout) has run out.
    fn overdue(&self, settings: &CameraSettings) -> Option<(CameraState, String)> {
        match self.first_frame {
            None if self.started.elapsed() >= settings.connect_timeout => Some((
                CameraState::Connecting,
                format!("no video within {:.1} s of connecting", settings.connect_timeout.as_secs_f64()),
            )),
            Some(_) if self.last_frame.elapsed() >= settings.watchdog => Some((
                CameraState::Stalled,
                format!("no frame for {:.1} s (watchdog)", self.last_frame.elapsed().as_secs_f64()),
            )),
            _ => None,
        }
    }

    /// The first error on the bus, described for a person, with any password scrubbed.
    fn bus_error(&self) -> Option<Fault> {
        let msg = self.pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
        let gst::MessageView::Error(err) = msg.view() else { return None };
        let mut text = describe_error(err);
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "…");
        }
        Some(Fault { reason: text, gpu: crate::decoders::gpu_fault(err, &self.pipeline) })
    }

    /// Receive time of a sample in Unix ns: the pipeline's base time plus its running time.
    fn wall_time_ns(&self, sample: &gst::Sample, buffer: &gst::BufferRef) -> i128 {
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let (Some(pts), Some(base)) = (buffer.pts(), self.pipeline.base_time()) else {
            return now();
        };
        let running = sample
            .segment()
            .and_then(|s| s.downcast_ref::<gst::ClockTime>().and_then(|s| s.to_running_time(pts)))
            .unwrap_or(pts);
        i128::from((base + running).nseconds())
    }

    fn info(&self) -> Option<VideoInfo> {
        let caps = self.pipeline.by_name("scale")?.static_pad("sink")?.current_caps()?;
        let info = gst_video::VideoInfo::from_caps(&caps).ok()?;
        let fps = info.fps();
        Some(VideoInfo {
            width: info.width(),
            height: info.height(),
            fps: (fps.numer() > 0 && fps.denom() > 0).then(|| f64::from(fps.numer()) / f64::from(fps.denom())),
            duration_ns: None,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The camera's own time for a buffer (Unix ns), when its RTCP sender reports gave one.
fn camera_time_ns(buffer: &gst::BufferRef) -> Option<i128> {
    buffer.iter_meta::<gst::ReferenceTimestampMeta>().find_map(|m| {
        let ntp = m.reference().structure(0).is_some_and(|s| s.name() == "timestamp/x-ntp");
        ntp.then(|| i128::from(m.timestamp().nseconds()) - i128::from(NTP_TO_UNIX_S) * 1_000_000_000)
    })
}

/// What went wrong, in the words a store manager can act on.
fn describe_error(err: &gst::message::Error) -> String {
    let e = err.error();
    let detail = err.debug().map(|d| d.lines().last().unwrap_or_default().trim().to_owned()).unwrap_or_default();
    if let Some(kind) = e.kind::<gst::ResourceError>() {
        return match kind {
            gst::ResourceError::NotAuthorized => "401 unauthorized (wrong user name or password)".into(),
            gst::ResourceError::NotFound => "404 not found (no stream at this path)".into(),
            gst::ResourceError::OpenRead | gst::ResourceError::OpenReadWrite | gst::ResourceError::Read => {
                format!("cannot connect ({})", if detail.is_empty() { e.message().to_owned() } else { detail })
            }
            _ => error_text(err),
        };
    }
    if e.kind::<gst::CoreError>() == Some(gst::CoreError::MissingPlugin)
        || matches!(e.kind::<gst::StreamError>(), Some(gst::StreamError::CodecNotFound | gst::StreamError::WrongType))
    {
        return format!("unsupported codec ({})", if detail.is_empty() { e.message().to_owned() } else { detail });
    }
    error_text(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PixelOrder;

    #[test]
    fn transports_map_to_rtspsrc_protocols() {
        assert_eq!(Transport::Tcp.protocols(), "tcp");
        assert_eq!(Transport::Udp.protocols(), "udp+udp-mcast");
        let t: Transport = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(t, Transport::Auto);
    }

    fn settings() -> CameraSettings {
        CameraSettings {
            url: CameraUrl::parse("rtsp://127.0.0.1:9/none").unwrap(),
            transport: Transport::Tcp,
            analysis_fps: None,
            watchdog: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            latency_ms: 100,
        }
    }

    fn spec(order: PixelOrder) -> SourceSpec {
        SourceSpec {
            stream: "cam".into(),
            width: 64,
            height: 64,
            order,
            display: false,
            cuda: None,
            software_decoding: false,
        }
    }

    #[test]
    fn a_stopped_camera_ends_its_stream_without_connecting() {
        let monitor = Arc::new(CameraMonitor::default());
        let mut cam = LiveCamera::new("cam", settings(), spec(PixelOrder::Bgr), 0, monitor.clone()).unwrap();
        monitor.stop();
        assert!(cam.next_frame().unwrap().is_none());
        assert_eq!(monitor.status().state, CameraState::Stopped);
        assert_eq!(monitor.status().connections, 0);
    }

    /// A fault of the GPU's decoding turns the camera over to the CPU for its next
    /// connections; any other fault leaves the decoding where it is.
    #[test]
    fn a_gpu_decoding_fault_turns_the_camera_over_to_the_cpu() {
        let monitor = Arc::new(CameraMonitor::default());
        let mut cam = LiveCamera::new("cam", settings(), spec(PixelOrder::I420), 0, monitor.clone()).unwrap();
        // Made here as a CUDA camera: no nvcodec elements without a driver to build one with.
        cam.spec.order = PixelOrder::CudaYuv;
        monitor.stop(); // no backoff to wait out
        cam.failed(CameraState::Connecting, "cannot connect (refused)".into());
        assert_eq!(cam.spec.order, PixelOrder::CudaYuv);
        assert!(!monitor.status().gpu_decode_failed);
        cam.failed(CameraState::Live, Fault { reason: "nvh264dec0: CUDA_ERROR_OUT_OF_MEMORY".into(), gpu: true });
        assert_eq!(cam.spec.order, PixelOrder::I420);
        assert!(cam.spec.cuda.is_none() && cam.spec.software_decoding, "NVDEC left out of the CPU's decoding");
        let status = monitor.status();
        assert!(status.gpu_decode_failed);
        assert_eq!(status.reconnects, 2);
        assert!(status.message.unwrap().contains("CUDA_ERROR_OUT_OF_MEMORY"));
        // Already on the CPU: a later fault that names nvcodec changes nothing.
        cam.failed(CameraState::Live, Fault { reason: "again".into(), gpu: true });
        assert_eq!(cam.spec.order, PixelOrder::I420);
    }
}
