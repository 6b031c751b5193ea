use std::collections::HashMap;

use retail_core::Direction;

use crate::LineConfig;
use crate::geometry::Segment;

/// Counts crossings of one line, per track, with hysteresis.
///
/// A track's side is only decided once its anchor is more than `hysteresis` from the line;
/// inside that band the last decided side stands. A crossing is a change of decided side
/// while the anchor is over the segment (not walking round its end).
pub struct LineCounter {
    pub config: LineConfig,
    segment: Segment,
    /// +1 if the inside point has positive signed distance, else -1.
    inside_sign: f32,
    sides: HashMap<u64, i8>,
    pub ins: u64,
    pub outs: u64,
}

impl LineCounter {
    pub fn new(config: LineConfig) -> Self {
        let segment = Segment::new(config.from, config.to);
        let inside_sign = segment.signed_distance(config.inside).signum();
        LineCounter { config, segment, inside_sign, sides: HashMap::new(), ins: 0, outs: 0 }
    }

    /// Observes a track's anchor point; returns a crossing if one completed.
    pub fn observe(&mut self, track_id: u64, p: [f32; 2]) -> Option<Direction> {
        let d = self.segment.signed_distance(p) * self.inside_sign;
        let h = self.config.hysteresis;
        let side: i8 = if d > h {
            1
        } else if d < -h {
            -1
        } else {
            return None;
        };
        let prev = self.sides.insert(track_id, side);
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
        self.sides.remove(&track_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door() -> LineCounter {
        LineCounter::new(LineConfig {
            name: "door".into(),
            from: [0.2, 0.5],
            to: [0.8, 0.5],
            inside: [0.5, 0.9],
            hysteresis: 0.02,
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
        for y in ys {
            crossings.extend(c.observe(1, [0.5, y]));
        }
        assert_eq!(crossings, vec![Direction::In]);
        assert_eq!((c.ins, c.outs), (1, 0));
    }

    #[test]
    fn in_then_out_and_directions() {
        let mut c = door();
        let mut got = Vec::new();
        for y in [0.3, 0.6, 0.3] {
            got.extend(c.observe(7, [0.5, y]));
        }
        assert_eq!(got, vec![Direction::In, Direction::Out]);
    }

    #[test]
    fn passing_beside_the_segment_is_not_a_crossing() {
        let mut c = door();
        assert_eq!(c.observe(1, [0.95, 0.3]), None);
        assert_eq!(c.observe(1, [0.95, 0.7]), None);
        assert_eq!((c.ins, c.outs), (0, 0));
    }

    #[test]
    fn tracks_are_independent() {
        let mut c = door();
        assert_eq!(c.observe(1, [0.5, 0.3]), None);
        assert_eq!(c.observe(2, [0.5, 0.7]), None);
        assert_eq!(c.observe(1, [0.5, 0.7]), Some(Direction::In));
        assert_eq!(c.observe(2, [0.5, 0.3]), Some(Direction::Out));
    }
}
