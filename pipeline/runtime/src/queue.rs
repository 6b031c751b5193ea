//! The shared inference queue. Every stream's decoded frames wait here for an inference
//! worker; a worker takes a batch across streams (round-robin, so one busy file cannot
//! starve a camera) when `max` frames are ready or `deadline` has passed since the first.
//!
//! Each stream has a bound on its frames *outstanding*: waiting here, in inference, or
//! inferred but not yet consumed by the stream (the consumer calls [`InferQueue::done`]).
//! At the bound, a [`Backpressure::Wait`] stream's producer waits, and a
//! [`Backpressure::DropOldest`] stream drops its oldest waiting frame (or, with none waiting,
//! the new one) and is told which, so it can count it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use retail_ingest::Backpressure;

/// What became of a pushed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued, and the frame with this sequence number was dropped to make room (it may be
    /// the one just pushed).
    Dropped(u64),
    /// The stream was cancelled or the queue shut down; the frame was not queued.
    Closed,
}

/// One frame taken for inference.
#[derive(Debug)]
pub struct Taken<T> {
    pub stream: u64,
    pub seq: u64,
    pub item: T,
    pub waited: Duration,
}

struct StreamQueue<T> {
    waiting: VecDeque<(u64, T, Instant)>,
    outstanding: usize,
    limit: usize,
    policy: Backpressure,
    closed: bool,
}

struct State<T> {
    streams: HashMap<u64, StreamQueue<T>>,
    /// Round-robin order of the streams.
    order: Vec<u64>,
    cursor: usize,
    next_id: u64,
    shutdown: bool,
}

impl<T> State<T> {
    fn any_waiting(&self) -> bool {
        self.streams.values().any(|s| !s.waiting.is_empty())
    }

    /// Takes up to `max - batch.len()` frames, one per stream in turn.
    fn take_into(&mut self, batch: &mut Vec<Taken<T>>, max: usize) {
        let now = Instant::now();
        while batch.len() < max && self.any_waiting() {
            let id = self.order[self.cursor % self.order.len()];
            self.cursor = (self.cursor + 1) % self.order.len();
            if let Some((seq, item, since)) = self.streams.get_mut(&id).and_then(|s| s.waiting.pop_front()) {
                batch.push(Taken { stream: id, seq, item, waited: now - since });
            }
        }
    }
}

pub struct InferQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    room: Condvar,
}

impl<T> Default for InferQueue<T> {
    fn default() -> Self {
        InferQueue {
            state: Mutex::new(State {
                streams: HashMap::new(),
                order: Vec::new(),
                cursor: 0,
                next_id: 0,
                shutdown: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
        }
    }
}

impl<T> InferQueue<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the queue half-updated in a way that
        // matters more than stopping; keep serving the other streams.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a stream with at most `limit` frames outstanding; returns its id.
    pub fn register(&self, limit: usize, policy: Backpressure) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.streams.insert(
            id,
            StreamQueue { waiting: VecDeque::new(), outstanding: 0, limit: limit.max(1), policy, closed: false },
        );
        s.order.push(id);
        id
    }

