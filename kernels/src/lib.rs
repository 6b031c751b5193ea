//! CUDA kernels for the GPU path: decoded YUV frames (NV12, I420) to the model's input tensor,
//! and detector outputs (NanoDet, YOLOv8) to candidate boxes above the score threshold.
//!
//! The kernels are CUDA C under `cuda/`, compiled at run time by NVRTC and launched through
//! cudarc (feature `cuda`; the driver and NVRTC are loaded dynamically, so a machine without
//! them gets [`KernelError::NoDriver`] or [`KernelError::NoNvrtc`], never a panic). The same
//! sources also compile as plain C++ with a shim for the CUDA built-ins ([`host`]), so the
//! tests run the kernel bodies on any machine and compare them with the CPU specification
//! ([`reference`] for preprocessing, the pipeline's decoders for decoding).

mod decode;
pub mod detect;
mod error;
mod frame;
pub mod gate;
pub mod host;
mod layout;
pub mod reference;
mod source;

#[cfg(feature = "cuda")]
pub mod gpu;

pub use decode::{NanoDetLevel, NanoDetSpec};
pub use detect::{DecodeLimits, DecodeSettings, HostKernels, TensorDevice, YuvDetector, model_input};
pub use error::KernelError;
pub use frame::{Planes, YuvFrame};
pub use layout::{Candidate, FrameDesc, Matrix, ModelInput, PreprocessParams, Range, Resize, YuvFormat, yuv_to_rgb};
pub use source::{KERNELS, KernelSource};
