//! The streaming aggregator's core, free of I/O: per-stream minute windows on event time,
//! deduplication by event id, lateness, and which offsets are safe to commit.
//!
//! Windows are per (tenant, stream, minute) and each stream has its own watermark (its latest
//! event time minus `lateness`). A stream's events sit in one partition in order, so its
//! watermark, and with it every late/on-time decision, is the same however the consumer
//! interleaves partitions, in a fault-free run and in a replay after a crash. A window is
//! handed out to be written once its stream's watermark passes its end. An event whose window
//! is past the watermark is late; one whose window was written is a duplicate if its id is
//! there (a redelivery) and late otherwise. Offsets are committed only up to the first event
//! not yet durable, so a crash replays exactly the events of windows that were not written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use retail_core::{Event, StreamId, TenantId};

use crate::minute_of;

/// A window's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub tenant: TenantId,
    pub stream: StreamId,
    /// Start of the minute, Unix microseconds.
    pub minute_us: i64,
}

/// A window ready to be written: its events, deduplicated, in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedWindow {
    pub key: WindowKey,
    pub events: Vec<Event>,
    /// Closed by its stream's watermark, for good. Otherwise written early (its stream went
    /// quiet, or the aggregator stops) and open to on-time events that come later.
    pub is_final: bool,
}

/// What became of one consumed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Accepted,
    Duplicate,
    /// Too late for its window; kept for the late table.
    Late,
    /// Its window's state must be looked up first (was it written before a restart?).
    NeedsLookup(WindowKey),
}

/// A window already written: its ids (for deduplication) and, while its stream's watermark
/// has not passed it (it was written early because the stream went quiet), its events, so
/// that an on-time event arriving later reopens it instead of being late.
struct Written {
    ids: HashSet<String>,
    events: Option<Vec<Event>>,
}

#[derive(Default)]
struct OpenWindow {
    events: Vec<Event>,
    ids: HashSet<String>,
    /// Lowest offset per partition among this window's events.
    min_offsets: HashMap<i32, i64>,
}

/// See the module docs.
pub struct WindowedAggregator {
    lateness_us: i64,
    open: BTreeMap<WindowKey, OpenWindow>,
    /// Windows already written (loaded on demand after a restart).
    written: HashMap<WindowKey, Written>,
    /// When each stream's last event arrived (processing time), for the idle timeout.
    last_arrival: HashMap<(TenantId, StreamId), Instant>,
    /// Latest event time per stream.
    max_time_us: HashMap<(TenantId, StreamId), i64>,
    late: Vec<(i32, i64, Event)>,
    /// See [`take_finalize`](Self::take_finalize).
    finalize: Vec<ClosedWindow>,
    /// Next offset to read per partition (one past the last consumed record).
    consumed: HashMap<i32, i64>,
    /// The partition each stream's events came from.
    stream_partition: HashMap<(TenantId, StreamId), i32>,
}

impl WindowedAggregator {
    pub fn new(lateness_us: i64) -> Self {
        WindowedAggregator {
            lateness_us,
            open: BTreeMap::new(),
            written: HashMap::new(),
            last_arrival: HashMap::new(),
            max_time_us: HashMap::new(),
            late: Vec::new(),
            finalize: Vec::new(),
            consumed: HashMap::new(),
            stream_partition: HashMap::new(),
        }
    }

