//! A real RTSP server on 127.0.0.1 for camera tests (gstreamer-rtsp-server), in a child
//! process so that a test can do to it what happens to cameras: kill it (`SIGKILL`), freeze
//! it with its connections open (`SIGSTOP`), thaw it, start it again on the same port.
//!
//! The child is the test binary itself, run with `RETAIL_TEST_RTSP` set on one ignored
//! test that calls [`serve_if_child`]; a test file declares it with [`rtsp_server_child!`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

const ENV: &str = "RETAIL_TEST_RTSP";

/// Declares the ignored test that [`RtspServer`] runs as its child process.
#[macro_export]
macro_rules! rtsp_server_child {
    () => {
        #[test]
        #[ignore = "the RTSP server child process of the camera tests, run by RtspServer"]
        fn rtsp_server_child() {
            $crate::rtsp::serve_if_child();
        }
    };
}

/// What the server serves.
#[derive(Clone, Debug)]
pub struct RtspMedia {
    /// An MP4 file holding H.264, sent as it is (no re-encoding) at its own frame rate.
    pub file: PathBuf,
    /// Basic-auth credentials the server demands, if any.
    pub credentials: Option<(String, String)>,
    /// The camera's clock is this far ahead of the real one (behind, if negative): its RTCP
    /// sender reports carry that clock's time. `None`: the real clock.
    pub clock_offset_ms: Option<i64>,
}

impl RtspMedia {
    /// `file` served without credentials, on the real clock.
    pub fn file(file: PathBuf) -> Self {
        RtspMedia { file, credentials: None, clock_offset_ms: None }
    }
}

/// The server process; killed on drop.
pub struct RtspServer {
    port: u16,
    media: RtspMedia,
    child: Option<Child>,
}

impl RtspServer {
    pub fn start(media: RtspMedia) -> Self {
        let mut s = RtspServer { port: crate::free_port(), media, child: None };
        s.restart();
        s
    }

