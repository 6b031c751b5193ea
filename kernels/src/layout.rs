//! The structs the kernels read, laid out as in the `.cu` files, and the host-side planning
//! that fills them: where each frame lands in the model input (stretch or letterbox), the
//! YUV -> RGB matrix of its colorimetry, and the model's normalisation.

/// Pixel layout of a decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YuvFormat {
    /// Y plane, then one plane of interleaved U and V at half resolution.
    Nv12,
    /// Y, U and V planes, chroma at half resolution.
    I420,
}

/// How a frame is fitted to the model input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Scaled to fill the input, aspect ratio not kept (the bundled NanoDet manifest).
    Stretch,
    /// Scaled to fit inside, aspect ratio kept, centred; the rest is the pad value.
    Letterbox,
}

/// The frame's YUV -> RGB matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrix {
    /// SD video (ITU-R BT.601).
    Bt601,
    /// HD video (ITU-R BT.709).
    Bt709,
    /// UHD video (ITU-R BT.2020, non-constant luminance).
    Bt2020,
}

/// Y in 16..235 and chroma in 16..240 (video), or the full 0..255 (JPEG-style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    Limited,
    Full,
}

/// One frame of a batch, as the preprocessing kernel reads it (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameDesc {
    /// Y plane (a device address on the GPU, a host address in the emulation).
    pub luma: u64,
    /// NV12: the interleaved UV plane; I420: the U plane.
    pub chroma_u: u64,
    /// I420: the V plane; NV12: 0.
    pub chroma_v: u64,
    pub width: i32,
    pub height: i32,
    pub luma_pitch: i32,
    pub chroma_pitch: i32,
    /// 0 NV12, 1 I420.
    pub format: i32,
    pub dst_x: i32,
    pub dst_y: i32,
    pub dst_w: i32,
    pub dst_h: i32,
    pub reserved: i32,
}

/// Launch parameters of the preprocessing kernel (shared by the whole batch).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PreprocessParams {
    /// Rows R, G, B applied to (Y - y_offset, U - 128, V - 128).
    pub matrix: [f32; 9],
    pub y_offset: f32,
    /// Per output channel: 1 / std.
    pub scale: [f32; 3],
    /// Per output channel: -mean / std.
    pub bias: [f32; 3],
    /// Per output channel: the normalised letterbox fill.
    pub pad_value: [f32; 3],
    /// Output channel c is R (0), G (1) or B (2).
    pub channel_src: [i32; 3],
    pub out_w: i32,
    pub out_h: i32,
    /// 0: f32 output, 1: f16.
    pub half: i32,
}

/// One decoded box above the score threshold (32 bytes); box in 0..1 of the model input.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Candidate {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class_id: u32,
    /// Index of the frame in the batch.
    pub item: u32,
    pub reserved: u32,
}

/// What the model wants: its input size, channel order and normalisation (from its manifest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelInput {
    pub width: u32,
    pub height: u32,
    /// `true` for BGR (the bundled NanoDet), `false` for RGB.
    pub bgr: bool,
    /// Per channel, in the model's channel order.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: Resize,
    /// Letterbox fill, 0..255 on every channel before normalisation.
    pub pad: f32,
    /// f16 output (a TensorRT FP16 engine) instead of f32.
    pub half: bool,
}

impl FrameDesc {
    /// A frame with planes at `(luma, chroma_u, chroma_v)` (chroma_v 0 for NV12), placed in
    /// `input` as its resize mode says.
    pub fn placed(
        format: YuvFormat,
        planes: (u64, u64, u64),
        (width, height): (u32, u32),
        (luma_pitch, chroma_pitch): (usize, usize),
        input: &ModelInput,
    ) -> FrameDesc {
        let (dst_x, dst_y, dst_w, dst_h) = input.placement(width, height);
        FrameDesc {
            luma: planes.0,
            chroma_u: planes.1,
            chroma_v: planes.2,
            width: width as i32,
            height: height as i32,
            luma_pitch: luma_pitch as i32,
            chroma_pitch: chroma_pitch as i32,
            format: match format {
                YuvFormat::Nv12 => 0,
                YuvFormat::I420 => 1,
            },
            dst_x,
            dst_y,
            dst_w,
            dst_h,
            reserved: 0,
        }
    }
}