    /// Forgets everything read from partitions this member no longer holds: their open
    /// windows are neither written nor committed here, since the member that now holds them
    /// reads them again from the last commit. Windows already written stay known.
    pub fn retain_partitions(&mut self, held: &[i32]) {
        let gone: HashSet<i32> = self.consumed.keys().filter(|p| !held.contains(p)).copied().collect();
        if gone.is_empty() {
            return;
        }
        self.consumed.retain(|p, _| !gone.contains(p));
        self.open.retain(|_, w| !w.min_offsets.keys().all(|p| gone.contains(p)));
        for w in self.open.values_mut() {
            w.min_offsets.retain(|p, _| !gone.contains(p));
        }
        let streams: Vec<(TenantId, StreamId)> =
            self.stream_partition.iter().filter(|(_, p)| gone.contains(p)).map(|(s, _)| s.clone()).collect();
        // What this member wrote for them may have been rewritten by the new holder since:
        // should they come back, the store is asked again.
        self.written.retain(|k, _| !streams.iter().any(|(t, s)| *t == k.tenant && *s == k.stream));
        for s in streams {
            self.stream_partition.remove(&s);
            self.max_time_us.remove(&s);
            self.last_arrival.remove(&s);
        }
    }

    fn is_closed(&self, key: &WindowKey) -> bool {
        // Saturating: event times are bounded before they get here, but a bound is config.
        self.max_time_us
            .get(&(key.tenant.clone(), key.stream.clone()))
            .is_some_and(|t| key.minute_us.saturating_add(crate::MINUTE_US) <= t.saturating_sub(self.lateness_us))
    }

    /// Tells the aggregator what a lookup found: `Some((events, reopenable))` if the window
    /// was written; one that is not reopenable takes no more events (they are late).
    pub fn resolve(&mut self, key: WindowKey, written: Option<(Vec<Event>, bool)>) {
        match written {
            Some((events, reopenable)) => {
                let ids = events.iter().map(|e| e.event_id.clone()).collect();
                let closed = self.is_closed(&key);
                if reopenable && closed {
                    self.finalize.push(ClosedWindow { key: key.clone(), events: events.clone(), is_final: true });
                }
                let events = (reopenable && !closed).then_some(events);
                self.written.insert(key, Written { ids, events });
            }
            // Closed and never written (everything in it came late): nothing to deduplicate
            // against, and it must not open again.
            None if self.is_closed(&key) => {
                self.written.insert(key, Written { ids: HashSet::new(), events: None });
            }
            None => {
                self.open.entry(key).or_default();
            }
        }
    }

    /// Notes that a record at (partition, offset) was consumed and carried nothing to keep
    /// (malformed and dead-lettered, or a duplicate).
    pub fn skip(&mut self, partition: i32, offset: i64) {
        let next = self.consumed.entry(partition).or_insert(offset.saturating_add(1));
        *next = (*next).max(offset.saturating_add(1));
    }

    /// Offers one event consumed at (partition, offset). On `NeedsLookup`, call
    /// [`resolve`](Self::resolve) for the key and offer the event again.
    pub fn offer(&mut self, partition: i32, offset: i64, event: Event) -> Disposition {
        let key = WindowKey {
            tenant: event.tenant.clone(),
            stream: event.stream.clone(),
            minute_us: minute_of(event.time_us),
        };
        let closed = self.is_closed(&key);
        if let Some(w) = self.written.get_mut(&key) {
            if w.ids.contains(&event.event_id) {
                self.advance(&key, event.time_us);
                self.skip(partition, offset);
                return Disposition::Duplicate;
            }
            if closed || w.events.is_none() {
                // A window written early that its watermark has now passed is rewritten as
                // final before this late event is committed: after a crash, the replay must
                // not reopen it and fold the event in as well.
                if let Some(events) = w.events.take() {
                    self.finalize.push(ClosedWindow { key: key.clone(), events, is_final: true });
                }
                self.skip(partition, offset);
                self.late.push((partition, offset, event));
                return Disposition::Late;
            }
            // Written early (its stream went quiet) and still on time: open it again; it is
            // rewritten whole when it closes.
            let w = self.written.remove(&key).expect("checked");
            let events = w.events.unwrap_or_default();
            self.open.insert(key.clone(), OpenWindow { events, ids: w.ids, min_offsets: HashMap::new() });
        }
        // A window neither open nor known to be written may have been written before a
        // restart, or forgotten here to bound memory: the store knows.
        let Some(window) = self.open.get(&key) else { return Disposition::NeedsLookup(key) };
        if window.ids.contains(&event.event_id) {
            self.advance(&key, event.time_us);
            self.skip(partition, offset);
            return Disposition::Duplicate;
        }
        if closed {
            self.skip(partition, offset);
            self.late.push((partition, offset, event));
            return Disposition::Late;
        }
        self.advance(&key, event.time_us);
        self.consumed.entry(partition).and_modify(|n| *n = (*n).max(offset + 1)).or_insert(offset + 1);
        self.stream_partition.insert((key.tenant.clone(), key.stream.clone()), partition);
        self.last_arrival.insert((key.tenant.clone(), key.stream.clone()), Instant::now());
        let window = self.open.get_mut(&key).expect("checked");
        window.ids.insert(event.event_id.clone());
        let min = window.min_offsets.entry(partition).or_insert(offset);
        *min = (*min).min(offset);
        window.events.push(event);
        Disposition::Accepted
    }

