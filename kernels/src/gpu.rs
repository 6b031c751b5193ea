//! The kernels on a GPU: NVRTC compiles `cuda/*.cu` for the device's architecture at start,
//! cudarc launches them. Both libraries are loaded at run time; without them the calls
//! return [`KernelError::NoDriver`] or [`KernelError::NoNvrtc`] (cudarc itself panics when a
//! library is missing, so presence is checked first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use crate::decode::{NanoDetLevel, NanoDetSpec, check_capacity, check_classes, check_yolov8, check_yolov8_length};
use crate::reference::Tensor;
use crate::{
    Candidate, FrameDesc, KERNELS, KernelError, KernelSource, Matrix, ModelInput, Planes, PreprocessParams, Range,
    YuvFrame,
};
use retail_core::{CudaContextRef, DevicePicture};

// SAFETY: plain #[repr(C)] structs of 4- and 8-byte scalars, laid out as the kernels' structs
// (sizes checked in layout.rs), with no padding-dependent invariants.
unsafe impl DeviceRepr for FrameDesc {}
// SAFETY: as above.
unsafe impl DeviceRepr for PreprocessParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for Candidate {}
// SAFETY: all-zero bits are a valid Candidate (zero floats and integers).
unsafe impl cudarc::driver::ValidAsZeroBits for Candidate {}

const BLOCK: u32 = 256;

/// Frames on the device, placed for one model input: their planes and descriptors.
pub struct DeviceFrames<'a> {
    /// Uploaded host frames' planes.
    _planes: Vec<CudaSlice<u8>>,
    /// The decoder's pictures the descriptors point into, mapped while these live.
    _pictures: Vec<&'a DevicePicture>,
    descs: CudaSlice<FrameDesc>,
    len: usize,
    input: ModelInput,
}

impl DeviceFrames<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Whether the CUDA driver library can be loaded here.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its known names; loads nothing else.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the NVRTC library can be loaded here.
pub fn nvrtc_present() -> bool {
    // SAFETY: as `driver_present`.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one kernel source to PTX for `arch` (e.g. `compute_90`).
pub fn compile_ptx(kernel: &KernelSource, arch: &str) -> Result<Ptx, KernelError> {
    if !nvrtc_present() {
        return Err(KernelError::NoNvrtc);
    }
    let opts = CompileOptions {
        name: Some(kernel.name.to_owned()),
        options: vec!["--std=c++17".into(), format!("--gpu-architecture={arch}")],
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(kernel.translation_unit(), opts).map_err(|e| KernelError::Compile {
        kernel: kernel.name,
        arch: arch.to_owned(),
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        },
    })
}

/// PTX by (translation unit, architecture): the source itself is the key, so two kernels of
/// one name never share an entry.
static PTX_CACHE: OnceLock<Mutex<HashMap<(String, String), Ptx>>> = OnceLock::new();

/// [`compile_ptx`] once per kernel and architecture in this process: the engine's GPU
/// workers each load the kernels, and NVRTC takes about a second per compile.
fn cached_ptx(kernel: &KernelSource, arch: &str) -> Result<Ptx, KernelError> {
    let cache = PTX_CACHE.get_or_init(Mutex::default);
    let key = (kernel.translation_unit(), arch.to_owned());
    // A poisoned lock only means another compile panicked; the map itself is consistent.
    if let Some(ptx) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return Ok(ptx.clone());
    }
    let ptx = compile_ptx(kernel, arch)?;
    cache.lock().unwrap_or_else(PoisonError::into_inner).insert(key, ptx.clone());
    Ok(ptx)
}

