//! YUV frames to detections with the model's input and outputs bound where the kernels run
//! (ONNX Runtime's I/O binding): the preprocessing kernel writes the input tensor the session
//! reads, the decoder kernels read the outputs where the session wrote them, and only the
//! candidates above the score threshold come back to the host for NMS. On a GPU
//! ([`crate::gpu::Gpu`], features `cuda` and `tensorrt`) no tensor crosses to the host; on the
//! CPU ([`HostKernels`]: the kernels' host emulation, ONNX Runtime's CPU provider) the same
//! code runs in every test, so binding, shapes, batching and box placement are checked
//! without a GPU.

use std::path::{Path, PathBuf};

use ort::memory::Allocator;
use ort::session::{Session, SessionOutputs};
use ort::value::{DynTensor, DynValue, TensorElementType};
use retail_core::{BBox, Detection, DevicePicture, YuvColour, YuvMatrix};
use retail_infer::{
    Accelerator, DecoderSpec, FrameRef, InferError, InferenceBackend, Manifest, ModelSession, nms, open_session,
};

use crate::host::TensorMut;
use crate::{
    Candidate, KernelError, Matrix, ModelInput, NanoDetLevel, NanoDetSpec, Planes, Range, Resize, YuvFrame, host,
};

/// The detector's settings: which classes, from which score, and NMS's overlap.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeSettings {
    pub classes: Vec<u32>,
    pub min_score: f32,
    pub nms_iou: f32,
}

/// One decoder launch: the wanted classes, the score floor, and room for every candidate
/// the batch could have (so a low threshold never overflows it).
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits<'a> {
    pub classes: &'a [u32],
    pub min_score: f32,
    pub capacity: usize,
}

/// A model output as the decoder kernels read it.
pub struct Output<'a> {
    pub name: &'a str,
    pub value: &'a DynValue,
}

/// Where the kernels run and where ONNX Runtime keeps the bound tensors.
pub trait TensorDevice {
    /// For logs: `host-emulation`, `cuda:0`.
    fn name(&self) -> String;
    /// Whether the kernels here can read a decoder's picture in GPU memory; the reason not.
    fn can_read(&self, picture: &DevicePicture) -> Result<(), String>;
    /// The allocator of the model input, on this device, for `session`.
    fn allocator(&self, session: &Session) -> Result<Allocator, KernelError>;
    /// Preprocesses `frames` into `tensor` (allocated by [`allocator`](Self::allocator), batch
    /// x 3 x height x width of the type `input.half` says). Frames already in GPU memory are
    /// only for a GPU.
    fn preprocess(
        &self,
        frames: &[Planes<'_>],
        input: &ModelInput,
        colour: (Matrix, Range),
        tensor: &mut DynTensor,
    ) -> Result<(), KernelError>;
    /// Decodes NanoDet levels `(stride, scores, boxes)` of a batch.
    fn nanodet(
        &self,
        spec: &NanoDetSpec,
        levels: &[(u32, Output<'_>, Output<'_>)],
        batch: usize,
        limits: DecodeLimits<'_>,
    ) -> Result<Vec<Candidate>, KernelError>;
    /// Decodes a YOLOv8 output `[batch, 4 + classes, anchors]`; `shape` is (classes, input
    /// width, input height).
    fn yolov8(
        &self,
        pred: Output<'_>,
        batch: usize,
        shape: (usize, u32, u32),
        limits: DecodeLimits<'_>,
    ) -> Result<Vec<Candidate>, KernelError>;
}

/// The decoder a manifest names, with the outputs it reads.
enum Decoder {
    NanoDet { spec: NanoDetSpec, levels: Vec<(u32, String, String)> },
    YoloV8 { output: String, num_classes: usize },
}

impl Decoder {
    fn new(manifest: &Manifest) -> Self {
        let (w, h) = manifest.input_size();
        let num_classes = manifest.labels.names.len();
        match &manifest.decoder {
            DecoderSpec::Nanodet { reg_max, levels } => Decoder::NanoDet {
                spec: NanoDetSpec { input_w: w, input_h: h, num_classes, reg_max: *reg_max },
                levels: levels.iter().map(|l| (l.stride, l.scores.clone(), l.boxes.clone())).collect(),
            },
            DecoderSpec::Yolov8 { output } => Decoder::YoloV8 { output: output.clone(), num_classes },
        }
    }