    /// Moves the stream's event-time high mark. Repeats move it too: a replay after a crash
    /// must rebuild the watermark the first reading had, or it would reopen windows that
    /// were already closed.
    fn advance(&mut self, key: &WindowKey, time_us: i64) {
        let t = self.max_time_us.entry((key.tenant.clone(), key.stream.clone())).or_insert(time_us);
        *t = (*t).max(time_us);
    }

    /// Windows written early whose watermark has passed since, to be written again as final
    /// before the next commit.
    pub fn take_finalize(&mut self) -> Vec<ClosedWindow> {
        std::mem::take(&mut self.finalize)
    }

    /// Windows the watermark has passed, those of streams that sent nothing for `idle`
    /// (processing time), or all of them with `all`; they stay open until
    /// [`written_ok`](Self::written_ok) is called for each once it is durable.
    pub fn take_closed(&mut self, all: bool, idle: Option<Duration>) -> Vec<ClosedWindow> {
        let quiet = |k: &WindowKey| {
            idle.is_some_and(|idle| {
                self.last_arrival.get(&(k.tenant.clone(), k.stream.clone())).is_none_or(|t| t.elapsed() >= idle)
            })
        };
        let keys: Vec<WindowKey> = self.open.keys().filter(|k| all || self.is_closed(k) || quiet(k)).cloned().collect();
        keys.into_iter()
            .map(|key| {
                let w = self.open.get(&key).expect("listed");
                let is_final = self.is_closed(&key);
                ClosedWindow { key, events: w.events.clone(), is_final }
            })
            .collect()
    }

    /// Marks a window durable: it leaves the open set and its ids are remembered (with its
    /// events, if the watermark has not passed it yet).
    pub fn written_ok(&mut self, key: &WindowKey) {
        if let Some(w) = self.open.remove(key) {
            let events = (!self.is_closed(key)).then_some(w.events);
            self.written.insert(key.clone(), Written { ids: w.ids, events });
        }
    }

    /// Late events gathered since the last call, with their (partition, offset).
    pub fn take_late(&mut self) -> Vec<(i32, i64, Event)> {
        std::mem::take(&mut self.late)
    }

