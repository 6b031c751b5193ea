//! The GPU side (feature `cuda`). Without a GPU machine: every kernel source compiles to PTX
//! for sm_80 and sm_90 with NVRTC (CI gets NVRTC from the `nvidia-cuda-nvrtc` wheel and sets
//! `RETAIL_AI_REQUIRE_NVRTC=1`, so a missing library fails instead of skipping), a compile
//! error comes back with NVRTC's log, and asking for the GPU without a driver is an error,
//! never a panic. With a driver (benches/gpu/verify.sh sets `RETAIL_AI_REQUIRE_GPU=1`): the
//! kernels on the device against the host emulation and the CPU reference, same bounds.
#![cfg(feature = "cuda")]

mod common;

use common::{Planes, Rng, assert_close, nanodet_input};
use retail_core::{DevicePicture, DeviceYuv};
use retail_kernels::Planes as Placed;
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
    let levels = random_levels(&mut rng, batch);
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

/// The device address of a buffer this test owns.
fn address<T>(gpu: &Gpu, s: &cudarc::driver::CudaSlice<T>) -> u64 {
    use cudarc::driver::DevicePtr;
    s.device_ptr(gpu.stream()).0
}

#[test]
fn gpu_preprocessing_into_memory_the_crate_does_not_own_matches_its_own_buffers() {
    let Some(gpu) = device() else { return };
    let mut rng = Rng(0xfeed_0002);
    let planes: Vec<Planes> =
        [(1920, 1080), (640, 360)].iter().map(|&(w, h)| Planes::random(&mut rng, YuvFormat::Nv12, w, h)).collect();
    let frames: Vec<_> = planes.iter().map(Planes::frame).collect();
    for half in [false, true] {
        let input = nanodet_input(Resize::Letterbox, half);
        let want = gpu.preprocess(&frames, &input, Matrix::Bt709, Range::Limited).unwrap();
        let placed = gpu.upload(&frames, &input).unwrap();
        let n = frames.len() * input.frame_len();
        let element = if half { 2 } else { 4 };
        // As ONNX Runtime's allocation would be: raw device bytes.
        let out = gpu.stream().alloc_zeros::<u8>(n * element).unwrap();
        let at = address(&gpu, &out);
        // SAFETY: (test) `out` holds n elements of `element` bytes on this device.
        let short = unsafe { gpu.preprocess_at(&placed, Matrix::Bt709, Range::Limited, (at, n - 1, element)) };
        assert!(short.is_err(), "a buffer one element short must be refused");
        // SAFETY: (test) as above.
        unsafe { gpu.preprocess_at(&placed, Matrix::Bt709, Range::Limited, (at, n, element)) }.unwrap();
        let bytes = gpu.stream().clone_dtoh(&out).unwrap();
        let got = if half {
            reference::Tensor::F16(bytes.chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect())
        } else {
            reference::Tensor::F32(bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        assert_close(&got, &want, &format!("preprocess_at half={half}"));
    }
}

#[test]
fn gpu_decoding_outputs_left_on_the_device_finds_what_decoding_host_copies_finds() {
    let Some(gpu) = device() else { return };
    let mut rng = Rng(5);
    let spec = NanoDetSpec { input_w: 416, input_h: 416, num_classes: 80, reg_max: 10 };
    let batch = 3;
    let levels = random_levels(&mut rng, batch);
    let views: Vec<NanoDetLevel<'_>> =
        levels.iter().map(|(s, sc, bx)| NanoDetLevel { stride: *s, scores: sc, boxes: bx }).collect();
    let on_device: Vec<_> = levels
        .iter()
        .map(|(_, sc, bx)| (gpu.stream().clone_htod(sc).unwrap(), gpu.stream().clone_htod(bx).unwrap()))
        .collect();
    let device_levels: Vec<gpu::DeviceLevel> = levels
        .iter()
        .zip(&on_device)
        .map(|((s, sc, bx), (dsc, dbx))| gpu::DeviceLevel {
            stride: *s,
            scores: address(&gpu, dsc),
            scores_len: sc.len(),
            boxes: address(&gpu, dbx),
            boxes_len: bx.len(),
        })
        .collect();
    let key = |c: &retail_kernels::Candidate| (c.item, c.class_id, (c.x1 * 1e4) as i64, (c.y1 * 1e4) as i64);
    // SAFETY: (test) the addresses hold the stated f32 counts, uploaded and alive.
    let mut got = unsafe { gpu.nanodet_decode_at(&spec, &device_levels, batch, (&[0], 0.35, 1 << 16)) }.unwrap();
    let mut want = gpu.nanodet_decode(&spec, &views, batch, &[0], 0.35, 1 << 16).unwrap();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert!(!want.is_empty());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(g.item == w.item && g.x1 == w.x1 && g.y2 == w.y2 && g.score == w.score, "{g:?} vs {w:?}");
    }
    let mut short = device_levels.clone();
    short[1].boxes_len -= 1;
    // SAFETY: (test) the lengths are checked before any launch; this one must be refused.
    let err = unsafe { gpu.nanodet_decode_at(&spec, &short, batch, (&[0], 0.35, 1 << 16)) }.unwrap_err();
    assert!(err.to_string().contains("level stride 16"), "{err}");

    // YOLOv8: [batch, 4 + classes, anchors] left on the device.
    let (classes, anchors) = (3usize, 500usize);
    let pred: Vec<f32> = (0..batch * (4 + classes) * anchors)
        .map(|i| if (i / anchors) % (4 + classes) < 4 { rng.unit() * 400.0 } else { rng.unit() })
        .collect();
    let dev_pred = gpu.stream().clone_htod(&pred).unwrap();
    // SAFETY: (test) as above, for the one output.
    let mut got = unsafe {
        gpu.yolov8_decode_at(
            (address(&gpu, &dev_pred), pred.len()),
            batch,
            (classes, 416, 416),
            (&[0, 2], 0.5, 1 << 16),
        )
    }
    .unwrap();
    let mut want = gpu.yolov8_decode(&pred, batch, classes, 416, 416, &[0, 2], 0.5, 1 << 16).unwrap();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

/// NanoDet outputs for a 416x416 input, 80 classes, reg-max 10: sparse high scores, random
/// box distributions, per stride.
fn random_levels(rng: &mut Rng, batch: usize) -> Vec<(u32, Vec<f32>, Vec<f32>)> {
    [8u32, 16, 32]
        .iter()
        .map(|&s| {
            let cells = ((416 / s) * (416 / s)) as usize;
            let scores = (0..batch * cells * 80).map(|_| rng.unit().powi(8)).collect();
            let boxes = (0..batch * cells * 44).map(|_| rng.unit() * 8.0 - 4.0).collect();
            (s, scores, boxes)
        })
        .collect()
}

/// A picture as GStreamer's CUDA pool leaves it: one device allocation, every plane at the
/// same pitch (the pool's, wider than any row: 512-byte aligned), planes one after another,
/// in the kernels' context.
fn picture_on_device(gpu: &Gpu, f: &retail_kernels::YuvFrame<'_>) -> (cudarc::driver::CudaSlice<u8>, DevicePicture) {
    let (w, h) = (f.width as usize, f.height as usize);
    let pitch = (w + 1).next_multiple_of(512);
    let chroma_row = if f.format == YuvFormat::Nv12 { w } else { w / 2 };
    let mut bytes = Vec::new();
    let mut plane = |data: &[u8], src_pitch: usize, row: usize, rows: usize| {
        let at = bytes.len() as u64;
        for y in 0..rows {
            bytes.extend_from_slice(&data[y * src_pitch..y * src_pitch + row]);
            bytes.resize(bytes.len() + pitch - row, 0xEE);
        }
        at
    };
    let luma = plane(f.luma, f.luma_pitch, w, h);
    let u = plane(f.chroma_u, f.chroma_pitch, chroma_row, h / 2);
    let v = if f.chroma_v.is_empty() { None } else { Some(plane(f.chroma_v, f.chroma_pitch, chroma_row, h / 2)) };
    let memory = gpu.stream().clone_htod(&bytes).unwrap();
    let base = address(gpu, &memory);
    let picture = DevicePicture {
        format: if f.format == YuvFormat::Nv12 { DeviceYuv::Nv12 } else { DeviceYuv::I420 },
        width: f.width,
        height: f.height,
        luma: base + luma,
        chroma_u: base + u,
        chroma_v: v.map_or(0, |v| base + v),
        luma_pitch: pitch,
        chroma_pitch: pitch,
        context: gpu.context_handle(),
        keep: std::sync::Arc::new(()),
    };
    (memory, picture)
}

#[test]
fn gpu_pictures_left_on_the_device_preprocess_as_uploaded_frames_do() {
    let Some(gpu) = device() else { return };
    let mut rng = Rng(0xfeed_0003);
    let input = nanodet_input(Resize::Letterbox, false);
    for format in [YuvFormat::Nv12, YuvFormat::I420] {
        let planes = Planes::random(&mut rng, format, 1280, 720);
        let frame = planes.frame();
        let want = gpu.preprocess(&[frame], &input, Matrix::Bt709, Range::Limited).unwrap();
        let (_memory, picture) = picture_on_device(&gpu, &frame);
        // Mixed in one batch with an uploaded frame, as the engine may hand them.
        let batch = [Placed::Device(&picture), Placed::Host(frame)];
        let placed = gpu.place(&batch, &input).unwrap();
        let mut out = gpu.stream().alloc_zeros::<f32>(2 * input.frame_len()).unwrap();
        gpu.preprocess_into(&placed, Matrix::Bt709, Range::Limited, &mut out).unwrap();
        let got = gpu.stream().clone_dtoh(&out).unwrap();
        for half in got.chunks(input.frame_len()) {
            assert_close(&reference::Tensor::F32(half.to_vec()), &want, &format!("device picture {format:?}"));
        }
        let other = DevicePicture { context: picture.context ^ 0x100, ..picture.clone() };
        let err = gpu.place(&[Placed::Device(&other)], &input).err().unwrap();
        assert!(err.to_string().contains("not this GPU's"), "{err}");
        assert!(gpu.can_read(&other).is_err() && gpu.can_read(&picture).is_ok());
    }
}

/// Motion gating on pictures in GPU memory: the device's band means are the host
/// emulation's; a picture does not differ from itself once kept; another size or no
/// reference sends a frame to inference; a picture from another context is refused.
#[test]
fn gpu_gate_matches_the_host_emulation() {
    let Some(gpu) = device() else { return };
    let mut gate = gpu::LumaGate::new(0).unwrap();
    let mut rng = Rng(0xfeed_6a7e);
    // Not a multiple of the kernel's 256-column span: the last span of each row is short.
    let (w, h) = (1300, 722);
    let (a, b) = (Planes::random(&mut rng, YuvFormat::Nv12, w, h), Planes::random(&mut rng, YuvFormat::Nv12, w, h));
    let (fa, fb) = (a.frame(), b.frame());
    let ((_ma, pa), (_mb, pb)) = (picture_on_device(&gpu, &fa), picture_on_device(&gpu, &fb));
    assert_eq!(gate.difference(&pa).unwrap(), f32::MAX, "no reference yet");
    gate.keep(&pa).unwrap();
    assert_eq!(gate.difference(&pa).unwrap(), 0.0);
    let reference = host::copy_luma(fa.luma, fa.luma_pitch, (w, h)).unwrap();
    let sums = host::luma_band_absdiff(fb.luma, fb.luma_pitch, &reference, (w, h)).unwrap();
    let want = retail_kernels::gate::max_band_mean(&sums, (w, h));
    assert_eq!(gate.difference(&pb).unwrap(), want);
    let small = Planes::random(&mut rng, YuvFormat::Nv12, 640, 360);
    let (_ms, ps) = picture_on_device(&gpu, &small.frame());
    assert_eq!(gate.difference(&ps).unwrap(), f32::MAX, "another size");
    gate.keep(&ps).unwrap();
    assert_eq!(gate.difference(&ps).unwrap(), 0.0, "the reference follows a new size");
    assert_eq!(gate.difference(&pa).unwrap(), f32::MAX);
    gate.keep(&pa).unwrap();
    let other = DevicePicture { context: pa.context ^ 0x100, ..pa.clone() };
    assert!(gate.difference(&other).unwrap_err().to_string().contains("not this GPU's"));
    gate.forget();
    assert_eq!(gate.difference(&pa).unwrap(), f32::MAX, "forgotten");
}
