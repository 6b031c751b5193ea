use std::collections::HashMap;

use retail_core::{Direction, PtsNs};

use crate::LineConfig;
use crate::geometry::Segment;

/// Counts crossings of one line, per track, with hysteresis.
///
/// A track's side is decided once its anchor is more than `hysteresis` from the line, or once
/// it has stayed strictly on one side inside that band for `settle-s` (at most once per visit
/// to the band, so swaying on the line never counts twice); otherwise the last decided side
/// stands. A crossing is a change of decided side while the anchor is over the segment (not
/// walking round its end).
pub struct LineCounter {
    pub config: LineConfig,
    segment: Segment,
    /// +1 if the inside point has positive signed distance, else -1.
    inside_sign: f32,
    settle_ns: PtsNs,
    tracks: HashMap<u64, TrackSide>,
    pub ins: u64,
    pub outs: u64,
}

#[derive(Default)]
struct TrackSide {
    /// +1 inside, -1 outside; `None` until first decided.
    decided: Option<i8>,
    /// The side of the line the anchor has been on inside the band, and since when.
    band_run: Option<(i8, PtsNs)>,
    /// This visit to the band already changed the decided side by settling.
    settled: bool,
}

impl LineCounter {
    pub fn new(config: LineConfig) -> Self {
        let segment = Segment::new(config.from, config.to);
        let inside_sign = segment.signed_distance(config.inside).signum();
        let settle_ns = (f64::from(config.settle_s) * 1e9) as PtsNs;
        LineCounter { config, segment, inside_sign, settle_ns, tracks: HashMap::new(), ins: 0, outs: 0 }
    }

    /// Observes a track's anchor point at `pts`; returns a crossing if one completed.
    pub fn observe(&mut self, track_id: u64, p: [f32; 2], pts: PtsNs) -> Option<Direction> {
        let d = self.segment.signed_distance(p) * self.inside_sign;
        let h = self.config.hysteresis;
        let settle_ns = self.settle_ns;
        let track = self.tracks.entry(track_id).or_default();
        let side: i8 = if d.abs() > h {
            track.band_run = None;
            track.settled = false;
            if d > 0.0 { 1 } else { -1 }
        } else {
            track.settle_in_band(d, pts, settle_ns)?
        };
        let prev = track.decided.replace(side);
        let t = self.segment.along(p);
        // Allow the hysteresis band's worth beyond the ends: people cut corners.
        let slack = h / self.segment.length().max(1e-6);
        match prev {
            Some(prev) if prev != side && (-slack..=1.0 + slack).contains(&t) => {
                if side > 0 {
                    self.ins += 1;
                    Some(Direction::In)
                } else {
                    self.outs += 1;
                    Some(Direction::Out)
                }
            }
            _ => None,
        }
    }

    /// Forgets a track that ended.
    pub fn forget(&mut self, track_id: u64) {
        self.tracks.remove(&track_id);
    }
}

