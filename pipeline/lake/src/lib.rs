//! Per-minute aggregates on event time and the Parquet files analysts query.
//!
//! Schemas (Arrow; timestamps are microseconds, UTC; `minute` is the start of the minute):
//!
//! `line_counts`: `stream` Utf8, `line` Utf8, `minute` Timestamp(µs, UTC), `in_count` Int64,
//! `out_count` Int64 — one row per line per minute the stream covers, zeros included.
//!
//! `zone_occupancy`: `stream` Utf8, `zone` Utf8, `minute` Timestamp(µs, UTC), `frames` Int64
//! (frames sampled in the minute), `peak` Int64 (most people inside at once),
//! `mean_occupancy` Float64 (people inside, averaged over the frames), `entries` Int64,
//! `exits` Int64, `mean_dwell_s` Float64 (null when no visit ended in the minute),
//! `total_dwell_s` Float64 — dwell is attributed to the minute the visit ended.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod aggregate;
mod compact;
mod error;
mod parquet_io;
pub mod query;
mod retention;
mod service;
mod store;
pub mod tables;
mod window;

pub use aggregate::{MinuteAggregator, line_counts_schema, zone_occupancy_schema};
pub use compact::{CompactStats, compact};
pub use error::LakeError;
pub use parquet_io::{read_parquet, write_parquet_atomic};
pub use retention::{LakePurge, SEVEN_YEARS_DAYS, purge_expired};
pub use service::{LakeConfig, LakeStats, StopWhen, run};
pub use store::{LakeStore, S3Settings};
pub use window::{ClosedWindow, Disposition, WindowKey, WindowedAggregator};

/// Microseconds in a minute.
pub const MINUTE_US: i64 = 60_000_000;

/// Start of the minute containing `time_us`.
pub fn minute_of(time_us: i64) -> i64 {
    time_us.div_euclid(MINUTE_US).saturating_mul(MINUTE_US)
}
