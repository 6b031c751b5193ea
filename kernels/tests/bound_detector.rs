//! The detector fed YUV frames with its tensors bound where the kernels run, on the CPU: the
//! kernels' host emulation writes the input ONNX Runtime reads and decodes the outputs where
//! ONNX Runtime wrote them. It must find what the pipeline's detector finds in the same
//! preprocessed frames, in frame coordinates whatever the placement, and a batch must give
//! each frame what the frame alone gives. On a GPU the same code runs with device memory.

mod frames;

use frames::{I420, i420_frames, to_packed};
use retail_core::{Detection, YuvColour, YuvMatrix};
use retail_infer::{Accelerator, ChannelOrder, Detector, FrameRef, InferenceBackend, Manifest, Precision};
use retail_kernels::{
    DecodeSettings, HostKernels, KernelError, Matrix, ModelInput, Range, Resize, YuvDetector, YuvFrame,
};

/// Frames spread over vtest, with people near and far.
const FRAMES: [u64; 4] = [40, 240, 480, 700];
const COLOUR: (Matrix, Range) = (Matrix::Bt601, Range::Limited);

fn settings(manifest: &Manifest) -> DecodeSettings {
    DecodeSettings { classes: vec![manifest.labels.person], min_score: 0.35, nms_iou: 0.5 }
}

fn models(manifest: &Manifest) -> (std::path::PathBuf, std::path::PathBuf) {
    retail_infer::init_runtime(None).unwrap();
    let single = manifest.resolve_model(None, None, Precision::Int8).unwrap();
    let stem = single.file_stem().unwrap().to_string_lossy().into_owned();
    let batch = single.with_file_name(format!("{stem}-batch.onnx"));
    assert!(batch.is_file(), "{} missing: run scripts/setup.sh", batch.display());
    (single, batch)
}

fn vtest_frames() -> Vec<I420> {
    let vtest = retail_testkit::cache_home().join("media/vtest.avi");
    assert!(vtest.is_file(), "run scripts/setup.sh");
    i420_frames(&vtest, &FRAMES)
}

fn model_input(manifest: &Manifest, resize: Resize) -> ModelInput {
    let (width, height) = manifest.input_size();
    ModelInput {
        width,
        height,
        bgr: manifest.input.channel_order == ChannelOrder::Bgr,
        mean: manifest.input.mean,
        std: manifest.input.std,
        resize,
        pad: 114.0,
        half: false,
    }
}

/// `a` and `b` paired best-IoU first; panics naming the first detection without a partner
/// at `min_iou`, or whose score differs by more than `score_tol`.
fn assert_same(a: &[Detection], b: &[Detection], min_iou: f32, score_tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {} detections vs {}:\n{a:?}\n{b:?}", a.len(), b.len());
    let mut used = vec![false; b.len()];
    for d in a {
        let best = (0..b.len())
            .filter(|&j| !used[j])
            .max_by(|&i, &j| d.bbox.iou(&b[i].bbox).total_cmp(&d.bbox.iou(&b[j].bbox)))
            .unwrap_or_else(|| panic!("{what}: nothing left to pair {d:?} with"));
        let iou = d.bbox.iou(&b[best].bbox);
        assert!(iou >= min_iou, "{what}: {d:?} best matches {:?} at IoU {iou:.3}", b[best]);
        assert!((d.score - b[best].score).abs() <= score_tol, "{what}: scores of {d:?} and {:?}", b[best]);
        used[best] = true;
    }
}

/// Each detection of `a` scoring 0.45 or more has one in `b` at `min_iou`, its score within
/// `score_tol`.
fn assert_covered(a: &[Detection], b: &[Detection], min_iou: f32, score_tol: f32, what: &str) {
    for d in a.iter().filter(|d| d.score >= 0.45) {
        let best = b.iter().max_by(|x, y| d.bbox.iou(&x.bbox).total_cmp(&d.bbox.iou(&y.bbox)));
        let ok = best.is_some_and(|e| d.bbox.iou(&e.bbox) >= min_iou && (d.score - e.score).abs() <= score_tol);
        assert!(ok, "{what}: {d:?} has no partner (best {best:?}) in\n{b:?}");
    }
}

