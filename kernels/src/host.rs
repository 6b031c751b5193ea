//! The kernels run on the CPU through the host emulation compiled by build.rs: the same
//! `.cu` bodies, one thread at a time. Used by the tests to check the kernels' arithmetic
//! against the CPU specification on machines without a GPU, and by the GPU check to have a
//! reference that is the kernel source itself.

use std::ffi::c_void;

use crate::decode::{NanoDetLevel, NanoDetSpec, check_capacity, check_classes, check_yolov8};
use crate::reference::Tensor;
use crate::{Candidate, FrameDesc, KernelError, Matrix, ModelInput, PreprocessParams, Range, YuvFormat, YuvFrame};

unsafe extern "C" {
    fn rai_host_yuv_to_tensor(frames: *const FrameDesc, batch: u32, p: *const PreprocessParams, out: *mut c_void);
    fn rai_host_nanodet_decode(
        scores: *const f32,
        boxes: *const f32,
        batch: u32,
        cells: i32,
        grid_w: i32,
        stride: i32,
        num_classes: i32,
        reg_max: i32,
        classes: *const u32,
        n_classes: i32,
        min_score: f32,
        in_w: f32,
        in_h: f32,
        out: *mut Candidate,
        count: *mut u32,
        capacity: u32,
    );
    fn rai_host_yolov8_decode(
        pred: *const f32,
        batch: u32,
        anchors: i32,
        num_classes: i32,
        classes: *const u32,
        n_classes: i32,
        min_score: f32,
        in_w: f32,
        in_h: f32,
        out: *mut Candidate,
        count: *mut u32,
        capacity: u32,
    );
    fn rai_host_f32_to_f16(x: f32) -> u16;
    fn rai_host_luma_band_absdiff(
        luma: *const u8,
        pitch: i32,
        reference: *const u8,
        width: i32,
        height: i32,
        band_rows: i32,
        sums: *mut u64,
    );
    fn rai_host_copy_luma(luma: *const u8, pitch: i32, reference: *mut u8, width: i32, height: i32);
}

/// Runs the gate kernel's body on the CPU: per band of rows, the sum of absolute differences
/// between `luma` (rows `pitch` apart) and `reference` (rows packed); see [`crate::gate`].
pub fn luma_band_absdiff(
    luma: &[u8],
    pitch: usize,
    reference: &[u8],
    (width, height): (u32, u32),
) -> Result<Vec<u64>, KernelError> {
    crate::gate::check_plane((width, height), pitch, Some(luma.len()), reference.len())?;
    let mut sums = vec![0u64; crate::gate::GATE_BANDS as usize];
    let rows = crate::gate::band_rows(height) as i32;
    // SAFETY: the plane and the reference were checked to hold every byte the kernel reads
    // (sizes fit i32); `sums` holds a sum per band, and `y / rows` < GATE_BANDS.
    unsafe {
        rai_host_luma_band_absdiff(
            luma.as_ptr(),
            pitch as i32,
            reference.as_ptr(),
            width as i32,
            height as i32,
            rows,
            sums.as_mut_ptr(),
        );
    }
    Ok(sums)
}

/// Runs the reference-copy kernel's body on the CPU: `luma`'s rows, packed.
pub fn copy_luma(luma: &[u8], pitch: usize, (width, height): (u32, u32)) -> Result<Vec<u8>, KernelError> {
    let mut reference = vec![0u8; width as usize * height as usize];
    crate::gate::check_plane((width, height), pitch, Some(luma.len()), reference.len())?;
    // SAFETY: as above; `reference` holds width x height bytes.
    unsafe { rai_host_copy_luma(luma.as_ptr(), pitch as i32, reference.as_mut_ptr(), width as i32, height as i32) };
    Ok(reference)
}

/// The descriptor of a checked host frame (host addresses).
pub(crate) fn describe(f: &YuvFrame<'_>, input: &ModelInput) -> FrameDesc {
    let v = if f.format == YuvFormat::I420 { f.chroma_v.as_ptr() as u64 } else { 0 };
    let planes = (f.luma.as_ptr() as u64, f.chroma_u.as_ptr() as u64, v);
    FrameDesc::placed(f.format, planes, (f.width, f.height), (f.luma_pitch, f.chroma_pitch), input)
}

/// A tensor to preprocess into: f32 values or f16 bit patterns.
pub enum TensorMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [u16]),
}

