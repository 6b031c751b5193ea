//! Which tracks are people: a detector also fires on fixtures (a traffic cone, a rock, a
//! mannequin) and the tracker follows them for as long as they are in view. A track counts
//! for zones, dwell and the people count once its anchor has moved `min-move` box sizes from
//! where it appeared. A person who walked in and then stood still (a queue, a shelf) moved on
//! the way in and counts; a fixture never moved since it appeared and does not. Zone visits
//! are back-dated to the track's first frames, held while it was still undecided, provided it
//! moves within `after-s`; a track still unmoved after that is a fixture until it moves.

use retail_core::{BBox, PtsNs};
use serde::{Deserialize, Serialize};

/// `[analytics]` static-min-move and static-after-s.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticRule {
    /// Movement that proves a track is a person, in box sizes (width sideways, height up or
    /// down) from where it appeared; 0 counts every track.
    pub min_move: f32,
    /// How long an unmoved track's observations are held to be back-dated.
    pub after_s: f32,
}

impl Default for StaticRule {
    fn default() -> Self {
        StaticRule { min_move: 1.0, after_s: 10.0 }
    }
}

impl StaticRule {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=20.0).contains(&self.min_move) {
            return Err(format!("analytics.static-min-move must be 0..20 box sizes, got {}", self.min_move));
        }
        if !(0.0..=3600.0).contains(&self.after_s) {
            return Err(format!("analytics.static-after-s must be 0..3600 s, got {}", self.after_s));
        }
        Ok(())
    }
}

/// What a track is, as far as the analyzer knows at a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not moved yet, still held.
    Pending,
    /// Moved since it appeared: counted.
    Person,
    /// Unmoved past `after-s`: not counted until it moves.
    Fixture,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Person => "person",
            Status::Fixture => "fixture",
        }
    }
}

/// What the analyzer does with one observation of a track.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// A person: count it now.
    Count,
    /// It just proved to be a person: count these held observations (oldest first), then this one.
    Became(Vec<(PtsNs, [f32; 2])>),
    /// Not yet known: held.
    Hold,
    /// A fixture (for now).
    Ignore,
}

#[derive(Debug)]
enum State {
    Pending(Vec<(PtsNs, [f32; 2])>),
    Person,
    Fixture,
}

/// One track's movement since it appeared.
#[derive(Debug)]
pub(crate) struct TrackMotion {
    origin: [f32; 2],
    size: [f32; 2],
    born: PtsNs,
    state: State,
}

impl TrackMotion {
    pub(crate) fn new(bbox: &BBox, anchor: [f32; 2], pts: PtsNs) -> Self {
        let size = [(bbox.x2 - bbox.x1).max(1e-4), (bbox.y2 - bbox.y1).max(1e-4)];
        TrackMotion { origin: anchor, size, born: pts, state: State::Pending(Vec::new()) }
    }

    pub(crate) fn status(&self) -> Status {
        match self.state {
            State::Pending(_) => Status::Pending,
            State::Person => Status::Person,
            State::Fixture => Status::Fixture,
        }
    }

    pub(crate) fn observe(&mut self, rule: &StaticRule, anchor: [f32; 2], pts: PtsNs) -> Step {
        let moved = ((anchor[0] - self.origin[0]) / self.size[0]).hypot((anchor[1] - self.origin[1]) / self.size[1]);
        if let State::Person = self.state {
            return Step::Count;
        }
        if moved >= rule.min_move {
            let held = match std::mem::replace(&mut self.state, State::Person) {
                State::Pending(held) => held,
                _ => Vec::new(),
            };
            return Step::Became(held);
        }
        let held_for_s = pts.saturating_sub(self.born) as f64 / 1e9;
        match &mut self.state {
            State::Pending(held) if held_for_s <= f64::from(rule.after_s) => {
                held.push((pts, anchor));
                Step::Hold
            }
            _ => {
                self.state = State::Fixture;
                Step::Ignore
            }
        }
    }
}