    fn outputs(&self) -> Vec<&str> {
        match self {
            Decoder::NanoDet { levels, .. } => levels.iter().flat_map(|(_, s, b)| [s.as_str(), b.as_str()]).collect(),
            Decoder::YoloV8 { output, .. } => vec![output.as_str()],
        }
    }
}

/// A detector fed YUV frames, its model input and outputs bound on `D`.
pub struct YuvDetector<D: TensorDevice> {
    device: D,
    /// For logs: the session's backend and the kernels' device.
    name: String,
    /// Before the session: dropped first, as ONNX Runtime wants its allocators released
    /// while their session lives.
    allocator: Allocator,
    session: Session,
    model_path: PathBuf,
    input_name: String,
    input: ModelInput,
    decoder: Decoder,
    settings: DecodeSettings,
    dynamic_batch: bool,
    max_batch: usize,
}

impl<D: TensorDevice> YuvDetector<D> {
    /// Opens the model on `accelerator` (which must put its tensors where `device` has them:
    /// the CPU for [`HostKernels`], TensorRT for a GPU) and checks it against the manifest.
    /// `resize` places frames in the model input; boxes come back in frame coordinates.
    pub fn load(
        device: D,
        manifest: &Manifest,
        model_path: &Path,
        accelerator: &Accelerator,
        resize: Resize,
        settings: DecodeSettings,
    ) -> Result<Self, KernelError> {
        let ModelSession { session, dynamic_batch, half_input, .. } =
            open_session(manifest, model_path, 1, accelerator).map_err(|source| KernelError::Infer { source })?;
        let input = model_input(manifest, resize, half_input);
        input.check()?;
        let allocator = device.allocator(&session)?;
        Ok(YuvDetector {
            name: format!("{}+kernels-{}", accelerator.name(), device.name()),
            device,
            session,
            allocator,
            model_path: model_path.to_owned(),
            input_name: manifest.input.name.clone(),
            input,
            decoder: Decoder::new(manifest),
            settings,
            dynamic_batch,
            max_batch: 1,
        })
    }

    /// Lets one model call take up to `n` frames when the model's batch dimension is dynamic;
    /// a fixed-batch model stays at one. Returns the batch now in effect.
    pub fn set_max_batch(&mut self, n: usize) -> usize {
        self.max_batch = if self.dynamic_batch { n.clamp(1, crate::decode::MAX_BATCH) } else { 1 };
        self.max_batch
    }

    /// Where it runs, for logs.
    pub fn device_name(&self) -> String {
        self.device.name()
    }

    /// The model input the frames are placed in.
    pub fn model_input(&self) -> &ModelInput {
        &self.input
    }

