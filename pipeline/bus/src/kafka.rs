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
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use retail_core::Event;
use tracing::{debug, info, warn};

use crate::{BusConfig, BusError, EventProducer, Record, RecordConsumer, Spool, encode_event};

/// Records in flight to the broker at once; bounds rdkafka's own queue.
const WINDOW: usize = 2048;

type Deliveries = Mutex<Vec<(u64, Result<(), String>)>>;

struct DeliveryContext {
    results: Arc<Deliveries>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Box<u64>) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        self.results.lock().expect("delivery lock").push((*seq, outcome));
    }
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
    direct: BaseProducer,
    flush_timeout: Duration,
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

impl KafkaProducer {
    pub fn open(brokers: &str, config: &BusConfig) -> Result<Self, BusError> {
        let spool_dir = config.spool_dir.clone().unwrap_or_else(default_spool_dir);
        let spool = Spool::open(&spool_dir, config.spool_max_bytes)?;
        if spool.pending() > 0 {
            info!(pending = spool.pending(), dir = %spool_dir.display(), "resending events left in the spool");
        }
        let results: Arc<Deliveries> = Arc::new(Mutex::new(Vec::new()));
        let make_producer = {
            let (brokers, results) = (brokers.to_owned(), results.clone());
            let timeout_ms = (config.message_timeout_s * 1000).to_string();
            move || -> Result<BaseProducer<DeliveryContext>, BusError> {
                client_config(&brokers)
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("message.timeout.ms", &timeout_ms)
                    .set("linger.ms", "5")
                    .create_with_context(DeliveryContext { results: results.clone() })
                    .map_err(|e| kafka_err(&brokers, "producer", e))
            }
        };
        let producer = make_producer()?;
        let direct: BaseProducer =
            client_config(brokers).set("acks", "all").create().map_err(|e| kafka_err(brokers, "producer", e))?;
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
                    send_loop(
                        create,
                        &brokers,
                        &topic,
                        &topics,
                        replication,
                        producer,
                        &make_producer,
                        &results,
                        &shared,
                    )
                })
                .map_err(|e| kafka_err(&config.url, "sender thread", e))?
        };
        Ok(KafkaProducer {
            brokers: brokers.to_owned(),
            shared,
            sender: Some(sender),
            direct,
            flush_timeout: Duration::from_secs(config.flush_timeout_s),
        })
    }

    /// Events waiting in the spool.
    pub fn pending(&self) -> u64 {
        self.shared.spool.lock().expect("spool lock").pending()
    }
}

fn default_spool_dir() -> PathBuf {
    let base = std::env::var_os("RETAIL_AI_HOME").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")).join(".cache/retail-ai")
    });
    base.join("spool")
}

