use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{InferError, Precision};

/// A model's manifest: everything needed to feed it and read its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub name: String,
    /// Model file name, looked up next to the manifest or in the model cache.
    pub file: String,
    /// INT8-quantised model with the same inputs and outputs, if there is one.
    #[serde(default)]
    pub int8_file: Option<String>,
    pub licence: String,
    #[serde(default)]
    pub notice: Option<String>,
    #[serde(default)]
    pub source: Option<toml::Table>,
    pub input: InputSpec,
    pub thresholds: Thresholds,
    pub decoder: DecoderSpec,
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InputSpec {
    pub name: String,
    /// [batch, channels, height, width] for `nchw`.
    pub shape: Vec<i64>,
    pub layout: Layout,
    pub channel_order: ChannelOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: Resize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    Nchw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelOrder {
    Bgr,
    Rgb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Plain resize to the input size, aspect ratio not kept.
    Stretch,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Thresholds {
    pub score: f32,
    pub nms_iou: f32,
}

/// Which decoder reads the model's outputs, and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum DecoderSpec {
    /// NanoDet / GFL heads: per stride, class scores [1, cells, classes] (already sigmoid)
    /// and box distributions [1, cells, 4 * (reg-max + 1)].
    Nanodet { reg_max: usize, levels: Vec<LevelSpec> },
    /// YOLOv8-style single output [1, 4 + classes, anchors]: cx, cy, w, h in input pixels,
    /// then one score per class.
    Yolov8 { output: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LevelSpec {
    pub stride: u32,
    pub scores: String,
    pub boxes: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Labels {
    /// Index of the person class.
    pub person: u32,
    pub names: Vec<String>,
}

/// The bundled default manifest, so the binary works without the source tree.
pub const NANODET_G_MANIFEST: &str = include_str!("../../../models/nanodet-g/manifest.toml");

impl Manifest {
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, InferError> {
        let manifest: Manifest = toml::from_str(text)
            .map_err(|e| InferError::ManifestInvalid { path: origin.to_owned(), reason: e.to_string() })?;
        manifest.validate().map_err(|reason| InferError::ManifestInvalid { path: origin.to_owned(), reason })?;
        Ok(manifest)
    }

    pub fn load(path: &Path) -> Result<Self, InferError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InferError::ManifestUnreadable { path: path.to_owned(), reason: e.to_string() })?;
        Self::from_toml(&text, path)
    }

    pub fn bundled() -> Self {
        Self::from_toml(NANODET_G_MANIFEST, Path::new("<bundled nanodet-g manifest>"))
            .expect("the bundled manifest is checked by a unit test")
    }

    /// Input (width, height) in pixels.
    pub fn input_size(&self) -> (u32, u32) {
        (self.input.shape[3] as u32, self.input.shape[2] as u32)
    }

    pub fn validate(&self) -> Result<(), String> {
        let s = &self.input.shape;
        if s.len() != 4 || s[0] != 1 || s[1] != 3 || s[2] <= 0 || s[3] <= 0 {
            return Err(format!("input.shape must be [1, 3, height, width], got {s:?}"));
        }
        if self.input.std.contains(&0.0) {
            return Err("input.std must not contain 0".into());
        }
        if self.labels.person as usize >= self.labels.names.len() {
            return Err(format!(
                "labels.person = {} but there are only {} label names",
                self.labels.person,
                self.labels.names.len()
            ));
        }
        for (name, v) in [("thresholds.score", self.thresholds.score), ("thresholds.nms-iou", self.thresholds.nms_iou)]
        {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be within 0..1, got {v}"));
            }
        }
        if let DecoderSpec::Nanodet { levels, .. } = &self.decoder {
            if levels.is_empty() {
                return Err("decoder.levels must not be empty".into());
            }
            let mut seen = HashSet::new();
            for l in levels {
                if l.stride == 0 || s[2] % l.stride as i64 != 0 || s[3] % l.stride as i64 != 0 {
                    return Err(format!("decoder stride {} does not divide the input size", l.stride));
                }
                if !seen.insert(&l.scores) || !seen.insert(&l.boxes) {
                    return Err(format!("decoder output names repeat at stride {}", l.stride));
                }
            }
        }
        Ok(())
    }

    /// The file for a precision: `int8-file` when INT8 is asked for and the manifest has one.
    pub fn file_for(&self, precision: Precision) -> &str {
        match (precision, &self.int8_file) {
            (Precision::Int8, Some(f)) => f,
            _ => &self.file,
        }
    }

    /// Where the model file is: an explicit path, next to the manifest, or in the model cache.
    pub fn resolve_model(
        &self,
        explicit: Option<&Path>,
        manifest_path: Option<&Path>,
        precision: Precision,
    ) -> Result<PathBuf, InferError> {
        let file = self.file_for(precision);
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => vec![p.to_owned()],
            None => {
                let mut c = Vec::new();
                if let Some(dir) = manifest_path.and_then(|p| p.parent()) {
                    c.push(dir.join(file));
                }
                c.push(crate::runtime::cache_dir().join("models").join(file));
                c
            }
        };
        candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| InferError::ModelMissing {
            path: candidates[0].clone(),
            hint: if explicit.is_some() {
                "check detector.model in the config".into()
            } else {
                format!(
                    "looked in {}; run scripts/setup.sh to download and convert it",
                    candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                )
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_manifest_parses() {
        let m = Manifest::bundled();
        assert_eq!(m.input_size(), (416, 416));
        assert_eq!(m.labels.names[m.labels.person as usize], "person");
        assert_eq!(m.labels.names.len(), 80);
        match &m.decoder {
            DecoderSpec::Nanodet { reg_max, levels } => {
                assert_eq!(*reg_max, 10);
                assert_eq!(levels.iter().map(|l| l.stride).collect::<Vec<_>>(), [8, 16, 32]);
            }
            other => panic!("unexpected decoder {other:?}"),
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let text = NANODET_G_MANIFEST.replace("resize = \"stretch\"", "resize = \"stretch\"\nletterbox = true");
        let err = Manifest::from_toml(&text, Path::new("m.toml")).unwrap_err().to_string();
        assert!(err.contains("letterbox"), "{err}");
        assert!(err.contains("m.toml"), "{err}");
    }

    #[test]
    fn yolov8_decoder_spec_parses() {
        let text = NANODET_G_MANIFEST.split("[decoder]").next().unwrap().to_owned()
            + "[decoder]\nkind = \"yolov8\"\noutput = \"output0\"\n\n[labels]\nperson = 0\nnames = [\"person\"]\n";
        let m = Manifest::from_toml(&text, Path::new("y.toml")).unwrap();
        assert_eq!(m.decoder, DecoderSpec::Yolov8 { output: "output0".into() });
    }

    #[test]
    fn bad_shape_is_rejected() {
        let text = NANODET_G_MANIFEST.replace("shape = [1, 3, 416, 416]", "shape = [1, 416, 416]");
        let err = Manifest::from_toml(&text, Path::new("m.toml")).unwrap_err().to_string();
        assert!(err.contains("input.shape"), "{err}");
    }
}
