use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use retail_core::Detection;

use crate::{InferError, Manifest, Normalizer, OutputDecoder, TensorView, decoder_for, nms};

/// One ONNX Runtime session with its preprocessing and decoding: frame in, detections out.
///
/// Runs single-threaded on purpose: on these CPUs one session per core with frames in
/// parallel beats one session spread over both cores (31.8 ms vs 46.8 ms per frame).
pub struct Detector {
    session: Session,
    model_path: PathBuf,
    input_name: String,
    input_shape: [i64; 4],
    input: Vec<f32>,
    normalizer: Normalizer,
    decoder: Box<dyn OutputDecoder>,
    output_names: Vec<String>,
    classes: Vec<u32>,
    min_score: f32,
    nms_iou: f32,
    candidates: Vec<Detection>,
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
        if got.len() != want.len() || got.iter().zip(want).any(|(g, w)| *g >= 0 && g != w) {
            return Err(mismatch(format!("input `{}` has shape {got:?}, manifest says {want:?}", manifest.input.name)));
        }
        let decoder = decoder_for(manifest);
        let shape_of = |name: &str| -> Option<Vec<i64>> {
            session
                .outputs()
                .iter()
                .find(|o| o.name() == name)
                .map(|o| o.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default())
        };
        decoder.check_shapes(&shape_of).map_err(mismatch)?;

        let input_shape = [want[0], want[1], want[2], want[3]];
        Ok(Detector {
            model_path: model_path.to_owned(),
            input_name: manifest.input.name.clone(),
            input: vec![0.0; (want[1] * want[2] * want[3]) as usize],
            input_shape,
            normalizer: Normalizer::new(manifest.input.mean, manifest.input.std),
            output_names: decoder.output_names(),
            decoder,
            classes,
            min_score,
            nms_iou,
            session,
            candidates: Vec::new(),
        })
    }

    /// Bytes of packed 8-bit pixels one frame must have.
    pub fn frame_bytes(&self) -> usize {
        self.input.len()
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Detects objects in one frame of packed pixels at the model's input size and channel
    /// order. Boxes are normalised frame coordinates, after NMS, best first.
    pub fn detect(&mut self, pixels: &[u8]) -> Result<Vec<Detection>, InferError> {
        if pixels.len() != self.input.len() {
            return Err(InferError::FrameSize { got: pixels.len(), expected: self.input.len() });
        }
        self.normalizer.to_nchw(pixels, &mut self.input);
        self.run_model()?;
        Ok(nms(std::mem::take(&mut self.candidates), self.nms_iou))
    }

    /// Runs the model on the current input buffer and decodes into `self.candidates`.
    /// Public for the inference-only benchmark.
    pub fn run_model(&mut self) -> Result<(), InferError> {
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
            ..
        } = self;
        let session_err = |reason: String| InferError::Session { path: model_path.clone(), reason };
        let tensor = TensorRef::from_array_view((*input_shape, &input[..])).map_err(|e| session_err(e.to_string()))?;
        let outputs =
            session.run(ort::inputs![input_name.as_str() => tensor]).map_err(|e| session_err(e.to_string()))?;
        let mut views = Vec::with_capacity(output_names.len());
        for name in output_names.iter() {
            let (shape, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| session_err(format!("output `{name}`: {e}")))?;
            views.push(TensorView { name, shape, data });
        }
        candidates.clear();
        decoder.decode(&views, classes, *min_score, candidates)
    }
}