    /// One detection list per frame, in order: boxes in normalised frame coordinates, after
    /// NMS, best first. Frames may differ in size; `colour` is their YUV matrix and range.
    pub fn detect(
        &mut self,
        frames: &[YuvFrame<'_>],
        colour: (Matrix, Range),
    ) -> Result<Vec<Vec<Detection>>, KernelError> {
        let planes: Vec<Planes<'_>> = frames.iter().copied().map(Planes::Host).collect();
        self.detect_planes(&planes, colour)
    }

    /// As [`detect`](Self::detect), for frames in host or (on a GPU) device memory.
    pub fn detect_planes(
        &mut self,
        frames: &[Planes<'_>],
        colour: (Matrix, Range),
    ) -> Result<Vec<Vec<Detection>>, KernelError> {
        // Checked first, so an error names the frame's place in `frames`, not in a chunk.
        for (i, f) in frames.iter().enumerate() {
            f.check(i)?;
        }
        let mut all = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(self.max_batch) {
            let candidates = self.run_batch(chunk, colour)?;
            all.extend(self.per_frame(chunk, candidates));
        }
        Ok(all)
    }

    fn run_batch(&mut self, frames: &[Planes<'_>], colour: (Matrix, Range)) -> Result<Vec<Candidate>, KernelError> {
        let n = frames.len();
        let (w, h) = (self.input.width as usize, self.input.height as usize);
        let element = if self.input.half { TensorElementType::Float16 } else { TensorElementType::Float32 };
        let ort_err = |what: &'static str| {
            let path = self.model_path.clone();
            move |e: ort::Error| KernelError::Runtime { what, path, reason: e.to_string() }
        };
        let mut tensor = DynTensor::new(&self.allocator, element, [n, 3, h, w]).map_err(ort_err("input allocation"))?;
        self.device.preprocess(frames, &self.input, colour, &mut tensor)?;
        let mut binding = self.session.create_binding().map_err(ort_err("binding"))?;
        binding.bind_input(self.input_name.as_str(), &tensor).map_err(ort_err("input binding"))?;
        for name in self.decoder.outputs() {
            binding.bind_output_to_device(name, self.allocator.memory_info()).map_err(ort_err("output binding"))?;
        }
        let outputs = self.session.run_binding(&binding).map_err(ort_err("run"))?;
        // The decoder kernels may run on another stream than the session's.
        binding.synchronize_outputs().map_err(ort_err("output synchronisation"))?;
        let path = &self.model_path;
        let (classes, min_score) = (self.settings.classes.as_slice(), self.settings.min_score);
        match &self.decoder {
            Decoder::NanoDet { spec, levels } => {
                let cells: usize = levels
                    .iter()
                    .map(|(s, _, _)| ((spec.input_w / (*s).max(1)) * (spec.input_h / (*s).max(1))) as usize)
                    .sum();
                let limits = DecodeLimits { classes, min_score, capacity: n * cells * classes.len() };
                let levels = levels
                    .iter()
                    .map(|(stride, s, b)| Ok((*stride, output(&outputs, s, path)?, output(&outputs, b, path)?)))
                    .collect::<Result<Vec<_>, KernelError>>()?;
                self.device.nanodet(spec, &levels, n, limits)
            }
            Decoder::YoloV8 { output: name, num_classes } => {
                let pred = output(&outputs, name, path)?;
                let values = pred.value.dtype().tensor_shape().map_or(0, ort::value::Shape::num_elements);
                let anchors = values / (n * (4 + num_classes));
                let limits = DecodeLimits { classes, min_score, capacity: n * anchors * classes.len() };
                self.device.yolov8(pred, n, (*num_classes, self.input.width, self.input.height), limits)
            }
        }
    }

    /// Candidates of a batch to each frame's detections in frame coordinates, after NMS.
    fn per_frame(&self, frames: &[Planes<'_>], candidates: Vec<Candidate>) -> Vec<Vec<Detection>> {
        let mut per: Vec<Vec<Detection>> = vec![Vec::new(); frames.len()];
        for c in candidates {
            let Some(frame) = frames.get(c.item as usize) else { continue };
            let bbox = frame_box(&self.input, frame.size(), &c);
            per[c.item as usize].push(Detection { bbox, score: c.score, class: c.class_id });
        }
        per.into_iter().map(|d| nms(d, self.settings.nms_iou)).collect()
    }
}

/// The input `manifest`'s model takes, with frames placed by `resize`, in f16 if `half`.
pub fn model_input(manifest: &Manifest, resize: Resize, half: bool) -> ModelInput {
    let (width, height) = manifest.input_size();
    ModelInput {
        width,
        height,
        bgr: manifest.input.channel_order == retail_infer::ChannelOrder::Bgr,
        mean: manifest.input.mean,
        std: manifest.input.std,
        resize,
        pad: 114.0,
        half,
    }
}

/// A candidate's box (fractions of the model input) as fractions of its frame: the frame's
/// placement in the input (the letterbox) undone.
fn frame_box(input: &ModelInput, (width, height): (u32, u32), c: &Candidate) -> BBox {
    let (iw, ih) = (input.width as f32, input.height as f32);
    let (dx, dy, dw, dh) = input.placement(width, height);
    let fx = |x: f32| ((x * iw - dx as f32) / dw as f32).clamp(0.0, 1.0);
    let fy = |y: f32| ((y * ih - dy as f32) / dh as f32).clamp(0.0, 1.0);
    BBox::new(fx(c.x1), fy(c.y1), fx(c.x2), fy(c.y2))
}

/// The engine's frames are I420 at their own size (sources asked for `PixelOrder::I420`),
/// with their video's colorimetry.
impl<D: TensorDevice + Send> InferenceBackend for YuvDetector<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Frames come at their own size; each is checked against its stated size instead.
    fn frame_bytes(&self) -> usize {
        0
    }

    fn detect_batch(&mut self, frames: &[FrameRef<'_>]) -> Result<Vec<Vec<Detection>>, InferError> {
        let backend = |i: usize, why: String| InferError::Backend {
            backend: self.name.clone(),
            reason: format!("frame {i} of the batch: {why}"),
        };
        let mut yuv = Vec::with_capacity(frames.len());
        for (i, f) in frames.iter().enumerate() {
            let frame = match f.device {
                Some(picture) => {
                    self.device.can_read(picture).map_err(|why| backend(i, why))?;
                    Planes::Device(picture)
                }
                None => Planes::Host(i420(f).map_err(|why| backend(i, why))?),
            };
            frame.check(i).map_err(|e| backend(i, e.to_string()))?;
            yuv.push(frame);
        }
        // One run per colorimetry (a batch mixes streams), results put back in frame order.
        let mut out: Vec<Vec<Detection>> = vec![Vec::new(); frames.len()];
        let mut colours: Vec<YuvColour> = frames.iter().map(|f| f.colour).collect();
        colours.sort_by_key(|c| (c.matrix as u8, c.full_range));
        colours.dedup();
        for colour in colours {
            let which: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].colour == colour).collect();
            let group: Vec<Planes<'_>> = which.iter().map(|&i| yuv[i]).collect();
            let found = self
                .detect_planes(&group, kernel_colour(colour))
                .map_err(|e| InferError::Backend { backend: self.name.clone(), reason: e.to_string() })?;
            for (i, detections) in which.into_iter().zip(found) {
                out[i] = detections;
            }
        }
        Ok(out)
    }
}

/// The kernels' matrix and range for a video's colorimetry.
fn kernel_colour(c: YuvColour) -> (Matrix, Range) {
    let matrix = match c.matrix {
        YuvMatrix::Bt601 => Matrix::Bt601,
        YuvMatrix::Bt709 => Matrix::Bt709,
        YuvMatrix::Bt2020 => Matrix::Bt2020,
    };
    (matrix, if c.full_range { Range::Full } else { Range::Limited })
}

/// A packed I420 picture as the kernels read it.
fn i420<'a>(f: &FrameRef<'a>) -> Result<YuvFrame<'a>, String> {
    YuvFrame::packed_i420(f.pixels, f.width, f.height)
}

