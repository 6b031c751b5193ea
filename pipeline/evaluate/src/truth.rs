//! Ground truth in standard forms: MOT Challenge `gt/gt.txt` for boxes and identities, a CSV
//! of line crossings, and a few whole-video facts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::error::{EvalError, read};

/// A box in pixels, MOT-style: left, top, width, height.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl Rect {
    pub fn from_corners(x1: f64, y1: f64, x2: f64, y2: f64) -> Rect {
        Rect { left: x1, top: y1, width: x2 - x1, height: y2 - y1 }
    }

    /// Intersection over union, computed as motmetrics' `boxiou` does.
    pub fn iou(&self, o: &Rect) -> f64 {
        let iw = ((self.left + self.width).min(o.left + o.width) - self.left.max(o.left)).max(0.0);
        let ih = ((self.top + self.height).min(o.top + o.height) - self.top.max(o.top)).max(0.0);
        let inter = iw * ih;
        if inter == 0.0 {
            return 0.0;
        }
        let area = |r: &Rect| r.width.max(0.0) * r.height.max(0.0);
        inter / (area(self) + area(o) - inter)
    }

    /// The feet: bottom centre.
    pub fn bottom_center(&self) -> (f64, f64) {
        (self.left + self.width / 2.0, self.top + self.height)
    }
}

/// One labelled person in one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Labelled {
    pub id: u64,
    pub rect: Rect,
}

/// A crossing seen by eye.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Crossing {
    pub frame: u64,
    pub line: String,
    pub direction: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct PeopleFile {
    distinct_people: Option<u64>,
}

/// Everything known to be true about one video.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    /// The frames whose every person is boxed (1-based); a labelled frame may have none.
    pub frames: BTreeSet<u64>,
    pub boxes: BTreeMap<u64, Vec<Labelled>>,
    pub crossings: Option<Vec<Crossing>>,
    pub distinct_people: Option<u64>,
}

impl Truth {
    /// Reads `dir`: `gt/gt.txt` (required), and when present `labelled_frames.txt`,
    /// `seqinfo.ini`, `crossings.csv` and `people.toml`.
    pub fn load(dir: &Path) -> Result<Truth, EvalError> {
        let gt = dir.join("gt/gt.txt");
        if !gt.exists() {
            return Err(EvalError::Missing {
                path: gt,
                hint: "MOT Challenge boxes: frame,id,left,top,width,height,...",
            });
        }
        let boxes = parse_mot(&gt, &read(&gt)?, true)?;
        let frames = labelled_frames(dir, &boxes)?;
        let crossings =
            Some(dir.join("crossings.csv")).filter(|p| p.exists()).map(|p| parse_crossings(&p)).transpose()?;
        let people = dir.join("people.toml");
        let distinct_people = if people.exists() {
            let text = read(&people)?;
            let file: PeopleFile = toml::from_str(&text).map_err(|e| EvalError::Parse {
                path: people.clone(),
                line: 0,
                reason: e.to_string(),
            })?;
            file.distinct_people
        } else {
            None
        };
        Ok(Truth { frames, boxes, crossings, distinct_people })
    }
}

/// MOT rows by frame. Ground truth (`is_truth`) keeps only rows that are people to find:
/// `conf` (column 7) not 0 and `class` (column 8, when present) 1 or -1.
pub fn parse_mot(path: &Path, text: &str, is_truth: bool) -> Result<BTreeMap<u64, Vec<Labelled>>, EvalError> {
    let mut out: BTreeMap<u64, Vec<Labelled>> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| EvalError::Parse { path: path.to_owned(), line: n + 1, reason };
        let cols: Vec<f64> = line
            .split(',')
            .map(|c| c.trim().parse::<f64>().map_err(|_| bad(format!("`{}` is not a number", c.trim()))))
            .collect::<Result<_, _>>()?;
        if cols.len() < 6 {
            return Err(bad(format!("{} columns; MOT rows have frame,id,left,top,width,height,...", cols.len())));
        }
        let (frame, id) = (cols[0], cols[1]);
        if frame < 1.0 || frame.fract() != 0.0 || id.fract() != 0.0 {
            return Err(bad(format!("frame {frame} and id {id} must be whole numbers, frames from 1")));
        }
        if cols.iter().any(|c| !c.is_finite()) {
            return Err(bad("every column must be a finite number".into()));
        }
        if cols[4] <= 0.0 || cols[5] <= 0.0 {
            return Err(bad(format!("width {} and height {} must be positive", cols[4], cols[5])));
        }
        let ignored = is_truth
            && (cols.get(6).is_some_and(|c| *c == 0.0) || cols.get(7).is_some_and(|c| *c != 1.0 && *c != -1.0));
        if !ignored {
            let rect = Rect { left: cols[2], top: cols[3], width: cols[4], height: cols[5] };
            out.entry(frame as u64).or_default().push(Labelled { id: id as u64, rect });
        }
    }
    Ok(out)
}

