use std::collections::HashMap;

use retail_core::{Event, EventKind, ExitReason, PtsNs, StreamId, TenantId, TrackedObject};

use crate::motion::{Step, TrackMotion};
use crate::zone::ZoneChange;
use crate::{AnalyticsConfig, Anchor, LineCounter, StaticRule, ZoneMonitor};

/// Events and zone occupancy of one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameAnalytics {
    pub events: Vec<Event>,
    /// People inside each zone, in config order.
    pub occupancy: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LineTotals {
    pub name: String,
    pub ins: u64,
    pub outs: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ZoneTotals {
    pub name: String,
    pub peak: usize,
    pub visits: u64,
    pub mean_dwell_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AnalyzerSummary {
    pub lines: Vec<LineTotals>,
    pub zones: Vec<ZoneTotals>,
}

const MINUTE_US: i64 = 60_000_000;

/// Zone occupancy summed over the frames of one wall-clock minute.
#[derive(Clone, Debug)]
struct OccupancyMinute {
    minute_us: i64,
    last_pts: PtsNs,
    frames: u64,
    peak: Vec<u64>,
    sum: Vec<u64>,
}

/// Lines and zones of one stream, fed frame by frame with the tracker's output.
pub struct Analyzer {
    tenant: TenantId,
    stream: StreamId,
    start_time_us: i64,
    anchor: Anchor,
    lines: Vec<LineCounter>,
    zones: Vec<ZoneMonitor>,
    last_seen: HashMap<u64, PtsNs>,
    occupancy_minute: Option<OccupancyMinute>,
    static_rule: StaticRule,
    motion: HashMap<u64, TrackMotion>,
    /// Tracks that proved to be people.
    people: u64,
}

impl Analyzer {
    /// `start_time_us`: wall-clock time of pts 0, in Unix microseconds.
    pub fn new(config: &AnalyticsConfig, tenant: TenantId, stream: StreamId, start_time_us: i64) -> Self {
        Analyzer {
            tenant,
            stream,
            start_time_us,
            anchor: config.anchor,
            lines: config.lines.iter().cloned().map(LineCounter::new).collect(),
            zones: config.zones.iter().cloned().map(ZoneMonitor::new).collect(),
            last_seen: HashMap::new(),
            occupancy_minute: None,
            static_rule: config.static_rule,
            motion: HashMap::new(),
            people: 0,
        }
    }

    fn event(&self, track_id: u64, pts_ns: PtsNs, kind: EventKind) -> Event {
        let time_us = self.start_time_us + (pts_ns / 1000) as i64;
        Event::new(self.tenant.clone(), self.stream.clone(), track_id, pts_ns, time_us, kind)
    }

    /// Feeds one frame: the confirmed tracks seen in it and the ids whose tracks ended.
    pub fn process(&mut self, pts: PtsNs, active: &[TrackedObject], ended: &[u64]) -> FrameAnalytics {
        let minute_us = (self.start_time_us + (pts / 1000) as i64).div_euclid(MINUTE_US) * MINUTE_US;
        // A finished minute's occupancy goes first. (Zone visits back-dated by the static
        // rule come a little after events of later frames; the lake's lateness covers that.)
        let mut events = match &self.occupancy_minute {
            Some(m) if m.minute_us != minute_us => self.take_occupancy(),
            _ => Vec::new(),
        };
        for id in ended {
            events.extend(self.end_track(*id, ExitReason::TrackLost));
        }
        for t in active {
            self.last_seen.insert(t.track_id, pts);
            let p = match self.anchor {
                Anchor::BottomCenter => t.bbox.bottom_center(),
                Anchor::Center => t.bbox.center(),
            };
            let p = [p.x, p.y];
            for i in 0..self.lines.len() {
                if let Some(direction) = self.lines[i].observe(t.track_id, p, pts) {
                    let line = self.lines[i].config.name.clone();
                    events.push(self.event(t.track_id, pts, EventKind::LineCrossing { line, direction }));
                }
            }
            let motion = self.motion.entry(t.track_id).or_insert_with(|| TrackMotion::new(&t.bbox, p, pts));
            match motion.observe(&self.static_rule, p, pts) {
                Step::Count => self.observe_zones(t.track_id, p, pts, &mut events),
                Step::Became(held) => {
                    self.people += 1;
                    for (at, q) in held {
                        self.observe_zones(t.track_id, q, at, &mut events);
                    }
                    self.observe_zones(t.track_id, p, pts, &mut events);
                }
                Step::Hold | Step::Ignore => {}
            }
        }
        let occupancy: Vec<usize> = self.zones.iter().map(ZoneMonitor::occupancy).collect();
        if !self.zones.is_empty() {
            let n = self.zones.len();
            let m = self.occupancy_minute.get_or_insert_with(|| OccupancyMinute {
                minute_us,
                last_pts: pts,
                frames: 0,
                peak: vec![0; n],
                sum: vec![0; n],
            });
            m.last_pts = pts;
            m.frames += 1;
            for (i, &o) in occupancy.iter().enumerate() {
                m.peak[i] = m.peak[i].max(o as u64);
                m.sum[i] += o as u64;
            }
        }
        FrameAnalytics { events, occupancy }
    }

    /// A person's anchor against every zone at `pts` (earlier than the frame when back-dated).
    fn observe_zones(&mut self, track_id: u64, p: [f32; 2], pts: PtsNs, events: &mut Vec<Event>) {
        for i in 0..self.zones.len() {
            let change = self.zones[i].observe(track_id, p, pts);
            let zone = self.zones[i].config.name.clone();
            match change {
                Some(ZoneChange::Enter) => events.push(self.event(track_id, pts, EventKind::ZoneEnter { zone })),
                Some(ZoneChange::Exit { dwell_ns }) => events.push(self.event(
                    track_id,
                    pts,
                    EventKind::ZoneExit { zone, dwell_s: dwell_ns as f64 / 1e9, reason: ExitReason::Left },
                )),
                None => {}
            }
        }
    }

    /// Distinct tracks that proved to be people (moved since they appeared).
    pub fn people(&self) -> u64 {
        self.people
    }

    /// What `track_id` is so far (`None` for a track not seen).
    pub fn status(&self, track_id: u64) -> Option<crate::Status> {
        self.motion.get(&track_id).map(TrackMotion::status)
    }

    /// One `ZoneOccupancy` event per zone for the minute being summed, which ends.
    fn take_occupancy(&mut self) -> Vec<Event> {
        let Some(m) = self.occupancy_minute.take() else { return Vec::new() };
        self.zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let kind = EventKind::ZoneOccupancy {
                    zone: z.config.name.clone(),
                    frames: m.frames,
                    peak: m.peak[i],
                    occupancy_sum: m.sum[i],
                };
                self.event(0, m.last_pts, kind)
            })
            .collect()
    }

    /// Closes a track's open visits at the time it was last seen.
    fn end_track(&mut self, track_id: u64, reason: ExitReason) -> Vec<Event> {
        self.motion.remove(&track_id);
        let Some(pts) = self.last_seen.remove(&track_id) else {
            return Vec::new();
        };
        for line in &mut self.lines {
            line.forget(track_id);
        }
        let mut events = Vec::new();
        for i in 0..self.zones.len() {
            if let Some(ZoneChange::Exit { dwell_ns }) = self.zones[i].end_visit(track_id, pts) {
                let zone = self.zones[i].config.name.clone();
                events.push(self.event(
                    track_id,
                    pts,
                    EventKind::ZoneExit { zone, dwell_s: dwell_ns as f64 / 1e9, reason },
                ));
            }
        }
        events
    }

    /// Ends tracks between frames (the source went quiet for longer than a track lives):
    /// their open visits close at the time each was last seen.
    pub fn end_tracks(&mut self, ids: &[u64]) -> Vec<Event> {
        ids.iter().flat_map(|id| self.end_track(*id, ExitReason::TrackLost)).collect()
    }

    /// End of stream: closes every open visit, then sends the last minute's occupancy.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut ids: Vec<u64> = self.last_seen.keys().copied().collect();
        ids.sort_unstable();
        let mut events: Vec<Event> =
            ids.into_iter().flat_map(|id| self.end_track(id, ExitReason::EndOfStream)).collect();
        events.extend(self.take_occupancy());
        events
    }

    pub fn zone_names(&self) -> Vec<String> {
        self.zones.iter().map(|z| z.config.name.clone()).collect()
    }

    pub fn line_names(&self) -> Vec<String> {
        self.lines.iter().map(|l| l.config.name.clone()).collect()
    }

    pub fn summary(&self) -> AnalyzerSummary {
        AnalyzerSummary {
            lines: self
                .lines
                .iter()
                .map(|l| LineTotals { name: l.config.name.clone(), ins: l.ins, outs: l.outs })
                .collect(),
            zones: self
                .zones
                .iter()
                .map(|z| ZoneTotals {
                    name: z.config.name.clone(),
                    peak: z.peak,
                    visits: z.visits,
                    mean_dwell_s: z.mean_dwell_s(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LineConfig, ZoneConfig};
    use retail_core::{BBox, Direction};

    const S: u64 = 1_000_000_000;

    fn person(id: u64, x: f32, feet_y: f32) -> TrackedObject {
        TrackedObject { track_id: id, bbox: BBox::new(x - 0.03, feet_y - 0.2, x + 0.03, feet_y), score: 0.9 }
    }

    #[test]
    fn walk_through_door_into_zone_and_get_lost() {
        let config = AnalyticsConfig {
            lines: vec![LineConfig {
                name: "door".into(),
                from: [0.0, 0.5],
                to: [1.0, 0.5],
                inside: [0.5, 1.0],
                hysteresis: 0.02,
                settle_s: 1.0,
            }],
            zones: vec![ZoneConfig {
                name: "aisle".into(),
                polygon: vec![[0.0, 0.7], [1.0, 0.7], [1.0, 1.0], [0.0, 1.0]],
                hysteresis: 0.01,
            }],
            ..Default::default()
        };
        let mut a = Analyzer::new(&config, TenantId::default(), "cam".into(), 1_000_000);
        let mut events = Vec::new();
        for (f, y) in [0.3f32, 0.45, 0.55, 0.65, 0.75, 0.8, 0.85].iter().enumerate() {
            let out = a.process(f as u64 * S, &[person(4, 0.5, *y)], &[]);
            events.extend(out.events);
        }
        let out = a.process(10 * S, &[], &[4]);
        events.extend(out.events);
        assert_eq!(out.occupancy, vec![0]);
        let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::LineCrossing { line: "door".into(), direction: Direction::In },
                EventKind::ZoneEnter { zone: "aisle".into() },
                EventKind::ZoneExit { zone: "aisle".into(), dwell_s: 2.0, reason: ExitReason::TrackLost },
            ]
        );
        assert_eq!(events[0].pts_ns, 2 * S);
        assert_eq!(events[0].time_us, 1_000_000 + 2_000_000);
        let s = a.summary();
        assert_eq!((s.lines[0].ins, s.lines[0].outs), (1, 0));
        assert_eq!(s.zones[0].mean_dwell_s, Some(2.0));
        assert_eq!(s.zones[0].peak, 1);
    }

    #[test]
    fn zone_occupancy_is_summed_per_wall_clock_minute() {
        let config = AnalyticsConfig {
            zones: vec![ZoneConfig {
                name: "till".into(),
                polygon: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
                hysteresis: 0.0,
            }],
            // Standing figures: every track counts here.
            static_rule: StaticRule { min_move: 0.0, after_s: 0.0 },
            ..Default::default()
        };
        // pts 0 is 10:00:50, so the minute turns between the frames at 5 s and 15 s.
        let start = 36_050_000_000;
        let mut a = Analyzer::new(&config, TenantId::default(), "cam".into(), start);
        let occupancy = |events: &[Event]| -> Vec<(i64, u64, u64, u64)> {
            events
                .iter()
                .filter_map(|e| match e.kind {
                    EventKind::ZoneOccupancy { frames, peak, occupancy_sum, .. } => {
                        Some((e.time_us, frames, peak, occupancy_sum))
                    }
                    _ => None,
                })
                .collect()
        };
        let mut events = a.process(0, &[person(1, 0.2, 0.9), person(2, 0.6, 0.9)], &[]).events;
        events.extend(a.process(5 * S, &[person(1, 0.2, 0.9)], &[2]).events);
        assert!(occupancy(&events).is_empty(), "nothing until the minute ends");
        let turn = a.process(15 * S, &[person(1, 0.2, 0.9), person(3, 0.5, 0.2)], &[]).events;
        assert_eq!(occupancy(&turn), vec![(start + 5_000_000, 2, 2, 3)], "2 frames, peak 2, 2 + 1 people");
        assert!(matches!(turn[0].kind, EventKind::ZoneOccupancy { .. }), "the closed minute comes first");
        let last = a.finish();
        assert_eq!(occupancy(&last), vec![(start + 15_000_000, 1, 1, 1)]);
        assert_eq!(last.last().unwrap().track_id, 0);
        assert_ne!(turn[0].event_id, last.last().unwrap().event_id);
    }

    fn queue_zone() -> AnalyticsConfig {
        AnalyticsConfig {
            zones: vec![ZoneConfig {
                name: "queue".into(),
                polygon: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
                hysteresis: 0.0,
            }],
            ..Default::default()
        }
    }

    /// Zone entries and exits (time in s, dwell) of a run of frames, one per second.
    fn visits(a: &mut Analyzer, frames: &[Vec<TrackedObject>]) -> Vec<(u64, Option<f64>)> {
        let mut out = Vec::new();
        for (f, tracks) in frames.iter().enumerate() {
            out.extend(a.process(f as u64 * S, tracks, &[]).events);
        }
        out.extend(a.finish());
        out.iter()
            .filter_map(|e| match &e.kind {
                EventKind::ZoneEnter { .. } => Some((e.pts_ns / S, None)),
                EventKind::ZoneExit { dwell_s, .. } => Some((e.pts_ns / S, Some(*dwell_s))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_fixture_that_never_moved_is_not_a_person() {
        let mut a = Analyzer::new(&queue_zone(), TenantId::default(), "cam".into(), 0);
        // A cone in the zone for a minute, its box jittering by a few pixels.
        let frames: Vec<_> = (0..60).map(|f| vec![person(9, 0.3 + (f % 3) as f32 * 0.002, 0.8)]).collect();
        assert_eq!(visits(&mut a, &frames), vec![]);
        assert_eq!(a.people(), 0);
        assert_eq!(a.summary().zones[0].peak, 0);
    }

    #[test]
    fn a_person_who_walked_in_and_stood_still_counts_from_their_first_step() {
        let mut a = Analyzer::new(&queue_zone(), TenantId::default(), "cam".into(), 0);
        // Walks down into the queue over 3 s (feet 0.45 → 0.6 → 0.7), then stands 60 s.
        let mut frames: Vec<_> = [0.45_f32, 0.6, 0.7].iter().map(|y| vec![person(3, 0.5, *y)]).collect();
        frames.extend((0..60).map(|_| vec![person(3, 0.5, 0.7)]));
        assert_eq!(visits(&mut a, &frames), vec![(1, None), (62, Some(61.0))], "entered at 1 s, 61 s of dwell");
        assert_eq!(a.people(), 1);
    }

    #[test]
    fn a_track_that_stands_then_walks_is_back_dated_but_not_after_the_hold() {
        let mut a = Analyzer::new(&queue_zone(), TenantId::default(), "cam".into(), 0);
        // Appears standing in the queue for 5 s, then walks off along it: its visit starts at 0.
        let mut frames: Vec<_> = (0..5).map(|_| vec![person(4, 0.2, 0.8)]).collect();
        frames.extend((1..=5).map(|i| vec![person(4, 0.2 + i as f32 * 0.05, 0.8)]));
        assert_eq!(visits(&mut a, &frames)[0], (0, None));
        // Standing longer than static-after-s (10 s) first: counted only from when it moved.
        let mut a = Analyzer::new(&queue_zone(), TenantId::default(), "cam".into(), 0);
        let mut frames: Vec<_> = (0..15).map(|_| vec![person(5, 0.2, 0.8)]).collect();
        frames.extend((1..=5).map(|i| vec![person(5, 0.2 + i as f32 * 0.05, 0.8)]));
        assert_eq!(visits(&mut a, &frames)[0], (16, None), "moved more than a box width at 16 s");
        assert_eq!(a.people(), 1);
    }
}