/// A bound output of the run, by name.
fn output<'a>(outputs: &'a SessionOutputs<'_>, name: &'a str, path: &Path) -> Result<Output<'a>, KernelError> {
    let value = outputs.get(name).ok_or_else(|| KernelError::Runtime {
        what: "outputs",
        path: path.to_owned(),
        reason: format!("output `{name}` missing from the run"),
    })?;
    Ok(Output { name, value })
}

/// The kernels' host emulation with ONNX Runtime on the CPU: the tensors stay in host memory.
pub struct HostKernels;

fn host_output<'a>(o: &Output<'a>) -> Result<&'a [f32], KernelError> {
    o.value.try_extract_tensor::<f32>().map(|(_, data)| data).map_err(|e| KernelError::Decoder {
        what: o.name.to_owned(),
        why: format!("not an f32 tensor in host memory: {e}"),
    })
}

const IN_GPU_MEMORY: &str = "in GPU memory; the host emulation reads frames in host memory";

/// The host frames of a batch; a picture in GPU memory is an error naming it.
fn host_frames<'a>(frames: &[Planes<'a>]) -> Result<Vec<YuvFrame<'a>>, KernelError> {
    frames
        .iter()
        .enumerate()
        .map(|(index, f)| match f {
            Planes::Host(f) => Ok(*f),
            Planes::Device(_) => Err(KernelError::Frame { index, why: IN_GPU_MEMORY.into() }),
        })
        .collect()
}

impl TensorDevice for HostKernels {
    fn name(&self) -> String {
        "host-emulation".into()
    }

    fn can_read(&self, _: &DevicePicture) -> Result<(), String> {
        Err(IN_GPU_MEMORY.into())
    }

    fn allocator(&self, _: &Session) -> Result<Allocator, KernelError> {
        Ok(Allocator::default())
    }