    /// `rtsp://127.0.0.1:PORT/cam`, without credentials.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let (user, pass) = self.media.credentials.clone().unwrap_or_default();
        let offset = self.media.clock_offset_ms.map(|ms| ms.to_string()).unwrap_or_default();
        let child = Command::new(std::env::current_exe().expect("test binary path"))
            .args(["--ignored", "--exact", "rtsp_server_child", "--nocapture", "--test-threads=1"])
            .env(ENV, format!("{}\n{}\n{}\n{}\n{}", self.port, self.media.file.display(), user, pass, offset))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the RTSP server child");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "RTSP server did not listen on 127.0.0.1:{}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: connections drop at once, the port closes.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -STOP`: the server stops sending, its connections stay open.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// `kill -CONT`.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw();
        }
        self.kill();
    }
}

/// In the child process (`RETAIL_TEST_RTSP` set): serves until killed. Otherwise returns.
pub fn serve_if_child() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let parts: Vec<&str> = spec.split('\n').collect();
    let (port, file, user, pass, offset) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    gst::init().expect("gst init");
    let server = rtsp::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(port);
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(&format!(
        "( filesrc location={file} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    ));
    factory.set_shared(false);
    if let Ok(offset_ms) = offset.parse::<i64>() {
        shift_camera_clock(&factory, offset_ms);
    }
    if !user.is_empty() {
        let auth = rtsp::RTSPAuth::new();
        let token = rtsp::RTSPToken::builder().field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user").build();
        auth.add_basic(rtsp::RTSPAuth::make_basic(user, pass).as_str(), &token);
        server.set_auth(Some(&auth));
        factory.add_role_from_structure(
            &gst::Structure::builder("user")
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
    }
    server.mount_points().expect("mount points").add_factory("/cam", factory);
    let _source = server.attach(None).expect("attach the RTSP server");
    gst::glib::MainLoop::new(None, false).run();
}

/// Runs the factory's media on a clock `offset_ms` from the real one, counted from the NTP
/// epoch, and has RTCP sender reports carry that clock's time (rtpbin's `clock-time`).
fn shift_camera_clock(factory: &rtsp::RTSPMediaFactory, offset_ms: i64) {
    const NTP_TO_UNIX_NS: i128 = 2_208_988_800 * 1_000_000_000;
    let clock: gst::SystemClock = gst::glib::Object::builder().property("clock-type", gst::ClockType::Realtime).build();
    let internal = clock.internal_time();
    let shifted = i128::from(internal.nseconds()) + NTP_TO_UNIX_NS + i128::from(offset_ms) * 1_000_000;
    let external = gst::ClockTime::from_nseconds(u64::try_from(shifted).expect("a clock after 1900"));
    clock.set_calibration(internal, external, 1, 1);
    factory.set_clock(Some(&clock));
    factory.connect_media_configure(|_, media| {
        let pipeline = media.element().parent().and_downcast::<gst::Bin>().expect("the media's pipeline");
        pipeline.connect_element_added(|_, element| {
            if element.factory().is_some_and(|f| f.name() == "rtpbin") {
                element.set_property_from_str("ntp-time-source", "clock-time");
            }
        });
    });
}

/// `vtest.avi` as H.264 in MP4 at `fps` (every frame kept: `fps` above the source's 10
/// plays it faster), made once per fps under the cache and reused.
pub fn h264_fixture(fps: u32) -> PathBuf {
    h264_clip(768, 576, fps)
}

/// `vtest.avi` scaled to `width`×`height` as H.264 in MP4 at `fps` (its 795 frames kept, so
/// the clip lasts 79.5 s × 10 / fps), made once under the cache and reused.
pub fn h264_clip(width: u32, height: u32, fps: u32) -> PathBuf {
    h264_clip_looped(width, height, fps, 1)
}

/// [`h264_clip`] played `loops` times over in one file (for streams that must run for
/// minutes without an end of stream).
pub fn h264_clip_looped(width: u32, height: u32, fps: u32, loops: u32) -> PathBuf {
    let mut name = if (width, height) == (768, 576) {
        format!("vtest-h264-{fps}fps")
    } else {
        format!("vtest-h264-{width}x{height}-{fps}fps")
    };
    if loops > 1 {
        name.push_str(&format!("-x{loops}"));
    }
    let out = crate::cache_home().join("media").join(format!("{name}.mp4"));
    if out.is_file() {
        return out;
    }
    gst::init().expect("gst init");
    if loops > 1 {
        // The one-play clip decoded `loops` times in a row: its frames already have the
        // clip's rate, so `concat` only has to put them end to end.
        let one = h264_clip_looped(width, height, fps, 1);
        let tmp = out.with_extension(format!("{}.part", std::process::id()));
        let sources: String = (0..loops)
            .map(|_| format!(" filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! c.", one.display()))
            .collect();
        let desc = format!(
            "concat name=c ! videoconvert ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={fps} ! \
             h264parse ! mp4mux ! filesink location={}{sources}",
            tmp.display()
        );
        let pipeline = gst::parse::launch(&desc).expect("fixture pipeline").downcast::<gst::Pipeline>().unwrap();
        run_to_eos(&pipeline);
        std::fs::rename(&tmp, &out).expect("rename fixture");
        return out;
    }
    let src = crate::cache_home().join("media/vtest.avi");
    assert!(src.is_file(), "{} missing: run make setup", src.display());
    let tmp = out.with_extension(format!("{}.part", std::process::id()));
    let speed = f64::from(fps) / 10.0;
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! video/x-raw,width={width},height={height} ! \
         videorate rate={speed} ! video/x-raw,framerate={fps}/1 ! \
         x264enc speed-preset=ultrafast tune=zerolatency key-int-max={fps} ! h264parse ! mp4mux ! filesink location={}",
        src.display(),
        tmp.display()
    );
    let pipeline = gst::parse::launch(&desc).expect("fixture pipeline").downcast::<gst::Pipeline>().unwrap();
    run_to_eos(&pipeline);
    std::fs::rename(&tmp, &out).expect("rename fixture");
    out
}

/// Frames in an MP4 file (counted by decoding it).
pub fn count_frames(file: &Path) -> u64 {
    gst::init().expect("gst init");
    let desc = format!("filesrc location={} ! decodebin ! fakesink name=sink", file.display());
    let pipeline = gst::parse::launch(&desc).expect("count pipeline").downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    sink.static_pad("sink").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        gst::PadProbeReturn::Ok
    });
    run_to_eos(&pipeline);
    count.load(std::sync::atomic::Ordering::SeqCst)
}

/// Runs a `gst-launch` style description to its end (a clip made from `videotestsrc`, say);
/// panics with GStreamer's message when it fails.
pub fn launch_to_eos(description: &str) {
    gst::init().expect("gst init");
    let pipeline = gst::parse::launch(description)
        .unwrap_or_else(|e| panic!("{description}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    run_to_eos(&pipeline);
}

fn run_to_eos(pipeline: &gst::Pipeline) {
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("pipeline failed: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).expect("stop");
}
