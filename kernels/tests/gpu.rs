//! The GPU side (feature `cuda`). Without a GPU machine: every kernel source compiles to PTX
//! for sm_80 and sm_90 with NVRTC (CI gets NVRTC from the `nvidia-cuda-nvrtc` wheel and sets
//! `RETAIL_AI_REQUIRE_NVRTC=1`, so a missing library fails instead of skipping), a compile
//! error comes back with NVRTC's log, and asking for the GPU without a driver is an error,
//! never a panic. With a driver (benches/gpu/verify.sh sets `RETAIL_AI_REQUIRE_GPU=1`): the
//! kernels on the device against the host emulation and the CPU reference, same bounds.
#![cfg(feature = "cuda")]

mod common;

use common::{Planes, Rng, assert_close, nanodet_input};
use retail_kernels::gpu::{self, Gpu};
use retail_kernels::reference;
use retail_kernels::{
    KERNELS, KernelError, KernelSource, Matrix, NanoDetLevel, NanoDetSpec, Range, Resize, YuvFormat, host,
};

fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == "1")
}

/// Whether NVRTC is here; fails when the environment says it must be.
fn have_nvrtc() -> bool {
    if gpu::nvrtc_present() {
        return true;
    }
    assert!(!required("RETAIL_AI_REQUIRE_NVRTC"), "RETAIL_AI_REQUIRE_NVRTC=1 but libnvrtc is not on LD_LIBRARY_PATH");
    eprintln!("skipped: no libnvrtc here (make test provides it)");
    false
}

#[test]
fn every_kernel_compiles_to_ptx_for_sm80_and_sm90() {
    if !have_nvrtc() {
        return;
    }
    for arch in ["compute_80", "compute_90"] {
        for kernel in &KERNELS {
            let ptx = gpu::compile_ptx(kernel, arch).unwrap_or_else(|e| panic!("{e}")).to_src();
            let target = arch.replace("compute_", "sm_");
            assert!(ptx.contains(&format!(".target {target}")), "{} for {arch}: no .target {target}", kernel.name);
            for entry in kernel.entry_points {
                assert!(ptx.contains(&format!(".entry {entry}(")), "{} for {arch}: no entry {entry}", kernel.name);
            }
        }
    }
}

#[test]
fn a_type_error_in_a_kernel_is_reported_with_nvrtc_s_log() {
    if !have_nvrtc() {
        return;
    }
    const BROKEN: KernelSource = KernelSource::new(
        "broken.cu",
        "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }\n",
        &["k"],
    );
    let err = gpu::compile_ptx(&BROKEN, "compute_90").unwrap_err();
    assert!(matches!(err, KernelError::Compile { kernel: "broken.cu", .. }), "{err}");
    assert!(err.to_string().contains("undefined_name"), "{err}");
}

#[test]
fn without_a_driver_the_gpu_is_an_error_not_a_panic() {
    if gpu::driver_present() {
        eprintln!("skipped: this machine has a CUDA driver (the GPU tests below run instead)");
        return;
    }
    let err = Gpu::new(0).err().expect("no driver, yet a GPU");
    assert!(matches!(err, KernelError::NoDriver), "{err}");
    assert!(err.to_string().contains("no CUDA driver"), "{err}");
}

/// The device, or `None` (skipping) on a machine without one; fails under
/// `RETAIL_AI_REQUIRE_GPU=1`.
fn device() -> Option<Gpu> {
    if !gpu::driver_present() {
        assert!(!required("RETAIL_AI_REQUIRE_GPU"), "RETAIL_AI_REQUIRE_GPU=1 but there is no CUDA driver");
        eprintln!("skipped: no CUDA driver here");
        return None;
    }
    Some(Gpu::new(0).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn gpu_preprocessing_matches_the_host_emulation_and_the_reference() {
    let Some(gpu) = device() else { return };
    let mut rng = Rng(0xfeed_0001);
    let sizes = [(638, 358), (1922, 1082), (2, 2), (90, 120), (34, 1000)];
    for format in [YuvFormat::Nv12, YuvFormat::I420] {
        let planes: Vec<Planes> = sizes.iter().map(|&(w, h)| Planes::random(&mut rng, format, w, h)).collect();
        let frames: Vec<_> = planes.iter().map(Planes::frame).collect();
        for resize in [Resize::Stretch, Resize::Letterbox] {
            for half in [false, true] {
                let input = nanodet_input(resize, half);
                let what = format!("GPU {format:?} {resize:?} half={half}");
                let got = gpu.preprocess(&frames, &input, Matrix::Bt709, Range::Limited).unwrap();
                let want = reference::preprocess(&frames, &input, Matrix::Bt709, Range::Limited).unwrap();
                assert_close(&got, &want, &what);
                let emulated = host::preprocess(&frames, &input, Matrix::Bt709, Range::Limited).unwrap();
                assert_close(&got, &emulated, &format!("{what} vs host emulation"));
            }
        }
    }
}

#[test]
fn gpu_decoding_finds_the_host_emulation_s_candidates() {
    let Some(gpu) = device() else { return };
    let mut rng = Rng(3);
    let spec = NanoDetSpec { input_w: 416, input_h: 416, num_classes: 80, reg_max: 10 };
    let batch = 4;
    let levels: Vec<(u32, Vec<f32>, Vec<f32>)> = [8u32, 16, 32]
        .iter()
        .map(|&s| {
            let cells = ((416 / s) * (416 / s)) as usize;
            let scores = (0..batch * cells * 80).map(|_| rng.unit().powi(8)).collect();
            let boxes = (0..batch * cells * 44).map(|_| rng.unit() * 8.0 - 4.0).collect();
            (s, scores, boxes)
        })
        .collect();
    let views: Vec<NanoDetLevel<'_>> =
        levels.iter().map(|(s, sc, bx)| NanoDetLevel { stride: *s, scores: sc, boxes: bx }).collect();
    let key = |c: &retail_kernels::Candidate| (c.item, c.class_id, (c.x1 * 1e4) as i64, (c.y1 * 1e4) as i64);
    let mut got = gpu.nanodet_decode(&spec, &views, batch, &[0], 0.35, 1 << 16).unwrap();
    let mut want = host::nanodet_decode(&spec, &views, batch, &[0], 0.35, 1 << 16).unwrap();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got.len(), want.len());
    assert!(!want.is_empty());
    for (g, w) in got.iter().zip(&want) {
        let d = [(g.x1, w.x1), (g.y1, w.y1), (g.x2, w.x2), (g.y2, w.y2), (g.score, w.score)];
        assert!(d.iter().all(|(a, b)| (a - b).abs() <= 1e-5) && g.item == w.item, "{g:?} vs {w:?}");
    }
}
