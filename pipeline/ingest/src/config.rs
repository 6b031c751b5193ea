use serde::{Deserialize, Serialize};

/// `[ingest]` section of the analysis config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestConfig {
    /// Decoded frames the source may hold before decoding waits for the consumer
    /// (backpressure, never unbounded buffering).
    pub queue_frames: u32,
    /// A file whose decoded frames end before this fraction of the container's duration is
    /// reported as truncated rather than analysed in part.
    pub min_decoded_fraction: f64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { queue_frames: 8, min_decoded_fraction: 0.9 }
    }
}

impl IngestConfig {
    /// Cross-field and range checks; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_frames == 0 {
            return Err("ingest.queue-frames must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_decoded_fraction) {
            return Err(format!("ingest.min-decoded-fraction must be within 0..1, got {}", self.min_decoded_fraction));
        }
        Ok(())
    }
}
