//! The kernel's preprocessing against the pipeline's CPU path on real frames. Frames of
//! vtest.avi, decoded by GStreamer to I420 at their own size, go through the kernel body (its
//! host emulation); the same frames go through the file source the pipeline uses (GStreamer's
//! videoscale, then videoconvert to BGR at the model size). The two model inputs agree to
//! within a few levels, and the bundled detector finds the same people in both: the GPU path
//! feeds the model what the CPU path does.
//!
//! The few levels are GStreamer's, not the resampling: its videoconvert (I420 to BGR, 8-bit
//! fast path) is darker than the exact BT.601 limited-range transform the kernel computes, by
//! about 1, 4 and 2 levels in B, G and R on vtest, the same at full size with no scaling.

mod frames;

use std::path::Path;

use frames::{i420_frames, pair, to_packed};
use retail_core::StreamId;
use retail_infer::{ChannelOrder, Detector, Manifest, Precision};
use retail_ingest::{FileSource, IngestConfig, PixelOrder, SourceSpec};
use retail_kernels::{Matrix, ModelInput, Range, Resize};

/// Frames spread over the clip, with people near and far.
const FRAMES: [u64; 4] = [40, 240, 480, 700];

/// The pipeline's model input for the same frames: packed BGR at the model size.
fn cpu_path(path: &Path, (w, h): (u32, u32), wanted: &[u64]) -> Vec<Vec<u8>> {
    let spec = SourceSpec {
        stream: StreamId::from("vtest"),
        width: w,
        height: h,
        order: PixelOrder::Bgr,
        display: false,
        cuda: None,
        software_decoding: false,
    };
    let mut source = FileSource::open(path, spec, &IngestConfig::default()).unwrap();
    let mut out = Vec::new();
    while out.len() < wanted.len() {
        let frame = source.next_frame().unwrap().expect("the clip ended before the frames asked for");
        if wanted.contains(&frame.index) {
            out.push(frame.pixels);
        }
    }
    out
}

/// The detector's score threshold in this test; detections within 0.15 of it may flip
/// between two inputs a few levels apart, confident ones may not.
const THRESHOLD: f32 = 0.35;
const CONFIDENT: f32 = 0.5;

#[test]
fn kernel_preprocessing_gives_the_detector_what_the_cpu_path_does() {
    let vtest = retail_testkit::cache_home().join("media/vtest.avi");
    assert!(vtest.is_file(), "run scripts/setup.sh");
    retail_infer::init_runtime(None).unwrap();
    let manifest = Manifest::bundled();
    let (w, h) = manifest.input_size();
    let input = ModelInput {
        width: w,
        height: h,
        bgr: manifest.input.channel_order == ChannelOrder::Bgr,
        mean: manifest.input.mean,
        std: manifest.input.std,
        resize: Resize::Stretch,
        pad: 0.0,
        half: false,
    };
    let cpu = cpu_path(&vtest, (w, h), &FRAMES);
    let decoded = i420_frames(&vtest, &FRAMES);
    let model = manifest.resolve_model(None, None, Precision::Int8).unwrap();
    let mut detector = Detector::load(&manifest, &model, 1, vec![manifest.labels.person], THRESHOLD, 0.5).unwrap();

    let (mut paired, mut people, mut lone) = (0, 0, Vec::new());
    for (i, (decoded, cpu)) in decoded.iter().zip(&cpu).enumerate() {
        let frame = decoded.frame();
        // GStreamer's default for SD video without colorimetry is BT.601, limited range.
        let tensor = retail_kernels::host::preprocess(&[frame], &input, Matrix::Bt601, Range::Limited).unwrap();
        let kernel = to_packed(&tensor, &input);
        assert_eq!(kernel.len(), cpu.len());
        let diffs: Vec<u32> = kernel.iter().zip(cpu).map(|(a, b)| u32::from(a.abs_diff(*b))).collect();
        let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
        let bias = [0, 1, 2].map(|c| {
            let sum: i64 = kernel.iter().zip(cpu).skip(c).step_by(3).map(|(a, b)| i64::from(*a) - i64::from(*b)).sum();
            sum as f64 / (kernel.len() / 3) as f64
        });
        let within_8 = diffs.iter().filter(|d| **d <= 8).count() as f64 / diffs.len() as f64;
        eprintln!(
            "frame {}: mean |kernel - cpu| {mean:.2} levels, {:.1}% within 8, kernel - cpu per channel {bias:.2?}",
            FRAMES[i],
            within_8 * 100.0
        );
        assert!(mean < 5.0, "frame {}: the inputs differ by {mean:.2} levels on average", FRAMES[i]);
        assert!(within_8 > 0.95, "frame {}: only {:.1}% of values within 8 levels", FRAMES[i], within_8 * 100.0);

        let (a, b) = (detector.detect(cpu).unwrap(), detector.detect(&kernel).unwrap());
        let (p, only_cpu, only_kernel) = pair(&a, &b);
        eprintln!(
            "frame {}: {} people on the CPU path, {} from the kernel, {p} paired; unpaired scores {only_cpu:?} / {only_kernel:?}",
            FRAMES[i],
            a.len(),
            b.len()
        );
        (paired, people) = (paired + p, people + a.len());
        lone.extend(only_cpu.into_iter().chain(only_kernel).map(|s| (FRAMES[i], s)));
    }
    assert!(people >= 8, "the frames show people: {people}");
    assert!(paired as f64 >= 0.9 * people as f64, "paired {paired} of {people}");
    let confident: Vec<_> = lone.iter().filter(|(_, s)| *s >= CONFIDENT).collect();
    assert!(confident.is_empty(), "confident detections on one path only (frame, score): {confident:?}");
}
