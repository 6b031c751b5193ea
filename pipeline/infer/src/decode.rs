use retail_core::{BBox, Detection};

use crate::{DecoderSpec, InferError, Manifest};

/// One model output as the decoder sees it: shape and row-major data.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub shape: &'a [i64],
    pub data: &'a [f32],
}

/// Turns a model's raw outputs into candidate detections (before NMS).
///
/// Boxes come out in normalised frame coordinates: with a stretch resize, input-pixel
/// coordinates divided by the input size are frame fractions.
pub trait OutputDecoder: Send + Sync {
    /// The outputs to fetch, in the order [`decode`](Self::decode) expects them.
    fn output_names(&self) -> Vec<String>;
    /// Checks the shapes the model declares (`None`: output absent; `-1`: dynamic).
    fn check_shapes(&self, shape_of: &dyn Fn(&str) -> Option<Vec<i64>>) -> Result<(), String>;
    /// Appends candidates of the given classes scoring at least `min_score` to `out`.
    fn decode(
        &self,
        outputs: &[TensorView<'_>],
        classes: &[u32],
        min_score: f32,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError>;
}

/// Builds the decoder a manifest asks for.
pub fn decoder_for(manifest: &Manifest) -> Box<dyn OutputDecoder> {
    let (w, h) = manifest.input_size();
    match &manifest.decoder {
        DecoderSpec::Nanodet { reg_max, levels } => Box::new(NanoDetDecoder {
            input_w: w,
            input_h: h,
            reg_max: *reg_max,
            num_classes: manifest.labels.names.len(),
            levels: levels.iter().map(|l| (l.stride, l.scores.clone(), l.boxes.clone())).collect(),
        }),
        DecoderSpec::Yolov8 { output } => Box::new(YoloV8Decoder {
            input_w: w,
            input_h: h,
            num_classes: manifest.labels.names.len(),
            output: output.clone(),
        }),
    }
}

fn shape_matches(got: &[i64], want: &[i64]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| *g == *w || *g < 0)
}

fn check_view(view: &TensorView<'_>, want: &[i64], what: &str) -> Result<(), InferError> {
    let len: i64 = want.iter().product();
    if !shape_matches(view.shape, want) || view.data.len() as i64 != len {
        return Err(InferError::OutputShape {
            output: view.name.to_owned(),
            shape: view.shape.to_vec(),
            expected: format!("{want:?} ({what})"),
        });
    }
    Ok(())
}

/// NanoDet (GFL) heads: per level, sigmoid class scores and 4 x (reg_max + 1) distance bins.
pub struct NanoDetDecoder {
    pub input_w: u32,
    pub input_h: u32,
    pub reg_max: usize,
    pub num_classes: usize,
    /// (stride, scores output, boxes output)
    pub levels: Vec<(u32, String, String)>,
}

impl NanoDetDecoder {
    fn level_shapes(&self, stride: u32) -> ([i64; 3], [i64; 3]) {
        let cells = ((self.input_w / stride) * (self.input_h / stride)) as i64;
        ([1, cells, self.num_classes as i64], [1, cells, 4 * (self.reg_max as i64 + 1)])
    }
}

impl OutputDecoder for NanoDetDecoder {
    fn output_names(&self) -> Vec<String> {
        self.levels.iter().flat_map(|(_, s, b)| [s.clone(), b.clone()]).collect()
    }

