//! Motion gating for frames in GPU memory (`cuda/gate.cu`): a frame whose luma plane, cut
//! into [`GATE_BANDS`] bands of rows, moved from the reference (the last frame sent to
//! inference) by less than a threshold in every band skips inference. Bands, not the whole
//! frame: a person in a small part of it moves one band's mean far more than the frame's.
//! The CPU specification is [`luma_band_sums`]; the GPU runs [`crate::gpu::LumaGate`].

use crate::KernelError;

/// Bands of rows the luma plane is cut into (as the engine's host gate cuts frames).
pub const GATE_BANDS: u32 = 64;

/// Columns of a row one thread of `luma_band_absdiff` sums (`RAI_GATE_SPAN` in gate.cu: the
/// launch's grid is sized by it, checked equal in the tests).
pub const GATE_SPAN: u32 = 256;

/// The widest plane the gate takes: far past any decoder's, and small enough that the
/// kernel's `int` column arithmetic cannot overflow.
const MAX_WIDTH: usize = 1 << 20;

/// Rows per band for a plane `height` rows high: the last band may be shorter, and a plane
/// of fewer rows than bands has one-row bands.
pub fn band_rows(height: u32) -> u32 {
    height.div_ceil(GATE_BANDS).max(1)
}

/// The largest mean absolute difference (0..255) over the bands, from each band's sum.
pub fn max_band_mean(sums: &[u64], (width, height): (u32, u32)) -> f32 {
    let rows = band_rows(height);
    sums.iter()
        .enumerate()
        .filter_map(|(band, &sum)| {
            let first = band as u32 * rows;
            let n = u64::from(rows.min(height.checked_sub(first)?)) * u64::from(width);
            (n > 0).then(|| (sum as f64 / n as f64) as f32)
        })
        .fold(0.0, f32::max)
}

/// Checks a plane `(width, height)` at `pitch` in `len` bytes, and a reference of
/// `reference_len` bytes, as the kernel reads them.
pub(crate) fn check_plane(
    (width, height): (u32, u32),
    pitch: usize,
    len: Option<usize>,
    reference_len: usize,
) -> Result<(), KernelError> {
    let (w, h) = (width as usize, height as usize);
    let why = if w == 0 || h == 0 {
        Some(format!("an empty {w}x{h} luma plane"))
    } else if pitch < w || pitch > i32::MAX as usize || w * h > i32::MAX as usize || w > MAX_WIDTH {
        Some(format!("pitch {pitch} for a {w}x{h} luma plane"))
    } else if len.is_some_and(|len| len < pitch * (h - 1) + w) {
        Some(format!("{} bytes for a {w}x{h} luma plane at pitch {pitch}", len.unwrap_or(0)))
    } else if reference_len != w * h {
        Some(format!("a reference of {reference_len} bytes for a {w}x{h} luma plane"))
    } else {
        None
    };
    why.map_or(Ok(()), |why| Err(KernelError::Frame { index: 0, why }))
}

/// The CPU specification of `luma_band_absdiff`: per band, the sum of absolute differences
/// between `luma` (rows `pitch` apart) and `reference` (rows packed).
pub fn luma_band_sums(
    luma: &[u8],
    pitch: usize,
    reference: &[u8],
    (width, height): (u32, u32),
) -> Result<Vec<u64>, KernelError> {
    check_plane((width, height), pitch, Some(luma.len()), reference.len())?;
    let (w, rows) = (width as usize, band_rows(height) as usize);
    let mut sums = vec![0u64; GATE_BANDS as usize];
    for (y, want) in reference.chunks(w).enumerate() {
        let got = &luma[y * pitch..y * pitch + w];
        sums[y / rows] += got.iter().zip(want).map(|(a, b)| u64::from(a.abs_diff(*b))).sum::<u64>();
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_every_row_once_and_means_are_per_band() {
        assert_eq!(band_rows(1080), 17);
        assert_eq!(band_rows(10), 1);
        // 1080 rows in bands of 17: 63 full bands and one of 9 rows.
        let mut sums = vec![0u64; 64];
        sums[63] = 9 * 4 * 100; // the short last band, 4 columns, moved by 100
        assert_eq!(max_band_mean(&sums, (4, 1080)), 100.0);
        sums[0] = 17 * 4 * 50;
        assert_eq!(max_band_mean(&sums, (4, 1080)), 100.0);
        // Bands past the last row (10 rows: one row each, bands 10..63 empty) count nothing.
        let mut sums = vec![0u64; 64];
        sums[9] = 4 * 30;
        assert_eq!(max_band_mean(&sums, (4, 10)), 30.0);
    }

    #[test]
    fn the_launch_and_the_kernel_agree_on_the_span() {
        let source = crate::KERNELS.iter().find(|k| k.name == "gate.cu").unwrap().translation_unit();
        assert!(source.contains(&format!("#define RAI_GATE_SPAN {GATE_SPAN}\n")), "gate.cu's span is not GATE_SPAN");
    }

    #[test]
    fn planes_the_kernel_cannot_read_are_refused_by_name() {
        let err = luma_band_sums(&[0; 10], 4, &[0; 16], (4, 4)).unwrap_err();
        assert!(err.to_string().contains("10 bytes for a 4x4 luma plane at pitch 4"), "{err}");
        let err = luma_band_sums(&[0; 16], 3, &[0; 16], (4, 4)).unwrap_err();
        assert!(err.to_string().contains("pitch 3 for a 4x4"), "{err}");
        let err = luma_band_sums(&[0; 16], 4, &[0; 15], (4, 4)).unwrap_err();
        assert!(err.to_string().contains("a reference of 15 bytes"), "{err}");
        assert!(luma_band_sums(&[], 0, &[], (0, 0)).is_err());
    }
}