    /// Per partition, the offset up to which everything consumed is durable (the next
    /// offset to read after a restart). Late events must be written before committing.
    pub fn committable(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .consumed
            .iter()
            .map(|(&p, &next)| {
                let pending = self.open.values().filter_map(|w| w.min_offsets.get(&p)).min().copied();
                let late = self.late.iter().filter(|(lp, _, _)| *lp == p).map(|(_, o, _)| *o).min();
                (p, [Some(next), pending, late].into_iter().flatten().min().expect("next is always there"))
            })
            .collect();
        out.sort_unstable();
        out
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Windows whose ids are held for deduplication.
    pub fn remembered_windows(&self) -> usize {
        self.written.len()
    }

    /// Forgets the ids of written windows more than `keep_us` behind their stream's
    /// watermark, bounding memory over uptime. Nothing is lost: an event for a forgotten
    /// window makes the aggregator look the window up in the store again.
    /// Those of streams that sent nothing for `quiet` (processing time; a camera that stopped,
    /// an uploaded file that ended) are forgotten too.
    pub fn forget_written(&mut self, keep_us: i64, quiet: Duration) {
        let lateness = self.lateness_us;
        let (max_time, last_arrival) = (&self.max_time_us, &self.last_arrival);
        self.written.retain(|k, _| {
            let stream = (k.tenant.clone(), k.stream.clone());
            let recent = max_time.get(&stream).is_none_or(|t| {
                k.minute_us.saturating_add(crate::MINUTE_US) > t.saturating_sub(lateness).saturating_sub(keep_us)
            });
            recent && last_arrival.get(&stream).is_none_or(|t| t.elapsed() < quiet)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MINUTE_US;
    use retail_core::EventKind;

    fn ev(tenant: &str, t_us: i64, track: u64) -> Event {
        Event::new(
            TenantId(tenant.into()),
            "cam".into(),
            track,
            (t_us as u64).wrapping_mul(1000),
            t_us,
            EventKind::ZoneEnter { zone: "z".into() },
        )
    }

    fn offer(a: &mut WindowedAggregator, p: i32, o: i64, e: Event) -> Disposition {
        match a.offer(p, o, e.clone()) {
            Disposition::NeedsLookup(k) => {
                a.resolve(k, None);
                a.offer(p, o, e)
            }
            d => d,
        }
    }

    #[test]
    fn windows_close_after_lateness_and_commit_waits_for_them() {
        let mut a = WindowedAggregator::new(30_000_000);
        assert_eq!(offer(&mut a, 0, 0, ev("t", 10 * MINUTE_US + 5, 1)), Disposition::Accepted);
        assert_eq!(offer(&mut a, 0, 1, ev("t", 11 * MINUTE_US + 5, 2)), Disposition::Accepted);
        assert!(a.take_closed(false, None).is_empty(), "minute 10 is within lateness");
        assert_eq!(a.committable(), vec![(0, 0)]);
        // Event time passes 11:30 -> minute 10 closes.
        assert_eq!(offer(&mut a, 0, 2, ev("t", 11 * MINUTE_US + 31_000_000, 3)), Disposition::Accepted);
        let closed = a.take_closed(false, None);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].key.minute_us, 10 * MINUTE_US);
        assert_eq!(a.committable(), vec![(0, 0)], "not durable yet");
        a.written_ok(&closed[0].key);
        assert_eq!(a.committable(), vec![(0, 1)], "offset 1 is in the still-open minute 11");
        // A late event for minute 10 that is not a repeat goes to the late table.
        assert_eq!(offer(&mut a, 0, 3, ev("t", 10 * MINUTE_US + 9, 4)), Disposition::Late);
        // Late also while minute 10 is merely past the watermark, not yet written.
        assert_eq!(offer(&mut a, 0, 5, ev("t", 11 * MINUTE_US + 10 * 1_000_000, 9)), Disposition::Accepted);
        // A repeat of one written to minute 10 is a duplicate.
        assert_eq!(offer(&mut a, 0, 4, ev("t", 10 * MINUTE_US + 5, 1)), Disposition::Duplicate);
        assert_eq!(a.take_late().len(), 1);
    }

    #[test]
    fn duplicates_in_open_window_are_dropped_and_tenants_are_separate() {
        let mut a = WindowedAggregator::new(0);
        assert_eq!(offer(&mut a, 0, 0, ev("a", 5, 1)), Disposition::Accepted);
        assert_eq!(offer(&mut a, 1, 0, ev("a", 5, 1)), Disposition::Duplicate);
        assert_eq!(offer(&mut a, 1, 1, ev("b", 5, 1)), Disposition::Accepted);
        // Another stream far ahead in time does not make this one's events late.
        let other = Event::new(
            TenantId("a".into()),
            "cam2".into(),
            9,
            0,
            50 * MINUTE_US,
            EventKind::ZoneEnter { zone: "z".into() },
        );
        assert_eq!(offer(&mut a, 2, 0, other), Disposition::Accepted);
        assert_eq!(offer(&mut a, 0, 1, ev("a", 7, 2)), Disposition::Accepted);
        let closed = a.take_closed(true, None);
        assert_eq!(closed.len(), 3);
        assert_eq!(closed.iter().map(|w| w.events.len()).sum::<usize>(), 4);
    }

    #[test]
    fn restart_finds_written_window_and_drops_repeats() {
        let mut a = WindowedAggregator::new(0);
        let e = ev("t", 3 * MINUTE_US + 1, 7);
        let key = match a.offer(0, 10, e.clone()) {
            Disposition::NeedsLookup(k) => k,
            d => panic!("{d:?}"),
        };
        // The store says minute 3 was written before the crash, with this event in it.
        a.resolve(key, Some((vec![e.clone()], true)));
        assert_eq!(a.offer(0, 10, e), Disposition::Duplicate);
        assert_eq!(a.committable(), vec![(0, 11)]);
    }

    #[test]
    fn partitions_moved_to_another_member_are_forgotten() {
        let mut a = WindowedAggregator::new(0);
        let on = |stream: &str, t: i64, track: u64| {
            Event::new(TenantId("t".into()), stream.into(), track, 0, t, EventKind::ZoneEnter { zone: "z".into() })
        };
        assert_eq!(offer(&mut a, 0, 7, on("door", 5, 1)), Disposition::Accepted);
        assert_eq!(offer(&mut a, 1, 3, on("till", 5, 2)), Disposition::Accepted);
        assert_eq!(a.committable(), vec![(0, 7), (1, 3)]);
        a.retain_partitions(&[0]);
        assert_eq!(a.committable(), vec![(0, 7)], "partition 1's progress is its new holder's to commit");
        let closed = a.take_closed(true, None);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].key.stream, StreamId("door".into()));
        // Partition 1 comes back later: its stream starts afresh from the committed offset.
        assert_eq!(offer(&mut a, 1, 3, on("till", 5, 2)), Disposition::Accepted);
        assert_eq!(a.committable(), vec![(0, 7), (1, 3)]);
    }