/// `labelled_frames.txt`, else every frame of `seqinfo.ini`'s `seqLength`, else the frames
/// that have boxes.
fn labelled_frames(dir: &Path, boxes: &BTreeMap<u64, Vec<Labelled>>) -> Result<BTreeSet<u64>, EvalError> {
    let listed = dir.join("labelled_frames.txt");
    if listed.exists() {
        let text = read(&listed)?;
        return text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                l.trim().parse::<u64>().ok().filter(|f| *f >= 1).ok_or_else(|| EvalError::Parse {
                    path: listed.clone(),
                    line: n + 1,
                    reason: format!("`{}` is not a frame number (from 1)", l.trim()),
                })
            })
            .collect();
    }
    let seqinfo = dir.join("seqinfo.ini");
    if seqinfo.exists() {
        let text = read(&seqinfo)?;
        let length = text.lines().find_map(|l| l.trim().strip_prefix("seqLength=").map(str::trim));
        if let Some(n) = length {
            // A day at 60 fps is plenty; more is a typo that would fill memory.
            let n: u64 = n.parse().ok().filter(|n| (1..=5_184_000).contains(n)).ok_or_else(|| EvalError::Parse {
                path: seqinfo.clone(),
                line: 0,
                reason: format!("seqLength `{n}` must be a frame count from 1 to 5184000"),
            })?;
            return Ok((1..=n).collect());
        }
    }
    Ok(boxes.keys().copied().collect())
}

fn parse_crossings(path: &Path) -> Result<Vec<Crossing>, EvalError> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        // The header row (`frame,line,direction,note`) is optional.
        if raw.trim().is_empty() || (n == 0 && raw.trim_start().starts_with("frame")) {
            continue;
        }
        let bad = |reason: String| EvalError::Parse { path: path.to_owned(), line: n + 1, reason };
        let cols: Vec<&str> = raw.splitn(4, ',').map(str::trim).collect();
        let [frame, line, direction, ..] = cols[..] else {
            return Err(bad("expected frame,line,direction[,note]".into()));
        };
        let frame = frame.parse().map_err(|_| bad(format!("frame `{frame}` is not a number")))?;
        if direction != "in" && direction != "out" {
            return Err(bad(format!("direction `{direction}` must be `in` or `out`")));
        }
        out.push(Crossing { frame, line: line.to_owned(), direction: direction.to_owned() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_truth_files_get_errors_naming_file_and_line() {
        let p = Path::new("gt.txt");
        let err = parse_mot(p, "1,1,10,10,NaN,20,1,1,1\n", true).unwrap_err().to_string();
        assert!(err.contains("gt.txt:1") && err.contains("finite"), "{err}");
        let err = parse_mot(p, "1,1,10,10,5\n", true).unwrap_err().to_string();
        assert!(err.contains("5 columns"), "{err}");
        let err = parse_mot(p, "0,1,10,10,5,5\n", true).unwrap_err().to_string();
        assert!(err.contains("frames from 1"), "{err}");
        // Not people to find: conf 0, a class other than pedestrian.
        assert!(parse_mot(p, "1,1,10,10,5,5,0,1,1\n1,2,10,10,5,5,1,7,1\n", true).unwrap().is_empty());

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("gt")).unwrap();
        std::fs::write(dir.path().join("gt/gt.txt"), "1,1,10,10,5,5,1,1,1\n").unwrap();
        std::fs::write(dir.path().join("seqinfo.ini"), "[Sequence]\nseqLength=99999999999\n").unwrap();
        let err = Truth::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("seqLength"), "{err}");
        std::fs::write(dir.path().join("seqinfo.ini"), "[Sequence]\nseqLength=3\n").unwrap();
        // A crossings file without its header keeps its first crossing.
        std::fs::write(dir.path().join("crossings.csv"), "2,door,in\n3,door,sideways\n").unwrap();
        let err = Truth::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("crossings.csv:2") && err.contains("sideways"), "{err}");
        std::fs::write(dir.path().join("crossings.csv"), "2,door,in\n").unwrap();
        let truth = Truth::load(dir.path()).unwrap();
        assert_eq!(truth.crossings.unwrap().len(), 1);
        assert_eq!(truth.frames.len(), 3);
    }
}
