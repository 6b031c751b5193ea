//! The kernels' own bodies (host emulation, `cuda/*.cu` compiled as C++) against the CPU
//! specification: the preprocessing reference in this crate and the pipeline's decoders.
//! The same comparison runs on a GPU in benches/gpu/verify.sh.
//!
//! Stated bounds: preprocessing in f32 within 1e-4 of the reference (normalised units, values
//! about -2..2.5); in f16 within one f16 rounding step of the reference's f32 value. Decoded
//! candidates: the same set, boxes and scores within 1e-5.

use retail_core::Detection;
use retail_infer::{NanoDetDecoder, OutputDecoder, TensorView, YoloV8Decoder};
use retail_kernels::reference;
use retail_kernels::{
    Candidate, KernelError, Matrix, ModelInput, NanoDetLevel, NanoDetSpec, Range, Resize, YuvFormat, YuvFrame, host,
};

mod common;

use common::{Planes, Rng, assert_close, nanodet_input};

#[test]
fn preprocessing_matches_the_reference_on_batches_of_odd_sizes() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Different sizes in one batch: down- and up-scaling, non-square, tiny.
    let sizes = [(638, 358), (1922, 1082), (2, 2), (90, 120), (96, 64), (34, 1000)];
    for format in [YuvFormat::Nv12, YuvFormat::I420] {
        let planes: Vec<Planes> = sizes.iter().map(|&(w, h)| Planes::random(&mut rng, format, w, h)).collect();
        let frames: Vec<YuvFrame<'_>> = planes.iter().map(Planes::frame).collect();
        for resize in [Resize::Stretch, Resize::Letterbox] {
            for half in [false, true] {
                for (matrix, range) in [(Matrix::Bt601, Range::Limited), (Matrix::Bt709, Range::Full)] {
                    let input = nanodet_input(resize, half);
                    let got = host::preprocess(&frames, &input, matrix, range).unwrap();
                    let want = reference::preprocess(&frames, &input, matrix, range).unwrap();
                    assert_close(&got, &want, &format!("{format:?} {resize:?} half={half} {matrix:?} {range:?}"));
                }
            }
        }
    }
}

#[test]
fn a_grey_frame_becomes_the_normalised_grey_and_letterbox_bars_the_pad_value() {
    // Y = 126 limited range is grey 128.0 after conversion (chroma neutral).
    let (w, h) = (64u32, 32u32);
    let luma = vec![126u8; 64 * 32];
    let uv = vec![128u8; 64 * 16];
    let frame = YuvFrame {
        format: YuvFormat::Nv12,
        width: w,
        height: h,
        luma: &luma,
        luma_pitch: 64,
        chroma_u: &uv,
        chroma_v: &[],
        chroma_pitch: 64,
    };
    let input = nanodet_input(Resize::Letterbox, false);
    let got = host::preprocess(&[frame], &input, Matrix::Bt601, Range::Limited).unwrap();
    let grey = (126.0 - 16.0) * 255.0 / 219.0;
    let plane = 96 * 64;
    // 64x32 into 96x64 keeps 2:1: 96x48 at rows 8..56.
    for c in 0..3 {
        let inside = got.get(c * plane + 30 * 96 + 40);
        let bar = got.get(c * plane + 2 * 96 + 40);
        let want_inside = (grey - input.mean[c]) / input.std[c];
        let want_bar = (114.0 - input.mean[c]) / input.std[c];
        assert!((inside - want_inside).abs() < 1e-4, "channel {c}: {inside} vs {want_inside}");
        assert!((bar - want_bar).abs() < 1e-6, "channel {c}: {bar} vs {want_bar}");
    }
}

#[test]
fn f16_rounding_is_round_to_nearest_even_as_on_the_gpu() {
    let mut rng = Rng(7);
    let specials = [0.0f32, -0.0, 1.0, 65504.0, 65520.0, 1e9, -1e9, 6.0e-8, 2.9e-8, 3.0e-8, 1.0e-5, 0.1, -2.5];
    let randoms = (0..100_000).map(|_| f32::from_bits(rng.next() as u32));
    for x in specials.into_iter().chain(randoms) {
        let got = host::f32_to_f16(x);
        let want = half::f16::from_f32(x);
        if x.is_nan() {
            assert!(half::f16::from_bits(got).is_nan(), "{x}");
        } else {
            assert_eq!(got, want.to_bits(), "{x} ({:#x}): {got:#x} vs {:#x}", x.to_bits(), want.to_bits());
        }
    }
}

