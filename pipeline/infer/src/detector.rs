use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef};
use retail_core::Detection;

use crate::{Accelerator, InferError, Manifest, Normalizer, OutputDecoder, TensorView, decoder_for, nms};

/// One ONNX Runtime session with its preprocessing and decoding: frame in, detections out.
///
/// Runs single-threaded on purpose: on these CPUs one session per core with frames in
/// parallel beats one session spread over both cores (31.8 ms vs 46.8 ms per frame).
pub struct Detector {
    session: Session,
    model_path: PathBuf,
    input_name: String,
    input_shape: [i64; 4],
    /// Room for `max_batch` frames.
    input: Vec<f32>,
    frame_len: usize,
    /// Whether the model's batch dimension is dynamic (a batch is one call).
    dynamic_batch: bool,
    max_batch: usize,
    normalizer: Normalizer,
    decoder: Box<dyn OutputDecoder>,
    output_names: Vec<String>,
    classes: Vec<u32>,
    min_score: f32,
    nms_iou: f32,
    candidates: Vec<Detection>,
    /// Where it runs, for logs (`onnxruntime-cpu`, `tensorrt`).
    backend: &'static str,
}

impl Detector {
    /// Loads the model and checks it against the manifest. `classes` are the label indices
    /// to report; candidates down to `min_score` are kept.
    pub fn load(
        manifest: &Manifest,
        model_path: &Path,
        threads: usize,
        classes: Vec<u32>,
        min_score: f32,
        nms_iou: f32,
    ) -> Result<Self, InferError> {
        Self::load_on(manifest, model_path, threads, classes, (min_score, nms_iou), &Accelerator::Cpu)
    }

    /// [`load`](Self::load) on `accelerator`; `(min_score, nms_iou)` as there.
    pub fn load_on(
        manifest: &Manifest,
        model_path: &Path,
        threads: usize,
        classes: Vec<u32>,
        (min_score, nms_iou): (f32, f32),
        accelerator: &Accelerator,
    ) -> Result<Self, InferError> {
        let ModelSession { session, dynamic_batch, decoder, .. } =
            open_session(manifest, model_path, threads, accelerator)?;
        let want = &manifest.input.shape;
        let input_shape = [1, want[1], want[2], want[3]];
        let frame_len = (want[1] * want[2] * want[3]) as usize;
        Ok(Detector {
            model_path: model_path.to_owned(),
            input_name: manifest.input.name.clone(),
            input: vec![0.0; frame_len],
            frame_len,
            dynamic_batch,
            max_batch: 1,
            input_shape,
            normalizer: Normalizer::new(manifest.input.mean, manifest.input.std),
            output_names: decoder.output_names(),
            decoder,
            classes,
            min_score,
            nms_iou,
            session,
            candidates: Vec::new(),
            backend: accelerator.name(),
        })
    }

    /// Lets one call take up to `n` frames when the model's batch dimension is dynamic;
    /// a fixed-batch model stays at one frame per call. Returns the batch now in effect.
    pub fn set_max_batch(&mut self, n: usize) -> usize {
        self.max_batch = if self.dynamic_batch { n.max(1) } else { 1 };
        self.input.resize(self.frame_len * self.max_batch, 0.0);
        self.max_batch
    }

    /// Frames one model call takes.
    pub fn input_capacity(&self) -> usize {
        self.max_batch
    }

    /// Whether the model takes several frames per call.
    pub fn dynamic_batch(&self) -> bool {
        self.dynamic_batch
    }

    /// Bytes of packed 8-bit pixels one frame must have.
    pub fn frame_bytes(&self) -> usize {
        self.frame_len
    }

    /// Where it runs: `onnxruntime-cpu` or `tensorrt`.
    pub fn backend_name(&self) -> &'static str {
        self.backend
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Detects objects in one frame of packed pixels at the model's input size and channel
    /// order. Boxes are normalised frame coordinates, after NMS, best first.
    pub fn detect(&mut self, pixels: &[u8]) -> Result<Vec<Detection>, InferError> {
        Ok(self.detect_batch(&[pixels])?.pop().unwrap_or_default())
    }

    /// Detects objects in each frame, one model call per `max_batch` frames.
    pub fn detect_batch(&mut self, frames: &[&[u8]]) -> Result<Vec<Vec<Detection>>, InferError> {
        if let Some(bad) = frames.iter().find(|f| f.len() != self.frame_len) {
            return Err(InferError::FrameSize { got: bad.len(), expected: self.frame_len });
        }
        let mut all = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(self.max_batch) {
            for (i, pixels) in chunk.iter().enumerate() {
                let slot = &mut self.input[i * self.frame_len..(i + 1) * self.frame_len];
                self.normalizer.to_nchw(pixels, slot);
            }
            self.run_batch(chunk.len(), &mut all)?;
        }
        Ok(all)
    }

