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

impl NanoDetSpec {
    /// Cells and grid width of the level at `stride`, after checking the level's sizes.
    pub fn check_level(&self, level: &NanoDetLevel<'_>, batch: usize) -> Result<(usize, usize), KernelError> {
        let what = format!("level stride {}", level.stride);
        let s = level.stride;
        if s == 0 || !self.input_w.is_multiple_of(s) || !self.input_h.is_multiple_of(s) {
            return Err(KernelError::Decoder {
                what,
                why: format!("stride must divide the input size {}x{}", self.input_w, self.input_h),
            });
        }
        let (gw, cells) = ((self.input_w / s) as usize, ((self.input_w / s) * (self.input_h / s)) as usize);
        let scores = batch * cells * self.num_classes;
        let boxes = batch * cells * 4 * (self.reg_max + 1);
        if level.scores.len() != scores || level.boxes.len() != boxes {
            return Err(KernelError::Decoder {
                what,
                why: format!(
                    "{} scores and {} box values, expected {scores} and {boxes} for a batch of {batch}",
                    level.scores.len(),
                    level.boxes.len()
                ),
            });
        }
        Ok((cells, gw))
    }
}

/// Checks the wanted classes against the model's class count.
pub fn check_classes(classes: &[u32], num_classes: usize) -> Result<(), KernelError> {
    match classes.iter().find(|&&c| c as usize >= num_classes) {
        Some(c) => Err(KernelError::Decoder {
            what: "classes".into(),
            why: format!("class {c} is not below the model's {num_classes} classes"),
        }),
        None => Ok(()),
    }
}

/// Checks a YOLOv8 output `[batch, 4 + classes, anchors]`; returns the anchor count.
pub fn check_yolov8(pred: &[f32], batch: usize, num_classes: usize) -> Result<usize, KernelError> {
    let rows = 4 + num_classes;
    if batch == 0 || !pred.len().is_multiple_of(batch * rows) || pred.is_empty() {
        return Err(KernelError::Decoder {
            what: "yolov8 predictions".into(),
            why: format!("{} values are not a batch of {batch} x {rows} rows x anchors", pred.len()),
        });
    }
    Ok(pred.len() / (batch * rows))
}
