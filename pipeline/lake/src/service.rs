//! `retail-ai lake`: the long-running aggregator. Joins a consumer group, aggregates events
//! into per-minute windows, writes them as Parquet, and commits offsets only after the files
//! are durable. Malformed messages are counted, logged with partition and offset, and copied
//! to the dead-letter topic; the aggregator keeps going.

use std::time::{Duration, Instant};

use retail_bus::{BusConfig, DecodeError, EventProducer, RecordConsumer, decode_event};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::{Disposition, LakeError, LakeStore, S3Settings, WindowedAggregator};

/// `[lake]` section of the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LakeConfig {
    /// Where the Parquet files go: a directory (default `lake`), `file:///dir` or
    /// `s3://bucket/prefix`.
    pub url: String,
    pub s3: S3Settings,
    /// Consumer group of the aggregators.
    pub group: String,
    /// How long after a minute ends its late events are still folded in.
    pub lateness_s: u64,
    /// With no new events for this long, every open minute is written (processing-time
    /// trigger, so a quiet camera's last minutes do not wait forever).
    pub idle_flush_s: u64,
    /// Records fetched per poll; offsets are committed after each batch.
    pub batch_records: usize,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            url: "lake".into(),
            s3: S3Settings::default(),
            group: "retail-lake".into(),
            lateness_s: 120,
            idle_flush_s: 30,
            batch_records: 1000,
        }
    }
}

/// Counters of one run, also exported as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LakeStats {
    pub records: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub late: u64,
    pub dead_letters: u64,
    pub windows_written: u64,
}

/// When [`run`] returns.
#[derive(Clone, Copy, Debug)]
pub enum StopWhen {
    /// Never (a service); stops only on error.
    Never,
    /// After this long without records, having written everything.
    Idle(Duration),
}

/// Runs the aggregator until `stop` says so.
pub async fn run(
    config: &LakeConfig,
    bus: &BusConfig,
    consumer: &mut dyn RecordConsumer,
    dead_letters: &mut dyn EventProducer,
    store: &LakeStore,
    stop: StopWhen,
) -> Result<LakeStats, LakeError> {
    let mut agg = WindowedAggregator::new(config.lateness_s as i64 * 1_000_000);
    let mut stats = LakeStats::default();
    let started = Instant::now();
    // A killed predecessor holds the partitions until its session times out, and a member
    // left without partitions rejoins after two session timeouts (retail_bus::kafka).
    let join_grace = Duration::from_secs(4 * bus.session_timeout_s + 10);
    let mut last_record = Instant::now();
    let mut seen_any = false;
    let idle_flush = Duration::from_secs(config.idle_flush_s);
    info!(lake = store.url(), topic = %bus.topic, group = %config.group, "aggregating");
    loop {
        let records = consumer.poll(config.batch_records.max(1), Duration::from_millis(500))?;
        let idle = last_record.elapsed();
        if !records.is_empty() {
            last_record = Instant::now();
            seen_any = true;
        }
        for r in &records {
            stats.records += 1;
            let event = match decode_event(&r.payload) {
                Ok(e) => e,
                Err(e) => {
                    dead_letter(dead_letters, &bus.dead_letter_topic, r, &e)?;
                    stats.dead_letters += 1;
                    agg.skip(r.partition, r.offset);
                    continue;
                }
            };
            let mut disposition = agg.offer(r.partition, r.offset, event.clone());
            if let Disposition::NeedsLookup(key) = disposition {
                let ids = store.window_ids(&key).await?;
                agg.resolve(key, ids);
                disposition = agg.offer(r.partition, r.offset, event);
            }
            match disposition {
                Disposition::Accepted => stats.accepted += 1,
                Disposition::Duplicate => {
                    stats.duplicates += 1;
                    metrics::counter!("retail_lake_duplicates_total").increment(1);
                }
                Disposition::Late => {
                    stats.late += 1;
                    metrics::counter!("retail_lake_late_events_total").increment(1);
                }
                Disposition::NeedsLookup(_) => unreachable!("resolved above"),
            }
        }
        metrics::counter!("retail_lake_records_total").increment(records.len() as u64);
        // After a rebalance, what was read from partitions now held elsewhere is neither
        // written nor committed here: their new holder reads it again.
        if let Some(held) = consumer.assignment() {
            agg.retain_partitions(&held);
        }
        let quiet = records.is_empty() && idle >= idle_flush;
        // Joining a consumer group takes a few seconds: idleness before the first record only
        // counts after a grace period.
        let stopping = matches!(stop, StopWhen::Idle(d)
            if records.is_empty() && idle >= d && (seen_any || started.elapsed() >= join_grace.max(d)));
        for w in agg.take_closed(quiet || stopping) {
            store.write_window(&w).await?;
            agg.written_ok(&w.key);
            stats.windows_written += 1;
            metrics::counter!("retail_lake_windows_written_total").increment(1);
            debug!(tenant = %w.key.tenant, stream = %w.key.stream, minute_us = w.key.minute_us, events = w.events.len(), "window written");
        }
        let late = agg.take_late();
        if !late.is_empty() {
            store.write_late(&late).await?;
        }
        // Only now, with everything before these offsets durable, may the group move on.
        // A failed commit loses nothing (the records come again and are dropped by event id);
        // it is retried on the next turn, and only the last one before stopping must succeed.
        match consumer.commit(&agg.committable()) {
            Err(e) if !stopping => {
                warn!(error = %e, "offset commit failed; retrying");
                metrics::counter!("retail_lake_commit_failures_total").increment(1);
            }
            result => result?,
        }
        if stopping {
            info!(?stats, "idle: everything written, stopping");
            return Ok(stats);
        }
    }
}

fn dead_letter(
    producer: &mut dyn EventProducer,
    topic: &str,
    r: &retail_bus::Record,
    error: &DecodeError,
) -> Result<(), LakeError> {
    warn!(partition = r.partition, offset = r.offset, %error, "malformed message sent to the dead-letter topic");
    metrics::counter!("retail_lake_dead_letters_total").increment(1);
    producer.send_raw(topic, r.key.as_deref(), &r.payload)?;
    Ok(())
}
