//! How right the counts are: the pipeline's output for a video against ground truth labelled
//! by eye (or a customer's own MOT-format labels for their camera).
//!
//! Truth directory:
//! - `gt/gt.txt`: MOT Challenge boxes, `frame,id,left,top,width,height,conf,class,visibility`,
//!   frames from 1; rows with `conf` 0 or a class other than 1 (pedestrian) are not scored.
//! - `labelled_frames.txt` (one frame number per line): the frames whose every person is
//!   boxed. Without it, `seqinfo.ini`'s `seqLength` (every frame), else the frames in gt.txt.
//! - `crossings.csv` (optional): `frame,line,direction[,note]` with a header row.
//! - `people.toml` (optional): `distinct-people = N`.
//!
//! Boxes are scored on the labelled frames only; crossings and distinct people over the
//! whole video.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod assign;
mod error;
mod metrics;
mod report;
mod results;
mod truth;

pub use assign::{Cost, assign};
pub use error::EvalError;
pub use metrics::{DetectionScore, MAX_DISTANCE, MotAccumulator, TrackingScore};
pub use report::{CountError, Report, ZonePeak};
pub use results::{Found, Results, Summary};
pub use truth::{Crossing, Labelled, Rect, Truth, parse_mot};

use retail_analytics::AnalyticsConfig;

/// Scores `results` against `truth`; `analytics` (the analysis's zones and anchor) for zone
/// peaks;
/// detections below `score_threshold` (the detector's, not the tracker's low-score
/// candidates) are not detections.
pub fn evaluate(truth: &Truth, results: &Results, analytics: &AnalyticsConfig, score_threshold: f64) -> Report {
    let zones = &analytics.zones;
    let mut detection = DetectionScore::default();
    let mut mot = MotAccumulator::default();
    let size = (f64::from(results.summary.video.width), f64::from(results.summary.video.height));
    let mut peaks: Vec<ZonePeak> = zones.iter().map(|z| ZonePeak::new(&z.name)).collect();
    let mut phantoms = report::Phantoms::default();
    for frame in &truth.frames {
        let labelled = truth.boxes.get(frame).map_or(&[][..], Vec::as_slice);
        let found = results.found.get(frame).map_or(&[][..], Vec::as_slice);
        let found_rects: Vec<Rect> = found.iter().filter(|f| f.score >= score_threshold).map(|f| f.rect).collect();
        detection.add(&labelled.iter().map(|l| l.rect).collect::<Vec<_>>(), &found_rects);
        let people: Vec<(u64, Rect)> = labelled.iter().map(|l| (l.id, l.rect)).collect();
        let tracked: Vec<(u64, Rect)> =
            found.iter().filter(|f| !f.fixture).filter_map(|f| f.track.map(|t| (t, f.rect))).collect();
        mot.update(&people, &tracked);
        phantoms.observe(&people, &tracked);
        for (zone, peak) in zones.iter().zip(&mut peaks) {
            peak.observe((analytics, zone), size, &people, &tracked);
        }
    }
    Report {
        model: results.summary.model.clone(),
        score_threshold,
        labelled_frames: truth.frames.len() as u64,
        analysed_frames: results.summary.frames,
        fps: results.summary.fps,
        detection,
        tracking: mot.finish(),
        phantom_tracks: phantoms.count(),
        fixture_tracks: results.fixture_tracks(),
        crossings: report::crossing_errors(truth, &results.summary),
        zones: peaks,
        people: truth.distinct_people.map(|t| CountError::new("people", "distinct", t, results.summary.people)),
    }
}

/// The tracked boxes (fixtures left out) as MOT rows (`frame,id,left,top,width,height,score,-1,-1,-1`), every
/// frame: for other MOT tools, and for checking these scores with motmetrics.
pub fn mot_hypotheses(results: &Results) -> String {
    let mut out = String::new();
    for (frame, found) in &results.found {
        for f in found.iter().filter(|f| !f.fixture) {
            if let Some(id) = f.track {
                let r = f.rect;
                out.push_str(&format!("{frame},{id},{},{},{},{},1,-1,-1,-1\n", r.left, r.top, r.width, r.height));
            }
        }
    }
    out
}