#[test]
fn frames_that_cannot_be_read_safely_are_refused_naming_the_frame() {
    let luma = vec![0u8; 100];
    let frame = |w: u32, h: u32, pitch: usize| YuvFrame {
        format: YuvFormat::I420,
        width: w,
        height: h,
        luma: &luma,
        luma_pitch: pitch,
        chroma_u: &luma,
        chroma_v: &luma,
        chroma_pitch: pitch / 2,
    };
    let input = nanodet_input(Resize::Stretch, false);
    let ok = frame(10, 10, 10);
    for (bad, why) in
        [(frame(11, 10, 12), "even"), (frame(10, 10, 8), "shorter than a row"), (frame(10, 12, 10), "luma plane")]
    {
        let err = host::preprocess(&[ok, bad], &input, Matrix::Bt601, Range::Limited).unwrap_err();
        assert!(matches!(err, KernelError::Frame { index: 1, .. }), "{err}");
        assert!(err.to_string().contains(why), "{err}");
        let err = reference::preprocess(&[ok, bad], &input, Matrix::Bt601, Range::Limited).unwrap_err();
        assert!(err.to_string().starts_with("frame 1 of the batch"), "{err}");
    }
}

/// Kernel candidates of `item` as detections, sorted like `sorted`.
fn of_item(c: &[Candidate], item: u32) -> Vec<Detection> {
    sorted(
        c.iter()
            .filter(|c| c.item == item)
            .map(|c| Detection {
                bbox: retail_core::BBox::new(c.x1, c.y1, c.x2, c.y2),
                score: c.score,
                class: c.class_id,
            })
            .collect(),
    )
}

fn sorted(mut d: Vec<Detection>) -> Vec<Detection> {
    d.sort_by(|a, b| (a.class, a.bbox.x1, a.bbox.y1).partial_cmp(&(b.class, b.bbox.x1, b.bbox.y1)).unwrap());
    d
}

fn assert_same_detections(got: &[Detection], want: &[Detection], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {} candidates vs {}", got.len(), want.len());
    assert!(!want.is_empty(), "{what}: the scene has no candidate: the test would prove nothing");
    for (g, w) in got.iter().zip(want) {
        let pairs = [(g.bbox.x1, w.bbox.x1), (g.bbox.y1, w.bbox.y1), (g.bbox.x2, w.bbox.x2), (g.bbox.y2, w.bbox.y2)];
        let close = pairs.iter().all(|(a, b)| (a - b).abs() <= 1e-5) && (g.score - w.score).abs() <= 1e-6;
        assert!(close && g.class == w.class, "{what}: kernel {g:?} vs decoder {w:?}");
    }
}

#[test]
fn nanodet_decoding_matches_the_pipeline_decoder() {
    let mut rng = Rng(42);
    let spec = NanoDetSpec { input_w: 96, input_h: 64, num_classes: 5, reg_max: 7 };
    let strides = [8u32, 16, 32];
    let batch = 3;
    let bins = spec.reg_max + 1;
    let levels: Vec<(u32, Vec<f32>, Vec<f32>)> = strides
        .iter()
        .map(|&s| {
            let cells = ((96 / s) * (64 / s)) as usize;
            let scores = (0..batch * cells * 5).map(|_| rng.unit().powi(4)).collect();
            let boxes = (0..batch * cells * 4 * bins).map(|_| rng.unit() * 8.0 - 4.0).collect();
            (s, scores, boxes)
        })
        .collect();
    let views: Vec<NanoDetLevel<'_>> =
        levels.iter().map(|(s, sc, bx)| NanoDetLevel { stride: *s, scores: sc, boxes: bx }).collect();
    let classes = [0u32, 3];
    let got = host::nanodet_decode(&spec, &views, batch, &classes, 0.3, 4096).unwrap();
    let decoder = NanoDetDecoder {
        input_w: 96,
        input_h: 64,
        reg_max: spec.reg_max,
        num_classes: 5,
        levels: strides.iter().map(|s| (*s, format!("s{s}"), format!("b{s}"))).collect(),
    };
    for item in 0..batch {
        let mut shapes = Vec::new();
        for (s, sc, bx) in &levels {
            let cells = ((96 / s) * (64 / s)) as i64;
            let n = sc.len() / batch;
            let m = bx.len() / batch;
            shapes.push((format!("s{s}"), [1, cells, 5], sc[item * n..(item + 1) * n].to_vec()));
            shapes.push((format!("b{s}"), [1, cells, 4 * bins as i64], bx[item * m..(item + 1) * m].to_vec()));
        }
        let views: Vec<TensorView<'_>> =
            shapes.iter().map(|(name, shape, data)| TensorView { name, shape, data }).collect();
        let mut want = Vec::new();
        decoder.decode(&views, &classes, 0.3, &mut want).unwrap();
        assert_same_detections(&of_item(&got, item as u32), &sorted(want), &format!("item {item}"));
    }
}

