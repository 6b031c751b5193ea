//! Kafka transport (rdkafka): a spooled idempotent producer and a group consumer.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use retail_core::Event;
use tracing::{debug, info, warn};

use crate::{
    Backlog, BusConfig, BusError, EventProducer, Record, RecordConsumer, Spool, SpooledRecord, encode_event, spool_dir,
};

/// Error events one consumer poll reads at most (the queue is finite, but a broker that
/// keeps failing must not hold a poll for long).
const MAX_ERRORS_PER_POLL: usize = 1024;

/// Records in flight to the broker at once; bounds rdkafka's own queue.
const WINDOW: usize = 2048;

/// Per delivered or failed record: its spool seq, and the error if any.
type Deliveries = Mutex<Vec<(u64, Result<(), KafkaError>)>>;

struct DeliveryContext {
    results: Arc<Deliveries>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Box<u64>) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone());
        self.results.lock().expect("delivery lock").push((*seq, outcome));
    }
}

/// Delivery failures of the direct (dead-letter) producer, which has no spool: a send is
/// only done when its delivery report says so.
#[derive(Default)]
struct DirectContext {
    failures: Mutex<Vec<String>>,
}

impl ClientContext for DirectContext {}

impl ProducerContext for DirectContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failures.lock().expect("delivery lock").push(e.to_string());
        }
    }
}

/// Errors after which resending the same record can never succeed.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

struct Shared {
    spool: Mutex<Spool>,
    /// Signalled when events are appended (sender wakes) or acknowledged (flush wakes).
    changed: Condvar,
    stop: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// Spooled, idempotent Kafka producer; see the crate docs.
pub struct KafkaProducer {
    brokers: String,
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
    direct: BaseProducer<DirectContext>,
    flush_timeout: Duration,
    max_event_bytes: usize,
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("client.id", "retail-ai");
    c
}

fn kafka_err(brokers: &str, operation: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Kafka { brokers: brokers.to_owned(), operation: operation.to_owned(), reason: e.to_string() }
}

/// Creates the topics if missing. Never deletes or alters existing ones.
pub fn ensure_topics(
    brokers: &str,
    topics: &[(&str, i32)],
    replication: i32,
    timeout: Duration,
) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().map_err(|e| kafka_err(brokers, "admin client", e))?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(replication))).collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics(&new, &opts))
        .map_err(|e| kafka_err(brokers, "create topics", e))?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, "created topic"),
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => debug!(topic = %t, "topic exists"),
            Err((t, code)) => return Err(kafka_err(brokers, &format!("create topic {t}"), code)),
        }
    }
    Ok(())
}

/// What a spool is written for: events spooled for one broker list and topic are never sent
/// to another.
fn spool_target(brokers: &str, topic: &str) -> String {
    // The same cluster however its broker list is ordered.
    let mut list: Vec<&str> = brokers.split(',').map(str::trim).collect();
    list.sort_unstable();
    format!("kafka://{} topic={topic}", list.join(","))
}

