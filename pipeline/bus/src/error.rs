use std::path::PathBuf;

/// Everything that can go wrong publishing or consuming events.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus URL cannot be used.
    #[error("bus url `{url}`: {reason}")]
    Url { url: String, reason: String },
    /// The outage buffer is full: the broker has been unreachable for too long.
    #[error(
        "event spool {} is full ({bytes} of {limit} bytes, {pending} events waiting): the broker at {brokers} \
         has not accepted events; they are kept and will be sent when it returns",
        dir.display()
    )]
    SpoolFull { dir: PathBuf, bytes: u64, limit: u64, pending: u64, brokers: String },
    /// Another process (or handle) holds this spool directory.
    #[error("event spool {} is in use by another process", dir.display())]
    SpoolInUse { dir: PathBuf },
    /// A record larger than the spool stores.
    #[error("event for `{key}` is {bytes} bytes, over the spool's limit of {limit} bytes; not sent")]
    RecordTooLarge { key: String, bytes: usize, limit: usize },
    /// An event larger than the broker takes (`bus.max-event-bytes`); refused before it is spooled.
    #[error("event {event_id} of stream `{stream}` is {bytes} bytes, over bus.max-event-bytes = {limit}; not sent")]
    EventTooLarge { stream: String, event_id: String, bytes: usize, limit: usize },
    /// Reading or writing the spool failed.
    #[error("event spool {}: {reason}", path.display())]
    Spool { path: PathBuf, reason: String },
    /// Events were not acknowledged in time; they stay in the spool.
    #[error("{pending} events not acknowledged by {brokers} within {timeout_s} s; they stay in {} and are sent on the next run", spool.display())]
    FlushTimeout { pending: u64, brokers: String, timeout_s: u64, spool: PathBuf },
    /// The Kafka client reported an error.
    #[error("kafka {brokers}: {operation}: {reason}")]
    Kafka { brokers: String, operation: String, reason: String },
}