/// Runs the preprocessing kernel's body on the CPU.
pub fn preprocess(
    frames: &[YuvFrame<'_>],
    input: &ModelInput,
    matrix: Matrix,
    range: Range,
) -> Result<Tensor, KernelError> {
    let n = frames.len() * input.frame_len();
    let mut out = if input.half { Tensor::F16(vec![0u16; n]) } else { Tensor::F32(vec![0f32; n]) };
    let view = match &mut out {
        Tensor::F32(v) => TensorMut::F32(v),
        Tensor::F16(v) => TensorMut::F16(v),
    };
    preprocess_into(frames, input, matrix, range, view)?;
    Ok(out)
}

/// Runs the preprocessing kernel's body on the CPU into `out`, which must hold the batch's
/// elements (batch x 3 x height x width) of the width `input.half` says.
pub fn preprocess_into(
    frames: &[YuvFrame<'_>],
    input: &ModelInput,
    matrix: Matrix,
    range: Range,
    out: TensorMut<'_>,
) -> Result<(), KernelError> {
    input.check()?;
    crate::decode::check_batch(frames.len())?;
    for (i, f) in frames.iter().enumerate() {
        f.check(i)?;
    }
    let n = frames.len() * input.frame_len();
    let (out_ptr, len, half) = match out {
        TensorMut::F32(v) => (v.as_mut_ptr().cast::<c_void>(), v.len(), false),
        TensorMut::F16(v) => (v.as_mut_ptr().cast::<c_void>(), v.len(), true),
    };
    if len != n || half != input.half {
        let kind = if input.half { "f16" } else { "f32" };
        return Err(KernelError::Input {
            why: format!("the output holds {len} elements, the batch needs {n} of {kind}"),
        });
    }
    let descs: Vec<FrameDesc> = frames.iter().map(|f| describe(f, input)).collect();
    let p = input.params(matrix, range);
    // SAFETY: every frame passed `check`, so each plane holds the rows and pitches the kernel
    // indexes (it clamps sample positions to the frame); `descs` points into slices borrowed
    // for this call; `out` has batch x 3 x out_h x out_w elements of the width `half`
    // selects, checked above.
    unsafe { rai_host_yuv_to_tensor(descs.as_ptr(), frames.len() as u32, &p, out_ptr) };
    Ok(())
}

/// Runs the NanoDet decoder kernel's body on the CPU over every level.
pub fn nanodet_decode(
    spec: &NanoDetSpec,
    levels: &[NanoDetLevel<'_>],
    batch: usize,
    classes: &[u32],
    min_score: f32,
    capacity: usize,
) -> Result<Vec<Candidate>, KernelError> {
    check_classes(classes, spec.num_classes)?;
    check_capacity(capacity)?;
    let mut out = vec![Candidate::default(); capacity];
    let mut count = 0u32;
    for level in levels {
        let (cells, grid_w) = spec.check_level(level, batch)?;
        // SAFETY: `check_level` proved both outputs hold batch x cells rows of the sizes the
        // kernel reads, `classes` are below `num_classes`, and the kernel writes at most
        // `capacity` candidates into `out` (it only counts beyond that).
        unsafe {
            rai_host_nanodet_decode(
                level.scores.as_ptr(),
                level.boxes.as_ptr(),
                batch as u32,
                cells as i32,
                grid_w as i32,
                level.stride as i32,
                spec.num_classes as i32,
                spec.reg_max as i32,
                classes.as_ptr(),
                classes.len() as i32,
                min_score,
                spec.input_w as f32,
                spec.input_h as f32,
                out.as_mut_ptr(),
                &mut count,
                capacity as u32,
            );
        }
    }
    finish(out, count, capacity)
}

/// Runs the YOLOv8 decoder kernel's body on the CPU.
#[allow(clippy::too_many_arguments)] // the decoder's settings, as the kernel takes them
pub fn yolov8_decode(
    pred: &[f32],
    batch: usize,
    num_classes: usize,
    input_w: u32,
    input_h: u32,
    classes: &[u32],
    min_score: f32,
    capacity: usize,
) -> Result<Vec<Candidate>, KernelError> {
    check_classes(classes, num_classes)?;
    let anchors = check_yolov8(pred, batch, num_classes)?;
    check_capacity(capacity)?;
    let mut out = vec![Candidate::default(); capacity];
    let mut count = 0u32;
    // SAFETY: `check_yolov8` proved `pred` holds batch x (4 + classes) x anchors values,
    // `classes` are below `num_classes`, and at most `capacity` candidates are written.
    unsafe {
        rai_host_yolov8_decode(
            pred.as_ptr(),
            batch as u32,
            anchors as i32,
            num_classes as i32,
            classes.as_ptr(),
            classes.len() as i32,
            min_score,
            input_w as f32,
            input_h as f32,
            out.as_mut_ptr(),
            &mut count,
            capacity as u32,
        );
    }
    finish(out, count, capacity)
}

fn finish(mut out: Vec<Candidate>, count: u32, capacity: usize) -> Result<Vec<Candidate>, KernelError> {
    if count as usize > capacity {
        return Err(KernelError::TooManyCandidates { count: u64::from(count), capacity });
    }
    out.truncate(count as usize);
    Ok(out)
}

/// The kernels' f32 -> f16 rounding, as emulated on the host.
pub fn f32_to_f16(x: f32) -> u16 {
    // SAFETY: a pure function of its argument.
    unsafe { rai_host_f32_to_f16(x) }
}
