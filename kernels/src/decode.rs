//! Checked descriptions of the decoder kernels' inputs, shared by the GPU launch and the
//! host emulation, so neither reads past a model output.

use crate::KernelError;

/// One NanoDet level of a batch: scores `[batch, cells, classes]` (sigmoid applied) and box
/// distributions `[batch, cells, 4 * (reg_max + 1)]`.
#[derive(Clone, Copy, Debug)]
pub struct NanoDetLevel<'a> {
    pub stride: u32,
    pub scores: &'a [f32],
    pub boxes: &'a [f32],
}

/// The NanoDet decoder's settings (from the model manifest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NanoDetSpec {
    pub input_w: u32,
    pub input_h: u32,
    pub num_classes: usize,
    pub reg_max: usize,
}

/// Most frames in one launch (the grid's y dimension).
pub const MAX_BATCH: usize = 65_535;

/// A batch size the kernels accept.
pub fn check_batch(batch: usize) -> Result<(), KernelError> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(KernelError::Decoder {
            what: "batch".into(),
            why: format!("{batch} frames: must be 1..{MAX_BATCH}"),
        });
    }
    Ok(())
}

impl NanoDetSpec {
    /// Cells and grid width of the level at `stride`, after checking the level's sizes.
    pub fn check_level(&self, level: &NanoDetLevel<'_>, batch: usize) -> Result<(usize, usize), KernelError> {
        self.check_level_lengths(level.stride, (level.scores.len(), level.boxes.len()), batch)
    }

    /// As [`check_level`](Self::check_level), for outputs known by their lengths (in device
    /// memory): `(scores, boxes)` values.
    pub fn check_level_lengths(
        &self,
        stride: u32,
        (scores_len, boxes_len): (usize, usize),
        batch: usize,
    ) -> Result<(usize, usize), KernelError> {
        let what = format!("level stride {stride}");
        check_batch(batch)?;
        if !(1..=4096).contains(&self.input_w) || !(1..=4096).contains(&self.input_h) {
            let why = format!("input {}x{}: each side must be 1..4096", self.input_w, self.input_h);
            return Err(KernelError::Decoder { what, why });
        }
        if !(1..=4096).contains(&self.num_classes) || self.reg_max > 255 {
            let why = format!("{} classes and reg-max {}: at most 4096 and 255", self.num_classes, self.reg_max);
            return Err(KernelError::Decoder { what, why });
        }
        let s = stride;
        if s == 0 || !self.input_w.is_multiple_of(s) || !self.input_h.is_multiple_of(s) {
            return Err(KernelError::Decoder {
                what,
                why: format!("stride must divide the input size {}x{}", self.input_w, self.input_h),
            });
        }
        let (gw, cells) = ((self.input_w / s) as usize, ((self.input_w / s) * (self.input_h / s)) as usize);
        let scores = batch * cells * self.num_classes;
        let boxes = batch * cells * 4 * (self.reg_max + 1);
        // Scores bound the candidates, which the kernels count in 32 bits.
        if scores > i32::MAX as usize {
            let why = format!("{scores} scores in one launch: at most {}", i32::MAX);
            return Err(KernelError::Decoder { what, why });
        }
        if scores_len != scores || boxes_len != boxes {
            return Err(KernelError::Decoder {
                what,
                why: format!(
                    "{scores_len} scores and {boxes_len} box values, expected {scores} and {boxes} for a batch of {batch}"
                ),
            });
        }
        Ok((cells, gw))
    }
}

/// A candidate buffer the kernels can fill (they index it in 32 bits).
pub fn check_capacity(capacity: usize) -> Result<(), KernelError> {
    if capacity > i32::MAX as usize {
        return Err(KernelError::Decoder { what: "capacity".into(), why: format!("{capacity}: at most {}", i32::MAX) });
    }
    Ok(())
}

/// Checks the wanted classes against the model's class count.
pub fn check_classes(classes: &[u32], num_classes: usize) -> Result<(), KernelError> {
    let bad = |why: String| Err(KernelError::Decoder { what: "classes".into(), why });
    if let Some(c) = classes.iter().find(|&&c| c as usize >= num_classes) {
        return bad(format!("class {c} is not below the model's {num_classes} classes"));
    }
    // Distinct, so a launch emits at most one candidate per score.
    let mut seen = classes.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != classes.len() {
        return bad(format!("{classes:?} names a class twice"));
    }
    Ok(())
}

/// Checks a YOLOv8 output `[batch, 4 + classes, anchors]`; returns the anchor count.
pub fn check_yolov8(pred: &[f32], batch: usize, num_classes: usize) -> Result<usize, KernelError> {
    check_yolov8_length(pred.len(), batch, num_classes)
}

/// As [`check_yolov8`], for an output known by its length (in device memory).
pub fn check_yolov8_length(len: usize, batch: usize, num_classes: usize) -> Result<usize, KernelError> {
    check_batch(batch)?;
    if !(1..=4096).contains(&num_classes) {
        return Err(KernelError::Decoder {
            what: "yolov8 predictions".into(),
            why: format!("{num_classes} classes: must be 1..4096"),
        });
    }
    let rows = 4 + num_classes;
    if !len.is_multiple_of(batch * rows) || len == 0 || len > i32::MAX as usize {
        return Err(KernelError::Decoder {
            what: "yolov8 predictions".into(),
            why: format!("{len} values are not a batch of {batch} x {rows} rows x anchors"),
        });
    }
    Ok(len / (batch * rows))
}
