use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[bus]` section of the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BusConfig {
    /// `memory://` (in-process, default) or `kafka://host:port[,host:port]`.
    pub url: String,
    /// Topic the analytics events go to.
    pub topic: String,
    /// Partitions when the topic has to be created (never changed on an existing topic).
    pub partitions: i32,
    /// Replication factor when creating topics.
    pub replication: i32,
    /// Create missing topics at start (the product never deletes topics).
    pub create_topics: bool,
    /// Where undecodable messages are copied.
    pub dead_letter_topic: String,
    /// Directory of the on-disk outage buffers (one per producer process, adopted by a later
    /// one for the same broker and topic once its process is gone); default `<cache>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the outage buffer may hold before ingest stops.
    pub spool_max_bytes: u64,
    /// Largest encoded event sent to the broker (Kafka's `message.max.bytes`); larger events
    /// are refused when sent, and records the broker still rejects as too large are moved to
    /// `<spool-dir>/rejected/`.
    pub max_event_bytes: usize,
    /// How long to wait for the broker to acknowledge everything at the end of a run.
    pub flush_timeout_s: u64,
    /// How long the Kafka client keeps retrying one send before it is re-sent from the spool.
    pub message_timeout_s: u64,
    /// A consumer that stops heartbeating (killed) loses its partitions after this long.
    pub session_timeout_s: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "memory://".into(),
            topic: "retail.events.v1".into(),
            partitions: 6,
            replication: 1,
            create_topics: true,
            dead_letter_topic: "retail.events.dead-letter".into(),
            spool_dir: None,
            spool_max_bytes: 256 * 1024 * 1024,
            max_event_bytes: 1_000_000,
            flush_timeout_s: 120,
            message_timeout_s: 300,
            session_timeout_s: 10,
        }
    }
}

impl BusConfig {
    pub fn validate(&self) -> Result<(), String> {
        crate::BusUrl::parse(&self.url).map_err(|e| format!("bus.url: {e}"))?;
        if self.topic.is_empty() || self.dead_letter_topic.is_empty() {
            return Err("bus.topic and bus.dead-letter-topic must not be empty".into());
        }
        if self.topic == self.dead_letter_topic {
            return Err("bus.dead-letter-topic must differ from bus.topic".into());
        }
        if self.partitions < 1 || self.replication < 1 {
            return Err("bus.partitions and bus.replication must be at least 1".into());
        }
        if self.spool_max_bytes < 64 * 1024 {
            return Err(format!("bus.spool-max-bytes must be at least 65536, got {}", self.spool_max_bytes));
        }
        if !(1000..=crate::MAX_RECORD_BYTES).contains(&self.max_event_bytes) {
            return Err(format!(
                "bus.max-event-bytes must be between 1000 and {}, got {}",
                crate::MAX_RECORD_BYTES,
                self.max_event_bytes
            ));
        }
        Ok(())
    }
}
