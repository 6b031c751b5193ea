//! The inference seam: N frames (of any streams) in, N detection lists out. ONNX Runtime is
//! the implementation, on the CPU or (feature `tensorrt`) in TensorRT; see [`crate::Accelerator`].

use retail_core::Detection;

use crate::{Detector, InferError};

/// An object detector the pipeline can batch frames into.
pub trait InferenceBackend: Send {
    /// A short name for logs and `doctor` (e.g. `onnxruntime-cpu`).
    fn name(&self) -> &str;
    /// The most frames one [`detect_batch`](Self::detect_batch) call runs in one model
    /// call; 1 for a fixed-batch model (larger batches are then run frame by frame).
    fn max_batch(&self) -> usize;
    /// Bytes of packed 8-bit pixels each frame must have (the model's input size).
    fn frame_bytes(&self) -> usize;
    /// One detection list per frame, in order. Boxes are normalised frame coordinates,
    /// after NMS, best first.
    fn detect_batch(&mut self, frames: &[&[u8]]) -> Result<Vec<Vec<Detection>>, InferError>;
}

impl InferenceBackend for Detector {
    fn name(&self) -> &str {
        self.backend_name()
    }

    fn max_batch(&self) -> usize {
        self.input_capacity()
    }

    fn frame_bytes(&self) -> usize {
        Detector::frame_bytes(self)
    }

    fn detect_batch(&mut self, frames: &[&[u8]]) -> Result<Vec<Vec<Detection>>, InferError> {
        Detector::detect_batch(self, frames)
    }
}
