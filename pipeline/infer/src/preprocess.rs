/// Packed 8-bit HWC pixels (already in the model's channel order and size) to normalised
/// NCHW f32: `(pixel - mean) / std` per channel. The CPU reference for any GPU version.
#[derive(Clone, Copy, Debug)]
pub struct Normalizer {
    scale: [f32; 3],
    bias: [f32; 3],
}

impl Normalizer {
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        let scale = [1.0 / std[0], 1.0 / std[1], 1.0 / std[2]];
        Normalizer { scale, bias: [-mean[0] * scale[0], -mean[1] * scale[1], -mean[2] * scale[2]] }
    }

    /// Writes `pixels` (`hw * 3` bytes) into `out` (`3 * hw` floats, three planes).
    pub fn to_nchw(&self, pixels: &[u8], out: &mut [f32]) {
        let hw = pixels.len() / 3;
        let (p0, rest) = out.split_at_mut(hw);
        let (p1, p2) = rest.split_at_mut(hw);
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            p0[i] = px[0] as f32 * self.scale[0] + self.bias[0];
            p1[i] = px[1] as f32 * self.scale[1] + self.bias[1];
            p2[i] = px[2] as f32 * self.scale[2] + self.bias[2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_into_planes() {
        let n = Normalizer::new([100.0, 50.0, 0.0], [2.0, 5.0, 1.0]);
        let pixels = [100u8, 60, 3, 102, 50, 255];
        let mut out = [0f32; 6];
        n.to_nchw(&pixels, &mut out);
        let want = [0.0, 1.0, 2.0, 0.0, 3.0, 255.0];
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{out:?}");
        }
    }
}
