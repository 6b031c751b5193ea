//! GStreamer's NVDEC decoding into CUDA memory, handed to the kernels without a copy (feature
//! `tensorrt`, which turns on retail-ingest's `cuda`). It needs a GPU and GStreamer's nvcodec
//! plugin, so here it skips. `benches/gpu/verify.sh` carries this test, GStreamer's libraries
//! and plugins and an H.264 clip to a GPU machine, and runs it there with
//! `RETAIL_AI_REQUIRE_GPU=1`, so a missing piece fails instead of skipping.
#![cfg(feature = "tensorrt")]

use std::path::PathBuf;

use gstreamer::prelude::*;
use retail_ingest::{FileSource, IngestConfig, PixelOrder, SourceSpec};
use retail_kernels::gpu::{self, Gpu};
use retail_kernels::reference::Tensor;
use retail_kernels::{Matrix, Planes, Range, Resize, YuvFrame, model_input};

fn required() -> bool {
    std::env::var_os("RETAIL_AI_REQUIRE_GPU").is_some_and(|v| v == "1")
}

/// The H.264 clip `RETAIL_AI_NVDEC_CLIP` names, or one made here with x264enc.
fn clip(dir: &std::path::Path) -> PathBuf {
    if let Some(p) = std::env::var_os("RETAIL_AI_NVDEC_CLIP") {
        return PathBuf::from(p);
    }
    let out = dir.join("nvdec.mp4");
    let desc = format!(
        "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,format=I420,width=1280,height=720,framerate=10/1 ! \
         x264enc ! video/x-h264,profile=constrained-baseline ! h264parse ! mp4mux ! filesink location={}",
        out.display()
    );
    // Needs x264enc; else set RETAIL_AI_NVDEC_CLIP.
    retail_testkit::rtsp::launch_to_eos(&desc);
    out
}

/// H.264 decoding is exact, so NVDEC's pictures in CUDA memory (NV12, the pool's pitch) and
/// the same frames decoded into host memory (I420, packed) are the same samples: the model
/// inputs the kernels make of them agree to float rounding, whatever the layouts, and so do
/// the motion gate's band means against the first frame's luma.
#[test]
fn nvdec_pictures_in_cuda_memory_give_the_model_input_of_the_same_frames_in_host_memory() {
    retail_ingest::init().unwrap();
    if !(gpu::driver_present() && retail_ingest::cuda_memory_available()) {
        assert!(!required(), "RETAIL_AI_REQUIRE_GPU=1 but there is no CUDA driver or no nvcodec CUDA elements");
        eprintln!("skipped: no CUDA driver or no GStreamer nvcodec elements here");
        return;
    }
    let nvdec = gstreamer::ElementFactory::find("nvh264dec");
    assert!(
        nvdec.is_some() || !required(),
        "RETAIL_AI_REQUIRE_GPU=1 but nvcodec registered no nvh264dec (libnvcuvid?)"
    );
    // The reference decodes on the CPU, independently of NVDEC: a software decoder (openh264,
    // which verify.sh carries, or libav) ranked above it. The CUDA source still tries NVDEC
    // first, since it prefers the device's decoders whatever their rank.
    let software = ["openh264dec", "avdec_h264"].into_iter().find_map(gstreamer::ElementFactory::find);
    assert!(software.is_some() || !required(), "RETAIL_AI_REQUIRE_GPU=1 but there is no software H.264 decoder");
    if let Some(software) = software {
        software.set_rank(gstreamer::Rank::PRIMARY + 100);
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path());
    let gpu = Gpu::new(0).unwrap();
    let ctx = gpu::shared_context(0).unwrap();
    assert_eq!(ctx.handle, gpu.context_handle(), "the decoders must share the kernels' (primary) context");
    let spec = |order, cuda| SourceSpec {
        stream: "nvdec".into(),
        width: 416,
        height: 416,
        order,
        display: false,
        cuda,
        software_decoding: false,
    };
    let config = IngestConfig::default();
    let mut on_gpu = FileSource::open(&clip, spec(PixelOrder::CudaYuv, Some(ctx)), &config).unwrap();
    let mut on_host = FileSource::open(&clip, spec(PixelOrder::I420, None), &config).unwrap();
    let input = model_input(&retail_infer::Manifest::bundled(), Resize::Letterbox, false);
    let mut frames = 0;
    let mut motion = gpu::LumaGate::new(0).unwrap();
    let mut first_luma: Option<Vec<u8>> = None;
    while let Some(d) = on_gpu.next_frame().unwrap() {
        let h = on_host.next_frame().unwrap().expect("both sources give every frame");
        let picture = d.device.as_ref().expect("a frame of the CUDA branch carries its picture");
        assert!(d.pixels.is_empty(), "no host pixels on the CUDA branch");
        // NV12 is what NVDEC gives; a software decoder's I420 would have been uploaded.
        assert_eq!(picture.format, retail_core::DeviceYuv::Nv12, "decoded by NVDEC into CUDA memory");
        assert_eq!((picture.width, picture.height), (h.width, h.height));
        let host = YuvFrame::packed_i420(&h.pixels, h.width, h.height).unwrap();
        let Tensor::F32(want) = gpu.preprocess(&[host], &input, Matrix::Bt709, Range::Limited).unwrap() else {
            unreachable!("an f32 model input")
        };
        let placed = gpu.place(&[Planes::Device(picture)], &input).unwrap();
        let mut out = gpu.stream().alloc_zeros::<f32>(input.frame_len()).unwrap();
        gpu.preprocess_into(&placed, Matrix::Bt709, Range::Limited, &mut out).unwrap();
        let got = gpu.stream().clone_dtoh(&out).unwrap();
        // In 8-bit levels (the inputs are (v - mean) / std, std at most 58.4).
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() * 58.4).fold(0.0f32, f32::max);
        assert!(worst <= 0.5, "frame {frames} ({:?}): differs by {worst:.2} levels", picture.format);
        let (size, luma) = ((h.width, h.height), &h.pixels[..(h.width * h.height) as usize]);
        match &first_luma {
            None => {
                motion.keep(picture).unwrap();
                first_luma = Some(luma.to_vec());
            }
            Some(first) => {
                let sums = retail_kernels::gate::luma_band_sums(luma, h.width as usize, first, size).unwrap();
                let want = retail_kernels::gate::max_band_mean(&sums, size);
                let got = motion.difference(picture).unwrap();
                assert!((got - want).abs() <= 0.01, "frame {frames}: the gate says {got}, the host {want}");
            }
        }
        frames += 1;
    }
    assert!(frames >= 10, "{frames} frames decoded into CUDA memory");
    assert!(on_host.next_frame().unwrap().is_none(), "the host path has frames the CUDA path lacks");
}
