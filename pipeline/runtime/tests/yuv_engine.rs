//! The GPU path's frame layout through the engine, on the CPU: sources hand over I420 at the
//! video's own size, and the backend is the GPU kernels' detector with its tensors bound
//! where the kernels run, here their host emulation with ONNX Runtime on the CPU. On a GPU
//! (`detector.backend = "tensorrt"`, feature `tensorrt`) the same engine, sources and
//! backend run with device memory.

mod common;

use common::{config, memory_bus, vtest};
use std::path::{Path, PathBuf};

use retail_core::StreamId;
use retail_infer::{Accelerator, InferenceBackend};
use retail_ingest::{FileSource, IngestConfig, PixelOrder, SourceSpec};
use retail_kernels::{DecodeSettings, HostKernels, Resize, YuvDetector};
use retail_runtime::{Batching, Engine, ModelChoice, OutputSpec, file_job};

#[test]
fn an_i420_source_hands_over_the_three_planes_at_the_videos_size() {
    let spec = |order| SourceSpec {
        stream: StreamId::from("v"),
        width: 416,
        height: 416,
        order,
        display: false,
        cuda: None,
        software_decoding: false,
    };
    let mut yuv = FileSource::open(&vtest(), spec(PixelOrder::I420), &IngestConfig::default()).unwrap();
    let mut bgr = FileSource::open(&vtest(), spec(PixelOrder::Bgr), &IngestConfig::default()).unwrap();
    for _ in 0..3 {
        let (y, b) = (yuv.next_frame().unwrap().unwrap(), bgr.next_frame().unwrap().unwrap());
        assert_eq!((y.width, y.height), (768, 576), "the video's own size, not the spec's");
        assert_eq!(y.pixels.len(), 768 * 576 + 2 * 384 * 288);
        assert_eq!((b.width, b.height, b.pixels.len()), (416, 416, 416 * 416 * 3));
        // The same picture: the Y plane's mean is the BGR frame's luma in limited range.
        let luma: f64 = y.pixels[..768 * 576].iter().map(|v| f64::from(*v)).sum::<f64>() / (768.0 * 576.0);
        let from_bgr: f64 = b
            .pixels
            .chunks(3)
            .map(|p| {
                16.0 + 219.0 / 255.0 * (0.114 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.299 * f64::from(p[2]))
            })
            .sum::<f64>()
            / (416.0 * 416.0);
        assert!((luma - from_bgr).abs() < 4.0, "frame {}: Y mean {luma:.1}, luma of BGR {from_bgr:.1}", y.index);
    }
}

/// A lossless clip (raw I420 in Matroska) of `pattern` at an odd size.
fn synthetic_clip(dir: &Path, pattern: &str) -> PathBuf {
    let out = dir.join(format!("{}.mkv", pattern.split_whitespace().next().unwrap()));
    let desc = format!(
        "videotestsrc {pattern} num-buffers=3 ! video/x-raw,format=I420,width=323,height=243,framerate=10/1 ! \
         matroskamux ! filesink location={}",
        out.display()
    );
    retail_testkit::rtsp::launch_to_eos(&desc);
    out
}

fn first_i420_frame(path: &Path) -> retail_ingest::VideoFrame {
    let spec = SourceSpec {
        stream: StreamId::from("s"),
        width: 416,
        height: 416,
        order: PixelOrder::I420,
        display: false,
        cuda: None,
        software_decoding: false,
    };
    FileSource::open(path, spec, &IngestConfig::default()).unwrap().next_frame().unwrap().unwrap()
}

#[test]
fn i420_frames_are_cropped_to_even_sides_with_their_planes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // One colour, R 32 G 128 B 224: BT.601 limited range gives Y 111, U 184, V 79.
    let solid = first_i420_frame(&synthetic_clip(dir.path(), "pattern=solid-color foreground-color=0xff2080e0"));
    let (w, h) = (322usize, 242usize);
    assert_eq!((solid.width, solid.height), (322, 242), "323x243 cropped to even sides");
    assert_eq!(solid.pixels.len(), w * h + 2 * (w / 2) * (h / 2));
    assert_eq!(solid.colour, retail_core::YuvColour { matrix: retail_core::YuvMatrix::Bt601, full_range: false });
    let mean = |p: &[u8]| p.iter().map(|v| f64::from(*v)).sum::<f64>() / p.len() as f64;
    let (y, rest) = solid.pixels.split_at(w * h);
    let (u, v) = rest.split_at(w / 2 * (h / 2));
    let means = [mean(y), mean(u), mean(v)];
    for (got, want) in means.iter().zip([111.0, 184.0, 79.0]) {
        assert!((got - want).abs() < 3.0, "Y, U, V means {means:?}, want about [111, 184, 79]");
    }
    // Vertical bars (SMPTE's upper two thirds): every row as the first, so no row is shifted
    // by a wrong stride or offset.
    let bars = first_i420_frame(&synthetic_clip(dir.path(), "pattern=smpte"));
    let (y, rest) = bars.pixels.split_at(w * h);
    let (u, v) = rest.split_at(w / 2 * (h / 2));
    for r in 1..140 {
        assert_eq!(y[r * w..(r + 1) * w], y[..w], "luma row {r}");
    }
    for (name, plane) in [("U", u), ("V", v)] {
        for r in 1..70 {
            assert_eq!(plane[r * w / 2..(r + 1) * w / 2], plane[..w / 2], "{name} row {r}");
        }
    }
    assert_ne!(u[..w / 2], v[..w / 2], "U and V are different planes");
}