impl ModelInput {
    /// Sides 1..=4096, a finite pad and finite, non-zero std: what the kernels can index and
    /// divide by.
    pub fn check(&self) -> Result<(), crate::KernelError> {
        let bad = |why: String| Err(crate::KernelError::Input { why });
        if !(1..=4096).contains(&self.width) || !(1..=4096).contains(&self.height) {
            return bad(format!("model input {}x{}: each side must be 1..4096", self.width, self.height));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) || self.mean.iter().any(|m| !m.is_finite()) {
            return bad(format!("mean {:?} and std {:?} must be finite, std non-zero", self.mean, self.std));
        }
        if !self.pad.is_finite() {
            return bad(format!("pad {} must be finite", self.pad));
        }
        Ok(())
    }

    /// The kernel parameters for frames of `matrix` and `range`.
    pub fn params(&self, matrix: Matrix, range: Range) -> PreprocessParams {
        let scale = self.std.map(|s| 1.0 / s);
        let bias = [0, 1, 2].map(|c| -self.mean[c] * scale[c]);
        let (m, y_offset) = yuv_to_rgb(matrix, range);
        PreprocessParams {
            matrix: m,
            y_offset,
            scale,
            bias,
            pad_value: [0, 1, 2].map(|c| self.pad * scale[c] + bias[c]),
            channel_src: if self.bgr { [2, 1, 0] } else { [0, 1, 2] },
            out_w: self.width as i32,
            out_h: self.height as i32,
            half: i32::from(self.half),
        }
    }

    /// Where a `width` x `height` frame lands in the input: (x, y, w, h).
    pub fn placement(&self, width: u32, height: u32) -> (i32, i32, i32, i32) {
        let (ow, oh) = (self.width as f64, self.height as f64);
        match self.resize {
            Resize::Stretch => (0, 0, self.width as i32, self.height as i32),
            Resize::Letterbox => {
                let s = (ow / width as f64).min(oh / height as f64);
                let (max_w, max_h) = ((self.width as i32).max(1), (self.height as i32).max(1));
                let w = ((width as f64 * s).round() as i32).clamp(1, max_w);
                let h = ((height as f64 * s).round() as i32).clamp(1, max_h);
                ((self.width as i32 - w) / 2, (self.height as i32 - h) / 2, w, h)
            }
        }
    }

    /// Elements of one frame's tensor (3 planes).
    pub fn frame_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }
}

/// The rows of the YUV -> RGB matrix and the luma offset.
pub fn yuv_to_rgb(matrix: Matrix, range: Range) -> ([f32; 9], f32) {
    let (kr, kb) = match matrix {
        Matrix::Bt601 => (0.299f64, 0.114f64),
        Matrix::Bt709 => (0.2126, 0.0722),
        Matrix::Bt2020 => (0.2627, 0.0593),
    };
    let kg = 1.0 - kr - kb;
    let (ys, cs, y_offset) = match range {
        Range::Limited => (255.0 / 219.0, 255.0 / 224.0, 16.0),
        Range::Full => (1.0, 1.0, 0.0),
    };
    let m = [
        ys,
        0.0,
        cs * 2.0 * (1.0 - kr),
        ys,
        -cs * 2.0 * (1.0 - kb) * kb / kg,
        -cs * 2.0 * (1.0 - kr) * kr / kg,
        ys,
        cs * 2.0 * (1.0 - kb),
        0.0,
    ];
    (m.map(|v| v as f32), y_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_cuda_structs() {
        assert_eq!(std::mem::size_of::<FrameDesc>(), 64);
        assert_eq!(std::mem::size_of::<Candidate>(), 32);
        assert_eq!(std::mem::size_of::<PreprocessParams>(), 4 * (9 + 1 + 3 + 3 + 3 + 3 + 3));
    }

    #[test]
    fn bt601_limited_is_the_textbook_matrix() {
        let (m, off) = yuv_to_rgb(Matrix::Bt601, Range::Limited);
        let want = [1.164, 0.0, 1.596, 1.164, -0.392, -0.813, 1.164, 2.017, 0.0];
        for (g, w) in m.iter().zip(want) {
            assert!((g - w).abs() < 2e-3, "{m:?}");
        }
        assert_eq!(off, 16.0);
    }

    #[test]
    fn letterbox_keeps_the_aspect_and_centres() {
        let input = ModelInput {
            width: 416,
            height: 416,
            bgr: true,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: Resize::Letterbox,
            pad: 114.0,
            half: false,
        };
        assert_eq!(input.placement(1920, 1080), (0, 91, 416, 234));
        assert_eq!(input.placement(480, 640), (52, 0, 312, 416));
        let stretch = ModelInput { resize: Resize::Stretch, ..input };
        assert_eq!(stretch.placement(1920, 1080), (0, 0, 416, 416));
    }
}