impl KafkaProducer {
    pub fn open(brokers: &str, config: &BusConfig) -> Result<Self, BusError> {
        let root = config.spool_dir.clone().unwrap_or_else(default_spool_dir);
        let claimed = spool_dir::claim(&root, &spool_target(brokers, &config.topic), config.spool_max_bytes)?;
        for (dir, target, pending) in &claimed.foreign {
            warn!(dir = %dir.display(), %target, pending, "events spooled for another bus are not sent to this one");
        }
        let spool = claimed.spool;
        if spool.pending() > 0 {
            info!(pending = spool.pending(), dir = %spool.dir().display(), "resending events left in the spool");
        }
        let results: Arc<Deliveries> = Arc::new(Mutex::new(Vec::new()));
        let make_producer = {
            let (brokers, results) = (brokers.to_owned(), results.clone());
            let timeout_ms = (config.message_timeout_s * 1000).to_string();
            // Room for the record batch's own headers around the largest event.
            let max_message = (config.max_event_bytes + 1024).to_string();
            move || -> Result<BaseProducer<DeliveryContext>, BusError> {
                client_config(&brokers)
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("message.timeout.ms", &timeout_ms)
                    .set("message.max.bytes", &max_message)
                    .set("linger.ms", "5")
                    .create_with_context(DeliveryContext { results: results.clone() })
                    .map_err(|e| kafka_err(&brokers, "producer", e))
            }
        };
        let producer = make_producer()?;
        let direct = client_config(brokers)
            .set("acks", "all")
            .set("message.max.bytes", (config.max_event_bytes + 1024).to_string())
            .set("message.timeout.ms", (config.flush_timeout_s * 1000).max(1000).to_string())
            .create_with_context(DirectContext::default())
            .map_err(|e| kafka_err(brokers, "producer", e))?;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        let sender = {
            let shared = shared.clone();
            let (brokers, topic, dlq) = (brokers.to_owned(), config.topic.clone(), config.dead_letter_topic.clone());
            let (partitions, replication, create) = (config.partitions, config.replication, config.create_topics);
            std::thread::Builder::new()
                .name("kafka-sender".into())
                .spawn(move || {
                    let topics = [(topic.as_str(), partitions), (dlq.as_str(), 1)];
                    let setup = TopicSetup { create, topics: &topics, replication };
                    let link = Link {
                        brokers: &brokers,
                        topic: &topic,
                        make_producer: &make_producer,
                        results: &results,
                        shared: &shared,
                    };
                    Sender::new(link, setup, producer).run();
                })
                .map_err(|e| kafka_err(&config.url, "sender thread", e))?
        };
        Ok(KafkaProducer {
            brokers: brokers.to_owned(),
            shared,
            sender: Some(sender),
            direct,
            flush_timeout: Duration::from_secs(config.flush_timeout_s),
            max_event_bytes: config.max_event_bytes,
        })
    }

    /// Events waiting in the spool.
    pub fn pending(&self) -> u64 {
        self.shared.spool.lock().expect("spool lock").pending()
    }

    /// This producer's own spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.shared.spool.lock().expect("spool lock").dir().to_owned()
    }
}

fn default_spool_dir() -> PathBuf {
    let base = std::env::var_os("RETAIL_AI_HOME").map_or_else(
        || std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from).join(".cache/retail-ai"),
        PathBuf::from,
    );
    base.join("spool")
}

/// Which topics the sender makes sure of, and how.
struct TopicSetup<'a> {
    create: bool,
    topics: &'a [(&'a str, i32)],
    replication: i32,
}

/// How long a stopping sender still waits for records in flight before it leaves them to
/// the spool (they are resent by the next run; consumers drop repeats by event id).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the sender thread works with and never changes.
struct Link<'a> {
    brokers: &'a str,
    topic: &'a str,
    make_producer: &'a dyn Fn() -> Result<BaseProducer<DeliveryContext>, BusError>,
    results: &'a Deliveries,
    shared: &'a Shared,
}

/// The sender thread: delivers spooled records in order, acknowledging the contiguous
/// delivered prefix; moves records the broker refuses for good aside.
struct Sender<'a> {
    link: Link<'a>,
    setup: TopicSetup<'a>,
    producer: BaseProducer<DeliveryContext>,
    topics_ready: bool,
    topics_tried: bool,
    topics_retry_at: Instant,
    next_send: u64,
    delivered: BTreeSet<u64>,
    in_flight: usize,
    failed: Option<(u64, String)>,
    backoff_until: Instant,
    stop_deadline: Option<Instant>,
}

impl<'a> Sender<'a> {
    fn new(link: Link<'a>, setup: TopicSetup<'a>, producer: BaseProducer<DeliveryContext>) -> Self {
        let next_send = link.shared.spool.lock().expect("spool lock").acked();
        // Topics are (re)checked at start and after every failed delivery, until a check
        // succeeds: a broker that was down at start (or lost them) gets them when it is back.
        Sender {
            link,
            topics_ready: !setup.create,
            topics_tried: !setup.create,
            setup,
            producer,
            topics_retry_at: Instant::now(),
            next_send,
            delivered: BTreeSet::new(),
            in_flight: 0,
            failed: None,
            backoff_until: Instant::now(),
            stop_deadline: None,
        }
    }

    /// Notes a failed record; resending starts from the lowest one.
    fn fail(&mut self, seq: u64, reason: String) {
        if self.failed.as_ref().is_none_or(|(s, _)| seq < *s) {
            self.failed = Some((seq, reason));
        }
    }

    fn set_error(&self, e: Option<String>) {
        *self.link.shared.last_error.lock().expect("lock") = e;
    }