    #[test]
    fn event_times_at_the_ends_of_i64_do_not_panic() {
        let mut a = WindowedAggregator::new(120_000_000);
        for (o, t) in [i64::MAX, i64::MIN, i64::MAX - 1, 0, i64::MIN + 1].into_iter().enumerate() {
            offer(&mut a, 0, o as i64, ev("t", t, o as u64));
        }
        let closed = a.take_closed(true, None);
        assert!(!closed.is_empty());
        for w in &closed {
            a.written_ok(&w.key);
        }
        a.forget_written(0, Duration::from_secs(3600));
    }

    /// Dedup ids of written windows are dropped once far enough behind the watermark, so
    /// memory stays flat over uptime; a late repeat is still recognised through the store.
    #[test]
    fn written_windows_are_forgotten_but_repeats_still_caught() {
        let mut a = WindowedAggregator::new(60_000_000);
        let first = ev("t", 5, 1);
        for m in 0..500i64 {
            offer(&mut a, 0, m, ev("t", m * MINUTE_US + 5, m as u64 + 1));
            for w in a.take_closed(false, None) {
                a.written_ok(&w.key);
            }
            a.forget_written(5 * MINUTE_US, Duration::from_secs(3600));
            assert!(a.remembered_windows() <= 8, "minute {m}: {}", a.remembered_windows());
        }
        // The first minute's ids are gone from memory: its repeat needs a lookup ...
        let key = match a.offer(0, 900, first.clone()) {
            Disposition::NeedsLookup(k) => k,
            d => panic!("{d:?}"),
        };
        // ... and the store's answer makes it a duplicate, not a late event.
        a.resolve(key, Some((vec![first.clone()], true)));
        assert_eq!(a.offer(0, 900, first), Disposition::Duplicate);
        assert!(a.take_late().is_empty());
    }

