//! What a finished stream reports: `summary.json`.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LineSummary {
    #[serde(rename = "in")]
    pub ins: u64,
    #[serde(rename = "out")]
    pub outs: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ZoneSummary {
    pub peak: usize,
    pub visits: u64,
    pub mean_dwell_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VideoSummary {
    pub width: u32,
    pub height: u32,
    pub fps: Option<f64>,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub input: String,
    pub tenant: String,
    pub stream: String,
    pub start_time: String,
    /// Frames decoded and analysed.
    pub frames: u64,
    /// Length of the video analysed, seconds.
    pub duration_s: f64,
    /// Processing rate, frames per second of wall-clock time.
    pub fps: f64,
    pub elapsed_s: f64,
    /// Distinct people (confirmed tracks).
    pub people: u64,
    pub events: u64,
    pub lines: BTreeMap<String, LineSummary>,
    pub zones: BTreeMap<String, ZoneSummary>,
    pub video: VideoSummary,
    pub model: String,
    pub workers: usize,
}
