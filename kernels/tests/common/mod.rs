//! Shared by the CPU and GPU kernel tests: reproducible random frames and the comparison
//! with the stated bounds.
#![allow(dead_code)] // each test binary uses its own part

use retail_kernels::reference::Tensor;
use retail_kernels::{ModelInput, Resize, YuvFormat, YuvFrame};

/// xorshift64*: reproducible noise without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Owned planes of a random frame (smooth gradients plus noise, so bilinear weights matter).
pub struct Planes {
    format: YuvFormat,
    width: u32,
    height: u32,
    luma: Vec<u8>,
    luma_pitch: usize,
    u: Vec<u8>,
    v: Vec<u8>,
    chroma_pitch: usize,
}

impl Planes {
    pub fn random(rng: &mut Rng, format: YuvFormat, width: u32, height: u32) -> Planes {
        let (w, h) = (width as usize, height as usize);
        // Pitches with padding, as decoders hand out.
        let luma_pitch = w + (rng.next() % 64) as usize;
        let chroma_row = if format == YuvFormat::Nv12 { w } else { w / 2 };
        let chroma_pitch = chroma_row + (rng.next() % 32) as usize;
        let mut plane = |pitch: usize, rows: usize, row: usize| {
            let mut p = vec![0u8; pitch * rows];
            for y in 0..rows {
                for x in 0..row {
                    let smooth = ((x * 255 / row.max(1)) + (y * 128 / rows.max(1))) as i32;
                    p[y * pitch + x] = (smooth + i32::from(rng.byte() % 40) - 20).clamp(0, 255) as u8;
                }
            }
            p
        };
        let luma = plane(luma_pitch, h, w);
        let u = plane(chroma_pitch, h / 2, chroma_row);
        let v = if format == YuvFormat::I420 { plane(chroma_pitch, h / 2, chroma_row) } else { Vec::new() };
        Planes { format, width, height, luma, luma_pitch, u, v, chroma_pitch }
    }

    pub fn frame(&self) -> YuvFrame<'_> {
        YuvFrame {
            format: self.format,
            width: self.width,
            height: self.height,
            luma: &self.luma,
            luma_pitch: self.luma_pitch,
            chroma_u: &self.u,
            chroma_v: &self.v,
            chroma_pitch: self.chroma_pitch,
        }
    }
}

pub fn nanodet_input(resize: Resize, half: bool) -> ModelInput {
    ModelInput {
        width: 96,
        height: 64,
        bgr: true,
        mean: [103.53, 116.28, 123.675],
        std: [57.375, 57.12, 58.395],
        resize,
        pad: 114.0,
        half,
    }
}

pub fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0f32, 0usize);
    for i in 0..got.len() {
        let (g, w) = (got.get(i), want.get(i));
        let bound = match want {
            Tensor::F32(_) => 1e-4,
            // One f16 step at this magnitude (the reference rounded the same f32 value).
            Tensor::F16(_) => (w.abs() * 2f32.powi(-10)).max(2f32.powi(-24)),
        };
        let err = (g - w).abs();
        assert!(err <= bound, "{what}: element {i}: kernel {g}, reference {w}, bound {bound}");
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!("{what}: largest difference {} at element {}", worst.0, worst.1);
}
