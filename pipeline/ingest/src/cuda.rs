//! The CUDA branch's two steps ([`crate::PixelOrder::CudaYuv`]): share the kernels' context
//! with the pipeline before it starts, and map each decoded buffer for the kernels. Both go
//! through `retail-gst-cuda` (feature `cuda`); without it they are errors that say so.

use gstreamer as gst;
use retail_core::DevicePicture;

use crate::SourceSpec;

/// Sets the kernels' CUDA context on `pipeline` (GStreamer's bins hand it to the CUDA
/// elements they add, `decodebin`'s decoders included) and makes `decodebin` prefer the
/// device's NVDEC decoders.
#[cfg(feature = "cuda")]
pub(crate) fn attach(pipeline: &gst::Pipeline, decodebin: &gst::Element, spec: &SourceSpec) -> Result<(), String> {
    use gstreamer::prelude::*;
    let ctx = spec.cuda.as_ref().ok_or("the CUDA branch needs the kernels' CUDA context")?;
    let lib = retail_gst_cuda::library().map_err(|e| e.to_string())?;
    let context = lib.context(ctx).map_err(|e| e.to_string())?;
    crate::decoders::prefer_decoders(decodebin, &retail_gst_cuda::hardware_decoders(ctx.device));
    pipeline.set_context(&context);
    tracing::debug!(stream = %spec.stream, device = ctx.device, "decoding into CUDA memory");
    Ok(())
}

/// A decoded buffer of the CUDA branch, mapped for the kernels.
#[cfg(feature = "cuda")]
pub(crate) fn picture(spec: &SourceSpec, buffer: gst::Buffer, size: (u32, u32)) -> Result<DevicePicture, String> {
    let ctx = spec.cuda.as_ref().ok_or("the CUDA branch needs the kernels' CUDA context")?;
    let lib = retail_gst_cuda::library().map_err(|e| e.to_string())?;
    lib.picture(buffer, size, ctx).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str = "this build cannot decode into CUDA memory (retail-ingest's feature `cuda`)";

#[cfg(not(feature = "cuda"))]
pub(crate) fn attach(_: &gst::Pipeline, _: &gst::Element, _: &SourceSpec) -> Result<(), String> {
    Err(NO_CUDA.into())
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn picture(_: &SourceSpec, _: gst::Buffer, _: (u32, u32)) -> Result<DevicePicture, String> {
    Err(NO_CUDA.into())
}

/// Whether sources can decode into CUDA memory here: the feature is built, libgstcuda opens
/// and nvcodec registered its CUDA elements (it does only with a working driver).
pub fn cuda_memory_available() -> bool {
    #[cfg(feature = "cuda")]
    return retail_gst_cuda::available();
    #[cfg(not(feature = "cuda"))]
    false
}