    fn run(mut self) {
        loop {
            let stopping = self.link.shared.stop.load(Ordering::Relaxed);
            if stopping {
                let deadline = *self.stop_deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
                if self.in_flight == 0 || Instant::now() >= deadline {
                    break;
                }
            }
            self.ensure_topics();
            if self.topics_tried && self.failed.is_none() && !stopping && Instant::now() >= self.backoff_until {
                self.send_some();
            }
            self.producer.poll(Duration::from_millis(50));
            self.collect_deliveries();
            self.acknowledge();
            self.resend_after_failure();
            if self.in_flight == 0 && !stopping {
                let spool = self.link.shared.spool.lock().expect("spool lock");
                if self.next_send >= spool.next_seq() {
                    let _ = self.link.shared.changed.wait_timeout(spool, Duration::from_millis(200));
                }
            }
        }
    }

    fn ensure_topics(&mut self) {
        if self.topics_ready || Instant::now() < self.topics_retry_at {
            return;
        }
        // Sending goes on meanwhile: sends wait in rdkafka's retries and in the spool.
        match ensure_topics(self.link.brokers, self.setup.topics, self.setup.replication, Duration::from_secs(5)) {
            Ok(()) => self.topics_ready = true,
            Err(e) => {
                warn!(error = %e, "could not create topics; sending anyway, retrying in 2 s");
                self.set_error(Some(e.to_string()));
                self.topics_retry_at = Instant::now() + Duration::from_secs(2);
            }
        }
        self.topics_tried = true;
    }