    fn check_shapes(&self, shape_of: &dyn Fn(&str) -> Option<Vec<i64>>) -> Result<(), String> {
        for (stride, scores, boxes) in &self.levels {
            let (ws, wb) = self.level_shapes(*stride);
            for (name, want) in [(scores, ws), (boxes, wb)] {
                match shape_of(name) {
                    None => {
                        return Err(format!("output `{name}` (stride {stride}) is not in the model"));
                    }
                    Some(got) if !shape_matches(&got, &want) => {
                        return Err(format!("output `{name}` has shape {got:?}, the manifest implies {want:?}"));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    fn decode(
        &self,
        outputs: &[TensorView<'_>],
        classes: &[u32],
        min_score: f32,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError> {
        let bins = self.reg_max + 1;
        let (iw, ih) = (self.input_w as f32, self.input_h as f32);
        let mut dist = [0f32; 4];
        for (level, (stride, _, _)) in self.levels.iter().enumerate() {
            let (scores, boxes) = (&outputs[2 * level], &outputs[2 * level + 1]);
            let (ws, wb) = self.level_shapes(*stride);
            check_view(scores, &ws, "scores")?;
            check_view(boxes, &wb, "box distributions")?;
            let grid_w = (self.input_w / stride) as usize;
            let s = *stride as f32;
            for cell in 0..ws[1] as usize {
                let row = &scores.data[cell * self.num_classes..(cell + 1) * self.num_classes];
                let mut have_dist = false;
                for &class in classes {
                    let score = row[class as usize];
                    if score < min_score {
                        continue;
                    }
                    if !have_dist {
                        let reg = &boxes.data[cell * 4 * bins..(cell + 1) * 4 * bins];
                        for (side, d) in dist.iter_mut().enumerate() {
                            *d = expected_bin(&reg[side * bins..(side + 1) * bins]) * s;
                        }
                        have_dist = true;
                    }
                    let cx = ((cell % grid_w) as f32 + 0.5) * s;
                    let cy = ((cell / grid_w) as f32 + 0.5) * s;
                    let bbox =
                        BBox::new((cx - dist[0]) / iw, (cy - dist[1]) / ih, (cx + dist[2]) / iw, (cy + dist[3]) / ih);
                    out.push(Detection { bbox: bbox.clamped(), score, class });
                }
            }
        }
        Ok(())
    }
}

/// Softmax over the bins, then the expected bin index.
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut sum, mut weighted) = (0f32, 0f32);
    for (i, &l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        weighted += e * i as f32;
    }
    weighted / sum
}

/// YOLOv8-style single output [1, 4 + classes, anchors], boxes as cx, cy, w, h in input pixels.
pub struct YoloV8Decoder {
    pub input_w: u32,
    pub input_h: u32,
    pub num_classes: usize,
    pub output: String,
}

impl OutputDecoder for YoloV8Decoder {
    fn output_names(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn check_shapes(&self, shape_of: &dyn Fn(&str) -> Option<Vec<i64>>) -> Result<(), String> {
        let rows = 4 + self.num_classes as i64;
        match shape_of(&self.output) {
            None => Err(format!("output `{}` is not in the model", self.output)),
            Some(got) if got.len() != 3 || got[1] != rows => {
                Err(format!("output `{}` has shape {got:?}, the manifest implies [1, {rows}, anchors]", self.output))
            }
            Some(_) => Ok(()),
        }
    }

    fn decode(
        &self,
        outputs: &[TensorView<'_>],
        classes: &[u32],
        min_score: f32,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError> {
        let view = &outputs[0];
        let rows = 4 + self.num_classes;
        if view.shape.len() != 3 || view.shape[1] != rows as i64 || view.shape[2] <= 0 {
            return Err(InferError::OutputShape {
                output: view.name.to_owned(),
                shape: view.shape.to_vec(),
                expected: format!("[1, {rows}, anchors]"),
            });
        }
        let n = view.shape[2] as usize;
        check_view(view, &[1, rows as i64, n as i64], "yolov8 predictions")?;
        let d = view.data;
        let (iw, ih) = (self.input_w as f32, self.input_h as f32);
        for a in 0..n {
            for &class in classes {
                let score = d[(4 + class as usize) * n + a];
                if score < min_score {
                    continue;
                }
                let (cx, cy, w, h) = (d[a], d[n + a], d[2 * n + a], d[3 * n + a]);
                let bbox =
                    BBox::new((cx - w / 2.0) / iw, (cy - h / 2.0) / ih, (cx + w / 2.0) / iw, (cy + h / 2.0) / ih);
                out.push(Detection { bbox: bbox.clamped(), score, class });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot_bins(bins: usize, at: usize) -> Vec<f32> {
        (0..bins).map(|i| if i == at { 30.0 } else { -30.0 }).collect()
    }

    /// A 32x32 input with a single stride-16 level (2x2 cells, 2 classes).
    fn tiny_nanodet() -> NanoDetDecoder {
        NanoDetDecoder {
            input_w: 32,
            input_h: 32,
            reg_max: 3,
            num_classes: 2,
            levels: vec![(16, "s".into(), "b".into())],
        }
    }

    #[test]
    fn nanodet_decodes_hand_made_cell() {
        let dec = tiny_nanodet();
        // cell 3 = row 1, col 1: centre (24, 24). Distances l=1,t=2,r=0,b=1 bins x 16 px.
        let mut scores = vec![0.0f32; 4 * 2];
        scores[3 * 2] = 0.9; // person in cell 3
        scores[2] = 0.2; // person in cell 1, below threshold
        scores[2 * 2 + 1] = 0.8; // class 1 in cell 2, not asked for
        let mut boxes = vec![0.0f32; 4 * 4 * 4];
        for (side, bin) in [1usize, 2, 0, 1].iter().enumerate() {
            boxes[3 * 16 + side * 4..3 * 16 + side * 4 + 4].copy_from_slice(&one_hot_bins(4, *bin));
        }
        let views = [
            TensorView { name: "s", shape: &[1, 4, 2], data: &scores },
            TensorView { name: "b", shape: &[1, 4, 16], data: &boxes },
        ];
        let mut out = Vec::new();
        dec.decode(&views, &[0], 0.35, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert_eq!(d.class, 0);
        assert!((d.score - 0.9).abs() < 1e-6);
        let want = BBox::new(8.0 / 32.0, 0.0, 24.0 / 32.0, 40.0 / 32.0).clamped();
        for (g, w) in [(d.bbox.x1, want.x1), (d.bbox.y1, want.y1), (d.bbox.x2, want.x2), (d.bbox.y2, want.y2)] {
            assert!((g - w).abs() < 1e-4, "{:?} vs {want:?}", d.bbox);
        }
    }

    #[test]
    fn nanodet_rejects_wrong_output_shape() {
        let dec = tiny_nanodet();
        let scores = vec![0.0f32; 6];
        let boxes = vec![0.0f32; 64];
        let views = [
            TensorView { name: "s", shape: &[1, 3, 2], data: &scores },
            TensorView { name: "b", shape: &[1, 4, 16], data: &boxes },
        ];
        let err = dec.decode(&views, &[0], 0.1, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("`s`") && err.contains("[1, 4, 2]"), "{err}");
        let shapes = |n: &str| (n == "s").then(|| vec![1, 4, 2]);
        let err = dec.check_shapes(&shapes).unwrap_err();
        assert!(err.contains("`b`"), "{err}");
    }

    #[test]
    fn expected_bin_of_uniform_is_middle() {
        assert!((expected_bin(&[0.0; 11]) - 5.0).abs() < 1e-5);
    }

    #[test]
    fn yolov8_decodes_hand_made_tensor() {
        let dec = YoloV8Decoder { input_w: 640, input_h: 480, num_classes: 3, output: "output0".into() };
        let n = 4;
        let mut d = vec![0.0f32; (4 + 3) * n];
        let mut set = |row: usize, a: usize, v: f32| d[row * n + a] = v;
        // anchor 1: person at (320, 240) 64x96, score 0.8
        set(0, 1, 320.0);
        set(1, 1, 240.0);
        set(2, 1, 64.0);
        set(3, 1, 96.0);
        set(4, 1, 0.8);
        // anchor 2: class 2 only
        set(6, 2, 0.9);
        // anchor 3: person below threshold
        set(4, 3, 0.05);
        let views = [TensorView { name: "output0", shape: &[1, 7, 4], data: &d }];
        let mut out = Vec::new();
        dec.decode(&views, &[0], 0.25, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let b = out[0].bbox;
        assert!((b.x1 - 288.0 / 640.0).abs() < 1e-6 && (b.x2 - 352.0 / 640.0).abs() < 1e-6);
        assert!((b.y1 - 192.0 / 480.0).abs() < 1e-6 && (b.y2 - 288.0 / 480.0).abs() < 1e-6);
        let mut all = Vec::new();
        dec.decode(&views, &[0, 2], 0.25, &mut all).unwrap();
        assert_eq!(all.iter().map(|d| d.class).collect::<Vec<_>>(), [0, 2]);
    }

    #[test]
    fn yolov8_rejects_wrong_class_count() {
        let dec = YoloV8Decoder { input_w: 640, input_h: 640, num_classes: 80, output: "output0".into() };
        let d = vec![0.0f32; 5 * 2];
        let views = [TensorView { name: "output0", shape: &[1, 5, 2], data: &d }];
        let err = dec.decode(&views, &[0], 0.25, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("[1, 84, anchors]"), "{err}");
    }
}
