//! The scores, with MOT Challenge definitions as motmetrics computes them: boxes pair when
//! IoU ≥ 0.5; CLEAR MOT carries established pairs forward before a minimum-cost matching
//! of the rest and counts a switch when a person's box is taken by another track; IDF1
//! matches person and track identities once for the whole video.

use std::collections::HashMap;

use serde::Serialize;

use crate::assign::{Cost, assign};
use crate::truth::Rect;

/// Boxes closer than this (1 − IoU) may pair: IoU ≥ 0.5.
pub const MAX_DISTANCE: f64 = 0.5;

fn distances(objects: &[Rect], hypotheses: &[Rect]) -> Vec<Vec<Cost>> {
    objects
        .iter()
        .map(|o| {
            hypotheses
                .iter()
                .map(|h| {
                    let d = 1.0 - o.iou(h);
                    (d <= MAX_DISTANCE).then_some(d)
                })
                .collect()
        })
        .collect()
}

/// Person detection quality, every detection counted, tracked or not.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DetectionScore {
    pub labelled: u64,
    pub detected: u64,
    pub matched: u64,
    /// `None` when there is nothing to divide by (no detections, no labelled boxes).
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

impl DetectionScore {
    /// Adds one frame.
    pub fn add(&mut self, labelled: &[Rect], detected: &[Rect]) {
        self.labelled += labelled.len() as u64;
        self.detected += detected.len() as u64;
        self.matched += assign(&distances(labelled, detected)).len() as u64;
        self.precision = ratio(self.matched, self.detected);
        self.recall = ratio(self.matched, self.labelled);
    }
}

/// `None` where motmetrics' `quiet_divide` gives NaN: nothing to divide by.
fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Tracking quality: CLEAR MOT (MOTA) and identity (IDF1) over the labelled frames.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackingScore {
    /// `None` without labelled boxes (motmetrics: NaN or −inf).
    pub mota: Option<f64>,
    pub idf1: Option<f64>,
    /// Labelled boxes (motmetrics' `num_objects`) and tracked boxes (`num_predictions`).
    pub objects: u64,
    pub predictions: u64,
    pub matches: u64,
    pub misses: u64,
    pub false_positives: u64,
    pub switches: u64,
    /// Boxes whose person and track agree under the best one-to-one identity matching.
    pub idtp: u64,
}

/// Accumulates frames as motmetrics' `MOTAccumulator.update` does.
#[derive(Default)]
pub struct MotAccumulator {
    score: TrackingScore,
    /// Each person's current track, and each track's current person.
    matched: HashMap<u64, u64>,
    /// Frames where person o and track h overlap enough to pair, for IDF1.
    overlaps: HashMap<(u64, u64), u64>,
}

impl MotAccumulator {
    /// One frame: the labelled people and the tracked boxes, each with its id.
    pub fn update(&mut self, objects: &[(u64, Rect)], hypotheses: &[(u64, Rect)]) {
        let rects = |v: &[(u64, Rect)]| v.iter().map(|(_, r)| *r).collect::<Vec<_>>();
        let mut dist = distances(&rects(objects), &rects(hypotheses));
        self.score.objects += objects.len() as u64;
        self.score.predictions += hypotheses.len() as u64;
        for (i, row) in dist.iter().enumerate() {
            for (j, d) in row.iter().enumerate() {
                if d.is_some() {
                    *self.overlaps.entry((objects[i].0, hypotheses[j].0)).or_default() += 1;
                }
            }
        }
        let (mut o_done, mut h_done) = (vec![false; objects.len()], vec![false; hypotheses.len()]);
        // 1. Pairs established earlier that still overlap are kept.
        for (i, (o, _)) in objects.iter().enumerate() {
            let Some(prev) = self.matched.get(o) else { continue };
            let Some(j) = (0..hypotheses.len()).find(|&j| !h_done[j] && hypotheses[j].0 == *prev) else { continue };
            if dist[i][j].is_some() {
                (o_done[i], h_done[j]) = (true, true);
                self.score.matches += 1;
            }
        }
        // 2. The rest by minimum total distance; a person taken by a new track is a switch.
        for (i, row) in dist.iter_mut().enumerate() {
            for (j, d) in row.iter_mut().enumerate() {
                if o_done[i] || h_done[j] {
                    *d = None;
                }
            }
        }
        for (i, j) in assign(&dist) {
            let (o, h) = (objects[i].0, hypotheses[j].0);
            match self.matched.insert(o, h) {
                Some(prev) if prev != h => self.score.switches += 1,
                _ => self.score.matches += 1,
            }
            (o_done[i], h_done[j]) = (true, true);
        }
        self.score.misses += o_done.iter().filter(|d| !**d).count() as u64;
        self.score.false_positives += h_done.iter().filter(|d| !**d).count() as u64;
    }

    /// The scores so far.
    pub fn finish(&self) -> TrackingScore {
        let mut s = self.score.clone();
        let errors = s.misses + s.switches + s.false_positives;
        s.mota = (s.objects > 0).then(|| 1.0 - errors as f64 / s.objects as f64);
        s.idtp = self.identity_true_positives();
        s.idf1 = ratio(2 * s.idtp, s.objects + s.predictions);
        s
    }

    /// The most boxes any one-to-one matching of people to tracks explains.
    fn identity_true_positives(&self) -> u64 {
        let mut people: Vec<u64> = self.overlaps.keys().map(|k| k.0).collect();
        let mut tracks: Vec<u64> = self.overlaps.keys().map(|k| k.1).collect();
        people.sort_unstable();
        people.dedup();
        tracks.sort_unstable();
        tracks.dedup();
        // Every pair allowed (weight 0 when they never overlap): pure maximum weight.
        let costs: Vec<Vec<Cost>> = people
            .iter()
            .map(|o| {
                tracks.iter().map(|h| Some(-(self.overlaps.get(&(*o, *h)).copied().unwrap_or(0) as f64))).collect()
            })
            .collect();
        assign(&costs).into_iter().map(|(i, j)| self.overlaps.get(&(people[i], tracks[j])).copied().unwrap_or(0)).sum()
    }
}