#[test]
fn yolov8_decoding_matches_the_pipeline_decoder() {
    let mut rng = Rng(99);
    let (batch, num_classes, anchors) = (2usize, 4usize, 500usize);
    let rows = 4 + num_classes;
    let mut pred = vec![0f32; batch * rows * anchors];
    for b in 0..batch {
        for a in 0..anchors {
            let at = |r: usize| b * rows * anchors + r * anchors + a;
            pred[at(0)] = rng.unit() * 640.0;
            pred[at(1)] = rng.unit() * 480.0;
            pred[at(2)] = rng.unit() * 200.0;
            pred[at(3)] = rng.unit() * 300.0;
            for c in 0..num_classes {
                pred[at(4 + c)] = rng.unit().powi(3);
            }
        }
    }
    let classes = [0u32, 2];
    let got = host::yolov8_decode(&pred, batch, num_classes, 640, 480, &classes, 0.4, 4096).unwrap();
    let decoder = YoloV8Decoder { input_w: 640, input_h: 480, num_classes, output: "output0".into() };
    for item in 0..batch {
        let data = &pred[item * rows * anchors..(item + 1) * rows * anchors];
        let shape = [1, rows as i64, anchors as i64];
        let view = TensorView { name: "output0", shape: &shape, data };
        let mut want = Vec::new();
        decoder.decode(&[view], &classes, 0.4, &mut want).unwrap();
        assert_same_detections(&of_item(&got, item as u32), &sorted(want), &format!("item {item}"));
    }
}

#[test]
fn decoder_inputs_that_do_not_fit_are_refused() {
    let spec = NanoDetSpec { input_w: 32, input_h: 32, num_classes: 2, reg_max: 3 };
    let scores = vec![0.9f32; 16 * 2];
    let boxes = vec![0f32; 16 * 16];
    let level = NanoDetLevel { stride: 8, scores: &scores, boxes: &boxes };
    // A batch of 2 needs twice the values.
    let err = host::nanodet_decode(&spec, &[level], 2, &[0], 0.5, 100).unwrap_err();
    assert!(err.to_string().contains("expected 64 and 512 for a batch of 2"), "{err}");
    let err = host::nanodet_decode(&spec, &[level], 1, &[2], 0.5, 100).unwrap_err();
    assert!(err.to_string().contains("class 2 is not below the model's 2 classes"), "{err}");
    let bad_stride = NanoDetLevel { stride: 5, ..level };
    assert!(host::nanodet_decode(&spec, &[bad_stride], 1, &[0], 0.5, 100).is_err());
    // 16 cells above the threshold into room for 10.
    let err = host::nanodet_decode(&spec, &[level], 1, &[0], 0.5, 10).unwrap_err();
    assert!(matches!(err, KernelError::TooManyCandidates { count: 16, capacity: 10 }), "{err}");
    let err = host::yolov8_decode(&[0.0; 13], 1, 2, 64, 64, &[0], 0.5, 10).unwrap_err();
    assert!(err.to_string().contains("not a batch of 1 x 6 rows"), "{err}");
}

