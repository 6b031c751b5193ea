//! `retail-ai lake`: the long-running aggregator. Joins a consumer group, aggregates events
//! into per-minute windows, writes them as Parquet, and commits offsets only after the files
//! are durable. Malformed messages are counted, logged with partition and offset, and copied
//! to the dead-letter topic; the aggregator keeps going.

use std::time::{Duration, Instant};

use retail_bus::{Backlog, BusConfig, EventProducer, Record, RecordConsumer, decode_event};
use retail_core::Event;
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
    /// A stream that sent nothing for this long has its open minutes written (processing-time
    /// trigger, per stream, so a camera that stopped does not wait for its own next event).
    /// Should it send again in time for those minutes, they are reopened and rewritten, not
    /// turned late.
    pub idle_flush_s: u64,
    /// Records fetched per poll; offsets are committed after each batch.
    pub batch_records: usize,
    /// Events more than this ahead of the aggregator's clock (a `--start-time` typo, a
    /// corrupt producer) go to the dead-letter topic instead of moving their stream's
    /// watermark and making every real event after them late.
    pub max_future_skew_s: u64,
    /// Events older than this go to the dead-letter topic. Generous, because uploaded
    /// footage can be old; it keeps times like 0 or the ends of i64 out of the lake.
    pub max_age_days: u64,
    /// Days the lake keeps a partition after its date (7 years: the privacy policy's term for
    /// aggregated analytics); the aggregator deletes older ones on start and once a day.
    /// Must be more than `max-age-days`.
    pub retention_days: u64,
    /// Memory one `retail-ai query` may use for joins, sorts and aggregations.
    pub query_memory_mb: usize,
    /// Time one `retail-ai query` may run.
    pub query_timeout_s: u64,
}

impl LakeConfig {
    /// Cross-field rules.
    pub fn validate(&self) -> Result<(), String> {
        if self.retention_days <= self.max_age_days {
            return Err(format!(
                "lake.retention-days ({}) must be more than lake.max-age-days ({}): events that old would be written and then purged",
                self.retention_days, self.max_age_days
            ));
        }
        Ok(())
    }

