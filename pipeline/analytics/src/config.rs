use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Which point of a person's box is tested against lines and zones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// Feet: right for floor lines and floor zones seen from above or at an angle.
    #[default]
    BottomCenter,
    Center,
}

/// A counting line: a segment with a point on its "in" side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LineConfig {
    pub name: String,
    /// Segment end points, [x, y] in 0..1.
    pub from: [f32; 2],
    pub to: [f32; 2],
    /// Any point on the side people are on after walking in.
    pub inside: [f32; 2],
    /// Distance from the line (0..1 of the frame) a person must pass on each side before a
    /// side counts: jitter on the line never counts twice.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f32,
    /// Seconds a person must stay strictly on one side inside the hysteresis band for that
    /// side to count: someone who steps over the line and stops just past it has crossed. Once
    /// per visit to the band, so swaying on the line never counts twice. 0 turns it off.
    #[serde(default = "default_settle_s")]
    pub settle_s: f32,
}

/// A zone: a polygon of at least three points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ZoneConfig {
    pub name: String,
    /// Corners, [x, y] in 0..1, in order.
    pub polygon: Vec<[f32; 2]>,
    /// A visit ends only when the person is this far outside the polygon.
    #[serde(default = "default_zone_hysteresis")]
    pub hysteresis: f32,
}

fn default_hysteresis() -> f32 {
    0.02
}

fn default_settle_s() -> f32 {
    1.0
}

fn default_zone_hysteresis() -> f32 {
    0.01
}

/// A place where no person can be (a poster, a mannequin, a screen): detections whose anchor
/// falls inside are dropped before tracking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MaskConfig {
    pub name: String,
    /// Corners, [x, y] in 0..1, in order.
    pub polygon: Vec<[f32; 2]>,
}

/// Lines, zones and how people are located against them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnalyticsConfig {
    pub anchor: Anchor,
    pub lines: Vec<LineConfig>,
    pub zones: Vec<ZoneConfig>,
    /// Which tracks are people (not fixtures) for zones, dwell and the people count.
    pub static_rule: crate::StaticRule,
    /// Ignore masks.
    pub masks: Vec<MaskConfig>,
}

fn check_point(what: &str, p: [f32; 2]) -> Result<(), String> {
    if p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)) {
        Ok(())
    } else {
        Err(format!("{what} = [{}, {}] is outside 0..1 (coordinates are fractions of the frame)", p[0], p[1]))
    }
}

impl AnalyticsConfig {
    /// Checks ranges and cross-field rules; the message names the line or zone and key.
    pub fn validate(&self) -> Result<(), String> {
        self.static_rule.validate()?;
        let mut names = HashSet::new();
        for l in &self.lines {
            let at = format!("line `{}`", l.name);
            if l.name.trim().is_empty() {
                return Err("a line has an empty name".into());
            }
            if !names.insert(("line", l.name.as_str())) {
                return Err(format!("{at} is defined twice"));
            }
            check_point(&format!("{at}: from"), l.from)?;
            check_point(&format!("{at}: to"), l.to)?;
            check_point(&format!("{at}: inside"), l.inside)?;
            if !(0.0..0.5).contains(&l.hysteresis) {
                return Err(format!("{at}: hysteresis must be within 0..0.5, got {}", l.hysteresis));
            }
            if !(0.0..=3600.0).contains(&l.settle_s) {
                return Err(format!("{at}: settle-s must be within 0..3600 seconds, got {}", l.settle_s));
            }
            let seg = crate::geometry::Segment::new(l.from, l.to);
            if seg.length() < 1e-4 {
                return Err(format!("{at}: from and to are the same point"));
            }
            if seg.signed_distance(l.inside).abs() <= l.hysteresis {
                return Err(format!("{at}: inside point is on the line (within the hysteresis band)"));
            }
        }
        for z in &self.zones {
            let at = format!("zone `{}`", z.name);
            if z.name.trim().is_empty() {
                return Err("a zone has an empty name".into());
            }
            if !names.insert(("zone", z.name.as_str())) {
                return Err(format!("{at} is defined twice"));
            }
            if z.polygon.len() < 3 {
                return Err(format!("{at}: polygon needs at least 3 points, has {}", z.polygon.len()));
            }
            for (i, p) in z.polygon.iter().enumerate() {
                check_point(&format!("{at}: polygon point {}", i + 1), *p)?;
            }
            if crate::geometry::polygon_area(&z.polygon) < 1e-6 {
                return Err(format!("{at}: polygon has no area"));
            }
            if !(0.0..0.5).contains(&z.hysteresis) {
                return Err(format!("{at}: hysteresis must be within 0..0.5, got {}", z.hysteresis));
            }
        }
        for m in &self.masks {
            let at = format!("mask `{}`", m.name);
            if m.polygon.len() < 3 {
                return Err(format!("{at}: polygon needs at least 3 points, has {}", m.polygon.len()));
            }
            for (i, p) in m.polygon.iter().enumerate() {
                check_point(&format!("{at}: polygon point {}", i + 1), *p)?;
            }
            if crate::geometry::polygon_area(&m.polygon) < 1e-6 {
                return Err(format!("{at}: polygon has no area"));
            }
        }
        Ok(())
    }

