//! Real frames for the kernel tests that run the detector: vtest.avi decoded by GStreamer
//! to I420, the kernel's tensor back to packed pixels, and detections paired by IoU. Apart
//! from `common` so the GPU test binary, which runs where GStreamer is not installed, does
//! not link it.
#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use retail_core::Detection;
use retail_kernels::{ModelInput, YuvFormat, YuvFrame};

/// One decoded I420 frame as GStreamer lays it out.
pub struct I420 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    pub offsets: [usize; 3],
    pub strides: [usize; 3],
}

impl I420 {
    pub fn frame(&self) -> YuvFrame<'_> {
        YuvFrame {
            format: YuvFormat::I420,
            width: self.width,
            height: self.height,
            luma: &self.data[self.offsets[0]..],
            luma_pitch: self.strides[0],
            chroma_u: &self.data[self.offsets[1]..],
            chroma_v: &self.data[self.offsets[2]..],
            chroma_pitch: self.strides[1],
        }
    }
}

/// The frames of `path` at the indices asked for, as GStreamer decodes them, converted to
/// I420 at their own size.
pub fn i420_frames(path: &Path, wanted: &[u64]) -> Vec<I420> {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location={:?} ! decodebin ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false",
        path.display().to_string()
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    let mut index = 0u64;
    while out.len() < wanted.len() {
        let sample = sink.pull_sample().expect("the clip ended before the frames asked for");
        if wanted.contains(&index) {
            let caps = sample.caps().unwrap();
            let info = gstreamer_video::VideoInfo::from_caps(caps).unwrap();
            let buffer = sample.buffer().unwrap().map_readable().unwrap();
            let offsets = [0, 1, 2].map(|p| info.offset()[p]);
            let strides = [0, 1, 2].map(|p| info.stride()[p] as usize);
            let data = buffer.as_slice().to_vec();
            out.push(I420 { width: info.width(), height: info.height(), data, offsets, strides });
        }
        index += 1;
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// The kernel's normalised NCHW output back to packed 8-bit BGR, as the detector takes it.
pub fn to_packed(tensor: &retail_kernels::reference::Tensor, input: &ModelInput) -> Vec<u8> {
    let hw = (input.width * input.height) as usize;
    let mut out = vec![0u8; hw * 3];
    for c in 0..3 {
        for i in 0..hw {
            let v = tensor.get(c * hw + i) * input.std[c] + input.mean[c];
            out[i * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Detections of `a` and `b` paired greedily by IoU (>= 0.6): how many paired, and the
/// scores of those left unpaired on each side.
pub fn pair(a: &[Detection], b: &[Detection]) -> (usize, Vec<f32>, Vec<f32>) {
    let mut used = vec![false; b.len()];
    let mut lone_a = Vec::new();
    for d in a {
        let best = (0..b.len()).filter(|&j| !used[j]).max_by(|&i, &j| {
            d.bbox.iou(&b[i].bbox).partial_cmp(&d.bbox.iou(&b[j].bbox)).unwrap_or(std::cmp::Ordering::Equal)
        });
        match best.filter(|&j| d.bbox.iou(&b[j].bbox) >= 0.6) {
            Some(j) => used[j] = true,
            None => lone_a.push(d.score),
        }
    }
    let lone_b = b.iter().zip(&used).filter(|(_, u)| !**u).map(|(d, _)| d.score).collect();
    (a.len() - lone_a.len(), lone_a, lone_b)
}
