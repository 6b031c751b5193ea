//! Host-side view of a decoded YUV frame, checked before any kernel reads it.

use retail_core::{DevicePicture, DeviceYuv};

use crate::{KernelError, YuvFormat};

/// A decoded frame in host memory: planes and their pitches (bytes per row).
#[derive(Clone, Copy, Debug)]
pub struct YuvFrame<'a> {
    pub format: YuvFormat,
    pub width: u32,
    pub height: u32,
    pub luma: &'a [u8],
    pub luma_pitch: usize,
    /// NV12: interleaved UV; I420: U.
    pub chroma_u: &'a [u8],
    /// I420: V; NV12: empty.
    pub chroma_v: &'a [u8],
    pub chroma_pitch: usize,
}

impl<'a> YuvFrame<'a> {
    /// The planes of packed I420 `pixels` (Y, then U, then V, rows packed), `width` x
    /// `height`; an error naming the sizes when the length is not that.
    pub fn packed_i420(pixels: &'a [u8], width: u32, height: u32) -> Result<YuvFrame<'a>, String> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let expected = w * h + 2 * cw * ch;
        if pixels.len() != expected {
            return Err(format!("{} bytes, a {w}x{h} I420 picture has {expected}", pixels.len()));
        }
        let (luma, chroma) = pixels.split_at(w * h);
        let (chroma_u, chroma_v) = chroma.split_at(cw * ch);
        Ok(YuvFrame {
            format: YuvFormat::I420,
            width,
            height,
            luma,
            luma_pitch: w,
            chroma_u,
            chroma_v,
            chroma_pitch: cw,
        })
    }

    /// Checks sizes and pitches, so no kernel reads past a plane. `index` names the frame in
    /// the error.
    pub fn check(&self, index: usize) -> Result<(), KernelError> {
        let bad = |why: String| Err(KernelError::Frame { index, why });
        let (w, h) = (self.width as usize, self.height as usize);
        let chroma_row = check_shape(index, self.format, (w, h), (self.luma_pitch, self.chroma_pitch))?;
        let need = |pitch: usize, rows: usize, row: usize| (rows - 1) * pitch + row;
        if self.luma.len() < need(self.luma_pitch, h, w) {
            return bad(format!("luma plane has {} bytes, needs {}", self.luma.len(), need(self.luma_pitch, h, w)));
        }
        let chroma_need = need(self.chroma_pitch, h / 2, chroma_row);
        let v_ok = match self.format {
            YuvFormat::Nv12 => true,
            YuvFormat::I420 => self.chroma_v.len() >= chroma_need,
        };
        if self.chroma_u.len() < chroma_need || !v_ok {
            return bad(format!("chroma planes are shorter than {chroma_need} bytes"));
        }
        Ok(())
    }
}

impl From<DeviceYuv> for YuvFormat {
    fn from(f: DeviceYuv) -> Self {
        match f {
            DeviceYuv::Nv12 => YuvFormat::Nv12,
            DeviceYuv::I420 => YuvFormat::I420,
        }
    }
}

/// A frame as the kernels take it: planes in host memory (uploaded first on a GPU), or a
/// picture the decoder left in GPU memory.
#[derive(Clone, Copy, Debug)]
pub enum Planes<'a> {
    Host(YuvFrame<'a>),
    Device(&'a DevicePicture),
}

impl Planes<'_> {
    pub fn size(&self) -> (u32, u32) {
        match self {
            Planes::Host(f) => (f.width, f.height),
            Planes::Device(p) => (p.width, p.height),
        }
    }

    /// As [`YuvFrame::check`]; for a device picture the sizes, pitches and addresses (its
    /// planes' lengths are GStreamer's to vouch for).
    pub fn check(&self, index: usize) -> Result<(), KernelError> {
        let p = match self {
            Planes::Host(f) => return f.check(index),
            Planes::Device(p) => p,
        };
        check_shape(index, p.format.into(), (p.width as usize, p.height as usize), (p.luma_pitch, p.chroma_pitch))?;
        if p.luma == 0 || p.chroma_u == 0 || (p.format == DeviceYuv::I420 && p.chroma_v == 0) {
            return Err(KernelError::Frame { index, why: "a null plane address".into() });
        }
        Ok(())
    }
}

/// Checks a frame's size and pitches as the kernels index them (even sides up to 16384,
/// 32-bit pitches at least a row long); returns the chroma row's bytes.
fn check_shape(
    index: usize,
    format: YuvFormat,
    (w, h): (usize, usize),
    (luma_pitch, chroma_pitch): (usize, usize),
) -> Result<usize, KernelError> {
    let bad = |why: String| Err(KernelError::Frame { index, why });
    if w < 2 || h < 2 || !w.is_multiple_of(2) || !h.is_multiple_of(2) || w > 16384 || h > 16384 {
        return bad(format!("size {w}x{h}: width and height must be even, 2..16384"));
    }
    let chroma_row = match format {
        YuvFormat::Nv12 => w,
        YuvFormat::I420 => w / 2,
    };
    // The kernels index with 32-bit pitches.
    let max_pitch = i32::MAX as usize / 16384;
    if luma_pitch > max_pitch || chroma_pitch > max_pitch {
        return bad(format!(
            "pitches {luma_pitch} (luma) and {chroma_pitch} (chroma): at most {max_pitch} bytes per row"
        ));
    }
    if luma_pitch < w || chroma_pitch < chroma_row {
        return bad(format!(
            "pitches {luma_pitch} (luma) and {chroma_pitch} (chroma) are shorter than a row ({w} and {chroma_row} bytes)"
        ));
    }
    Ok(chroma_row)
}
