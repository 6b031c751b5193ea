use serde::{Deserialize, Serialize};

/// `[tracker]` section of the analysis config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrackerConfig {
    /// A detection must score this much to start a track; unset means the confident-detection
    /// threshold plus 0.1, as in ByteTrack.
    pub new_track_score: Option<f32>,
    /// Minimum IoU to match a confident detection to a predicted track box.
    pub match_iou: f32,
    /// Minimum IoU to match a low-score detection to a track (second stage).
    pub low_score_match_iou: f32,
    /// Minimum IoU to match a not-yet-confirmed track.
    pub tentative_match_iou: f32,
    /// Consecutive matched frames before a track is confirmed and gets an id (birth).
    pub min_hits: u32,
    /// Frames a confirmed track may go unseen before it ends (death).
    pub max_lost_frames: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            new_track_score: None,
            match_iou: 0.2,
            low_score_match_iou: 0.5,
            tentative_match_iou: 0.3,
            min_hits: 3,
            max_lost_frames: 30,
        }
    }
}

impl TrackerConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("match-iou", self.match_iou),
            ("low-score-match-iou", self.low_score_match_iou),
            ("tentative-match-iou", self.tentative_match_iou),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("tracker.{name} must be within 0..1, got {v}"));
            }
        }
        if let Some(s) = self.new_track_score
            && !(0.0..=1.0).contains(&s)
        {
            return Err(format!("tracker.new-track-score must be within 0..1, got {s}"));
        }
        if self.min_hits == 0 {
            return Err("tracker.min-hits must be at least 1".into());
        }
        Ok(())
    }
}
