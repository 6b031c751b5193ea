//! Domain types shared by every stage of the pipeline.
//!
//! Geometry is normalised: x and y run from 0 to 1 across the frame, so boxes, lines and zones
//! survive a change of resolution between cameras, uploads and model inputs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one video stream (an uploaded file or a camera) within a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub String);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        StreamId(s.to_owned())
    }
}

/// A point in normalised frame coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// An axis-aligned box in normalised frame coordinates (`x1 <= x2`, `y1 <= y2`).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        BBox { x1, y1, x2, y2 }
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union; 0 for disjoint or degenerate boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    pub fn center(&self) -> Point {
        Point { x: (self.x1 + self.x2) * 0.5, y: (self.y1 + self.y2) * 0.5 }
    }

    /// Where a standing person touches the floor: the point footfall lines and zones use.
    pub fn bottom_center(&self) -> Point {
        Point { x: (self.x1 + self.x2) * 0.5, y: self.y2 }
    }

    /// The box clipped to the frame.
    pub fn clamped(&self) -> BBox {
        BBox {
            x1: self.x1.clamp(0.0, 1.0),
            y1: self.y1.clamp(0.0, 1.0),
            x2: self.x2.clamp(0.0, 1.0),
            y2: self.y2.clamp(0.0, 1.0),
        }
    }
}

/// One object found by the detector in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    /// Class index in the model's label list.
    pub class: u32,
}

/// Presentation timestamp in nanoseconds from the start of the stream.
pub type PtsNs = u64;

pub fn pts_seconds(pts: PtsNs) -> f64 {
    pts as f64 / 1e9
}

/// A confirmed track's state in one frame, as the tracker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedObject {
    pub track_id: u64,
    pub bbox: BBox,
    pub score: f32,
}

/// Direction of a line crossing, relative to the line's configured inside point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

/// Why a zone visit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The person left the zone.
    Left,
    /// The track was lost (occluded too long or out of frame) while inside.
    TrackLost,
    /// The video ended while the person was inside.
    EndOfStream,
}

/// What happened, without the when and who that every event carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    LineCrossing { line: String, direction: Direction },
    ZoneEnter { zone: String },
    ZoneExit { zone: String, dwell_s: f64, reason: ExitReason },
}

/// One analytics event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub stream: StreamId,
    pub track_id: u64,
    pub pts_ns: PtsNs,
    /// Wall-clock time of the frame: the stream's start time plus pts, in Unix microseconds.
    pub time_us: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox::new(0.0, 0.0, 0.2, 0.2);
        let b = BBox::new(0.1, 0.0, 0.3, 0.2);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox::new(0.5, 0.5, 0.6, 0.6)), 0.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn event_json_is_flat_and_tagged() {
        let e = Event {
            stream: "cam1".into(),
            track_id: 7,
            pts_ns: 1_500_000_000,
            time_us: 0,
            kind: EventKind::LineCrossing { line: "door".into(), direction: Direction::In },
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["kind"], "line_crossing");
        assert_eq!(j["direction"], "in");
        assert_eq!(j["line"], "door");
        let back: Event = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
    }
}