impl TrackSide {
    /// Inside the band: the side to decide now, if the anchor has settled on a side other
    /// than the decided one for `settle_ns`.
    fn settle_in_band(&mut self, d: f32, pts: PtsNs, settle_ns: PtsNs) -> Option<i8> {
        let sign: i8 = if d > 0.0 {
            1
        } else if d < 0.0 {
            -1
        } else {
            self.band_run = None;
            return None;
        };
        let since = match self.band_run {
            // Time going backwards (a restarted source) starts the run again.
            Some((s, since)) if s == sign && pts >= since => since,
            _ => {
                self.band_run = Some((sign, pts));
                pts
            }
        };
        let settled_now = settle_ns > 0 && pts.saturating_sub(since) >= settle_ns;
        if !settled_now || self.settled || self.decided == Some(sign) {
            return None;
        }
        // A first decision is not a crossing, so it leaves this visit's one settled crossing.
        self.settled = self.decided.is_some();
        Some(sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `i` of a 10 fps video.
    fn at(i: usize) -> PtsNs {
        i as PtsNs * 100_000_000
    }

    fn door() -> LineCounter {
        door_settling(1.0)
    }

    fn door_settling(settle_s: f32) -> LineCounter {
        LineCounter::new(LineConfig {
            name: "door".into(),
            from: [0.2, 0.5],
            to: [0.8, 0.5],
            inside: [0.5, 0.9],
            hysteresis: 0.02,
            settle_s,
        })
    }

    #[test]
    fn lingering_on_the_line_counts_once() {
        let mut c = door();
        let mut crossings = Vec::new();
        // Walks down (towards inside), then jitters around y = 0.5 +- 0.015 for a while,
        // then continues in.
        let mut ys = vec![0.3, 0.4, 0.45, 0.49];
        ys.extend((0..20).map(|i| if i % 2 == 0 { 0.515 } else { 0.485 }));
        ys.extend([0.53, 0.55, 0.6, 0.7]);
        for (i, y) in ys.into_iter().enumerate() {
            crossings.extend(c.observe(1, [0.5, y], at(i)));
        }
        assert_eq!(crossings, vec![Direction::In]);
        assert_eq!((c.ins, c.outs), (1, 0));
    }

    #[test]
    fn in_then_out_and_directions() {
        let mut c = door();
        let mut got = Vec::new();
        for (i, y) in [0.3, 0.6, 0.3].into_iter().enumerate() {
            got.extend(c.observe(7, [0.5, y], at(i)));
        }
        assert_eq!(got, vec![Direction::In, Direction::Out]);
    }

    #[test]
    fn passing_beside_the_segment_is_not_a_crossing() {
        let mut c = door();
        assert_eq!(c.observe(1, [0.95, 0.3], at(0)), None);
        assert_eq!(c.observe(1, [0.95, 0.7], at(1)), None);
        assert_eq!((c.ins, c.outs), (0, 0));
    }

    #[test]
    fn tracks_are_independent() {
        let mut c = door();
        assert_eq!(c.observe(1, [0.5, 0.3], at(0)), None);
        assert_eq!(c.observe(2, [0.5, 0.7], at(0)), None);
        assert_eq!(c.observe(1, [0.5, 0.7], at(1)), Some(Direction::In));
        assert_eq!(c.observe(2, [0.5, 0.3], at(1)), Some(Direction::Out));
    }

    /// Walks from outside to `stop` (inside the band) and stands there for `frames` frames.
    fn walk_and_stand(c: &mut LineCounter, stop: f32, frames: usize) -> Vec<Direction> {
        let ys = [0.3, 0.4, 0.45].into_iter().chain(std::iter::repeat_n(stop, frames));
        ys.enumerate().filter_map(|(i, y)| c.observe(1, [0.5, y], at(i))).collect()
    }

    #[test]
    fn stopping_just_past_the_line_counts_once_settled() {
        // 0.005 past a line with a 0.02 band: in after one second there, and only once.
        let mut c = door();
        assert_eq!(walk_and_stand(&mut c, 0.505, 9), vec![]);
        let mut c = door();
        assert_eq!(walk_and_stand(&mut c, 0.505, 11), vec![Direction::In]);
        let mut c = door();
        assert_eq!(walk_and_stand(&mut c, 0.505, 600), vec![Direction::In]);
        // Stopping just before the line is not a crossing, however long.
        let mut c = door();
        assert_eq!(walk_and_stand(&mut c, 0.495, 600), vec![]);
        // Without settling, only leaving the band decides.
        let mut c = door_settling(0.0);
        assert_eq!(walk_and_stand(&mut c, 0.505, 600), vec![]);
    }

    #[test]
    fn pausing_before_the_line_then_stepping_over_counts() {
        let mut c = door();
        let ys = [0.3, 0.45].into_iter().chain([0.495; 20]).chain([0.505; 20]);
        let got: Vec<_> = ys.enumerate().filter_map(|(i, y)| c.observe(1, [0.5, y], at(i))).collect();
        assert_eq!(got, vec![Direction::In]);
    }

    #[test]
    fn first_seen_in_the_band_then_stepping_over_counts() {
        // Appears just before the line (side decided by settling, no crossing), then steps
        // over and stops just past it: one crossing, in the same visit to the band.
        let mut c = door();
        let ys = std::iter::repeat_n(0.495, 20).chain(std::iter::repeat_n(0.505, 20));
        let got: Vec<_> = ys.enumerate().filter_map(|(i, y)| c.observe(1, [0.5, y], at(i))).collect();
        assert_eq!(got, vec![Direction::In]);
    }

    #[test]
    fn time_going_backwards_restarts_the_settling() {
        let mut c = door();
        assert_eq!(c.observe(1, [0.5, 0.3], at(100)), None);
        assert_eq!(c.observe(1, [0.5, 0.505], at(100)), None);
        // The source restarted: time is earlier, the stay past the line counts from here.
        assert_eq!(c.observe(1, [0.5, 0.505], at(0)), None);
        assert_eq!(c.observe(1, [0.5, 0.505], at(5)), None);
        assert_eq!(c.observe(1, [0.5, 0.505], at(10)), Some(Direction::In));
    }

    #[test]
    fn swaying_over_the_line_settles_once_per_visit_to_the_band() {
        // 2 s on each side in turn for a minute, never leaving the band, then out: one
        // settled crossing in, the walk out, nothing for the swaying.
        let mut c = door();
        let sway = (0..30).flat_map(|k| [if k % 2 == 0 { 0.51 } else { 0.49 }; 20]);
        let ys = [0.3, 0.45].into_iter().chain(sway).chain([0.3]);
        let got: Vec<_> = ys.enumerate().filter_map(|(i, y)| c.observe(1, [0.5, y], at(i))).collect();
        assert_eq!(got, vec![Direction::In, Direction::Out]);
        assert_eq!((c.ins, c.outs), (1, 1));
    }
}
