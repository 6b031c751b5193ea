//! The event bus, chosen by URL.
//!
//! * `memory://[name]` — in-process, the embedded default and the unit-test double; producers
//!   and consumers naming the same bus in one process share it.
//! * `kafka://host:port[,host:port]` — rdkafka, idempotent producer with `acks=all`, keyed by
//!   stream id so each camera's events stay ordered in one partition.
//!
//! Kafka producers write every event to a bounded on-disk [`Spool`] first and deliver from
//! there, so a broker outage neither blocks decoding nor loses events: they wait on disk,
//! survive a restart of the process, and a full spool stops ingest with an error that says so.
//! Each producer process has a spool of its own, tagged with its broker and topic; a later
//! producer for the same bus adopts the spools of processes that are gone ([`spool_dir`]).
//! Redelivery after a crash can repeat events; consumers drop repeats by `event_id`.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod codec;
mod config;
mod error;
mod kafka;
mod memory;
mod spool;
pub mod spool_dir;

use std::time::Duration;

pub use codec::{DecodeError, decode_event, encode_event};
pub use config::BusConfig;
pub use error::BusError;
pub use kafka::{KafkaConsumer, KafkaProducer, ensure_topics};
pub use memory::{MemoryBus, MemoryConsumer, MemoryProducer};
pub use retail_core::Event;
pub use spool::{MAX_RECORD_BYTES, Spool, SpooledRecord};

/// A message as consumers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Publishes events.
pub trait EventProducer: Send {
    /// Queues events for delivery. Durable once this returns for Kafka (spooled to disk);
    /// fails with [`BusError::SpoolFull`] when the outage buffer is full.
    fn send(&mut self, events: &[Event]) -> Result<(), BusError>;
    /// Publishes raw payloads to another topic of the same bus (dead letters).
    fn send_raw(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), BusError>;
    /// Publishes several raw payloads to another topic, waiting for the bus once: all are
    /// acknowledged when this returns `Ok`; on an error any of them may need sending again.
    fn send_raw_batch(&mut self, topic: &str, records: &[(Option<&[u8]>, &[u8])]) -> Result<(), BusError> {
        records.iter().try_for_each(|(k, p)| self.send_raw(topic, *k, p))
    }
    /// Waits until everything queued so far is acknowledged by the bus.
    fn flush(&mut self, timeout: Duration) -> Result<(), BusError>;
    /// A wait for delivery that does not hold the producer, for a producer shared by several
    /// streams: one stream waiting for the broker does not stop the others from sending.
    fn flusher(&self) -> Flusher {
        Flusher::nothing_to_wait_for()
    }
}

/// Waits until a producer's events are acknowledged; see [`EventProducer::flusher`].
pub struct Flusher(Option<Box<WaitFn>>);

type WaitFn = dyn Fn(Duration) -> Result<(), BusError> + Send + Sync;

impl Flusher {
    /// For producers that deliver on `send` (the in-process bus).
    pub fn nothing_to_wait_for() -> Self {
        Flusher(None)
    }

    pub fn new(wait: impl Fn(Duration) -> Result<(), BusError> + Send + Sync + 'static) -> Self {
        Flusher(Some(Box::new(wait)))
    }

    /// Waits up to `timeout` for everything queued so far.
    pub fn wait(&self, timeout: Duration) -> Result<(), BusError> {
        self.0.as_ref().map_or(Ok(()), |w| w(timeout))
    }
}

/// Reads records as part of a consumer group; progress is committed explicitly.
pub trait RecordConsumer: Send {
    /// Up to `max` records, waiting at most `timeout` for the first.
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, BusError>;
    /// Commits, per partition, the offset of the next record to read.
    fn commit(&mut self, next_offsets: &[(i32, i64)]) -> Result<(), BusError>;
    /// The partitions this member holds now, when the group can move them to other members;
    /// `None` when it reads every partition for good.
    fn assignment(&self) -> Option<Vec<i32>> {
        None
    }
    /// Whether the group took this member's partitions without a rebalance since the last
    /// call: its session expired (the broker unreachable, or this process stalled), so another
    /// member may hold them already and their work must stop at once.
    fn take_assignment_lost(&mut self) -> bool {
        false
    }
    /// How many partitions the topic has on the broker (`None` where the bus does not say).
    fn partition_count(&self) -> Result<Option<i32>, BusError> {
        Ok(None)
    }
    /// What is left to read (`None` where the bus does not say). Asks the broker, so it is
    /// for when the member is idle, not for every poll.
    fn backlog(&mut self) -> Result<Option<Backlog>, BusError> {
        Ok(None)
    }
}

/// Records left to read, as one group member sees them: an idle member has read its own
/// partitions to the end, or holds none (a rebalance under way) while records are left that
/// a member may still be reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Partitions this member holds.
    pub held: usize,
    /// Records after this member's read position in the partitions it holds.
    pub held_unread: u64,
    /// Records after the group's committed offsets in the partitions it does not hold.
    pub elsewhere: u64,
}

/// Parsed bus URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusUrl {
    Memory { name: String },
    Kafka { brokers: String },
}

impl BusUrl {
    pub fn parse(url: &str) -> Result<Self, BusError> {
        let bad = |reason: &str| BusError::Url { url: url.to_owned(), reason: reason.to_owned() };
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(BusUrl::Memory { name: if name.is_empty() { "default".into() } else { name.to_owned() } });
        }
        if let Some(brokers) = url.strip_prefix("kafka://") {
            let brokers = brokers.trim_end_matches('/');
            if brokers.is_empty() {
                return Err(bad("no broker address"));
            }
            for b in brokers.split(',') {
                let (host, port) = b.rsplit_once(':').ok_or_else(|| bad("each broker needs host:port"))?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(bad(&format!("`{b}` is not host:port")));
                }
            }
            return Ok(BusUrl::Kafka { brokers: brokers.to_owned() });
        }
        Err(bad("scheme must be memory:// or kafka://"))
    }
}

/// Opens a producer for the configured bus.
pub fn open_producer(config: &BusConfig) -> Result<Box<dyn EventProducer>, BusError> {
    match BusUrl::parse(&config.url)? {
        BusUrl::Memory { name } => Ok(Box::new(MemoryBus::named(&name, config.partitions).producer(&config.topic))),
        BusUrl::Kafka { brokers } => Ok(Box::new(KafkaProducer::open(&brokers, config)?)),
    }
}

/// Opens a consumer in `group` for the configured topic.
pub fn open_consumer(config: &BusConfig, group: &str) -> Result<Box<dyn RecordConsumer>, BusError> {
    match BusUrl::parse(&config.url)? {
        BusUrl::Memory { name } => {
            Ok(Box::new(MemoryBus::named(&name, config.partitions).consumer(&config.topic, group)))
        }
        BusUrl::Kafka { brokers } => Ok(Box::new(KafkaConsumer::open(&brokers, config, group)?)),
    }
}

/// Stable partition for a key (FNV-1a): the in-process bus's, and the unit by which workers
/// share cameras (every worker maps a camera id to the same partition).
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(BusUrl::parse("memory://").unwrap(), BusUrl::Memory { name: "default".into() });
        assert_eq!(
            BusUrl::parse("kafka://127.0.0.1:9092,b:9093").unwrap(),
            BusUrl::Kafka { brokers: "127.0.0.1:9092,b:9093".into() }
        );
        for bad in ["kafka://", "kafka://host", "kafka://h:port", "http://x", "memory"] {
            let err = BusUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
