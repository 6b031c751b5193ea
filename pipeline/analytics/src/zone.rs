use std::collections::HashMap;

use retail_core::PtsNs;

use crate::ZoneConfig;
use crate::geometry::{distance_to_boundary, point_in_polygon};

/// A change of a track's presence in a zone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZoneChange {
    Enter,
    /// Left after `dwell_ns`.
    Exit {
        dwell_ns: u64,
    },
}

/// Tracks who is inside one zone and for how long.
pub struct ZoneMonitor {
    pub config: ZoneConfig,
    /// track id -> pts of entry.
    inside: HashMap<u64, PtsNs>,
    pub peak: usize,
    pub visits: u64,
    pub dwell_total_ns: u128,
    pub completed_visits: u64,
}

impl ZoneMonitor {
    pub fn new(config: ZoneConfig) -> Self {
        ZoneMonitor { config, inside: HashMap::new(), peak: 0, visits: 0, dwell_total_ns: 0, completed_visits: 0 }
    }

    /// Observes a track's anchor at `pts`.
    pub fn observe(&mut self, track_id: u64, p: [f32; 2], pts: PtsNs) -> Option<ZoneChange> {
        let in_poly = point_in_polygon(p, &self.config.polygon);
        match (self.inside.contains_key(&track_id), in_poly) {
            (false, true) => {
                self.inside.insert(track_id, pts);
                self.visits += 1;
                self.peak = self.peak.max(self.inside.len());
                Some(ZoneChange::Enter)
            }
            (true, false) if distance_to_boundary(p, &self.config.polygon) > self.config.hysteresis => {
                self.end_visit(track_id, pts)
            }
            _ => None,
        }
    }

    /// Ends a visit (the person left, the track was lost, or the stream ended).
    pub fn end_visit(&mut self, track_id: u64, pts: PtsNs) -> Option<ZoneChange> {
        let entered = self.inside.remove(&track_id)?;
        let dwell_ns = pts.saturating_sub(entered);
        self.dwell_total_ns += dwell_ns as u128;
        self.completed_visits += 1;
        Some(ZoneChange::Exit { dwell_ns })
    }

    /// People inside now.
    pub fn occupancy(&self) -> usize {
        self.inside.len()
    }

    pub fn is_inside(&self, track_id: u64) -> bool {
        self.inside.contains_key(&track_id)
    }

    /// Ids inside now, sorted for deterministic output.
    pub fn inside_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.inside.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn mean_dwell_s(&self) -> Option<f64> {
        (self.completed_visits > 0).then(|| self.dwell_total_ns as f64 / 1e9 / self.completed_visits as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn till() -> ZoneMonitor {
        ZoneMonitor::new(ZoneConfig {
            name: "till".into(),
            polygon: vec![[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]],
            hysteresis: 0.01,
        })
    }

    #[test]
    fn dwell_is_time_between_enter_and_exit() {
        let mut z = till();
        assert_eq!(z.observe(1, [0.1, 0.4], 0), None);
        assert_eq!(z.observe(1, [0.3, 0.4], 2 * S), Some(ZoneChange::Enter));
        assert_eq!(z.observe(2, [0.4, 0.4], 3 * S), Some(ZoneChange::Enter));
        assert_eq!(z.occupancy(), 2);
        assert_eq!(z.observe(1, [0.5, 0.4], 5 * S), None);
        assert_eq!(z.observe(1, [0.7, 0.4], 9 * S), Some(ZoneChange::Exit { dwell_ns: 7 * S }));
        assert_eq!(z.end_visit(2, 6 * S), Some(ZoneChange::Exit { dwell_ns: 3 * S }));
        assert_eq!(z.peak, 2);
        assert_eq!(z.mean_dwell_s(), Some(5.0));
        assert_eq!(z.occupancy(), 0);
    }

    #[test]
    fn jitter_at_the_edge_is_one_visit() {
        let mut z = till();
        let mut changes = Vec::new();
        for (i, x) in [0.59, 0.605, 0.595, 0.607, 0.59].iter().enumerate() {
            changes.extend(z.observe(1, [*x, 0.4], i as u64 * S));
        }
        assert_eq!(changes, vec![ZoneChange::Enter]);
        assert_eq!(z.visits, 1);
    }
}
