//! The scores of one video: a JSON document and a table for the terminal.

use std::fmt::Write as _;

use retail_analytics::{AnalyticsConfig, ZoneConfig};
use serde::Serialize;

use crate::metrics::{DetectionScore, TrackingScore};
use crate::results::Summary;
use crate::truth::{Rect, Truth};

/// A count against its truth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CountError {
    pub name: String,
    pub kind: String,
    pub truth: u64,
    pub counted: u64,
    /// counted − truth.
    pub error: i64,
}

impl CountError {
    pub fn new(name: &str, kind: &str, truth: u64, counted: u64) -> Self {
        CountError { name: name.into(), kind: kind.into(), truth, counted, error: diff(counted, truth) }
    }
}

/// counted − truth, saturating (a hostile truth file can hold any number).
fn diff(counted: u64, truth: u64) -> i64 {
    (i128::from(counted) - i128::from(truth)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The most people at once in a zone over the labelled frames: labelled feet vs tracked feet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ZonePeak {
    pub zone: String,
    pub truth: u64,
    pub counted: u64,
    pub error: i64,
}

impl ZonePeak {
    pub(crate) fn new(zone: &str) -> Self {
        ZonePeak { zone: zone.into(), truth: 0, counted: 0, error: 0 }
    }

    /// One frame's labelled and counted people against the zone, located by the analysis's
    /// anchor as the analyzer does.
    pub(crate) fn observe(
        &mut self,
        (analytics, zone): (&AnalyticsConfig, &ZoneConfig),
        size: (f64, f64),
        people: &[(u64, Rect)],
        tracked: &[(u64, Rect)],
    ) {
        let inside = |boxes: &[(u64, Rect)]| {
            boxes
                .iter()
                .filter(|(_, r)| {
                    let normalised = retail_core::BBox::new(
                        (r.left / size.0) as f32,
                        (r.top / size.1) as f32,
                        ((r.left + r.width) / size.0) as f32,
                        ((r.top + r.height) / size.1) as f32,
                    );
                    retail_analytics::point_in_polygon(analytics.anchor_of(&normalised), &zone.polygon)
                })
                .count() as u64
        };
        self.truth = self.truth.max(inside(people));
        self.counted = self.counted.max(inside(tracked));
        self.error = diff(self.counted, self.truth);
    }
}

/// Everything measured on one video.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub model: String,
    /// Detections scoring below this were not counted as detections.
    pub score_threshold: f64,
    pub labelled_frames: u64,
    pub analysed_frames: u64,
    /// The analysis's own speed (frames per second of wall-clock time).
    pub fps: f64,
    pub detection: DetectionScore,
    pub tracking: TrackingScore,
    /// Counted tracks seen on two or more labelled frames that never overlap a labelled
    /// person there (IoU ≥ 0.5): tracks on things that are not people.
    pub phantom_tracks: u64,
    /// Tracks with boxes the static rule left uncounted (unmoved then).
    pub fixture_tracks: u64,
    /// Per line and direction; empty without `crossings.csv`.
    pub crossings: Vec<CountError>,
    pub zones: Vec<ZonePeak>,
    pub people: Option<CountError>,
}

/// Per counted track: labelled frames it is on, and those where it overlaps a person.
#[derive(Default)]
pub(crate) struct Phantoms(std::collections::HashMap<u64, (u64, u64)>);

impl Phantoms {
    pub(crate) fn observe(&mut self, people: &[(u64, Rect)], tracked: &[(u64, Rect)]) {
        for (id, r) in tracked {
            let on_person = people.iter().any(|(_, p)| 1.0 - p.iou(r) <= crate::MAX_DISTANCE);
            let e = self.0.entry(*id).or_default();
            e.0 += 1;
            e.1 += u64::from(on_person);
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.values().filter(|(seen, on)| *seen >= 2 && *on == 0).count() as u64
    }
}

/// Crossings per line and direction over the whole video, every line either side knows.
pub(crate) fn crossing_errors(truth: &Truth, summary: &Summary) -> Vec<CountError> {
    let Some(crossings) = &truth.crossings else { return Vec::new() };
    let mut lines: Vec<&str> = summary.lines.keys().map(String::as_str).collect();
    lines.extend(crossings.iter().map(|c| c.line.as_str()));
    lines.sort_unstable();
    lines.dedup();
    let mut out = Vec::new();
    for line in lines {
        for dir in ["in", "out"] {
            let truth = crossings.iter().filter(|c| c.line == line && c.direction == dir).count() as u64;
            let counted = summary.lines.get(line).map_or(0, |t| if dir == "in" { t.ins } else { t.outs });
            out.push(CountError::new(line, dir, truth, counted));
        }
    }
    out
}

impl Report {
    /// The table printed on the terminal.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "model {} (score threshold {}): {} labelled frames of {} analysed, {:.1} fps",
            self.model, self.score_threshold, self.labelled_frames, self.analysed_frames, self.fps
        );
        let d = &self.detection;
        let _ = writeln!(t, "{:<34} {:>10}", "measure", "value");
        let f = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
        let rows = [
            ("person precision @ IoU 0.5".to_owned(), f(d.precision)),
            ("person recall @ IoU 0.5".to_owned(), f(d.recall)),
            (
                "  boxes labelled / detected / matched".to_owned(),
                format!("{}/{}/{}", d.labelled, d.detected, d.matched),
            ),
            ("MOTA".to_owned(), f(self.tracking.mota)),
            ("IDF1".to_owned(), f(self.tracking.idf1)),
            (
                "  misses / false positives / switches".to_owned(),
                format!("{}/{}/{}", self.tracking.misses, self.tracking.false_positives, self.tracking.switches),
            ),
            ("counted tracks on no person".to_owned(), self.phantom_tracks.to_string()),
            ("uncounted (never moved) tracks".to_owned(), self.fixture_tracks.to_string()),
        ];
        for (k, v) in rows {
            let _ = writeln!(t, "{k:<34} {v:>10}");
        }
        for c in self.crossings.iter().chain(&self.people) {
            let what = format!("{} {} (truth {})", c.name, c.kind, c.truth);
            let _ = writeln!(t, "{what:<34} {:>10}", format!("{} ({:+})", c.counted, c.error));
        }
        for z in &self.zones {
            let what = format!("zone {} peak (truth {})", z.zone, z.truth);
            let _ = writeln!(t, "{what:<34} {:>10}", format!("{} ({:+})", z.counted, z.error));
        }
        t
    }
}
