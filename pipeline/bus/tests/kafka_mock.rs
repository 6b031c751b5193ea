//! The Kafka transport against rdkafka's in-process MockCluster: fast, and able to take a
//! broker down and bring it back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use retail_bus::{BusConfig, EventProducer, KafkaConsumer, KafkaProducer, RecordConsumer, decode_event};
use retail_core::{Event, EventKind, TenantId};

fn events(stream: &str, n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(TenantId::default(), stream.into(), i, i * 100, 0, EventKind::ZoneEnter { zone: "z".into() })
        })
        .collect()
}

fn config(brokers: &str, spool: &std::path::Path) -> BusConfig {
    BusConfig {
        url: format!("kafka://{brokers}"),
        topic: "events".into(),
        partitions: 3,
        create_topics: false,
        spool_dir: Some(spool.to_owned()),
        message_timeout_s: 5,
        ..BusConfig::default()
    }
}

/// A one-broker mock cluster with the events topic, and its bootstrap address.
fn mock() -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

fn consume_ids(brokers: &str, cfg: &BusConfig, want: usize) -> Vec<String> {
    let mut c = KafkaConsumer::open(brokers, cfg, "test-group").unwrap();
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < want && Instant::now() < deadline {
        for r in c.poll(500, Duration::from_millis(200)).unwrap() {
            ids.push(decode_event(&r.payload).unwrap().event_id);
        }
    }
    ids
}

#[test]
fn delivers_everything_in_key_order() {
    let (_cluster, brokers) = mock();
    let spool = tempfile::tempdir().unwrap();
    let cfg = config(&brokers, spool.path());
    let mut p = KafkaProducer::open(&brokers, &cfg).unwrap();
    let sent: Vec<Event> = events("cam-a", 50).into_iter().chain(events("cam-b", 50)).collect();
    p.send(&sent).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(p.pending(), 0);
    let ids = consume_ids(&brokers, &cfg, 100);
    assert_eq!(ids.len(), 100);
    let want: Vec<String> = sent.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>(), want.iter().collect::<HashSet<_>>());
    // Each stream's events arrive in the order they were sent.
    for stream in ["cam-a", "cam-b"] {
        let order: Vec<&String> =
            ids.iter().filter(|id| sent.iter().any(|e| &e.event_id == *id && e.stream.0 == stream)).collect();
        let sent_order: Vec<&String> = sent.iter().filter(|e| e.stream.0 == stream).map(|e| &e.event_id).collect();
        assert_eq!(order, sent_order, "{stream}");
    }
}

#[test]
fn broker_outage_loses_nothing() {
    let (cluster, brokers) = mock();
    let spool = tempfile::tempdir().unwrap();
    let cfg = config(&brokers, spool.path());
    let mut p = KafkaProducer::open(&brokers, &cfg).unwrap();
    p.send(&events("cam", 10)).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    cluster.broker_down(1).unwrap();
    // Sending during the outage does not block: events wait in the spool.
    let started = Instant::now();
    p.send(&events("cam2", 40)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let err = p.flush(Duration::from_secs(2)).unwrap_err().to_string();
    assert!(err.contains("not acknowledged"), "{err}");
    cluster.broker_up(1).unwrap();
    p.flush(Duration::from_secs(60)).unwrap();
    let ids = consume_ids(&brokers, &cfg, 50);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 50, "every event arrived");
}

#[test]
fn spooled_events_survive_a_restart() {
    let spool = tempfile::tempdir().unwrap();
    let (cluster, brokers) = mock();
    let cfg = config(&brokers, spool.path());
    // Broker down: the events can only go to the spool.
    cluster.broker_down(1).unwrap();
    {
        let mut p = KafkaProducer::open(&brokers, &cfg).unwrap();
        p.send(&events("cam", 25)).unwrap();
        assert_eq!(p.pending(), 25);
    }
    cluster.broker_up(1).unwrap();
    let mut p = KafkaProducer::open(&brokers, &cfg).unwrap();
    assert_eq!(p.pending(), 25, "the restarted producer found the spooled events");
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(consume_ids(&brokers, &cfg, 25).len(), 25);
}

/// Events spooled for one broker are never delivered to another one.
#[test]
fn events_spooled_for_another_bus_stay_where_they_are() {
    let spool = tempfile::tempdir().unwrap();
    {
        let mut p = KafkaProducer::open("127.0.0.1:9", &config("127.0.0.1:9", spool.path())).unwrap();
        p.send(&events("cam", 25)).unwrap();
    }
    let (_cluster, brokers) = mock();
    let cfg = config(&brokers, spool.path());
    let mut p = KafkaProducer::open(&brokers, &cfg).unwrap();
    assert_eq!(p.pending(), 0, "another bus's events are not adopted");
    p.send(&events("mine", 3)).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    let ids = consume_ids(&brokers, &cfg, 28);
    assert_eq!(ids.len(), 3, "only this run's events reach this broker");
    drop(p);
    // They are still there for a run against their own broker.
    let p = KafkaProducer::open("127.0.0.1:9", &config("127.0.0.1:9", spool.path())).unwrap();
    assert_eq!(p.pending(), 25);
}