#[test]
fn model_inputs_and_batches_the_kernels_cannot_produce_are_refused() {
    let planes = Planes::random(&mut Rng(5), YuvFormat::Nv12, 16, 16);
    let frame = planes.frame();
    for (input, why) in [
        (ModelInput { width: 0, ..nanodet_input(Resize::Letterbox, false) }, "each side must be 1..4096"),
        (ModelInput { height: 5000, ..nanodet_input(Resize::Stretch, false) }, "each side must be 1..4096"),
        (ModelInput { std: [1.0, 0.0, 1.0], ..nanodet_input(Resize::Stretch, false) }, "std non-zero"),
        (ModelInput { pad: f32::NAN, ..nanodet_input(Resize::Letterbox, false) }, "pad NaN must be finite"),
    ] {
        let err = host::preprocess(&[frame], &input, Matrix::Bt601, Range::Limited).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        let err = reference::preprocess(&[frame], &input, Matrix::Bt601, Range::Limited).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    let input = nanodet_input(Resize::Stretch, false);
    let err = host::preprocess(&[], &input, Matrix::Bt601, Range::Limited).unwrap_err();
    assert!(err.to_string().contains("0 frames"), "{err}");
    // A pitch the kernels' 32-bit indexing cannot hold, whatever the slice.
    let huge = YuvFrame { luma_pitch: 1 << 31, ..frame };
    let err = host::preprocess(&[huge], &input, Matrix::Bt601, Range::Limited).unwrap_err();
    assert!(err.to_string().contains("bytes per row"), "{err}");
}

#[test]
fn decoder_classes_must_be_distinct_and_batches_non_empty() {
    let spec = NanoDetSpec { input_w: 32, input_h: 32, num_classes: 2, reg_max: 3 };
    let scores = vec![0.9f32; 16 * 2];
    let boxes = vec![0f32; 16 * 16];
    let level = NanoDetLevel { stride: 8, scores: &scores, boxes: &boxes };
    let err = host::nanodet_decode(&spec, &[level], 1, &[0, 0], 0.5, 100).unwrap_err();
    assert!(err.to_string().contains("names a class twice"), "{err}");
    let err = host::nanodet_decode(&spec, &[level], 0, &[0], 0.5, 100).unwrap_err();
    assert!(err.to_string().contains("0 frames"), "{err}");
    let wide = NanoDetSpec { reg_max: usize::MAX, ..spec };
    let err = host::nanodet_decode(&wide, &[level], 1, &[0], 0.5, 100).unwrap_err();
    assert!(err.to_string().contains("reg-max"), "{err}");
    let err = host::yolov8_decode(&[0.0; 12], 0, 2, 64, 64, &[0], 0.5, 10).unwrap_err();
    assert!(err.to_string().contains("0 frames"), "{err}");
}

/// The gate kernel (motion gating on frames in GPU memory) against its CPU specification:
/// the same sum per band of rows, exactly, at odd sizes and padded pitches; the reference
/// copy is the plane's rows packed.
#[test]
fn gate_kernel_matches_the_cpu_specification_on_odd_sizes() {
    use retail_kernels::gate;
    let mut rng = Rng(0x5eed_6a7e_0001);
    for (w, h) in [(1922, 1082), (37, 5), (1, 1), (300, 129), (257, 64), (640, 65)] {
        let (now, before) =
            (Planes::random(&mut rng, YuvFormat::I420, w, h), Planes::random(&mut rng, YuvFormat::I420, w, h));
        let (now, before) = (now.frame(), before.frame());
        let reference = host::copy_luma(before.luma, before.luma_pitch, (w, h)).unwrap();
        let packed: Vec<u8> =
            before.luma.chunks(before.luma_pitch).take(h as usize).flat_map(|r| &r[..w as usize]).copied().collect();
        assert!(reference == packed, "{w}x{h}: the reference is the rows packed");
        let got = host::luma_band_absdiff(now.luma, now.luma_pitch, &reference, (w, h)).unwrap();
        let want = gate::luma_band_sums(now.luma, now.luma_pitch, &reference, (w, h)).unwrap();
        assert_eq!(got, want, "{w}x{h}");
        assert!(got.iter().sum::<u64>() > 0, "{w}x{h}: random frames differ");
        let same = host::luma_band_absdiff(before.luma, before.luma_pitch, &reference, (w, h)).unwrap();
        assert_eq!(gate::max_band_mean(&same, (w, h)), 0.0, "{w}x{h}: a frame does not differ from itself");
    }
}

/// What the gate is for: a small person entering moves one band far past sensor noise.
#[test]
fn the_gate_sees_a_small_person_but_not_sensor_noise() {
    use retail_kernels::gate;
    let (w, h) = (1280u32, 720u32);
    let still = vec![100u8; (w * h) as usize];
    let noisy: Vec<u8> = still.iter().enumerate().map(|(i, p)| if i % 2 == 0 { p + 1 } else { p - 1 }).collect();
    let mut person = still.clone();
    // 40x80 pixels (0.35 % of the frame), brighter by 60.
    for y in 300..380 {
        for x in 600..640 {
            person[y * w as usize + x] = 160;
        }
    }
    let max = |frame: &[u8]| {
        gate::max_band_mean(&host::luma_band_absdiff(frame, w as usize, &still, (w, h)).unwrap(), (w, h))
    };
    assert!(max(&noisy) <= 1.0, "{}", max(&noisy));
    assert!(max(&person) > 1.5, "{}", max(&person));
    let whole_frame_mean = 60.0 * 3200.0 / (w * h) as f32;
    assert!(whole_frame_mean < 0.25, "a whole-frame mean would miss them: {whole_frame_mean}");
}
