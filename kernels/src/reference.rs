//! The CPU specification of the preprocessing kernel: the same sampling, colour conversion
//! and normalisation in plain Rust, in the same order of operations. The GPU (and the host
//! emulation of the kernel) must match it within the bound stated in the tests.

use crate::{KernelError, Matrix, ModelInput, Range, YuvFormat, YuvFrame};

/// A batch of model inputs, NCHW, in the precision the model wants.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(Vec<f32>),
    /// IEEE binary16 bit patterns.
    F16(Vec<u16>),
}

impl Tensor {
    /// Element `i` as f32.
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Tensor::F32(v) => v[i],
            Tensor::F16(v) => half::f16::from_bits(v[i]).to_f32(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Tensor::F32(v) => v.len(),
            Tensor::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Preprocesses `frames` on the CPU.
pub fn preprocess(
    frames: &[YuvFrame<'_>],
    input: &ModelInput,
    matrix: Matrix,
    range: Range,
) -> Result<Tensor, KernelError> {
    input.check()?;
    crate::decode::check_batch(frames.len())?;
    let p = input.params(matrix, range);
    let (ow, oh) = (input.width as usize, input.height as usize);
    let plane = ow * oh;
    let mut out = vec![0f32; frames.len() * 3 * plane];
    for (item, f) in frames.iter().enumerate() {
        f.check(item)?;
        let (dx, dy, dw, dh) = input.placement(f.width, f.height);
        let base = item * 3 * plane;
        for y in 0..oh as i32 {
            for x in 0..ow as i32 {
                let at = base + y as usize * ow + x as usize;
                if x < dx || y < dy || x >= dx + dw || y >= dy + dh {
                    for c in 0..3 {
                        out[at + c * plane] = p.pad_value[c];
                    }
                    continue;
                }
                let u = ((x - dx) as f32 + 0.5) * (f.width as f32 / dw as f32) - 0.5;
                let v = ((y - dy) as f32 + 0.5) * (f.height as f32 / dh as f32) - 0.5;
                let rgb = sample_rgb(f, &p.matrix, p.y_offset, u, v);
                for c in 0..3 {
                    out[at + c * plane] = rgb[p.channel_src[c] as usize] * p.scale[c] + p.bias[c];
                }
            }
        }
    }
    Ok(if input.half {
        Tensor::F16(out.into_iter().map(|v| half::f16::from_f32(v).to_bits()).collect())
    } else {
        Tensor::F32(out)
    })
}

fn sample_rgb(f: &YuvFrame<'_>, m: &[f32; 9], y_offset: f32, u: f32, v: f32) -> [f32; 3] {
    let (w, h) = (f.width as i32, f.height as i32);
    let (cw, ch) = (w / 2, h / 2);
    let (cu, cv) = ((u + 0.5) * 0.5 - 0.5, (v + 0.5) * 0.5 - 0.5);
    let yy = bilinear(f.luma, f.luma_pitch, 1, 0, w, h, u, v) - y_offset;
    let (uu, vv) = match f.format {
        YuvFormat::Nv12 => (
            bilinear(f.chroma_u, f.chroma_pitch, 2, 0, cw, ch, cu, cv) - 128.0,
            bilinear(f.chroma_u, f.chroma_pitch, 2, 1, cw, ch, cu, cv) - 128.0,
        ),
        YuvFormat::I420 => (
            bilinear(f.chroma_u, f.chroma_pitch, 1, 0, cw, ch, cu, cv) - 128.0,
            bilinear(f.chroma_v, f.chroma_pitch, 1, 0, cw, ch, cu, cv) - 128.0,
        ),
    };
    [0, 1, 2].map(|i| (m[3 * i] * yy + m[3 * i + 1] * uu + m[3 * i + 2] * vv).clamp(0.0, 255.0))
}

/// A plane's samples: `stride` bytes apart, starting at `offset` in each row.
struct Plane<'a> {
    data: &'a [u8],
    pitch: usize,
    stride: usize,
    offset: usize,
    w: i32,
    h: i32,
}

impl Plane<'_> {
    fn texel(&self, x: i32, y: i32) -> f32 {
        let (x, y) = (x.clamp(0, self.w - 1) as usize, y.clamp(0, self.h - 1) as usize);
        f32::from(self.data[y * self.pitch + x * self.stride + self.offset])
    }
}

#[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
fn bilinear(data: &[u8], pitch: usize, stride: usize, offset: usize, w: i32, h: i32, u: f32, v: f32) -> f32 {
    let p = Plane { data, pitch, stride, offset, w, h };
    let (fx0, fy0) = (u.floor(), v.floor());
    let (x0, y0) = (fx0 as i32, fy0 as i32);
    let (ax, ay) = (u - fx0, v - fy0);
    let top = p.texel(x0, y0) * (1.0 - ax) + p.texel(x0 + 1, y0) * ax;
    let bottom = p.texel(x0, y0 + 1) * (1.0 - ax) + p.texel(x0 + 1, y0 + 1) * ax;
    top * (1.0 - ay) + bottom * ay
}