#[test]
fn bound_tensors_give_what_the_pipelines_detector_gives_on_the_same_input() {
    let manifest = Manifest::bundled();
    let (_, batch_model) = models(&manifest);
    let frames = vtest_frames();
    let views: Vec<YuvFrame<'_>> = frames.iter().map(I420::frame).collect();
    let s = settings(&manifest);

    let mut bound =
        YuvDetector::load(HostKernels, &manifest, &batch_model, &Accelerator::Cpu, Resize::Stretch, s.clone()).unwrap();
    assert_eq!(bound.set_max_batch(4), 4, "the -batch model has a dynamic batch dimension");
    let got = bound.detect(&views, COLOUR).unwrap();
    assert_eq!(got.len(), FRAMES.len());

    // The pipeline's detector on the kernel's input rounded to 8 bits, as it takes frames.
    let mut reference = Detector::load(&manifest, &batch_model, 1, s.classes.clone(), s.min_score, s.nms_iou).unwrap();
    let input = model_input(&manifest, Resize::Stretch);
    let mut people = 0;
    for (i, view) in views.iter().enumerate() {
        let tensor = retail_kernels::host::preprocess(&[*view], &input, COLOUR.0, COLOUR.1).unwrap();
        let want = reference.detect(&to_packed(&tensor, &input)).unwrap();
        eprintln!("frame {}: {} people bound, {} by the detector", FRAMES[i], got[i].len(), want.len());
        // Half a level of rounding moves boxes and scores by little; a wrong layout, batch
        // offset or box scale moves them by much more.
        // Every confident detection on one side has its partner on the other (which may sit
        // just under the confidence line).
        let what = format!("frame {}", FRAMES[i]);
        assert_covered(&got[i], &want, 0.9, 0.03, &what);
        assert_covered(&want, &got[i], 0.9, 0.03, &what);
        people += want.len();
    }
    assert!(people >= 8, "the frames show people: {people}");
}

#[test]
fn a_batch_gives_each_frame_what_it_gives_alone_whatever_the_sizes() {
    let manifest = Manifest::bundled();
    let (_, batch_model) = models(&manifest);
    let frames = vtest_frames();
    // Frames of two sizes and aspect ratios in one batch: every other one cut to 16:9 (so
    // its letterbox differs), the others at half size.
    let cut: Vec<I420> = frames.iter().map(|f| crop_rows(f, 72, 432)).collect();
    let halves: Vec<I420> = frames.iter().map(half_size).collect();
    let views: Vec<YuvFrame<'_>> =
        (0..frames.len()).map(|i| if i % 2 == 0 { cut[i].frame() } else { halves[i].frame() }).collect();
    let mut d = YuvDetector::load(
        HostKernels,
        &manifest,
        &batch_model,
        &Accelerator::Cpu,
        Resize::Letterbox,
        settings(&manifest),
    )
    .unwrap();
    let placements: Vec<_> = views.iter().map(|v| d.model_input().placement(v.width, v.height)).collect();
    assert_ne!(placements[0], placements[1], "the batch mixes letterboxes");
    d.set_max_batch(3); // a full batch, then a batch of one
    let batch = d.detect(&views, COLOUR).unwrap();
    for (i, view) in views.iter().enumerate() {
        let alone = d.detect(&[*view], COLOUR).unwrap().remove(0);
        assert!(!alone.is_empty(), "frame {}: nobody found: the test would prove nothing", FRAMES[i]);
        assert_same(&batch[i], &alone, 0.999, 1e-4, &format!("frame {} ({}x{})", FRAMES[i], view.width, view.height));
    }
}