    fn send_some(&mut self) {
        if self.in_flight >= WINDOW {
            return;
        }
        let batch = self.link.shared.spool.lock().expect("spool lock").read(self.next_send, WINDOW - self.in_flight);
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "spool read failed");
                self.set_error(Some(e.to_string()));
                self.backoff_until = Instant::now() + Duration::from_secs(1);
                return;
            }
        };
        for rec in batch {
            self.next_send = rec.seq + 1;
            if self.delivered.contains(&rec.seq) {
                continue;
            }
            let record =
                BaseRecord::with_opaque_to(self.link.topic, Box::new(rec.seq)).key(&rec.key).payload(&rec.payload);
            match self.producer.send(record) {
                Ok(()) => self.in_flight += 1,
                Err((e, _)) if is_permanent(&e) => self.reject(&rec, &e),
                Err((e, _)) => {
                    self.next_send = rec.seq;
                    if !matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) {
                        self.fail(rec.seq, e.to_string());
                    }
                    break;
                }
            }
        }
    }

    /// Moves a record the broker will never take out of the spool's way; it counts as done.
    fn reject(&mut self, rec: &SpooledRecord, e: &KafkaError) {
        metrics::counter!("retail_bus_rejected_total").increment(1);
        let spool = self.link.shared.spool.lock().expect("spool lock");
        match spool_dir::reject(&spool, rec, &e.to_string()) {
            Ok(path) => {
                warn!(seq = rec.seq, error = %e, to = %path.display(), "broker refuses this event for good; moved aside");
                self.delivered.insert(rec.seq);
            }
            Err(io) => {
                // Not moved aside: keep it, and retry later rather than drop it.
                warn!(seq = rec.seq, error = %io, "could not move a refused event aside");
                self.fail(rec.seq, io.to_string());
            }
        }
    }

    fn collect_deliveries(&mut self) {
        for (seq, outcome) in std::mem::take(&mut *self.link.results.lock().expect("delivery lock")) {
            self.in_flight -= 1;
            match outcome {
                Ok(()) => {
                    self.delivered.insert(seq);
                }
                Err(e) if is_permanent(&e) => {
                    let rec = self.link.shared.spool.lock().expect("spool lock").read(seq, 1);
                    match rec.ok().and_then(|mut r| r.pop()).filter(|r| r.seq == seq) {
                        Some(rec) => self.reject(&rec, &e),
                        None => {
                            self.delivered.insert(seq);
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!("retail_bus_delivery_failures_total").increment(1);
                    self.fail(seq, e.to_string());
                }
            }
        }
    }

    /// Acknowledges the delivered prefix so the spool can free it; gaps left by records
    /// dropped from the spool do not hold it back.
    fn acknowledge(&mut self) {
        let mut spool = self.link.shared.spool.lock().expect("spool lock");
        let before = spool.acked();
        let mut cursor = spool.next_present(before);
        // Forgotten from `delivered` only once the cursor is durable (the `retain` below):
        // a failed ack is retried on the next turn.
        while self.delivered.contains(&cursor) {
            cursor = spool.next_present(cursor + 1);
        }
        if cursor > before {
            let pending_before = spool.pending();
            if let Err(e) = spool.ack_until(cursor) {
                warn!(error = %e, "spool ack failed");
                self.set_error(Some(e.to_string()));
                return;
            }
            metrics::counter!("retail_bus_events_delivered_total").increment(pending_before - spool.pending());
            self.set_error(None);
            self.link.shared.changed.notify_all();
        }
        self.delivered.retain(|s| *s >= cursor);
    }

    /// After a failure, lets everything in flight settle, then resends from the failure.
    fn resend_after_failure(&mut self) {
        if self.in_flight > 0 {
            return;
        }
        let Some((seq, reason)) = self.failed.take() else { return };
        warn!(from_seq = seq, reason = %reason, "delivery failed; resending from the spool");
        self.set_error(Some(reason));
        self.next_send = seq;
        self.topics_ready = !self.setup.create;
        self.backoff_until = Instant::now() + Duration::from_secs(1);
        // Timed-out sends leave an idempotent producer's sequence numbers unknown (a fatal
        // state for some brokers): start a fresh producer; repeats are dropped downstream by
        // event id.
        if let Some(fatal) = self.producer.client().fatal_error() {
            warn!(?fatal, "producer in fatal state");
        }
        match (self.link.make_producer)() {
            Ok(p) => self.producer = p,
            Err(e) => warn!(error = %e, "cannot recreate producer; retrying with the old one"),
        }
    }
}

impl EventProducer for KafkaProducer {
    fn send(&mut self, events: &[Event]) -> Result<(), BusError> {
        let encoded: Vec<(Vec<u8>, Vec<u8>)> =
            events.iter().map(|e| (e.stream.0.as_bytes().to_vec(), encode_event(e))).collect();
        if let Some((e, (_, p))) = events.iter().zip(&encoded).find(|(_, (_, p))| p.len() > self.max_event_bytes) {
            return Err(BusError::EventTooLarge {
                stream: e.stream.0.clone(),
                event_id: e.event_id.clone(),
                bytes: p.len(),
                limit: self.max_event_bytes,
            });
        }
        let refs: Vec<(&[u8], &[u8])> = encoded.iter().map(|(k, p)| (k.as_slice(), p.as_slice())).collect();
        let mut spool = self.shared.spool.lock().expect("spool lock");
        if let Err(bytes) = spool.append(&refs)? {
            metrics::counter!("retail_bus_spool_full_total").increment(1);
            return Err(BusError::SpoolFull {
                dir: spool.dir().to_owned(),
                bytes,
                limit: spool.max_bytes(),
                pending: spool.pending(),
                brokers: self.brokers.clone(),
            });
        }
        self.shared.changed.notify_all();
        Ok(())
    }

    fn send_raw(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), BusError> {
        self.send_raw_batch(topic, &[(key, payload)])
    }

    fn send_raw_batch(&mut self, topic: &str, records: &[(Option<&[u8]>, &[u8])]) -> Result<(), BusError> {
        let brokers = self.brokers.clone();
        let err = |e: &dyn std::fmt::Display| kafka_err(&brokers, &format!("send to {topic}"), e);
        self.direct.context().failures.lock().expect("delivery lock").clear();
        for (key, payload) in records {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(*payload);
            if let Some(k) = key {
                record = record.key(*k);
            }
            self.direct.send(record).map_err(|(e, _)| err(&e))?;
            self.direct.poll(Duration::ZERO);
        }
        if let Err(e) = self.direct.flush(self.flush_timeout) {
            // The caller sends the batch again: drop these copies instead of doubling them.
            self.direct.purge(PurgeConfig::default().queue().inflight());
            return Err(err(&e));
        }
        let failures = std::mem::take(&mut *self.direct.context().failures.lock().expect("delivery lock"));
        match failures.first() {
            None => Ok(()),
            Some(first) => Err(err(&format!("{} of {} not delivered: {first}", failures.len(), records.len()))),
        }
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), BusError> {
        wait_delivered(&self.shared, &self.brokers, timeout)
    }

    fn flusher(&self) -> crate::Flusher {
        let (shared, brokers) = (self.shared.clone(), self.brokers.clone());
        crate::Flusher::new(move |timeout| wait_delivered(&shared, &brokers, timeout))
    }
}

/// Waits until the spool holds nothing unacknowledged.
fn wait_delivered(shared: &Shared, brokers: &str, timeout: Duration) -> Result<(), BusError> {
    let deadline = Instant::now() + timeout;
    let mut spool = shared.spool.lock().expect("spool lock");
    while spool.pending() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BusError::FlushTimeout {
                pending: spool.pending(),
                brokers: brokers.to_owned(),
                timeout_s: timeout.as_secs(),
                spool: spool.dir().to_owned(),
            });
        }
        spool = shared.changed.wait_timeout(spool, left.min(Duration::from_millis(200))).expect("lock").0;
    }
    Ok(())
}