    pub fn query_limits(&self) -> crate::query::QueryLimits {
        crate::query::QueryLimits {
            memory_bytes: self.query_memory_mb.saturating_mul(1 << 20),
            timeout: Duration::from_secs(self.query_timeout_s),
        }
    }
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
            max_future_skew_s: 86_400,
            max_age_days: 5 * 366,
            retention_days: crate::SEVEN_YEARS_DAYS,
            query_memory_mb: 1024,
            query_timeout_s: 120,
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

/// How long written windows' ids stay in memory beyond the lateness; older ones are looked
/// up in the store when a repeat arrives.
const REMEMBER_WRITTEN_US: i64 = 10 * crate::MINUTE_US;
/// How long a quiet stream's written windows stay in memory (processing time).
const FORGET_QUIET_STREAM: Duration = Duration::from_secs(600);

/// How often a running aggregator purges partitions past `lake.retention-days`.
const PURGE_EVERY: Duration = Duration::from_secs(86_400);

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
    let mut dlq = DeadLetters::new(&bus.dead_letter_topic);
    let started = Instant::now();
    // A killed predecessor holds the partitions until its session times out, and a member
    // left without partitions rejoins after two session timeouts (retail_bus::kafka).
    let join_grace = Duration::from_secs(4 * bus.session_timeout_s + 10);
    let mut last_record = Instant::now();
    let mut seen_any = false;
    let mut waits = IdleWaits::new(Duration::from_secs(bus.session_timeout_s));
    let idle_flush = Duration::from_secs(config.idle_flush_s);
    let bounds = TimeBounds {
        future_us: config.max_future_skew_s.saturating_mul(1_000_000),
        past_us: config.max_age_days.saturating_mul(86_400_000_000),
    };
    info!(lake = store.url(), topic = %bus.topic, group = %config.group, "aggregating");
    let mut purged_at: Option<Instant> = None;
    loop {
        if purged_at.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            // A failed purge loses nothing: it is retried at the next interval, and the
            // aggregation goes on.
            let today = chrono::Utc::now().date_naive();
            if let Err(e) = crate::purge_expired(store, config.retention_days, today).await {
                warn!(error = %e, "lake retention purge failed; retried in a day");
                metrics::counter!("retail_lake_purge_failures_total").increment(1);
            }
            purged_at = Some(Instant::now());
        }
        let records = consumer.poll(config.batch_records.max(1), Duration::from_millis(500))?;
        let idle = last_record.elapsed();
        if !records.is_empty() {
            last_record = Instant::now();
            seen_any = true;
        }
        let now_us = chrono::Utc::now().timestamp_micros();
        for r in &records {
            stats.records += 1;
            match decode_event(&r.payload).map_err(|e| e.to_string()).and_then(|e| bounds.check(e, now_us)) {
                Ok(event) => offer(&mut agg, store, r, event, &mut stats).await?,
                Err(reason) => {
                    dlq.add(r, reason);
                    stats.dead_letters += 1;
                    agg.skip(r.partition, r.offset);
                }
            }
        }
        metrics::counter!("retail_lake_records_total").increment(records.len() as u64);
        // Dead letters are on their topic before the offsets that skip them are committed.
        dlq.deliver(dead_letters).await;
        // After a rebalance, what was read from partitions now held elsewhere is neither
        // written nor committed here: their new holder reads it again.
        if let Some(held) = consumer.assignment() {
            agg.retain_partitions(&held);
        }
        let stopping = match stop {
            StopWhen::Idle(d) if records.is_empty() && idle >= d => {
                waits.done(consumer, seen_any || started.elapsed() >= join_grace.max(d), Instant::now())
            }
            _ => false,
        };
        write_closed(&mut agg, store, stopping, idle_flush, &mut stats).await?;
        agg.forget_written(config.lateness_s as i64 * 1_000_000 + REMEMBER_WRITTEN_US, FORGET_QUIET_STREAM);
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

/// When an idle `--until-idle` run is done. Idleness alone is not enough in a group: a
/// rebalance leaves a member without records for longer than a session timeout, and a member
/// that stopped then would leave the rest of its partitions unread until the next run.
struct IdleWaits {
    session: Duration,
    /// The last backlog the bus told, and since when it has not changed.
    seen: Option<(Backlog, Instant)>,
    asked: Option<Instant>,
    /// Since when asking has failed.
    failing: Option<Instant>,
}

impl IdleWaits {
    /// The broker is asked at most this often while idle.
    const ASK_EVERY: Duration = Duration::from_secs(1);

    fn new(session: Duration) -> Self {
        IdleWaits { session, seen: None, asked: None, failing: None }
    }

    /// Whether a member idle for the `--until-idle` time is done. `legacy` is the
    /// answer for a bus that cannot tell its backlog: whether the member read something, or
    /// waited long enough to have joined.
    fn done(&mut self, consumer: &mut dyn RecordConsumer, legacy: bool, now: Instant) -> bool {
        if self.asked.is_some_and(|t| now.saturating_duration_since(t) < Self::ASK_EVERY) {
            return false;
        }
        self.asked = Some(now);
        match consumer.backlog().transpose() {
            None => legacy,
            Some(backlog) => self.decide(backlog, now),
        }
    }