    /// The point of `bbox` tested against lines, zones and masks.
    pub fn anchor_of(&self, bbox: &retail_core::BBox) -> [f32; 2] {
        let p = match self.anchor {
            Anchor::BottomCenter => bbox.bottom_center(),
            Anchor::Center => bbox.center(),
        };
        [p.x, p.y]
    }

    /// Whether a detection at `bbox` lies in an ignore mask.
    pub fn masked(&self, bbox: &retail_core::BBox) -> bool {
        let p = self.anchor_of(bbox);
        self.masks.iter().any(|m| crate::geometry::point_in_polygon(p, &m.polygon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> LineConfig {
        LineConfig {
            name: "door".into(),
            from: [0.0, 0.5],
            to: [1.0, 0.5],
            inside: [0.5, 0.9],
            hysteresis: 0.02,
            settle_s: 1.0,
        }
    }

    #[test]
    fn rejects_points_outside_the_frame_naming_them() {
        let mut c = AnalyticsConfig { lines: vec![line()], ..Default::default() };
        assert!(c.validate().is_ok());
        c.zones.push(ZoneConfig {
            name: "till".into(),
            polygon: vec![[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]],
            hysteresis: 0.01,
        });
        let err = c.validate().unwrap_err();
        assert!(err.contains("zone `till`") && err.contains("point 2") && err.contains("1.2"), "{err}");
    }

    #[test]
    fn rejects_inside_point_on_line_and_duplicates() {
        let mut l = line();
        l.inside = [0.3, 0.51];
        let err = AnalyticsConfig { lines: vec![l], ..Default::default() }.validate().unwrap_err();
        assert!(err.contains("inside point is on the line"), "{err}");
        let err = AnalyticsConfig { lines: vec![line(), line()], ..Default::default() }.validate().unwrap_err();
        assert!(err.contains("defined twice"), "{err}");
    }

    #[test]
    fn masks_drop_detections_by_their_feet_and_are_checked() {
        let poster =
            MaskConfig { name: "poster".into(), polygon: vec![[0.0, 0.0], [0.3, 0.0], [0.3, 0.4], [0.0, 0.4]] };
        let c = AnalyticsConfig { masks: vec![poster], ..Default::default() };
        assert!(c.validate().is_ok());
        // Feet at (0.2, 0.35): inside; a person whose head is in the mask but feet below: not.
        assert!(c.masked(&retail_core::BBox::new(0.15, 0.1, 0.25, 0.35)));
        assert!(!c.masked(&retail_core::BBox::new(0.15, 0.3, 0.25, 0.6)));
        let flat = MaskConfig { name: "edge".into(), polygon: vec![[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]] };
        let err = AnalyticsConfig { masks: vec![flat], ..Default::default() }.validate().unwrap_err();
        assert!(err.contains("mask `edge`") && err.contains("no area"), "{err}");
    }
}