impl Drop for KafkaProducer {
    /// Stops the sender within [`STOP_GRACE`] (undelivered events stay spooled for the next
    /// run) and removes the spool if it holds nothing.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        if let Ok(spool) = self.shared.spool.lock() {
            spool_dir::release(&spool);
        }
    }
}

/// Notes the revocations librdkafka makes because this member's group session was lost (the
/// coordinator unreachable, or this process stalled, past the session timeout): those
/// partitions may already be another member's.
#[derive(Default)]
struct GroupContext {
    lost: AtomicBool,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_)) && consumer.assignment_lost() {
            warn!("the group session was lost: this member's partitions are revoked");
            self.lost.store(true, Ordering::Relaxed);
        }
    }
}

/// A consumer-group member with manual commits.
pub struct KafkaConsumer {
    brokers: String,
    topic: String,
    group: String,
    consumer: BaseConsumer<GroupContext>,
    session_timeout: Duration,
    /// Since when this member has held no partition (None while it holds some).
    unassigned_since: Option<Instant>,
    rejoin_backoff: Duration,
}

impl KafkaConsumer {
    pub fn open(brokers: &str, config: &BusConfig, group: &str) -> Result<Self, BusError> {
        let consumer: BaseConsumer<GroupContext> = client_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", (config.session_timeout_s * 1000).to_string())
            .create_with_context(GroupContext::default())
            .map_err(|e| kafka_err(brokers, "consumer", e))?;
        if config.create_topics {
            let topics = [(config.topic.as_str(), config.partitions), (config.dead_letter_topic.as_str(), 1)];
            ensure_topics(brokers, &topics, config.replication, Duration::from_secs(10))?;
        }
        consumer.subscribe(&[&config.topic]).map_err(|e| kafka_err(brokers, "subscribe", e))?;
        Ok(KafkaConsumer {
            brokers: brokers.to_owned(),
            topic: config.topic.clone(),
            group: group.to_owned(),
            consumer,
            session_timeout: Duration::from_secs(config.session_timeout_s),
            unassigned_since: None,
            rejoin_backoff: Duration::ZERO,
        })
    }

    /// Partitions this member holds now.
    pub fn assigned_partitions(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements().iter().map(rdkafka::topic_partition_list::TopicPartitionListElem::partition).collect()
            })
            .unwrap_or_default()
    }

    /// A member that has held no partition for a while rejoins the group, backing off (doubling,
    /// up to ten minutes) while rejoining changes nothing. Some brokers (tansu 0.6) finish a
    /// rebalance with an empty assignment when the previous leader, killed without leaving,
    /// expires during the SyncGroup of the member that replaces it, and never rebalance again;
    /// its DescribeGroups fails on that engine, so the member cannot ask how many peers it has.
    /// On Kafka an idle member of a group larger than the partition count costs a rebalance
    /// at these growing intervals.
    fn rejoin_if_left_out(&mut self) -> Result<(), BusError> {
        let now = Instant::now();
        if !self.assigned_partitions().is_empty() {
            self.unassigned_since = None;
            self.rejoin_backoff = Duration::ZERO;
            return Ok(());
        }
        let since = *self.unassigned_since.get_or_insert(now);
        if self.rejoin_backoff.is_zero() {
            self.rejoin_backoff = (self.session_timeout * 2).max(Duration::from_secs(2));
        }
        if now - since < self.rejoin_backoff {
            return Ok(());
        }
        warn!(
            group = %self.group,
            topic = %self.topic,
            unassigned_s = (now - since).as_secs(),
            "this member has held no partition since it joined: rejoining the group"
        );
        self.consumer.unsubscribe();
        self.consumer.subscribe(&[&self.topic]).map_err(|e| kafka_err(&self.brokers, "subscribe", e))?;
        self.unassigned_since = Some(now);
        self.rejoin_backoff = (self.rejoin_backoff * 2).min(Duration::from_secs(600));
        Ok(())
    }
}