    fn preprocess(
        &self,
        frames: &[Planes<'_>],
        input: &ModelInput,
        (matrix, range): (Matrix, Range),
        tensor: &mut DynTensor,
    ) -> Result<(), KernelError> {
        let frames = host_frames(frames)?;
        let frames = frames.as_slice();
        let bad = |why: String| KernelError::Input { why: format!("the input tensor: {why}") };
        if !tensor.memory_info().is_cpu_accessible() {
            return Err(bad("not in host memory".into()));
        }
        if input.half {
            if *tensor.data_type() != TensorElementType::Float16 {
                return Err(bad(format!("{:?}, not f16", tensor.data_type())));
            }
            let len = tensor.shape().num_elements();
            let want = frames.len() * input.frame_len();
            let ptr = tensor.data_ptr_mut().cast::<u16>();
            if len != want || want == 0 || ptr.is_null() {
                return Err(bad(format!("{len} elements, the batch needs {want}")));
            }
            // SAFETY: a non-empty f16 tensor in host memory of `len` elements with a non-null
            // buffer (checked above), owned by `tensor`, which stays mutably borrowed while
            // the slice lives.
            let bits = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            host::preprocess_into(frames, input, matrix, range, TensorMut::F16(bits))
        } else {
            let (_, data) = tensor.try_extract_tensor_mut::<f32>().map_err(|e| bad(e.to_string()))?;
            host::preprocess_into(frames, input, matrix, range, TensorMut::F32(data))
        }
    }

    fn nanodet(
        &self,
        spec: &NanoDetSpec,
        levels: &[(u32, Output<'_>, Output<'_>)],
        batch: usize,
        l: DecodeLimits<'_>,
    ) -> Result<Vec<Candidate>, KernelError> {
        let levels = levels
            .iter()
            .map(|(stride, scores, boxes)| {
                Ok(NanoDetLevel { stride: *stride, scores: host_output(scores)?, boxes: host_output(boxes)? })
            })
            .collect::<Result<Vec<_>, KernelError>>()?;
        host::nanodet_decode(spec, &levels, batch, l.classes, l.min_score, l.capacity)
    }

    fn yolov8(
        &self,
        pred: Output<'_>,
        batch: usize,
        (num_classes, w, h): (usize, u32, u32),
        l: DecodeLimits<'_>,
    ) -> Result<Vec<Candidate>, KernelError> {
        host::yolov8_decode(host_output(&pred)?, batch, num_classes, w, h, l.classes, l.min_score, l.capacity)
    }
}

#[cfg(feature = "cuda")]
mod on_gpu {
    use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
    use ort::session::Session;
    use ort::value::{DynTensor, DynTensorValueType, TensorElementType};

    use super::{DecodeLimits, Output, TensorDevice};
    use crate::gpu::{DeviceLevel, Gpu};
    use crate::{Candidate, KernelError, Matrix, ModelInput, NanoDetSpec, Planes, Range};

    /// Checks that `memory` is this GPU's, so no host address reaches a kernel.
    fn on_this_gpu(gpu: &Gpu, what: &str, memory: &MemoryInfo<'_>) -> Result<(), KernelError> {
        if memory.allocation_device() != AllocationDevice::CUDA || memory.device_id() != gpu.ordinal() as i32 {
            return Err(KernelError::Decoder {
                what: what.to_owned(),
                why: format!(
                    "in {:?} memory of device {}, not on CUDA device {}",
                    memory.allocation_device().as_str(),
                    memory.device_id(),
                    gpu.ordinal()
                ),
            });
        }
        Ok(())
    }

    /// A bound f32 output on this GPU: its device address and length.
    fn device_output(gpu: &Gpu, o: &Output<'_>) -> Result<(u64, usize), KernelError> {
        let bad = |why: String| KernelError::Decoder { what: o.name.to_owned(), why };
        let tensor = o.value.view().downcast::<DynTensorValueType>().map_err(|e| bad(e.to_string()))?;
        if *tensor.data_type() != TensorElementType::Float32 {
            return Err(bad(format!("{:?}, not f32", tensor.data_type())));
        }
        on_this_gpu(gpu, o.name, tensor.memory_info())?;
        Ok((tensor.data_ptr() as u64, tensor.shape().num_elements()))
    }