/// Three producers in one process (as three `analyze` runs on one machine) share the spool
/// root: each gets its own spool, nothing is lost, repeated, or deleted from under another.
#[test]
fn concurrent_producers_share_a_spool_root_safely() {
    let (_cluster, brokers) = mock();
    let spool = tempfile::tempdir().unwrap();
    let cfg = config(&brokers, spool.path());
    let sent: Vec<Vec<Event>> = (0..3).map(|i| events(&format!("cam-{i}"), 400)).collect();
    std::thread::scope(|s| {
        for evs in &sent {
            let (brokers, cfg) = (&brokers, &cfg);
            s.spawn(move || {
                let mut p = KafkaProducer::open(brokers, cfg).unwrap();
                for chunk in evs.chunks(7) {
                    p.send(chunk).unwrap();
                }
                p.flush(Duration::from_secs(60)).unwrap();
            });
        }
    });
    let ids = consume_ids(&brokers, &cfg, 1200);
    assert_eq!(ids.len(), 1200, "every event of each producer, once");
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 1200);
    let left: Vec<_> = std::fs::read_dir(spool.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "every spool removed at a clean end: {left:?}");
}

fn big_event(stream: &str, bytes: usize) -> Event {
    Event::new(TenantId::default(), stream.into(), 99, 1, 0, EventKind::ZoneEnter { zone: "z".repeat(bytes) })
}

#[test]
fn oversize_event_is_refused_when_sent() {
    let spool = tempfile::tempdir().unwrap();
    let cfg = BusConfig { max_event_bytes: 2000, ..config("127.0.0.1:9", spool.path()) };
    let mut p = KafkaProducer::open("127.0.0.1:9", &cfg).unwrap();
    let err = p.send(&[big_event("door", 5000)]).unwrap_err().to_string();
    assert!(err.contains("`door`") && err.contains("max-event-bytes = 2000"), "{err}");
    assert_eq!(p.pending(), 0);
}

/// A record the broker will never take (here: spooled under a larger limit than the client
/// now has) is moved aside, and the records after it are delivered.
#[test]
fn permanently_refused_record_is_moved_aside_and_the_rest_delivered() {
    let (cluster, brokers) = mock();
    let spool = tempfile::tempdir().unwrap();
    cluster.broker_down(1).unwrap();
    {
        let cfg = BusConfig { max_event_bytes: 10_000, ..config(&brokers, spool.path()) };
        let mut p = KafkaProducer::open(&brokers, &cfg).unwrap();
        p.send(&events("before", 5)).unwrap();
        p.send(&[big_event("door", 5000)]).unwrap();
        p.send(&events("after", 5)).unwrap();
    }
    cluster.broker_up(1).unwrap();
    let cfg = BusConfig { max_event_bytes: 2000, ..config(&brokers, spool.path()) };
    let mut p = KafkaProducer::open(&brokers, &cfg).unwrap();
    assert_eq!(p.pending(), 11);
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(consume_ids(&brokers, &cfg, 11).len(), 10);
    let rejected: Vec<_> =
        std::fs::read_dir(spool.path().join("rejected")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(rejected.len(), 1);
    let text = std::fs::read_to_string(&rejected[0]).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("\"key\":\"door\"") && text.contains("zzzz"), "{}", &text[..200]);
}

#[test]
fn full_spool_is_a_clear_error() {
    let spool = tempfile::tempdir().unwrap();
    let cfg = BusConfig { spool_max_bytes: 64 * 1024, ..config("127.0.0.1:9", spool.path()) };
    let mut p = KafkaProducer::open("127.0.0.1:9", &cfg).unwrap();
    let mut result = Ok(());
    for chunk in 0..100 {
        result = p.send(&events(&format!("cam{chunk}"), 50));
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err().to_string();
    assert!(err.contains("is full") && err.contains("127.0.0.1:9"), "{err}");
    assert!(p.pending() > 0);
}

/// A flush that times out reports at once, and dropping the producer afterwards does not
/// wait for rdkafka's message timeout (300 s here): the events stay spooled for later.
#[test]
fn failed_flush_reports_and_the_producer_stops_promptly() {
    let spool = tempfile::tempdir().unwrap();
    let cfg = BusConfig { message_timeout_s: 300, ..config("127.0.0.1:9", spool.path()) };
    let mut p = KafkaProducer::open("127.0.0.1:9", &cfg).unwrap();
    p.send(&events("cam", 7)).unwrap();
    let started = Instant::now();
    let err = p.flush(Duration::from_secs(2)).unwrap_err().to_string();
    assert!(err.contains("7 events not acknowledged") && err.contains("within 2 s"), "{err}");
    drop(p);
    assert!(started.elapsed() < Duration::from_secs(20), "stopped after {:?}", started.elapsed());
    let p = KafkaProducer::open("127.0.0.1:9", &cfg).unwrap();
    assert_eq!(p.pending(), 7, "kept for the next run");
}