#[test]
fn as_the_engines_backend_frames_of_mixed_colorimetry_keep_their_order_and_colours() {
    let manifest = Manifest::bundled();
    let (_, batch_model) = models(&manifest);
    let frames = vtest_frames();
    let mut d = YuvDetector::load(
        HostKernels,
        &manifest,
        &batch_model,
        &Accelerator::Cpu,
        Resize::Stretch,
        settings(&manifest),
    )
    .unwrap();
    d.set_max_batch(4);
    let colours = [
        YuvColour { matrix: YuvMatrix::Bt601, full_range: false },
        YuvColour { matrix: YuvMatrix::Bt709, full_range: false },
        YuvColour { matrix: YuvMatrix::Bt601, full_range: true },
        YuvColour { matrix: YuvMatrix::Bt601, full_range: false },
    ];
    let packed: Vec<Vec<u8>> = frames.iter().map(pack_i420).collect();
    let refs: Vec<FrameRef<'_>> = frames
        .iter()
        .zip(&packed)
        .zip(colours)
        .map(|((f, p), colour)| FrameRef { pixels: p, width: f.width, height: f.height, colour, device: None })
        .collect();
    let got = InferenceBackend::detect_batch(&mut d, &refs).unwrap();
    assert_eq!(got.len(), 4);
    for (i, f) in frames.iter().enumerate() {
        let range = if colours[i].full_range { Range::Full } else { Range::Limited };
        let matrix = if colours[i].matrix == YuvMatrix::Bt709 { Matrix::Bt709 } else { Matrix::Bt601 };
        let alone = d.detect(&[f.frame()], (matrix, range)).unwrap().remove(0);
        assert_same(&got[i], &alone, 0.999, 1e-4, &format!("frame {} as {:?}", FRAMES[i], colours[i]));
    }
    // The colours matter: full range reads the same bytes as another picture.
    let limited = d.detect(&[frames[2].frame()], COLOUR).unwrap().remove(0);
    let scores = |d: &[Detection]| d.iter().map(|d| d.score).collect::<Vec<_>>();
    assert_ne!(scores(&got[2]), scores(&limited), "full range and limited range gave the same scores");

    let mut bad = refs.clone();
    bad[3].pixels = &packed[3][1..];
    let err = InferenceBackend::detect_batch(&mut d, &bad).unwrap_err();
    assert!(err.to_string().contains("frame 3 of the batch: 663551 bytes, a 768x576 I420 picture has 663552"), "{err}");

    // A picture in GPU memory is named by its place in the batch, not read as host pixels.
    let on_gpu = retail_core::DevicePicture {
        format: retail_core::DeviceYuv::Nv12,
        width: 768,
        height: 576,
        luma: 0x1000,
        chroma_u: 0x2000,
        chroma_v: 0,
        luma_pitch: 1024,
        chroma_pitch: 1024,
        context: 1,
        keep: std::sync::Arc::new(()),
    };
    let mut gpu_frame = refs.clone();
    gpu_frame[2] = FrameRef { pixels: &[], device: Some(&on_gpu), ..refs[2] };
    let err = InferenceBackend::detect_batch(&mut d, &gpu_frame).unwrap_err();
    assert!(err.to_string().contains("frame 2 of the batch: in GPU memory"), "{err}");
}

#[test]
fn letterboxed_boxes_come_back_in_frame_coordinates() {
    let manifest = Manifest::bundled();
    let (single, _) = models(&manifest);
    let frames = vtest_frames();
    let s = settings(&manifest);
    let load =
        |resize| YuvDetector::load(HostKernels, &manifest, &single, &Accelerator::Cpu, resize, s.clone()).unwrap();
    let (mut stretch, mut letterbox) = (load(Resize::Stretch), load(Resize::Letterbox));
    let (dx, dy, _, _) = letterbox.model_input().placement(frames[0].width, frames[0].height);
    assert!(dx > 0 || dy > 0, "vtest is 4:3, the model input square: there are bars");
    let (mut paired, mut confident) = (0, 0);
    for (i, f) in frames.iter().enumerate() {
        let a = stretch.detect(&[f.frame()], COLOUR).unwrap().remove(0);
        let b = letterbox.detect(&[f.frame()], COLOUR).unwrap().remove(0);
        // The model sees the people at other scales, so scores and boxes differ somewhat; a
        // box left in model-input coordinates would be off by the bar, a fifth of its height.
        for d in a.iter().filter(|d| d.score >= 0.5) {
            confident += 1;
            let best = b.iter().map(|e| d.bbox.iou(&e.bbox)).fold(0.0, f32::max);
            if best >= 0.6 {
                paired += 1;
            } else {
                eprintln!("frame {}: {d:?} has no letterboxed partner (best IoU {best:.2})", FRAMES[i]);
            }
        }
    }
    assert!(confident >= 4, "confident people: {confident}");
    assert!(
        paired as f64 >= 0.8 * confident as f64,
        "{paired} of {confident} confident people found in both placements"
    );
}