    impl TensorDevice for Gpu {
        fn name(&self) -> String {
            format!("cuda:{}", self.ordinal())
        }

        fn can_read(&self, picture: &retail_core::DevicePicture) -> Result<(), String> {
            Gpu::can_read(self, picture)
        }

        fn allocator(&self, session: &Session) -> Result<Allocator, KernelError> {
            let info = MemoryInfo::new(
                AllocationDevice::CUDA,
                self.ordinal() as i32,
                AllocatorType::Device,
                MemoryType::Default,
            )
            .and_then(|info| Allocator::new(session, info));
            info.map_err(|e| KernelError::Input {
                why: format!("no allocator on CUDA device {} in the session (is it on TensorRT?): {e}", self.ordinal()),
            })
        }

        fn preprocess(
            &self,
            frames: &[Planes<'_>],
            input: &ModelInput,
            (matrix, range): (Matrix, Range),
            tensor: &mut DynTensor,
        ) -> Result<(), KernelError> {
            on_this_gpu(self, "model input", tensor.memory_info())?;
            let element = match tensor.data_type() {
                TensorElementType::Float32 => 4,
                TensorElementType::Float16 => 2,
                other => return Err(KernelError::Input { why: format!("model input of {other:?}") }),
            };
            let len = tensor.shape().num_elements();
            let device_frames = self.place(frames, input)?;
            let out = tensor.data_ptr_mut() as u64;
            // SAFETY: `tensor` is ONNX Runtime's allocation of `len` elements of `element`
            // bytes on this device (checked above), mutably borrowed for the call, and
            // `preprocess_at` returns after the kernel finished.
            unsafe { self.preprocess_at(&device_frames, matrix, range, (out, len, element)) }
        }

        fn nanodet(
            &self,
            spec: &NanoDetSpec,
            levels: &[(u32, Output<'_>, Output<'_>)],
            batch: usize,
            l: DecodeLimits<'_>,
        ) -> Result<Vec<Candidate>, KernelError> {
            let mut device = Vec::with_capacity(levels.len());
            for (stride, scores, boxes) in levels {
                let ((scores, scores_len), (boxes, boxes_len)) =
                    (device_output(self, scores)?, device_output(self, boxes)?);
                device.push(DeviceLevel { stride: *stride, scores, scores_len, boxes, boxes_len });
            }
            // SAFETY: the addresses are f32 outputs of the finished run on this device, with
            // their element counts (checked by `device_output`), alive while `levels` borrows
            // the run's outputs.
            unsafe { self.nanodet_decode_at(spec, &device, batch, (l.classes, l.min_score, l.capacity)) }
        }

        fn yolov8(
            &self,
            pred: Output<'_>,
            batch: usize,
            shape: (usize, u32, u32),
            l: DecodeLimits<'_>,
        ) -> Result<Vec<Candidate>, KernelError> {
            let pred = device_output(self, &pred)?;
            // SAFETY: as in `nanodet`, for the one output.
            unsafe { self.yolov8_decode_at(pred, batch, shape, (l.classes, l.min_score, l.capacity)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(resize: Resize) -> ModelInput {
        let (mean, std) = ([0.0; 3], [1.0; 3]);
        ModelInput { width: 416, height: 416, bgr: true, mean, std, resize, pad: 114.0, half: false }
    }

    fn candidate(x1: f32, y1: f32, x2: f32, y2: f32) -> Candidate {
        Candidate { x1, y1, x2, y2, score: 0.9, ..Candidate::default() }
    }

    fn close(b: BBox, want: [f32; 4]) -> bool {
        [b.x1, b.y1, b.x2, b.y2].iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-4)
    }

    #[test]
    fn letterboxed_boxes_are_mapped_to_their_frames_fractions() {
        let lb = input(Resize::Letterbox);
        // 1600x900 in 416x416: 416x234 at y = 91.
        assert_eq!(lb.placement(1600, 900), (0, 91, 416, 234));
        let (top, bottom) = (91.0 / 416.0, 325.0 / 416.0);
        let whole = frame_box(&lb, (1600, 900), &candidate(0.0, top, 1.0, bottom));
        assert!(close(whole, [0.0, 0.0, 1.0, 1.0]), "{whole:?}");
        let lower = frame_box(&lb, (1600, 900), &candidate(0.25, 0.5, 0.75, 0.75));
        assert!(close(lower, [0.25, 0.5, 0.75, (312.0 - 91.0) / 234.0]), "{lower:?}");
        // A portrait frame has its bars left and right.
        let (dx, _, dw, _) = lb.placement(900, 1600);
        let side = frame_box(&lb, (900, 1600), &candidate(dx as f32 / 416.0, 0.0, (dx + dw) as f32 / 416.0, 0.5));
        assert!(close(side, [0.0, 0.0, 1.0, 0.5]), "{side:?}");
        // In the bars: clamped to the frame.
        let bar = frame_box(&lb, (1600, 900), &candidate(0.1, 0.0, 0.2, 0.1));
        assert!(bar.y1 == 0.0 && bar.y2 == 0.0, "{bar:?}");
        // Stretched: the model input's fractions are the frame's.
        let st = frame_box(&input(Resize::Stretch), (1600, 900), &candidate(0.1, 0.2, 0.3, 0.4));
        assert!(close(st, [0.1, 0.2, 0.3, 0.4]), "{st:?}");
    }

    #[test]
    fn packed_i420_is_split_into_its_planes_or_refused_naming_the_sizes() {
        let pixels: Vec<u8> = (0..12).collect(); // 4x2: 8 luma, 2 U, 2 V
        let f = FrameRef { pixels: &pixels, width: 4, height: 2, colour: YuvColour::default(), device: None };
        let yuv = i420(&f).unwrap();
        assert_eq!((yuv.luma, yuv.chroma_u, yuv.chroma_v), (&pixels[..8], &pixels[8..10], &pixels[10..]));
        assert_eq!((yuv.luma_pitch, yuv.chroma_pitch), (4, 2));
        let short = FrameRef { pixels: &pixels[..11], ..f };
        assert_eq!(i420(&short).unwrap_err(), "11 bytes, a 4x2 I420 picture has 12");
    }

    fn picture(width: u32, height: u32, pitch: usize) -> retail_core::DevicePicture {
        retail_core::DevicePicture {
            format: retail_core::DeviceYuv::Nv12,
            width,
            height,
            luma: 0x1000,
            chroma_u: 0x9000,
            chroma_v: 0,
            luma_pitch: pitch,
            chroma_pitch: pitch,
            context: 0x42,
            keep: std::sync::Arc::new(()),
        }
    }

    #[test]
    fn device_pictures_are_checked_and_refused_by_the_host_emulation() {
        assert!(Planes::Device(&picture(64, 48, 64)).check(0).is_ok());
        let err = Planes::Device(&picture(63, 48, 64)).check(2).unwrap_err().to_string();
        assert!(err.contains("frame 2") && err.contains("size 63x48"), "{err}");
        let err = Planes::Device(&picture(64, 48, 32)).check(0).unwrap_err().to_string();
        assert!(err.contains("pitches 32 (luma) and 32 (chroma)"), "{err}");
        let null = retail_core::DevicePicture { chroma_u: 0, ..picture(64, 48, 64) };
        assert!(Planes::Device(&null).check(0).unwrap_err().to_string().contains("null plane address"));

        let pixels = vec![16u8; 64 * 48 * 3 / 2];
        let host =
            i420(&FrameRef { pixels: &pixels, width: 64, height: 48, colour: YuvColour::default(), device: None })
                .unwrap();
        let on_gpu = picture(64, 48, 64);
        assert_eq!(host_frames(&[Planes::Host(host)]).unwrap().len(), 1);
        let err = host_frames(&[Planes::Host(host), Planes::Device(&on_gpu)]).unwrap_err();
        assert!(err.to_string().contains("frame 1") && err.to_string().contains("in GPU memory"), "{err}");
    }

    #[test]
    fn colorimetry_picks_the_kernels_matrix_and_range() {
        let c = |matrix, full_range| kernel_colour(YuvColour { matrix, full_range });
        assert_eq!(c(YuvMatrix::Bt601, false), (Matrix::Bt601, Range::Limited));
        assert_eq!(c(YuvMatrix::Bt709, true), (Matrix::Bt709, Range::Full));
        assert_eq!(c(YuvMatrix::Bt2020, false), (Matrix::Bt2020, Range::Limited));
    }
}
