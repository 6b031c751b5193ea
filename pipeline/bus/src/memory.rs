//! The in-process bus: the embedded default and the fast test double. Same semantics as the
//! Kafka one where the product relies on them: keyed partitions keep per-key order, consumer
//! groups resume from their committed offsets.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use retail_core::Event;

use crate::{Backlog, BusError, EventProducer, Record, RecordConsumer, encode_event, partition_for};

type Message = (Option<Vec<u8>>, Vec<u8>);

/// Messages kept per partition; older ones are dropped, like Kafka's retention, so a
/// long-running process with no consumer does not grow without bound.
const RETAIN_PER_PARTITION: usize = 100_000;

#[derive(Clone, Default)]
struct Partition {
    base_offset: i64,
    messages: std::collections::VecDeque<Message>,
}

#[derive(Default)]
struct Inner {
    topics: HashMap<String, Vec<Partition>>,
    committed: HashMap<(String, String, i32), i64>,
}

/// A shared in-process bus; clones are handles to the same one.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<(Mutex<Inner>, Condvar)>,
    partitions: i32,
}

static NAMED: OnceLock<Mutex<HashMap<String, MemoryBus>>> = OnceLock::new();

impl MemoryBus {
    pub fn new(partitions: i32) -> Self {
        MemoryBus { inner: Arc::new((Mutex::new(Inner::default()), Condvar::new())), partitions: partitions.max(1) }
    }

    /// The process-wide bus called `name` (`memory://name`), created on first use.
    pub fn named(name: &str, partitions: i32) -> Self {
        let registry = NAMED.get_or_init(|| Mutex::new(HashMap::new()));
        registry
            .lock()
            .expect("registry lock")
            .entry(name.to_owned())
            .or_insert_with(|| MemoryBus::new(partitions))
            .clone()
    }

    fn publish(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
        let (lock, cv) = &*self.inner;
        let mut inner = lock.lock().expect("bus lock");
        let parts = inner
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| vec![Partition::default(); self.partitions as usize]);
        let index = key.map_or(0, |k| partition_for(k, parts.len() as i32)) as usize;
        let p = &mut parts[index];
        p.messages.push_back((key.map(<[u8]>::to_vec), payload.to_vec()));
        if p.messages.len() > RETAIN_PER_PARTITION {
            p.messages.pop_front();
            p.base_offset += 1;
        }
        cv.notify_all();
    }

    /// All payloads of a topic, partition by partition (for tests and inspection).
    pub fn messages(&self, topic: &str) -> Vec<Vec<u8>> {
        let inner = self.inner.0.lock().expect("bus lock");
        inner
            .topics
            .get(topic)
            .map(|ps| ps.iter().flat_map(|p| p.messages.iter().map(|(_, m)| m.clone())).collect())
            .unwrap_or_default()
    }

    pub fn producer(&self, topic: &str) -> MemoryProducer {
        MemoryProducer { bus: self.clone(), topic: topic.to_owned() }
    }

    pub fn consumer(&self, topic: &str, group: &str) -> MemoryConsumer {
        let inner = self.inner.0.lock().expect("bus lock");
        let positions = (0..self.partitions)
            .map(|p| *inner.committed.get(&(group.to_owned(), topic.to_owned(), p)).unwrap_or(&0))
            .collect();
        MemoryConsumer { bus: self.clone(), topic: topic.to_owned(), group: group.to_owned(), positions }
    }
}

pub struct MemoryProducer {
    bus: MemoryBus,
    topic: String,
}

impl EventProducer for MemoryProducer {
    fn send(&mut self, events: &[Event]) -> Result<(), BusError> {
        for e in events {
            self.bus.publish(&self.topic, Some(e.stream.0.as_bytes()), &encode_event(e));
        }
        Ok(())
    }

    fn send_raw(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), BusError> {
        self.bus.publish(topic, key, payload);
        Ok(())
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), BusError> {
        Ok(())
    }
}

pub struct MemoryConsumer {
    bus: MemoryBus,
    topic: String,
    group: String,
    positions: Vec<i64>,
}

impl RecordConsumer for MemoryConsumer {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, BusError> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.bus.inner;
        let mut inner = lock.lock().expect("bus lock");
        loop {
            let mut out = Vec::new();
            if let Some(parts) = inner.topics.get(&self.topic) {
                for (p, part) in parts.iter().enumerate() {
                    self.positions[p] = self.positions[p].max(part.base_offset);
                    let end = part.base_offset + part.messages.len() as i64;
                    while out.len() < max && self.positions[p] < end {
                        let offset = self.positions[p];
                        let (key, payload) = part.messages[(offset - part.base_offset) as usize].clone();
                        out.push(Record { topic: self.topic.clone(), partition: p as i32, offset, key, payload });
                        self.positions[p] += 1;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !out.is_empty() || left.is_zero() {
                return Ok(out);
            }
            inner = cv.wait_timeout(inner, left).expect("bus lock").0;
        }
    }

    fn backlog(&mut self) -> Result<Option<Backlog>, BusError> {
        let inner = self.bus.inner.0.lock().expect("bus lock");
        let parts = inner.topics.get(&self.topic).map_or(&[][..], Vec::as_slice);
        let held_unread = parts
            .iter()
            .zip(&self.positions)
            .map(|(part, &pos)| {
                (part.base_offset + part.messages.len() as i64 - pos.max(part.base_offset)).max(0) as u64
            })
            .sum();
        Ok(Some(Backlog { held: self.positions.len(), held_unread, elsewhere: 0 }))
    }

    fn commit(&mut self, next_offsets: &[(i32, i64)]) -> Result<(), BusError> {
        let mut inner = self.bus.inner.0.lock().expect("bus lock");
        for (p, o) in next_offsets {
            inner.committed.insert((self.group.clone(), self.topic.clone(), *p), *o);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_event;
    use retail_core::{EventKind, TenantId};

    fn ev(stream: &str, pts: u64) -> Event {
        Event::new(TenantId::default(), stream.into(), 1, pts, 0, EventKind::ZoneEnter { zone: "z".into() })
    }

    #[test]
    fn per_key_order_and_group_resume() {
        let bus = MemoryBus::new(4);
        let mut p = bus.producer("t");
        p.send(&(0..20).map(|i| ev(if i % 2 == 0 { "a" } else { "b" }, i)).collect::<Vec<_>>()).unwrap();
        let mut c = bus.consumer("t", "g");
        let first = c.poll(8, Duration::ZERO).unwrap();
        assert_eq!(first.len(), 8);
        // Commit only what was processed, then "crash" and resume: the rest arrives exactly once.
        let mut next: HashMap<i32, i64> = HashMap::new();
        for r in &first {
            next.insert(r.partition, r.offset + 1);
        }
        c.commit(&next.into_iter().collect::<Vec<_>>()).unwrap();
        let rest = bus.consumer("t", "g").poll(100, Duration::ZERO).unwrap();
        assert_eq!(first.len() + rest.len(), 20);
        for stream in ["a", "b"] {
            let pts: Vec<u64> = first
                .iter()
                .chain(&rest)
                .map(|r| decode_event(&r.payload).unwrap())
                .filter(|e| e.stream.0 == stream)
                .map(|e| e.pts_ns)
                .collect();
            assert!(pts.windows(2).all(|w| w[0] < w[1]), "{stream}: {pts:?}");
        }
    }
}