#[test]
fn the_engine_on_i420_frames_and_the_kernels_counts_what_the_cpu_path_counts() {
    let cfg = config();
    let mut model = ModelChoice::resolve(&cfg).unwrap();
    model.yuv_frames = true;
    let d = &cfg.detector;
    let settings = DecodeSettings {
        classes: vec![model.manifest.labels.person],
        min_score: model.min_score,
        nms_iou: model.nms_iou,
    };
    let backends: Vec<Box<dyn InferenceBackend>> = (0..d.resolved_workers())
        .map(|_| {
            let mut y = YuvDetector::load(
                HostKernels,
                &model.manifest,
                &model.model_path,
                &Accelerator::Cpu,
                Resize::Stretch,
                settings.clone(),
            )
            .unwrap();
            y.set_max_batch(d.batch_size);
            Box::new(y) as Box<dyn InferenceBackend>
        })
        .collect();
    assert!(backends[0].name().ends_with("+kernels-host-emulation"), "{}", backends[0].name());
    let batching = Batching {
        max_frames: d.batch_size.min(backends[0].max_batch()),
        deadline: std::time::Duration::from_millis(d.batch_deadline_ms),
        queue_frames: d.resolved_queue_frames(),
    };
    let engine = Engine::new(backends, batching, &model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = OutputSpec { out_dir: Some(dir.path().to_owned()), ..Default::default() };
    let job = file_job(&cfg, &model, &vtest(), "yuv".into(), out, memory_bus("yuv"), None).unwrap();
    let s = engine.start(job).unwrap().join().unwrap();
    assert_eq!(s.frames, 795);

    // The CPU path's counts (tests/golden/vtest/int8). The model input differs by a few
    // levels (GStreamer's videoconvert is darker than exact BT.601) and by the resampling,
    // which moves detections at the threshold, so within the golden tolerance for another
    // CPU kind.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/vtest/int8");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("summary.json")).unwrap()).unwrap();
    let got = [s.lines["plaza"].ins, s.lines["plaza"].outs, s.zones["lower-left"].visits];
    let golden =
        [&want["lines"]["plaza"]["in"], &want["lines"]["plaza"]["out"], &want["zones"]["lower-left"]["visits"]]
            .map(|v| v.as_u64().unwrap());
    eprintln!("plaza in/out and lower-left visits: I420 + kernels {got:?}, CPU path {golden:?}");
    for (g, w) in got.iter().zip(golden) {
        assert!(g.abs_diff(w) <= 2, "I420 + kernels {got:?} vs the CPU path {golden:?}");
    }
    assert!(dir.path().join("summary.json").is_file());
}

/// Frames stay in GPU memory only where GStreamer's nvcodec elements work (a driver); the
/// runtime then asks for `CudaYuv` (see `ModelChoice::cuda`). Asked for anyway, a source
/// says which element is missing instead of decoding anything.
#[test]
fn a_cuda_memory_source_without_nvcodec_names_the_missing_element() {
    retail_ingest::init().unwrap();
    if gstreamer::ElementFactory::find("cudaupload").is_some() {
        return;
    }
    let spec = SourceSpec {
        stream: StreamId::from("v"),
        width: 416,
        height: 416,
        order: PixelOrder::CudaYuv,
        display: false,
        cuda: None,
        software_decoding: false,
    };
    let err = FileSource::open(&vtest(), spec, &IngestConfig::default()).err().unwrap();
    assert_eq!(
        err.to_string(),
        retail_ingest::IngestError::MissingElement { element: "cudaupload".into() }.to_string()
    );
}
