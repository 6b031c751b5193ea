//! Turns tracks into the numbers a store runs on: in/out crossings of door lines (with
//! hysteresis, so someone lingering on a line is counted once), zone occupancy per frame and
//! dwell time per visit. All geometry is normalised to 0..1 so a config survives a change of
//! camera resolution.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod analyzer;
mod config;
mod geometry;
mod line;
mod motion;
mod zone;

pub use analyzer::{Analyzer, AnalyzerSummary, FrameAnalytics, LineTotals, ZoneTotals};
pub use config::{AnalyticsConfig, Anchor, LineConfig, MaskConfig, ZoneConfig};
pub use geometry::point_in_polygon;
pub use line::LineCounter;
pub use motion::{StaticRule, Status};
pub use zone::ZoneMonitor;