    fn decide(&mut self, backlog: Result<Backlog, retail_bus::BusError>, now: Instant) -> bool {
        // A dead member's partitions come free after its session times out and one rebalance;
        // a member left out of a rebalance rejoins after backoffs of 2, 4 and 8 sessions.
        let (others, at_most) = (2 * self.session, 16 * self.session + Duration::from_secs(10));
        let b = match backlog {
            Ok(b) => b,
            Err(e) => {
                // The broker away: as long as anything else that does not move.
                let since = *self.failing.get_or_insert(now);
                warn!(error = %e, failing_s = now.saturating_duration_since(since).as_secs(), "cannot tell what is left to read");
                return now.saturating_duration_since(since) >= at_most;
            }
        };
        self.failing = None;
        // How long nothing has moved: what is left, and who holds it.
        let steady = match self.seen {
            Some((prev, since)) if prev == b => now.saturating_duration_since(since),
            _ => {
                self.seen = Some((b, now));
                Duration::ZERO
            }
        };
        let done = match b {
            // Its own partitions read to the end, and nothing left elsewhere, or nothing moved
            // there for two sessions (a member killed before its session ran out holds them).
            Backlog { held: 1.., held_unread: 0, elsewhere } => elsewhere == 0 || steady >= others,
            Backlog { held: 0, elsewhere: 0, .. } => true,
            // Records left that no poll brings (a rebalance under way, a partition that keeps
            // failing): waited for, but not for ever.
            _ => steady >= at_most,
        };
        if done && (b.held_unread > 0 || b.elsewhere > 0) {
            warn!(
                held = b.held,
                left_in_held = b.held_unread,
                left_elsewhere = b.elsewhere,
                unchanged_s = steady.as_secs(),
                "stopping with records left that no member read; the next run reads them"
            );
        } else if !done {
            debug!(?b, "idle, but records are left for the group: waiting");
        }
        done
    }
}

/// How far from the aggregator's clock an event time may be, in µs.
struct TimeBounds {
    future_us: u64,
    past_us: u64,
}

impl TimeBounds {
    /// The event, or why its time is refused.
    fn check(&self, event: Event, now_us: i64) -> Result<Event, String> {
        let ahead = event.time_us > now_us;
        let skew = event.time_us.abs_diff(now_us);
        if skew <= if ahead { self.future_us } else { self.past_us } {
            return Ok(event);
        }
        let what = if ahead {
            format!("ahead of this aggregator's clock (lake.max-future-skew-s = {})", self.future_us / 1_000_000)
        } else {
            format!("old (lake.max-age-days = {})", self.past_us / 86_400_000_000)
        };
        let when = chrono::DateTime::from_timestamp_micros(event.time_us)
            .map_or_else(|| format!("{} µs", event.time_us), |t| t.to_rfc3339());
        Err(format!("event time {when} of stream `{}` is {} s {what}", event.stream, skew / 1_000_000))
    }
}

/// Offers one decoded event to the aggregator, looking its window up in the store if needed.
async fn offer(
    agg: &mut WindowedAggregator,
    store: &LakeStore,
    r: &Record,
    event: Event,
    stats: &mut LakeStats,
) -> Result<(), LakeError> {
    let mut disposition = agg.offer(r.partition, r.offset, event.clone());
    if let Disposition::NeedsLookup(key) = disposition {
        let written = store.window_events(&key).await?;
        agg.resolve(key, written);
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
        Disposition::NeedsLookup(key) => {
            return Err(LakeError::Store {
                url: store.url().to_owned(),
                message: format!("window {key:?} still unresolved after its lookup"),
            });
        }
    }
    Ok(())
}

/// Writes the windows that closed on event time, those of streams quiet for `idle` (or all
/// open ones with `all`), and the late events.
async fn write_closed(
    agg: &mut WindowedAggregator,
    store: &LakeStore,
    all: bool,
    idle: Duration,
    stats: &mut LakeStats,
) -> Result<(), LakeError> {
    for w in agg.take_closed(all, Some(idle)) {
        store.write_window(&w).await?;
        agg.written_ok(&w.key);
        stats.windows_written += 1;
        metrics::counter!("retail_lake_windows_written_total").increment(1);
        debug!(tenant = %w.key.tenant, stream = %w.key.stream, minute_us = w.key.minute_us, events = w.events.len(), "window written");
    }
    for w in agg.take_finalize() {
        store.write_window(&w).await?;
    }
    let late = agg.take_late();
    if !late.is_empty() {
        store.write_late(&late).await?;
    }
    Ok(())
}

/// Messages that are not events this build accepts, gathered per batch and copied to the
/// dead-letter topic.
struct DeadLetters {
    topic: String,
    pending: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    /// First wait after a failed delivery; doubled up to [`DeadLetters::MAX_BACKOFF`].
    first_backoff: Duration,
}

impl DeadLetters {
    const MAX_BACKOFF: Duration = Duration::from_secs(60);

    fn new(topic: &str) -> Self {
        DeadLetters { topic: topic.to_owned(), pending: Vec::new(), first_backoff: Duration::from_millis(500) }
    }

    fn add(&mut self, r: &Record, reason: impl std::fmt::Display) {
        warn!(partition = r.partition, offset = r.offset, %reason, "malformed message sent to the dead-letter topic");
        metrics::counter!("retail_lake_dead_letters_total").increment(1);
        self.pending.push((r.key.clone(), r.payload.clone()));
    }