    /// Queues a frame of `stream`, applying its backpressure policy.
    pub fn push(&self, stream: u64, seq: u64, item: T) -> Pushed {
        let mut s = self.lock();
        loop {
            if s.shutdown {
                return Pushed::Closed;
            }
            let Some(q) = s.streams.get_mut(&stream) else { return Pushed::Closed };
            if q.closed {
                return Pushed::Closed;
            }
            if q.outstanding < q.limit {
                q.outstanding += 1;
                q.waiting.push_back((seq, item, Instant::now()));
                self.ready.notify_one();
                return Pushed::Queued;
            }
            if q.policy == Backpressure::DropOldest {
                let dropped = match q.waiting.pop_front() {
                    Some((old, _, _)) => {
                        q.waiting.push_back((seq, item, Instant::now()));
                        self.ready.notify_one();
                        old
                    }
                    None => seq,
                };
                return Pushed::Dropped(dropped);
            }
            s = self.room.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits for frames and takes a batch of up to `max`, waiting up to `deadline` after
    /// the first for the batch to fill. `None` once the queue is shut down and empty.
    pub fn pop_batch(&self, max: usize, deadline: Duration) -> Option<Vec<Taken<T>>> {
        let max = max.max(1);
        let mut s = self.lock();
        while !s.any_waiting() {
            if s.shutdown {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let mut batch = Vec::with_capacity(max);
        s.take_into(&mut batch, max);
        let until = Instant::now() + deadline;
        while batch.len() < max && !s.shutdown {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.ready.wait_timeout(s, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            s.take_into(&mut batch, max);
        }
        if s.any_waiting() {
            // Frames are left: let another worker take them now.
            self.ready.notify_one();
        }
        Some(batch)
    }

    /// The stream's consumer is done with `n` frames: room for `n` more.
    pub fn done(&self, stream: u64, n: usize) {
        let mut s = self.lock();
        if let Some(q) = s.streams.get_mut(&stream) {
            q.outstanding = q.outstanding.saturating_sub(n);
        }
        self.room.notify_all();
    }

    /// Frames of `stream` waiting for a worker now.
    pub fn waiting(&self, stream: u64) -> usize {
        self.lock().streams.get(&stream).map_or(0, |q| q.waiting.len())
    }

    /// Closes a stream: its waiting frames are dropped and returned (by sequence number),
    /// later pushes are refused, and a producer waiting for room wakes up. Other streams go on.
    pub fn close(&self, stream: u64) -> Vec<u64> {
        let mut s = self.lock();
        let dropped = match s.streams.get_mut(&stream) {
            Some(q) => {
                q.closed = true;
                let seqs: Vec<u64> = q.waiting.drain(..).map(|(seq, _, _)| seq).collect();
                q.outstanding = q.outstanding.saturating_sub(seqs.len());
                seqs
            }
            None => Vec::new(),
        };
        self.room.notify_all();
        dropped
    }

    /// Forgets a finished stream.
    pub fn unregister(&self, stream: u64) {
        let mut s = self.lock();
        s.streams.remove(&stream);
        s.order.retain(|id| *id != stream);
        s.cursor = 0;
        self.room.notify_all();
    }

    /// Stops everything: waiting workers get what is left, then `None`.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.ready.notify_all();
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_batch_takes_streams_in_turn_and_goes_when_full() {
        let q = InferQueue::default();
        let (a, b) = (q.register(10, Backpressure::Wait), q.register(10, Backpressure::Wait));
        for i in 0..4 {
            assert_eq!(q.push(a, i, ("a", i)), Pushed::Queued);
        }
        assert_eq!(q.push(b, 0, ("b", 0)), Pushed::Queued);
        let started = Instant::now();
        let batch = q.pop_batch(3, Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "a full batch does not wait for the deadline");
        let got: Vec<_> = batch.iter().map(|t| t.item).collect();
        assert_eq!(got, vec![("a", 0), ("b", 0), ("a", 1)]);
    }

    #[test]
    fn a_partial_batch_goes_at_the_deadline() {
        let q = InferQueue::default();
        let a = q.register(10, Backpressure::Wait);
        q.push(a, 0, 0);
        let batch = q.pop_batch(8, Duration::from_millis(30)).unwrap();
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_file_waits_for_room_and_loses_nothing() {
        let q = Arc::new(InferQueue::default());
        let a = q.register(2, Backpressure::Wait);
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || (0..50u64).map(|i| q.push(a, i, i)).collect::<Vec<_>>())
        };
        let mut got = Vec::new();
        while got.len() < 50 {
            let batch = q.pop_batch(4, Duration::ZERO).unwrap();
            q.done(a, batch.len());
            got.extend(batch.into_iter().map(|t| t.item));
        }
        assert!(producer.join().unwrap().iter().all(|p| *p == Pushed::Queued));
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_live_source_drops_its_oldest_waiting_frame() {
        let q = InferQueue::default();
        let cam = q.register(3, Backpressure::DropOldest);
        for i in 0..3 {
            assert_eq!(q.push(cam, i, i), Pushed::Queued);
        }
        assert_eq!(q.push(cam, 3, 3), Pushed::Dropped(0));
        assert_eq!(q.push(cam, 4, 4), Pushed::Dropped(1));
        let batch: Vec<u64> = q.pop_batch(10, Duration::ZERO).unwrap().into_iter().map(|t| t.item).collect();
        assert_eq!(batch, vec![2, 3, 4]);
        // All three in flight: a new frame is the one dropped.
        assert_eq!(q.push(cam, 5, 5), Pushed::Dropped(5));
        q.done(cam, 1);
        assert_eq!(q.push(cam, 6, 6), Pushed::Queued);
    }

    #[test]
    fn closing_one_stream_wakes_its_producer_and_leaves_the_others() {
        let q = Arc::new(InferQueue::default());
        let (a, b) = (q.register(1, Backpressure::Wait), q.register(5, Backpressure::Wait));
        q.push(a, 0, 0);
        let blocked = {
            let q = q.clone();
            std::thread::spawn(move || q.push(a, 1, 1))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.close(a), vec![0]);
        assert_eq!(blocked.join().unwrap(), Pushed::Closed);
        q.push(b, 0, 10);
        let batch: Vec<u64> = q.pop_batch(4, Duration::ZERO).unwrap().into_iter().map(|t| t.item).collect();
        assert_eq!(batch, vec![10]);
        q.shutdown();
        assert!(q.pop_batch(4, Duration::ZERO).is_none());
    }
}