impl RecordConsumer for KafkaConsumer {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, BusError> {
        self.rejoin_if_left_out()?;
        let mut out = Vec::new();
        let mut wait = timeout;
        // Errors queue up while the broker is away; all of them are read now, or a revocation
        // queued behind them would wait one poll per error.
        let (mut transient, mut last_error) = (0usize, None);
        while out.len() < max && transient < MAX_ERRORS_PER_POLL {
            match self.consumer.poll(wait) {
                None => break,
                // librdkafka reconnects by itself after these (broker down, transport errors);
                // only a fatal error ends consumption.
                Some(Err(KafkaError::MessageConsumption(code))) => {
                    transient += 1;
                    last_error = Some(code);
                }
                Some(Err(e)) => return Err(kafka_err(&self.brokers, "poll", e)),
                Some(Ok(m)) => out.push(Record {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                }),
            }
            wait = Duration::ZERO;
        }
        if let Some(code) = last_error {
            warn!(brokers = %self.brokers, error = %code, errors = transient, "kafka consumer: transient errors, retrying");
        }
        Ok(out)
    }

    fn assignment(&self) -> Option<Vec<i32>> {
        Some(self.assigned_partitions())
    }

    fn take_assignment_lost(&mut self) -> bool {
        self.consumer.context().lost.swap(false, Ordering::Relaxed)
    }

    fn partition_count(&self) -> Result<Option<i32>, BusError> {
        let operation = format!("metadata of topic {}", self.topic);
        let meta = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .map_err(|e| kafka_err(&self.brokers, &operation, e))?;
        let topic = meta.topics().iter().find(|t| t.name() == self.topic);
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(Some(t.partitions().len() as i32)),
            Some(t) => {
                let why = t.error().map_or("no partitions".to_owned(), |e| format!("{:?}", RDKafkaErrorCode::from(e)));
                Err(kafka_err(&self.brokers, &operation, why))
            }
            None => Err(kafka_err(&self.brokers, &operation, "the topic does not exist")),
        }
    }

    fn backlog(&mut self) -> Result<Option<Backlog>, BusError> {
        const ASK: Duration = Duration::from_secs(10);
        let Some(count) = self.partition_count()? else { return Ok(None) };
        let held = self.assigned_partitions();
        let positions = self.consumer.position().map_err(|e| kafka_err(&self.brokers, "position", e))?;
        let mut all = TopicPartitionList::new();
        for p in 0..count {
            all.add_partition(&self.topic, p);
        }
        let committed =
            self.consumer.committed_offsets(all, ASK).map_err(|e| kafka_err(&self.brokers, "committed offsets", e))?;
        // A partition whose commit could not be read would count as unread from its start.
        if let Some(Err(e)) = committed
            .elements()
            .iter()
            .map(rdkafka::topic_partition_list::TopicPartitionListElem::error)
            .find(Result::is_err)
        {
            return Err(kafka_err(&self.brokers, "committed offsets", e));
        }
        let offset_in = |tpl: &TopicPartitionList, p: i32| match tpl.find_partition(&self.topic, p).map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let mut backlog = Backlog { held: held.len(), ..Backlog::default() };
        for p in 0..count {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, ASK)
                .map_err(|e| kafka_err(&self.brokers, "watermarks", e))?;
            let mine = held.contains(&p);
            // Where reading would go on: this member's position in what it holds (not yet
            // fetched: the group's commit), the group's commit elsewhere, else the start.
            let next = mine
                .then(|| offset_in(&positions, p))
                .flatten()
                .or_else(|| offset_in(&committed, p))
                .unwrap_or(low)
                .max(low);
            let left = (high - next).max(0) as u64;
            if mine {
                backlog.held_unread += left;
            } else {
                backlog.elsewhere += left;
            }
        }
        Ok(Some(backlog))
    }

    fn commit(&mut self, next_offsets: &[(i32, i64)]) -> Result<(), BusError> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next_offsets {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))
                .map_err(|e| kafka_err(&self.brokers, "commit", e))?;
        }
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(|e| kafka_err(&self.brokers, "commit", e))
    }
}