fn driver(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> KernelError {
    move |source| KernelError::Driver { what, source }
}

/// The primary CUDA context of device `ordinal`, as the decoder must share it (the kernels'
/// [`Gpu`]s and ONNX Runtime use the same one), kept alive by the returned value.
pub fn shared_context(ordinal: usize) -> Result<CudaContextRef, KernelError> {
    if !driver_present() {
        return Err(KernelError::NoDriver);
    }
    let ctx = CudaContext::new(ordinal).map_err(driver("context"))?;
    Ok(CudaContextRef { handle: ctx.cu_ctx() as usize, device: ctx.cu_device(), keep: ctx })
}

/// The kernels loaded on one GPU, with a stream to run them on.
pub struct Gpu {
    ordinal: usize,
    /// The `CUcontext` (the device's primary one): decoded pictures must be in it.
    context: usize,
    stream: Arc<CudaStream>,
    yuv_to_tensor: CudaFunction,
    nanodet: CudaFunction,
    yolov8: CudaFunction,
    luma_band_absdiff: CudaFunction,
    copy_luma: CudaFunction,
}

impl Gpu {
    /// Compiles and loads the kernels on device `ordinal`.
    pub fn new(ordinal: usize) -> Result<Gpu, KernelError> {
        if !driver_present() {
            return Err(KernelError::NoDriver);
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("context"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver("compute capability"))?;
        let arch = format!("compute_{major}{minor}");
        let mut functions = Vec::new();
        for kernel in &KERNELS {
            let module = ctx.load_module(cached_ptx(kernel, &arch)?).map_err(driver("module load"))?;
            for name in kernel.entry_points {
                functions.push(module.load_function(name).map_err(driver("function lookup"))?);
            }
        }
        let [yuv_to_tensor, nanodet, yolov8, luma_band_absdiff, copy_luma]: [CudaFunction; 5] = functions
            .try_into()
            .map_err(|_| KernelError::Decoder { what: "kernels".into(), why: "entry points".into() })?;
        // A stream of its own, not the legacy default one: the engine's workers each hold a
        // `Gpu`, and their launches and synchronisations must not wait for one another.
        let stream = ctx.new_stream().map_err(driver("stream"))?;
        let context = ctx.cu_ctx() as usize;
        Ok(Gpu { ordinal, context, stream, yuv_to_tensor, nanodet, yolov8, luma_band_absdiff, copy_luma })
    }

    /// The `CUcontext` its kernels run in (the device's primary context).
    pub fn context_handle(&self) -> usize {
        self.context
    }

    /// The device's CUDA ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Uploads host frames and preprocesses them in one launch.
    pub fn preprocess(
        &self,
        frames: &[YuvFrame<'_>],
        input: &ModelInput,
        matrix: Matrix,
        range: Range,
    ) -> Result<Tensor, KernelError> {
        let frames = self.upload(frames, input)?;
        let n = frames.len * input.frame_len();
        if input.half {
            let mut out = self.stream.alloc_zeros::<u16>(n).map_err(driver("alloc"))?;
            self.preprocess_into(&frames, matrix, range, &mut out)?;
            Ok(Tensor::F16(self.stream.clone_dtoh(&out).map_err(driver("download"))?))
        } else {
            let mut out = self.stream.alloc_zeros::<f32>(n).map_err(driver("alloc"))?;
            self.preprocess_into(&frames, matrix, range, &mut out)?;
            Ok(Tensor::F32(self.stream.clone_dtoh(&out).map_err(driver("download"))?))
        }
    }

    /// Copies checked host frames to the device, with their descriptors.
    pub fn upload(&self, frames: &[YuvFrame<'_>], input: &ModelInput) -> Result<DeviceFrames<'static>, KernelError> {
        let planes: Vec<Planes<'_>> = frames.iter().copied().map(Planes::Host).collect();
        let DeviceFrames { _planes, descs, len, input, .. } = self.place(&planes, input)?;
        // Host frames were copied: nothing of theirs is borrowed any more.
        Ok(DeviceFrames { _planes, _pictures: Vec::new(), descs, len, input })
    }

    /// Places checked frames for one model input: host frames uploaded, pictures already in
    /// this GPU's context used where they are.
    pub fn place<'a>(&self, frames: &[Planes<'a>], input: &ModelInput) -> Result<DeviceFrames<'a>, KernelError> {
        input.check()?;
        crate::decode::check_batch(frames.len())?;
        let mut planes = Vec::new();
        let mut pictures = Vec::new();
        let mut descs = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            f.check(i)?;
            let f = match f {
                Planes::Host(f) => f,
                Planes::Device(p) => {
                    descs.push(self.describe_picture(i, p, input)?);
                    pictures.push(*p);
                    continue;
                }
            };
            let mut d = crate::host::describe(f, input);
            let mut up = |p: &[u8]| -> Result<u64, KernelError> {
                let slice = self.stream.clone_htod(p).map_err(driver("upload"))?;
                let address = self.address(&slice);
                planes.push(slice);
                Ok(address)
            };
            d.luma = up(f.luma)?;
            d.chroma_u = up(f.chroma_u)?;
            d.chroma_v = if f.chroma_v.is_empty() { 0 } else { up(f.chroma_v)? };
            descs.push(d);
        }
        let descs = self.stream.clone_htod(&descs).map_err(driver("upload"))?;
        Ok(DeviceFrames { _planes: planes, _pictures: pictures, descs, len: frames.len(), input: *input })
    }

    /// Whether the kernels here can read `p`: it must be in this GPU's context.
    pub fn can_read(&self, p: &DevicePicture) -> Result<(), String> {
        if p.context != self.context {
            return Err(format!(
                "in CUDA context {:#x}, not this GPU's {:#x} (device {})",
                p.context, self.context, self.ordinal
            ));
        }
        Ok(())
    }

    /// The descriptor of a checked decoded picture, which must be in this GPU's context.
    fn describe_picture(&self, index: usize, p: &DevicePicture, input: &ModelInput) -> Result<FrameDesc, KernelError> {
        self.can_read(p).map_err(|why| KernelError::Frame { index, why })?;
        let planes = (p.luma, p.chroma_u, p.chroma_v);
        Ok(FrameDesc::placed(p.format.into(), planes, (p.width, p.height), (p.luma_pitch, p.chroma_pitch), input))
    }

    /// Preprocesses frames already on the device into `out` (f16 or f32 elements, as the
    /// model input the frames were placed for says), batch x 3 x height x width.
    pub fn preprocess_into<T: DeviceRepr>(
        &self,
        frames: &DeviceFrames<'_>,
        matrix: Matrix,
        range: Range,
        out: &mut CudaSlice<T>,
    ) -> Result<(), KernelError> {
        let (p, cfg) = preprocess_launch(frames, matrix, range, std::mem::size_of::<T>(), out.len())?;
        // SAFETY: `frames` owns the device planes its descriptors point to (checked on upload
        // for the sizes the kernel reads), or borrows mapped decoder pictures; `out` holds the
        // batch's elements of the width the kernel writes, checked above.
        unsafe { self.stream.launch_builder(&self.yuv_to_tensor).arg(&frames.descs).arg(&p).arg(out).launch(cfg) }
            .map_err(driver("launch"))?;
        if !frames._pictures.is_empty() {
            // Decoder pictures are unmapped and reused when their frames go, which the stream
            // does not order: the kernel must be done with them before this returns.
            self.stream.synchronize().map_err(driver("synchronize"))?;
        }
        Ok(())
    }

    /// As [`preprocess_into`](Self::preprocess_into), into device memory this crate does not
    /// own (a tensor ONNX Runtime allocated): `len` elements of `element` bytes at `out`.
    /// Returns once the kernel has finished, so the frames may be dropped and another
    /// stream may read `out`.
    ///
    /// # Safety
    /// `out` must be the address of at least `len` elements of `element` bytes in device
    /// memory of this GPU's primary context, valid and not written by other work until this
    /// returns.
    pub unsafe fn preprocess_at(
        &self,
        frames: &DeviceFrames<'_>,
        matrix: Matrix,
        range: Range,
        (out, len, element): (u64, usize, usize),
    ) -> Result<(), KernelError> {
        let (p, cfg) = preprocess_launch(frames, matrix, range, element, len)?;
        // SAFETY: as in `preprocess_into`; the caller vouches for `out` holding `len`
        // elements of `element` bytes, which `preprocess_launch` checked cover the batch.
        unsafe { self.stream.launch_builder(&self.yuv_to_tensor).arg(&frames.descs).arg(&p).arg(&out).launch(cfg) }
            .map_err(driver("launch"))?;
        self.stream.synchronize().map_err(driver("synchronize"))
    }

    fn address<T>(&self, s: &CudaSlice<T>) -> u64 {
        use cudarc::driver::DevicePtr;
        s.device_ptr(&self.stream).0
    }

    /// Decodes NanoDet outputs (host copies) on the GPU.
    pub fn nanodet_decode(
        &self,
        spec: &NanoDetSpec,
        levels: &[NanoDetLevel<'_>],
        batch: usize,
        classes: &[u32],
        min_score: f32,
        capacity: usize,
    ) -> Result<Vec<Candidate>, KernelError> {
        check_classes(classes, spec.num_classes)?;
        check_capacity(capacity)?;
        let (mut out, mut count, dev_classes) = self.candidate_buffers(classes, capacity)?;
        for level in levels {
            let (cells, grid_w) = spec.check_level(level, batch)?;
            let scores = self.stream.clone_htod(level.scores).map_err(driver("upload"))?;
            let boxes = self.stream.clone_htod(level.boxes).map_err(driver("upload"))?;
            let (cells_i, gw, stride) = (cells as i32, grid_w as i32, level.stride as i32);
            let (nc, rm, ncls) = (spec.num_classes as i32, spec.reg_max as i32, classes.len() as i32);
            let (iw, ih, cap) = (spec.input_w as f32, spec.input_h as f32, capacity as u32);
            let mut b = self.stream.launch_builder(&self.nanodet);
            b.arg(&scores).arg(&boxes).arg(&cells_i).arg(&gw).arg(&stride).arg(&nc).arg(&rm);
            b.arg(&dev_classes).arg(&ncls).arg(&min_score).arg(&iw).arg(&ih).arg(&mut out).arg(&mut count).arg(&cap);
            // SAFETY: `check_level` proved the uploaded outputs hold batch x cells rows of the
            // sizes the kernel reads; classes are in range; the kernel writes at most
            // `capacity` candidates and counts the rest.
            unsafe { b.launch(grid(cells as u32, batch)) }.map_err(driver("launch"))?;
        }
        self.candidates(&out, &count, capacity)
    }

    /// As [`nanodet_decode`](Self::nanodet_decode), reading outputs where they are in device
    /// memory (bound outputs of a session on this GPU): no copy to the host but the candidates.
    ///
    /// # Safety
    /// Each level's addresses must hold its stated number of f32 values in device memory of
    /// this GPU's primary context, written before this call (their stream synchronised) and
    /// valid until it returns.
    pub unsafe fn nanodet_decode_at(
        &self,
        spec: &NanoDetSpec,
        levels: &[DeviceLevel],
        batch: usize,
        (classes, min_score, capacity): (&[u32], f32, usize),
    ) -> Result<Vec<Candidate>, KernelError> {
        check_classes(classes, spec.num_classes)?;
        check_capacity(capacity)?;
        // Every level is checked before the first launch: an error must not leave a kernel
        // reading the caller's memory after this returns.
        let grids = levels
            .iter()
            .map(|l| spec.check_level_lengths(l.stride, (l.scores_len, l.boxes_len), batch))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut out, mut count, dev_classes) = self.candidate_buffers(classes, capacity)?;
        for (level, (cells, grid_w)) in levels.iter().zip(grids) {
            let (cells_i, gw, stride) = (cells as i32, grid_w as i32, level.stride as i32);
            let (nc, rm, ncls) = (spec.num_classes as i32, spec.reg_max as i32, classes.len() as i32);
            let (iw, ih, cap) = (spec.input_w as f32, spec.input_h as f32, capacity as u32);
            let mut b = self.stream.launch_builder(&self.nanodet);
            b.arg(&level.scores).arg(&level.boxes).arg(&cells_i).arg(&gw).arg(&stride).arg(&nc).arg(&rm);
            b.arg(&dev_classes).arg(&ncls).arg(&min_score).arg(&iw).arg(&ih).arg(&mut out).arg(&mut count).arg(&cap);
            // SAFETY: the caller vouches for the addresses holding the stated lengths, which
            // `check_level_lengths` proved are batch x cells rows of the sizes the kernel
            // reads; classes are in range; at most `capacity` candidates are written.
            if let Err(e) = unsafe { b.launch(grid(cells as u32, batch)) } {
                // Earlier levels may still be running on the caller's memory.
                let _ = self.stream.synchronize();
                return Err(KernelError::Driver { what: "launch", source: e });
            }
        }
        self.candidates(&out, &count, capacity)
    }

    /// As [`yolov8_decode`](Self::yolov8_decode), reading the output where it is in device
    /// memory: `(address, values)`.
    ///
    /// # Safety
    /// As [`nanodet_decode_at`](Self::nanodet_decode_at), for the one output.
    pub unsafe fn yolov8_decode_at(
        &self,
        (pred, pred_len): (u64, usize),
        batch: usize,
        (num_classes, input_w, input_h): (usize, u32, u32),
        (classes, min_score, capacity): (&[u32], f32, usize),
    ) -> Result<Vec<Candidate>, KernelError> {
        check_classes(classes, num_classes)?;
        let anchors = check_yolov8_length(pred_len, batch, num_classes)?;
        check_capacity(capacity)?;
        let (mut out, mut count, dev_classes) = self.candidate_buffers(classes, capacity)?;
        let (a, nc, ncls) = (anchors as i32, num_classes as i32, classes.len() as i32);
        let (iw, ih, cap) = (input_w as f32, input_h as f32, capacity as u32);
        let mut b = self.stream.launch_builder(&self.yolov8);
        b.arg(&pred).arg(&a).arg(&nc).arg(&dev_classes).arg(&ncls).arg(&min_score).arg(&iw).arg(&ih);
        b.arg(&mut out).arg(&mut count).arg(&cap);
        // SAFETY: the caller vouches for `pred` holding `pred_len` values, which
        // `check_yolov8_length` proved are batch x (4 + classes) x anchors; classes are in
        // range; at most `capacity` candidates are written.
        unsafe { b.launch(grid(anchors as u32, batch)) }.map_err(driver("launch"))?;
        self.candidates(&out, &count, capacity)
    }

    /// Decodes a YOLOv8 output (host copy) on the GPU.
    #[allow(clippy::too_many_arguments)] // the decoder's settings, as the kernel takes them
    pub fn yolov8_decode(
        &self,
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
        let (mut out, mut count, dev_classes) = self.candidate_buffers(classes, capacity)?;
        let dev_pred = self.stream.clone_htod(pred).map_err(driver("upload"))?;
        let (a, nc, ncls) = (anchors as i32, num_classes as i32, classes.len() as i32);
        let (iw, ih, cap) = (input_w as f32, input_h as f32, capacity as u32);
        let mut b = self.stream.launch_builder(&self.yolov8);
        b.arg(&dev_pred).arg(&a).arg(&nc).arg(&dev_classes).arg(&ncls).arg(&min_score).arg(&iw).arg(&ih);
        b.arg(&mut out).arg(&mut count).arg(&cap);
        // SAFETY: `check_yolov8` proved the upload holds batch x (4 + classes) x anchors
        // values; classes are in range; at most `capacity` candidates are written.
        unsafe { b.launch(grid(anchors as u32, batch)) }.map_err(driver("launch"))?;
        self.candidates(&out, &count, capacity)
    }

    #[allow(clippy::type_complexity)]
    fn candidate_buffers(
        &self,
        classes: &[u32],
        capacity: usize,
    ) -> Result<(CudaSlice<Candidate>, CudaSlice<u32>, CudaSlice<u32>), KernelError> {
        let out = self.stream.alloc_zeros::<Candidate>(capacity.max(1)).map_err(driver("alloc"))?;
        let count = self.stream.alloc_zeros::<u32>(1).map_err(driver("alloc"))?;
        let classes = self.stream.clone_htod(classes).map_err(driver("upload"))?;
        Ok((out, count, classes))
    }

    fn candidates(
        &self,
        out: &CudaSlice<Candidate>,
        count: &CudaSlice<u32>,
        capacity: usize,
    ) -> Result<Vec<Candidate>, KernelError> {
        let n = self.stream.clone_dtoh(count).map_err(driver("download"))?[0] as usize;
        if n > capacity {
            return Err(KernelError::TooManyCandidates { count: n as u64, capacity });
        }
        let mut all = self.stream.clone_dtoh(out).map_err(driver("download"))?;
        all.truncate(n);
        Ok(all)
    }
}

/// Motion gating for one stream's frames in GPU memory (see [`crate::gate`]): the luma of
/// the last frame sent to inference, kept on the device, and how far a new picture has moved
/// from it. Both calls return once the kernel is done, so the picture may be unmapped after.
pub struct LumaGate {
    gpu: Gpu,
    /// The reference luma, rows packed, and its size.
    reference: Option<(CudaSlice<u8>, (u32, u32))>,
    sums: CudaSlice<u64>,
}

impl LumaGate {
    /// A gate on device `ordinal`, whose pictures must be in its primary context.
    pub fn new(ordinal: usize) -> Result<LumaGate, KernelError> {
        let gpu = Gpu::new(ordinal)?;
        let sums = gpu.stream.alloc_zeros::<u64>(crate::gate::GATE_BANDS as usize).map_err(driver("alloc"))?;
        Ok(LumaGate { gpu, reference: None, sums })
    }

    /// The largest mean absolute difference (0..255) between `p`'s luma and the reference
    /// over the bands; `f32::MAX` without a reference or at another size.
    pub fn difference(&mut self, p: &DevicePicture) -> Result<f32, KernelError> {
        let Some((reference, size)) = &self.reference else { return Ok(f32::MAX) };
        if *size != (p.width, p.height) {
            return Ok(f32::MAX);
        }
        self.check(p, reference.len())?;
        self.gpu.stream.memset_zeros(&mut self.sums).map_err(driver("memset"))?;
        let (w, h) = (p.width as i32, p.height as i32);
        let rows = crate::gate::band_rows(p.height) as i32;
        let spans = p.width.div_ceil(crate::gate::GATE_SPAN) * p.height;
        // SAFETY: `p` is a checked picture in this context, mapped while it lives, with
        // `height` rows of `width` bytes at `luma_pitch`; `reference` holds width x height
        // bytes (same size, checked above); `sums` holds a u64 per band, and every row's band
        // (`y / rows`) is below GATE_BANDS.
        unsafe {
            self.gpu
                .stream
                .launch_builder(&self.gpu.luma_band_absdiff)
                .arg(&p.luma)
                .arg(&(p.luma_pitch as i32))
                .arg(reference)
                .arg(&w)
                .arg(&h)
                .arg(&rows)
                .arg(&mut self.sums)
                .launch(grid(spans, 1))
        }
        .map_err(driver("launch"))?;
        // The picture is not read after this returns.
        self.gpu.stream.synchronize().map_err(driver("synchronize"))?;
        let sums = self.gpu.stream.clone_dtoh(&self.sums).map_err(driver("download"))?;
        Ok(crate::gate::max_band_mean(&sums, (p.width, p.height)))
    }

    /// Makes `p`'s luma the reference.
    pub fn keep(&mut self, p: &DevicePicture) -> Result<(), KernelError> {
        let size = (p.width, p.height);
        let n = p.width as usize * p.height as usize;
        self.check(p, n)?;
        if self.reference.as_ref().is_none_or(|(_, s)| *s != size) {
            self.reference = None;
            let slice = self.gpu.stream.alloc_zeros::<u8>(n).map_err(driver("alloc"))?;
            self.reference = Some((slice, size));
        }
        let Some((reference, _)) = self.reference.as_mut() else { return Ok(()) };
        // SAFETY: as in `difference`; `reference` holds width x height bytes, one per thread.
        let launched = unsafe {
            self.gpu
                .stream
                .launch_builder(&self.gpu.copy_luma)
                .arg(&p.luma)
                .arg(&(p.luma_pitch as i32))
                .arg(&mut *reference)
                .arg(&(p.width as i32))
                .arg(&(p.height as i32))
                .launch(grid(n as u32, 1))
        };
        let done = launched.and_then(|_| self.gpu.stream.synchronize());
        if done.is_err() {
            self.reference = None; // half written: no reference rather than a wrong one
        }
        done.map_err(driver("copy luma"))
    }

    /// Forgets the reference: the next picture is sent to inference.
    pub fn forget(&mut self) {
        self.reference = None;
    }

    fn check(&self, p: &DevicePicture, reference_len: usize) -> Result<(), KernelError> {
        self.gpu.can_read(p).map_err(|why| KernelError::Frame { index: 0, why })?;
        if p.luma == 0 {
            return Err(KernelError::Frame { index: 0, why: "a null luma plane".into() });
        }
        crate::gate::check_plane((p.width, p.height), p.luma_pitch, None, reference_len)
    }
}

/// A NanoDet level's outputs in device memory: addresses and lengths in f32 values.
#[derive(Clone, Copy, Debug)]
pub struct DeviceLevel {
    pub stride: u32,
    pub scores: u64,
    pub scores_len: usize,
    pub boxes: u64,
    pub boxes_len: usize,
}

/// The preprocessing kernel's parameters and grid for `frames`, after checking that an output
/// of `len` elements of `element` bytes holds the batch. The parameters come from the checked
/// input the frames were placed for, never from the caller.
fn preprocess_launch(
    frames: &DeviceFrames<'_>,
    matrix: Matrix,
    range: Range,
    element: usize,
    len: usize,
) -> Result<(PreprocessParams, LaunchConfig), KernelError> {
    let p = frames.input.params(matrix, range);
    let want = if p.half != 0 { 2 } else { 4 };
    let n = frames.len * frames.input.frame_len();
    if element != want || len < n {
        return Err(KernelError::Decoder {
            what: "preprocess output".into(),
            why: format!("needs {n} elements of {want} bytes for the model input the frames were placed for"),
        });
    }
    Ok((p, grid(frames.input.width * frames.input.height, frames.len)))
}

fn grid(work: u32, items: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (work.div_ceil(BLOCK), items as u32, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs NVRTC (make test provides it); skipped without.
    #[test]
    fn kernels_are_compiled_once_per_architecture() {
        if !nvrtc_present() {
            return;
        }
        let kernel = &KERNELS[0];
        let first = cached_ptx(kernel, "compute_80").unwrap().to_src();
        let key = (kernel.translation_unit(), "compute_80".to_owned());
        let cached = PTX_CACHE.get().unwrap().lock().unwrap().get(&key).cloned();
        assert_eq!(cached.map(|p| p.to_src()), Some(first.clone()));
        assert_eq!(cached_ptx(kernel, "compute_80").unwrap().to_src(), first);
        let other = cached_ptx(kernel, "compute_90").unwrap().to_src();
        assert!(other.contains(".target sm_90") && first.contains(".target sm_80"));
    }
}
