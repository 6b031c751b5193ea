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
    /// Ids of windows already written (loaded on demand after a restart).
    written: HashMap<WindowKey, HashSet<String>>,
    /// Latest event time per stream.
    max_time_us: HashMap<(TenantId, StreamId), i64>,
    late: Vec<(i32, i64, Event)>,
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
            max_time_us: HashMap::new(),
            late: Vec::new(),
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
        for s in streams {
            self.stream_partition.remove(&s);
            self.max_time_us.remove(&s);
        }
    }

    fn is_closed(&self, key: &WindowKey) -> bool {
        self.max_time_us
            .get(&(key.tenant.clone(), key.stream.clone()))
            .is_some_and(|t| key.minute_us + crate::MINUTE_US <= t - self.lateness_us)
    }

    /// Tells the aggregator what a lookup found: `Some(ids)` if the window was written.
    pub fn resolve(&mut self, key: WindowKey, written_ids: Option<HashSet<String>>) {
        match written_ids {
            Some(ids) => {
                self.written.insert(key, ids);
            }
            None => {
                self.open.entry(key).or_default();
            }
        }
    }

    /// Notes that a record at (partition, offset) was consumed and carried nothing to keep
    /// (malformed and dead-lettered, or a duplicate).
    pub fn skip(&mut self, partition: i32, offset: i64) {
        let next = self.consumed.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// Offers one event consumed at (partition, offset). On `NeedsLookup`, call
    /// [`resolve`](Self::resolve) for the key and offer the event again.
    pub fn offer(&mut self, partition: i32, offset: i64, event: Event) -> Disposition {
        let key = WindowKey {
            tenant: event.tenant.clone(),
            stream: event.stream.clone(),
            minute_us: minute_of(event.time_us),
        };
        if let Some(ids) = self.written.get(&key) {
            let duplicate = ids.contains(&event.event_id);
            self.skip(partition, offset);
            if duplicate {
                return Disposition::Duplicate;
            }
            self.late.push((partition, offset, event));
            return Disposition::Late;
        }
        if self.is_closed(&key) {
            self.skip(partition, offset);
            self.late.push((partition, offset, event));
            return Disposition::Late;
        }
        if !self.open.contains_key(&key) {
            return Disposition::NeedsLookup(key);
        }
        let window = self.open.get_mut(&key).expect("checked");
        self.consumed.entry(partition).and_modify(|n| *n = (*n).max(offset + 1)).or_insert(offset + 1);
        if !window.ids.insert(event.event_id.clone()) {
            return Disposition::Duplicate;
        }
        let min = window.min_offsets.entry(partition).or_insert(offset);
        *min = (*min).min(offset);
        let t = self.max_time_us.entry((key.tenant.clone(), key.stream.clone())).or_insert(event.time_us);
        *t = (*t).max(event.time_us);
        self.stream_partition.insert((key.tenant.clone(), key.stream.clone()), partition);
        window.events.push(event);
        Disposition::Accepted
    }

    /// Windows the watermark has passed (or all of them with `all`), removed from the open
    /// set. Call [`written_ok`](Self::written_ok) for each once it is durable.
    pub fn take_closed(&mut self, all: bool) -> Vec<ClosedWindow> {
        let keys: Vec<WindowKey> = self.open.keys().filter(|k| all || self.is_closed(k)).cloned().collect();
        keys.into_iter()
            .map(|key| {
                let w = self.open.get(&key).expect("listed");
                ClosedWindow { key, events: w.events.clone() }
            })
            .collect()
    }

    /// Marks a window durable: it leaves the open set and its ids are remembered.
    pub fn written_ok(&mut self, key: &WindowKey) {
        if let Some(w) = self.open.remove(key) {
            self.written.insert(key.clone(), w.ids);
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

    /// Forgets written windows far behind the watermark (their duplicates can no longer
    /// arrive once their offsets are committed), bounding memory.
    pub fn forget_written_before(&mut self, minute_us: i64) {
        self.written.retain(|k, _| k.minute_us >= minute_us);
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
            t_us as u64 * 1000,
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
        assert!(a.take_closed(false).is_empty(), "minute 10 is within lateness");
        assert_eq!(a.committable(), vec![(0, 0)]);
        // Event time passes 11:30 -> minute 10 closes.
        assert_eq!(offer(&mut a, 0, 2, ev("t", 11 * MINUTE_US + 31_000_000, 3)), Disposition::Accepted);
        let closed = a.take_closed(false);
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
        let closed = a.take_closed(true);
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
        a.resolve(key, Some([e.event_id.clone()].into_iter().collect()));
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
        let closed = a.take_closed(true);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].key.stream, StreamId("door".into()));
        // Partition 1 comes back later: its stream starts afresh from the committed offset.
        assert_eq!(offer(&mut a, 1, 3, on("till", 5, 2)), Disposition::Accepted);
        assert_eq!(a.committable(), vec![(0, 7), (1, 3)]);
    }
}
