//! The inference seam: N frames (of any streams) in, N detection lists out. ONNX Runtime is
//! the implementation, on the CPU or (feature `tensorrt`) in TensorRT; see [`crate::Accelerator`].

use retail_core::{Detection, DevicePicture, YuvColour};

use crate::{Detector, InferError};

/// One frame as a backend takes it: its picture and size. The layout is the one the
/// backend asked the sources for: packed pixels at the model's input size for the ONNX
/// Runtime detector, I420 at the video's own size for the GPU kernels.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// What YUV pixels' values mean (the video's colorimetry).
    pub colour: YuvColour,
    /// The picture in GPU memory instead of `pixels`, for a backend that asked the sources
    /// for it (the GPU kernels with `PixelOrder::CudaYuv`).
    pub device: Option<&'a DevicePicture>,
}

/// An object detector the pipeline can batch frames into.
pub trait InferenceBackend: Send {
    /// A short name for logs and `doctor` (e.g. `onnxruntime-cpu`).
    fn name(&self) -> &str;
    /// The most frames one [`detect_batch`](Self::detect_batch) call runs in one model
    /// call; 1 for a fixed-batch model (larger batches are then run frame by frame).
    fn max_batch(&self) -> usize;
    /// Bytes of packed 8-bit pixels each frame must have (the model's input size); 0 for a
    /// backend that takes frames of any size (each checked against its stated size).
    fn frame_bytes(&self) -> usize;
    /// One detection list per frame, in order. Boxes are normalised frame coordinates,
    /// after NMS, best first.
    fn detect_batch(&mut self, frames: &[FrameRef<'_>]) -> Result<Vec<Vec<Detection>>, InferError>;
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

    fn detect_batch(&mut self, frames: &[FrameRef<'_>]) -> Result<Vec<Vec<Detection>>, InferError> {
        if let Some(i) = frames.iter().position(|f| f.device.is_some()) {
            return Err(InferError::Backend {
                backend: self.backend_name().to_owned(),
                reason: format!("frame {i} of the batch is in GPU memory; this detector reads host pixels"),
            });
        }
        let pixels: Vec<&[u8]> = frames.iter().map(|f| f.pixels).collect();
        Detector::detect_batch(self, &pixels)
    }
}
