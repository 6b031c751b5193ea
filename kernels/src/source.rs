//! The kernel sources as NVRTC compiles them: `common.cuh` inlined (NVRTC is given one
//! source string, no include paths), with the entry points each defines.

const COMMON: &str = include_str!("../cuda/common.cuh");

/// One `.cu` file and its `extern "C"` entry points.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub name: &'static str,
    body: &'static str,
    pub entry_points: &'static [&'static str],
}

/// Every kernel source.
pub const KERNELS: [KernelSource; 3] = [
    KernelSource {
        name: "preprocess.cu",
        body: include_str!("../cuda/preprocess.cu"),
        entry_points: &["yuv_to_tensor"],
    },
    KernelSource {
        name: "decode.cu",
        body: include_str!("../cuda/decode.cu"),
        entry_points: &["nanodet_decode", "yolov8_decode"],
    },
    KernelSource {
        name: "gate.cu",
        body: include_str!("../cuda/gate.cu"),
        entry_points: &["luma_band_absdiff", "copy_luma"],
    },
];

impl KernelSource {
    /// A kernel source of one's own (a customer's decoder, or a test of the compiler path).
    pub const fn new(name: &'static str, body: &'static str, entry_points: &'static [&'static str]) -> Self {
        KernelSource { name, body, entry_points }
    }

    /// The single translation unit NVRTC compiles.
    pub fn translation_unit(&self) -> String {
        let common = COMMON.replace("#pragma once", "");
        self.body.replace("#include \"common.cuh\"", &common)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_units_inline_the_common_header_and_name_their_entry_points() {
        for k in KERNELS {
            let tu = k.translation_unit();
            assert!(!tu.contains("#include \"common.cuh\""), "{}", k.name);
            assert!(tu.contains("f32_to_f16"), "{}", k.name);
            for e in k.entry_points {
                assert!(tu.contains(&format!("extern \"C\" __global__ void {e}(")), "{} lacks {e}", k.name);
            }
        }
    }
}