    /// The same events, read with partitions interleaved in any order (each partition's own
    /// order kept, as Kafka does), give the same windows and the same late events.
    #[test]
    fn property_any_interleaving_gives_the_same_tables() {
        let mut events: Vec<(i32, Event)> = Vec::new();
        for (p, stream) in ["door", "till", "exit"].iter().enumerate() {
            let mut t = 0i64;
            for i in 0..300u64 {
                // Mostly forward in time, with stragglers up to 3 minutes back.
                t += 7_000_000;
                let time = if i % 17 == 0 { t - 180_000_000 } else { t };
                let kind = EventKind::ZoneEnter { zone: "z".into() };
                events.push((p as i32, Event::new(TenantId("t".into()), (*stream).into(), i, i, time, kind)));
            }
        }
        let mut reference = None;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..30 {
            let mut queues: Vec<Vec<&Event>> = vec![Vec::new(); 3];
            for (p, e) in &events {
                queues[*p as usize].push(e);
            }
            let mut next = [0usize; 3];
            let mut a = WindowedAggregator::new(60_000_000);
            let mut tables: BTreeMap<WindowKey, Vec<String>> = BTreeMap::new();
            let mut late: Vec<String> = Vec::new();
            while next.iter().zip(&queues).any(|(n, q)| *n < q.len()) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let p = (x % 3) as usize;
                for _ in 0..=(x >> 8) % 5 {
                    if let Some(e) = queues[p].get(next[p]) {
                        offer(&mut a, p as i32, next[p] as i64, (*e).clone());
                        next[p] += 1;
                    }
                }
                for w in a.take_closed(false, None) {
                    let mut ids: Vec<String> = w.events.iter().map(|e| e.event_id.clone()).collect();
                    ids.sort();
                    assert!(tables.insert(w.key.clone(), ids).is_none(), "a window written twice");
                    a.written_ok(&w.key);
                }
                late.extend(a.take_late().into_iter().map(|(_, _, e)| e.event_id));
            }
            for w in a.take_closed(true, None) {
                let mut ids: Vec<String> = w.events.iter().map(|e| e.event_id.clone()).collect();
                ids.sort();
                tables.insert(w.key.clone(), ids);
            }
            late.sort();
            assert!(!late.is_empty());
            match &reference {
                None => reference = Some((tables, late)),
                Some(r) => assert_eq!(r, &(tables, late)),
            }
        }
    }

    /// After a restart, replayed repeats rebuild the stream's watermark, so a straggler
    /// for a window written early is late, as it was before the crash, and that window is
    /// handed back to be written as final.
    #[test]
    fn replayed_repeats_rebuild_the_watermark() {
        let mut a = WindowedAggregator::new(60_000_000);
        let (early, ahead, straggler) = (ev("t", 5, 1), ev("t", 10 * MINUTE_US, 2), ev("t", 10, 3));
        let Disposition::NeedsLookup(k) = a.offer(0, 7, ahead.clone()) else { panic!("lookup expected") };
        a.resolve(k, Some((vec![ahead.clone()], true)));
        assert_eq!(a.offer(0, 7, ahead), Disposition::Duplicate);
        let Disposition::NeedsLookup(k) = a.offer(0, 8, straggler.clone()) else { panic!("lookup expected") };
        a.resolve(k, Some((vec![early], true)));
        assert_eq!(a.offer(0, 8, straggler), Disposition::Late);
        let finals = a.take_finalize();
        assert_eq!((finals.len(), finals[0].key.minute_us, finals[0].is_final), (1, 0, true));
    }
}