    /// Runs the model on the first `n` frames of the input buffer; pushes each frame's
    /// detections (after NMS) to `out`.
    fn run_batch(&mut self, n: usize, out: &mut Vec<Vec<Detection>>) -> Result<(), InferError> {
        let Detector {
            session,
            input,
            input_shape,
            input_name,
            output_names,
            decoder,
            model_path,
            candidates,
            classes,
            min_score,
            frame_len,
            nms_iou,
            ..
        } = self;
        let session_err = |reason: String| InferError::Session { path: model_path.clone(), reason };
        let shape = [n as i64, input_shape[1], input_shape[2], input_shape[3]];
        let tensor =
            TensorRef::from_array_view((shape, &input[..n * *frame_len])).map_err(|e| session_err(e.to_string()))?;
        let outputs =
            session.run(ort::inputs![input_name.as_str() => tensor]).map_err(|e| session_err(e.to_string()))?;
        let mut extracted = Vec::with_capacity(output_names.len());
        for name in output_names.iter() {
            let (shape, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| session_err(format!("output `{name}`: {e}")))?;
            if shape.first() != Some(&(n as i64)) || data.len() % n != 0 {
                return Err(session_err(format!("output `{name}` has shape {shape:?} for a batch of {n}")));
            }
            // Each frame's part, seen as a batch of one.
            let mut one = shape.to_vec();
            one[0] = 1;
            extracted.push((name, one, data));
        }
        for item in 0..n {
            let views: Vec<TensorView<'_>> = extracted
                .iter()
                .map(|(name, shape, data)| {
                    let len = data.len() / n;
                    TensorView { name, shape, data: &data[item * len..(item + 1) * len] }
                })
                .collect();
            candidates.clear();
            decoder.decode(&views, classes, *min_score, candidates)?;
            out.push(nms(std::mem::take(candidates), *nms_iou));
        }
        Ok(())
    }
}

/// A session checked against its manifest: input name and shape, outputs the decoder reads.
pub struct ModelSession {
    pub session: Session,
    /// Whether the model's batch dimension is dynamic (a batch is one call).
    pub dynamic_batch: bool,
    /// Whether the model takes f16 input (else f32).
    pub half_input: bool,
    pub decoder: Box<dyn OutputDecoder>,
}

/// Opens `model_path` on `accelerator` and checks it against the manifest: the input's name
/// and shape, and every output the manifest's decoder reads, with its shape.
pub fn open_session(
    manifest: &Manifest,
    model_path: &Path,
    threads: usize,
    accelerator: &Accelerator,
) -> Result<ModelSession, InferError> {
    let env = crate::runtime::environment()?;
    if !model_path.is_file() {
        return Err(InferError::ModelMissing { path: model_path.to_owned(), hint: "file does not exist".into() });
    }
    let session_err = |reason: String| InferError::Session { path: model_path.to_owned(), reason };
    let session = Session::builder(env)
        .map_err(|e| session_err(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| session_err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| session_err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| session_err(e.to_string()))?
        .with_execution_providers(accelerator.providers(per_frame_input(manifest))?)
        .map_err(|e| InferError::Accelerator { provider: accelerator.name(), reason: e.to_string() })?
        .commit_from_file(model_path)
        .map_err(|e| session_err(e.to_string()))?;

    let mismatch = |reason: String| InferError::ModelMismatch { path: model_path.to_owned(), reason };
    let want = &manifest.input.shape;
    let input = session.inputs().iter().find(|i| i.name() == manifest.input.name).ok_or_else(|| {
        mismatch(format!(
            "input `{}` not found (model inputs: {})",
            manifest.input.name,
            session.inputs().iter().map(|i| i.name().to_owned()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let got: Vec<i64> = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    let dynamic_batch = got.first().is_some_and(|b| *b < 0);
    if got.len() != want.len() || got.iter().zip(want).any(|(g, w)| *g >= 0 && g != w) {
        return Err(mismatch(format!("input `{}` has shape {got:?}, manifest says {want:?}", manifest.input.name)));
    }
    let half_input = input.dtype().tensor_type() == Some(TensorElementType::Float16);
    let decoder = decoder_for(manifest);
    let shape_of = |name: &str| -> Option<Vec<i64>> {
        session
            .outputs()
            .iter()
            .find(|o| o.name() == name)
            .map(|o| o.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default())
    };
    decoder.check_shapes(&shape_of).map_err(mismatch)?;
    Ok(ModelSession { session, dynamic_batch, half_input, decoder })
}

/// The model input's name and per-frame shape (C, H, W) from the manifest.
fn per_frame_input(manifest: &Manifest) -> (&str, [i64; 3]) {
    let s = &manifest.input.shape;
    let dim = |i: usize| s.get(i).copied().unwrap_or(0);
    (manifest.input.name.as_str(), [dim(1), dim(2), dim(3)])
}