#[test]
fn a_fixed_batch_model_runs_frame_by_frame_and_bad_frames_are_named() {
    let manifest = Manifest::bundled();
    let (single, _) = models(&manifest);
    let frames = vtest_frames();
    let mut d =
        YuvDetector::load(HostKernels, &manifest, &single, &Accelerator::Cpu, Resize::Stretch, settings(&manifest))
            .unwrap();
    assert_eq!(d.set_max_batch(8), 1);
    let views: Vec<YuvFrame<'_>> = frames.iter().map(I420::frame).collect();
    assert_eq!(d.detect(&views[..3], COLOUR).unwrap().len(), 3);

    let mut odd = views[0];
    odd.width -= 1;
    let err = d.detect(&[views[0], odd], COLOUR).unwrap_err();
    assert!(err.to_string().starts_with("frame 1 of the batch: size 767x576"), "{err}");

    let missing = single.with_file_name("no-such-model.onnx");
    let err =
        YuvDetector::load(HostKernels, &manifest, &missing, &Accelerator::Cpu, Resize::Stretch, settings(&manifest))
            .err()
            .unwrap();
    assert!(matches!(err, KernelError::Infer { .. }) && err.to_string().contains("no-such-model.onnx"), "{err}");
}

/// Rows `top..top + rows` of `f` (even), sharing nothing with it.
fn crop_rows(f: &I420, top: usize, rows: u32) -> I420 {
    let mut offsets = f.offsets;
    offsets[0] += top * f.strides[0];
    offsets[1] += top / 2 * f.strides[1];
    offsets[2] += top / 2 * f.strides[2];
    I420 { width: f.width, height: rows, data: f.data.clone(), offsets, strides: f.strides }
}

/// `f`'s planes packed tightly, as sources hand I420 to the engine.
fn pack_i420(f: &I420) -> Vec<u8> {
    let (w, h) = (f.width as usize, f.height as usize);
    let mut out = Vec::new();
    for (p, (row, rows)) in [(w, h), (w / 2, h / 2), (w / 2, h / 2)].into_iter().enumerate() {
        for r in 0..rows {
            let at = f.offsets[p] + r * f.strides[p];
            out.extend_from_slice(&f.data[at..at + row]);
        }
    }
    out
}

/// `f` at half its size (2x2 means), packed tightly.
fn half_size(f: &I420) -> I420 {
    let (w, h) = (f.width / 2, f.height / 2);
    let (cw, ch) = (w / 2, h / 2);
    let plane = |p: usize, pw: u32, ph: u32| -> Vec<u8> {
        let (src, stride) = (&f.data[f.offsets[p]..], f.strides[p]);
        let mut out = Vec::with_capacity((pw * ph) as usize);
        for y in 0..ph as usize {
            for x in 0..pw as usize {
                let at = |dx: usize, dy: usize| u32::from(src[(2 * y + dy) * stride + 2 * x + dx]);
                out.push(((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1) + 2) / 4) as u8);
            }
        }
        out
    };
    let (y, u, v) = (plane(0, w, h), plane(1, cw, ch), plane(2, cw, ch));
    let offsets = [0, y.len(), y.len() + u.len()];
    let data = [y, u, v].concat();
    I420 { width: w, height: h, data, offsets, strides: [w as usize, cw as usize, cw as usize] }
}
