//! What `retail-ai analyze --out DIR --detections DIR/detections.jsonl` wrote.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{EvalError, read};
use crate::truth::Rect;

/// One person box the pipeline found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Found {
    pub rect: Rect,
    pub score: f64,
    /// The confirmed track it belongs to; `None` for a detection no track took (yet).
    pub track: Option<u64>,
    /// A tracked box not counted: its track was a fixture then, or pending and never went on
    /// to be a person.
    pub fixture: bool,
}

#[derive(Deserialize)]
struct FrameLine {
    frame: u64,
    detections: Vec<DetectionLine>,
}

#[derive(Deserialize)]
struct DetectionLine {
    #[serde(rename = "box")]
    bbox: [f64; 4],
    score: f64,
    class: String,
    track_id: Option<u64>,
    /// `person`, `pending` or `fixture`; absent in files from before the static rule, when
    /// every track counted.
    motion: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LineTotals {
    #[serde(rename = "in")]
    pub ins: u64,
    #[serde(rename = "out")]
    pub outs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Video {
    pub width: u32,
    pub height: u32,
}

/// The parts of `summary.json` compared with the truth.
#[derive(Clone, Debug, Deserialize)]
pub struct Summary {
    pub people: u64,
    pub lines: BTreeMap<String, LineTotals>,
    pub video: Video,
    pub model: String,
    pub frames: u64,
    pub fps: f64,
}

/// The pipeline's output for one video.
#[derive(Clone, Debug)]
pub struct Results {
    /// Person boxes by 1-based frame (the first decoded frame is 1, as in MOT files).
    pub found: BTreeMap<u64, Vec<Found>>,
    pub summary: Summary,
}

impl Results {
    /// Distinct tracks that never proved to be people.
    pub fn fixture_tracks(&self) -> u64 {
        let mut ids: Vec<u64> = self.found.values().flatten().filter(|f| f.fixture).filter_map(|f| f.track).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() as u64
    }

    /// Reads `dir/summary.json` and `detections` (default `dir/detections.jsonl`).
    pub fn load(dir: &Path, detections: Option<&Path>) -> Result<Results, EvalError> {
        let summary_path = dir.join("summary.json");
        if !summary_path.exists() {
            return Err(EvalError::Missing { path: summary_path, hint: "the output directory of `retail-ai analyze`" });
        }
        let summary: Summary = serde_json::from_str(&read(&summary_path)?).map_err(|e| EvalError::Parse {
            path: summary_path.clone(),
            line: e.line(),
            reason: e.to_string(),
        })?;
        let det_path = detections.map_or_else(|| dir.join("detections.jsonl"), Path::to_path_buf);
        if !det_path.exists() {
            return Err(EvalError::Missing {
                path: det_path,
                hint: "run analyze with --detections OUT/detections.jsonl, or give --detections",
            });
        }
        let found = parse_detections(&det_path, &read(&det_path)?)?;
        Ok(Results { found, summary })
    }
}

fn parse_detections(path: &Path, text: &str) -> Result<BTreeMap<u64, Vec<Found>>, EvalError> {
    let mut found: BTreeMap<u64, Vec<Found>> = BTreeMap::new();
    // A track's boxes count while it is a person, and while it is pending when it goes on
    // to be a person (its zone visits are back-dated); never while it is a fixture.
    let mut first_decision: std::collections::HashMap<u64, bool> = Default::default();
    let mut pending = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |reason: String| EvalError::Parse { path: path.to_owned(), line: n + 1, reason };
        let frame: FrameLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        // MOT frames count from 1, the pipeline's from 0.
        let mot_frame =
            frame.frame.checked_add(1).ok_or_else(|| bad(format!("frame {} is out of range", frame.frame)))?;
        let boxes = frame
            .detections
            .iter()
            .filter(|d| d.class == "person")
            .enumerate()
            .map(|(i, d)| {
                let motion = d.motion.as_deref().unwrap_or("person");
                if let Some(t) = d.track_id {
                    match motion {
                        "pending" => pending.push((mot_frame, i, t)),
                        decided => {
                            first_decision.entry(t).or_insert(decided == "person");
                        }
                    }
                }
                Found {
                    rect: Rect::from_corners(d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]),
                    score: d.score,
                    track: d.track_id,
                    fixture: d.track_id.is_some() && motion == "fixture",
                }
            })
            .collect();
        found.insert(mot_frame, boxes);
    }
    for (frame, i, t) in pending {
        if let Some(f) = found.get_mut(&frame).and_then(|v| v.get_mut(i)) {
            f.fixture = !first_decision.get(&t).copied().unwrap_or(false);
        }
    }
    Ok(found)
}