    /// Sends what was gathered, retrying with backoff for as long as it takes: an
    /// unreachable dead-letter topic holds the aggregator (and its commits) back, but never
    /// ends it, and no record is committed past before it is dead-lettered.
    async fn deliver(&mut self, producer: &mut dyn EventProducer) {
        if self.pending.is_empty() {
            return;
        }
        let mut backoff = self.first_backoff;
        loop {
            let records: Vec<(Option<&[u8]>, &[u8])> =
                self.pending.iter().map(|(k, p)| (k.as_deref(), p.as_slice())).collect();
            match producer.send_raw_batch(&self.topic, &records) {
                Ok(()) => break,
                Err(e) => {
                    warn!(topic = %self.topic, records = records.len(), error = %e, retry_in_ms = backoff.as_millis() as u64,
                          "dead-letter topic unreachable; retrying");
                    metrics::counter!("retail_lake_dead_letter_failures_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Self::MAX_BACKOFF);
                }
            }
        }
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);

    fn left(held: usize, held_unread: u64, elsewhere: u64) -> Option<Backlog> {
        Some(Backlog { held, held_unread, elsewhere })
    }

    /// `decide` at each (seconds from the first check, backlog or `None` for a failure to
    /// ask); the first time it says done.
    fn first_done(steps: &[(u64, Option<Backlog>)]) -> Option<u64> {
        let (t0, mut w) = (Instant::now(), IdleWaits::new(SESSION));
        let asked = |b: Option<Backlog>| {
            b.ok_or_else(|| retail_bus::BusError::Url { url: "kafka://x".into(), reason: "down".into() })
        };
        steps.iter().find(|(s, b)| w.decide(asked(*b), t0 + Duration::from_secs(*s))).map(|(s, _)| *s)
    }

    #[test]
    fn done_at_once_when_nothing_is_left() {
        assert_eq!(first_done(&[(0, left(3, 0, 0))]), Some(0));
        assert_eq!(first_done(&[(0, left(0, 0, 0))]), Some(0), "an empty topic");
    }

    #[test]
    fn records_elsewhere_wait_until_nothing_moved_for_two_sessions() {
        // A peer's uncommitted tail, or a killed member's partitions not yet handed over.
        let steps: Vec<_> = (0..40).map(|s| (s, left(3, 0, 500))).collect();
        assert_eq!(first_done(&steps), Some(20));
        // The count moving (a peer committing, a rebalance) restarts the wait.
        let moving: Vec<_> = (0..60).map(|s| (s, left(3, 0, if s < 15 { 500 } else { 200 }))).collect();
        assert_eq!(first_done(&moving), Some(35));
    }

    #[test]
    fn a_member_without_partitions_waits_for_the_group_but_not_for_ever() {
        let rebalance: Vec<_> = (0..200).map(|s| (s, if s < 30 { left(0, 0, 900) } else { left(6, 0, 0) })).collect();
        assert_eq!(first_done(&rebalance), Some(30));
        let never: Vec<_> = (0..400).map(|s| (s, left(0, 0, 900))).collect();
        assert_eq!(first_done(&never), Some(170), "16 sessions and 10 s");
    }

    #[test]
    fn a_partition_that_never_delivers_and_a_broker_away_end_the_wait_too() {
        let stuck: Vec<_> = (0..400).map(|s| (s, left(3, 40, 0))).collect();
        assert_eq!(first_done(&stuck), Some(170));
        let away: Vec<_> = (0..400).map(|s| (s, None)).collect();
        assert_eq!(first_done(&away), Some(170));
    }

    #[test]
    fn the_broker_is_asked_at_most_once_a_second() {
        struct Counting(usize);
        impl RecordConsumer for Counting {
            fn poll(&mut self, _: usize, _: Duration) -> Result<Vec<Record>, retail_bus::BusError> {
                Ok(Vec::new())
            }
            fn commit(&mut self, _: &[(i32, i64)]) -> Result<(), retail_bus::BusError> {
                Ok(())
            }
            fn backlog(&mut self) -> Result<Option<Backlog>, retail_bus::BusError> {
                self.0 += 1;
                Ok(Some(Backlog { held: 0, held_unread: 0, elsewhere: 1 }))
            }
        }
        let (t0, mut w, mut c) = (Instant::now(), IdleWaits::new(SESSION), Counting(0));
        for ms in (0..3000).step_by(100) {
            assert!(!w.done(&mut c, true, t0 + Duration::from_millis(ms)));
        }
        assert_eq!(c.0, 3);
    }
}