/// Delivers spooled records in order, acknowledging the contiguous delivered prefix.
#[allow(clippy::too_many_arguments)]
fn send_loop(
    create_topics: bool,
    brokers: &str,
    topic: &str,
    topics: &[(&str, i32)],
    replication: i32,
    mut producer: BaseProducer<DeliveryContext>,
    make_producer: &dyn Fn() -> Result<BaseProducer<DeliveryContext>, BusError>,
    results: &Deliveries,
    shared: &Shared,
) {
    // Topics are (re)checked at start and after every failed delivery, until a check
    // succeeds: a broker that was down at start (or lost them) gets them when it is back.
    let mut topics_ready = !create_topics;
    let mut topics_tried = !create_topics;
    let mut topics_retry_at = Instant::now();
    let mut next_send = shared.spool.lock().expect("spool lock").acked();
    let mut delivered: BTreeSet<u64> = BTreeSet::new();
    let mut in_flight = 0usize;
    let mut failed: Option<(u64, String)> = None;
    let mut backoff_until = Instant::now();
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        if stopping && in_flight == 0 {
            break;
        }
        if !topics_ready && Instant::now() >= topics_retry_at {
            // Sending goes on meanwhile: sends wait in rdkafka's retries and in the spool.
            match ensure_topics(brokers, topics, replication, Duration::from_secs(5)) {
                Ok(()) => topics_ready = true,
                Err(e) => {
                    warn!(error = %e, "could not create topics; sending anyway, retrying in 2 s");
                    *shared.last_error.lock().expect("lock") = Some(e.to_string());
                    topics_retry_at = Instant::now() + Duration::from_secs(2);
                }
            }
            topics_tried = true;
        }
        if topics_tried && failed.is_none() && !stopping && Instant::now() >= backoff_until && in_flight < WINDOW {
            let batch = shared.spool.lock().expect("spool lock").read(next_send, WINDOW - in_flight);
            match batch {
                Ok(batch) => {
                    for rec in batch {
                        next_send = rec.seq + 1;
                        if delivered.contains(&rec.seq) {
                            continue;
                        }
                        let record =
                            BaseRecord::with_opaque_to(topic, Box::new(rec.seq)).key(&rec.key).payload(&rec.payload);
                        match producer.send(record) {
                            Ok(()) => in_flight += 1,
                            Err((e, _)) => {
                                next_send = rec.seq;
                                if !matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) {
                                    failed = Some((rec.seq, e.to_string()));
                                }
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "spool read failed");
                    *shared.last_error.lock().expect("lock") = Some(e.to_string());
                    backoff_until = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        producer.poll(Duration::from_millis(50));
        for (seq, outcome) in std::mem::take(&mut *results.lock().expect("delivery lock")) {
            in_flight -= 1;
            match outcome {
                Ok(()) => {
                    delivered.insert(seq);
                }
                Err(reason) => {
                    metrics::counter!("retail_bus_delivery_failures_total").increment(1);
                    if failed.as_ref().is_none_or(|(s, _)| seq < *s) {
                        failed = Some((seq, reason));
                    }
                }
            }
        }
        // Acknowledge the delivered prefix so the spool can free it.
        {
            let mut spool = shared.spool.lock().expect("spool lock");
            let mut cursor = spool.acked();
            while delivered.remove(&cursor) {
                cursor += 1;
            }
            if cursor > spool.acked() {
                metrics::counter!("retail_bus_events_delivered_total").increment(cursor - spool.acked());
                if let Err(e) = spool.ack_until(cursor) {
                    warn!(error = %e, "spool ack failed");
                }
                *shared.last_error.lock().expect("lock") = None;
                shared.changed.notify_all();
            }
            delivered.retain(|s| *s >= cursor);
        }
        // After a failure, let everything in flight settle, then resend from the failure.
        if let Some((seq, reason)) = &failed
            && in_flight == 0
        {
            warn!(from_seq = seq, reason = %reason, "delivery failed; resending from the spool");
            *shared.last_error.lock().expect("lock") = Some(reason.clone());
            next_send = *seq;
            failed = None;
            topics_ready = !create_topics;
            backoff_until = Instant::now() + Duration::from_secs(1);
            // Timed-out sends leave an idempotent producer's sequence numbers unknown (a fatal
            // state for some brokers): start a fresh producer; repeats are dropped downstream
            // by event id.
            if let Some(fatal) = producer.client().fatal_error() {
                warn!(?fatal, "producer in fatal state");
            }
            match make_producer() {
                Ok(p) => producer = p,
                Err(e) => warn!(error = %e, "cannot recreate producer; retrying with the old one"),
            }
        }
        if in_flight == 0 && !stopping {
            let spool = shared.spool.lock().expect("spool lock");
            if next_send >= spool.next_seq() {
                let _ = shared.changed.wait_timeout(spool, Duration::from_millis(200));
            }
        }
    }
}

impl EventProducer for KafkaProducer {
    fn send(&mut self, events: &[Event]) -> Result<(), BusError> {
        let encoded: Vec<(Vec<u8>, Vec<u8>)> =
            events.iter().map(|e| (e.stream.0.as_bytes().to_vec(), encode_event(e))).collect();
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
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.direct.send(record).map_err(|(e, _)| kafka_err(&self.brokers, &format!("send to {topic}"), e))?;
        self.direct.flush(Duration::from_secs(10)).map_err(|e| kafka_err(&self.brokers, &format!("send to {topic}"), e))
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), BusError> {
        let deadline = Instant::now() + timeout.min(self.flush_timeout.max(timeout));
        let mut spool = self.shared.spool.lock().expect("spool lock");
        while spool.pending() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BusError::FlushTimeout {
                    pending: spool.pending(),
                    brokers: self.brokers.clone(),
                    timeout_s: timeout.as_secs(),
                    spool: spool.dir().to_owned(),
                });
            }
            spool = self.shared.changed.wait_timeout(spool, left.min(Duration::from_millis(200))).expect("lock").0;
        }
        Ok(())
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
    }
}

/// A consumer-group member with manual commits.
pub struct KafkaConsumer {
    brokers: String,
    topic: String,
    group: String,
    consumer: BaseConsumer,
    session_timeout: Duration,
    /// Since when this member has held no partition (None while it holds some).
    unassigned_since: Option<Instant>,
    rejoin_backoff: Duration,
}

impl KafkaConsumer {
    pub fn open(brokers: &str, config: &BusConfig, group: &str) -> Result<Self, BusError> {
        let consumer: BaseConsumer = client_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", (config.session_timeout_s * 1000).to_string())
            .create()
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
        self.consumer.assignment().map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect()).unwrap_or_default()
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
        while out.len() < max {
            match self.consumer.poll(wait) {
                None => break,
                // librdkafka reconnects by itself after these (broker down, transport errors);
                // only a fatal error ends consumption.
                Some(Err(KafkaError::MessageConsumption(code))) => {
                    warn!(brokers = %self.brokers, error = %code, "kafka consumer: transient error, retrying");
                    break;
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
        Ok(out)
    }

    fn assignment(&self) -> Option<Vec<i32>> {
        Some(self.assigned_partitions())
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
