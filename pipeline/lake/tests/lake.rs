//! The aggregator end to end in-process: events on the in-process bus → windows → Parquet on
//! a local directory and on a real S3 server (SeaweedFS) with the same test body → SQL.

use std::path::PathBuf;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use retail_bus::{BusConfig, EventProducer, MemoryBus, Record, RecordConsumer};
use retail_core::{Direction, Event, EventKind, ExitReason, TenantId};
use retail_lake::{LakeConfig, LakeError, LakeStore, S3Settings, StopWhen, query::query, run};
use retail_testkit::SeaweedFs;

const T0: i64 = 1_795_770_000_000_000; // 2026-11-27T09:00:00Z

/// A day-in-the-life: two tenants, two cameras each, crossings and visits over 12 minutes.
fn synthetic() -> Vec<Event> {
    let mut out = Vec::new();
    for tenant in ["acme", "globex"] {
        for cam in ["door", "till"] {
            let first = out.len();
            for i in 0..240u64 {
                let t = T0 + i as i64 * 3_000_000 + if cam == "till" { 1_000_000 } else { 0 };
                let kind = match i % 4 {
                    0 => EventKind::LineCrossing { line: "entrance".into(), direction: Direction::In },
                    1 => EventKind::LineCrossing {
                        line: "entrance".into(),
                        direction: if tenant == "acme" { Direction::Out } else { Direction::In },
                    },
                    2 => EventKind::ZoneEnter { zone: "queue".into() },
                    _ => {
                        EventKind::ZoneExit { zone: "queue".into(), dwell_s: (i % 7) as f64, reason: ExitReason::Left }
                    }
                };
                out.push(Event::new(TenantId(tenant.into()), cam.into(), i, (t - T0) as u64 * 1000, t, kind));
            }
            // The analyzer's per-minute occupancy summary, sent at the end of each minute.
            for m in 0..12u64 {
                let t = T0 + m as i64 * 60_000_000 + 59_500_000;
                let peak = m % 5;
                let kind =
                    EventKind::ZoneOccupancy { zone: "queue".into(), frames: 600, peak, occupancy_sum: 300 * peak };
                out.push(Event::new(TenantId(tenant.into()), cam.into(), 0, (t - T0) as u64 * 1000, t, kind));
            }
            // A camera publishes in time order.
            out[first..].sort_by_key(|e| e.time_us);
        }
    }
    out
}

/// In, out, zone entries, frames, peak occupancy and summed occupancy of one tenant's events.
type Totals = (i64, i64, i64, i64, i64, f64);

fn truth(events: &[Event], tenant: &str) -> Totals {
    let mine = events.iter().filter(|e| e.tenant.0 == tenant);
    let (mut ins, mut outs, mut entries, mut frames, mut peak, mut person_frames) = (0, 0, 0, 0, 0, 0.0);
    for e in mine {
        match e.kind {
            EventKind::LineCrossing { direction: Direction::In, .. } => ins += 1,
            EventKind::LineCrossing { direction: Direction::Out, .. } => outs += 1,
            EventKind::ZoneEnter { .. } => entries += 1,
            EventKind::ZoneOccupancy { frames: f, peak: p, occupancy_sum, .. } => {
                frames += f as i64;
                peak = peak.max(p as i64);
                person_frames += occupancy_sum as f64;
            }
            _ => {}
        }
    }
    (ins, outs, entries, frames, peak, person_frames)
}

fn bus_config() -> BusConfig {
    BusConfig { url: "memory://".into(), partitions: 3, ..BusConfig::default() }
}

fn lake_config(url: &str) -> LakeConfig {
    LakeConfig { url: url.into(), lateness_s: 60, idle_flush_s: 3600, batch_records: 50, ..LakeConfig::default() }
}

async fn totals(store: &LakeStore, tenant: &str) -> Totals {
    let b = query(store, tenant, "SELECT sum(in_count) AS i, sum(out_count) AS o FROM line_counts").await.unwrap();
    let sql = "SELECT sum(entries), sum(frames), max(peak), sum(mean_occupancy * frames) FROM zone_occupancy";
    let z = query(store, tenant, sql).await.unwrap();
    let get = |b: &[arrow_array::RecordBatch], c: usize| b[0].column(c).as_primitive::<Int64Type>().value(0);
    let person_frames = z[0].column(3).as_primitive::<Float64Type>().value(0).round();
    (get(&b, 0), get(&b, 1), get(&z, 0), get(&z, 1), get(&z, 2), person_frames)
}

async fn count_files(store: &LakeStore) -> usize {
    use futures::TryStreamExt;
    store.object_store().list(None).try_collect::<Vec<_>>().await.unwrap().len()
}

/// A consumer that fails after `polls` polls: the aggregator "crashes" there.
struct Crashing<C> {
    inner: C,
    polls: usize,
}

impl<C: RecordConsumer> RecordConsumer for Crashing<C> {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, retail_bus::BusError> {
        if self.polls == 0 {
            return Err(retail_bus::BusError::Url { url: "crash".into(), reason: "simulated crash".into() });
        }
        self.polls -= 1;
        self.inner.poll(max, timeout)
    }

    fn commit(&mut self, next: &[(i32, i64)]) -> Result<(), retail_bus::BusError> {
        self.inner.commit(next)
    }
}

/// The one test body, run against each storage backend.
async fn aggregate_query_and_recover(store: LakeStore) {
    let events = synthetic();
    let bus = MemoryBus::new(3);
    let cfg = bus_config();
    let mut producer = bus.producer(&cfg.topic);
    // Small batches so that a crash falls between windows.
    for chunk in events.chunks(37) {
        producer.send(chunk).unwrap();
    }
    // Redeliveries and junk, as a real topic has them.
    producer.send(&events[100..160]).unwrap();
    producer.send_raw(&cfg.topic, Some(b"cam"), b"\x00\x01 not json").unwrap();
    producer.send_raw(&cfg.topic, Some(b"cam"), br#"{"schema_version":99,"event_id":"x"}"#).unwrap();

    // First run crashes part-way; the second resumes from the committed offsets.
    let lake = lake_config(store.url());
    let mut dlq = bus.producer("unused");
    let crashing = &mut Crashing { inner: bus.consumer(&cfg.topic, &lake.group), polls: 6 };
    let err = run(&lake, &cfg, crashing, &mut dlq, &store, StopWhen::Never).await.unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    let written_before_crash = count_files(&store).await;
    assert!(written_before_crash > 0, "the crash should come after some windows were written");
    let mut consumer = bus.consumer(&cfg.topic, &lake.group);
    let stats =
        run(&lake, &cfg, &mut consumer, &mut dlq, &store, StopWhen::Idle(Duration::from_millis(300))).await.unwrap();
    assert_eq!(stats.dead_letters, 2, "{stats:?}");
    assert_eq!(bus.messages(&cfg.dead_letter_topic).len(), 2, "malformed messages copied to the dead-letter topic");
    assert!(stats.duplicates >= 60, "{stats:?}");
    assert_eq!(stats.late, 0, "{stats:?}");

    // Compaction merges each day's minute files and changes no answer.
    let before = [totals(&store, "acme").await, totals(&store, "globex").await];
    let c = retail_lake::compact(&store, "2099-01-01", Duration::ZERO).await.unwrap();
    assert!(c.files_in > c.files_out && c.files_out > 0, "{c:?}");
    assert_eq!([totals(&store, "acme").await, totals(&store, "globex").await], before);
    assert_eq!(
        retail_lake::compact(&store, "2099-01-01", Duration::ZERO).await.unwrap().files_in,
        0,
        "nothing left to merge"
    );

    for tenant in ["acme", "globex"] {
        assert_eq!(totals(&store, tenant).await, truth(&events, tenant), "{tenant}");
        let n = query(&store, tenant, "SELECT count(*) FROM events").await.unwrap();
        let published = events.iter().filter(|e| e.tenant.0 == tenant).count() as i64;
        assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), published, "{tenant}: one row per event");
    }
    // Hourly footfall per store, the analyst's query.
    let hourly = query(
        &store,
        "acme",
        "SELECT stream, date_trunc('hour', minute) AS hour, sum(in_count) AS footfall \
         FROM line_counts GROUP BY stream, date_trunc('hour', minute) ORDER BY stream",
    )
    .await
    .unwrap();
    let rows: usize = hourly.iter().map(arrow_array::RecordBatch::num_rows).sum();
    assert_eq!(rows, 2);
    // Tenants never see each other, and nothing but reading is allowed.
    let err = query(&store, "initech", "SELECT 1").await.unwrap_err();
    assert!(matches!(err, LakeError::UnknownTenant { .. }), "{err}");
    let err = query(&store, "acme", "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/'").await.unwrap_err();
    assert!(err.to_string().contains("DDL"), "{err}");
    retention_purges_whole_old_days(&store).await;
}

/// Seven years after the synthetic day (2026-11-27) its partitions go, every table's, and a
/// later day's stay; a day before that, nothing goes.
async fn retention_purges_whole_old_days(store: &LakeStore) {
    let keep = retail_lake::SEVEN_YEARS_DAYS;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    let later = "line_counts/tenant=acme/date=2027-01-05/minute-0900-door.parquet";
    let batch = retail_lake::tables::line_counts_batch(&synthetic()[..8]).unwrap();
    store.put_parquet(later, &batch).await.unwrap();
    // Another team's table in the same bucket is not the lake's to purge.
    store.put_parquet("sales/region=eu/date=2015-01-01/part-0.parquet", &batch).await.unwrap();
    let files = count_files(store).await;
    let last_day_kept = day.checked_add_days(chrono::Days::new(keep)).unwrap();
    let none = retail_lake::purge_expired(store, keep, last_day_kept).await.unwrap();
    assert_eq!((none.files, count_files(store).await), (0, files), "{none:?}");

    let next = last_day_kept.succ_opt().unwrap();
    let purged = retail_lake::purge_expired(store, keep, next).await.unwrap();
    assert_eq!(purged.files as usize, files - 2, "{purged:?}");
    assert_eq!(purged.partitions, 2 * 3, "two tenants × events, line counts, occupancy: {purged:?}");
    assert!(purged.bytes > 0);
    assert_eq!(count_files(store).await, 2, "the later day or the foreign table was purged too");
    let left = query(store, "acme", "SELECT count(*), min(date) FROM line_counts").await.unwrap();
    assert_eq!(left[0].column(0).as_primitive::<Int64Type>().value(0), batch.num_rows() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path().to_str().unwrap(), &S3Settings::default()).unwrap();
    aggregate_query_and_recover(store).await;
    // Partitioned tenant=…/date=…/ and only whole files.
    assert!(dir.path().join("line_counts/tenant=acme/date=2026-11-27").is_dir());
    let partial = walk(dir.path()).into_iter().filter(|p| p.extension().is_none_or(|e| e != "parquet")).count();
    assert_eq!(partial, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_seaweedfs() {
    let s3 = SeaweedFs::start();
    let settings = S3Settings {
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(retail_testkit::S3_ACCESS_KEY.into()),
        secret_access_key: Some(retail_core::Secret::new(retail_testkit::S3_SECRET_KEY)),
    };
    let store = LakeStore::open(&format!("s3://{}/retail", retail_testkit::S3_BUCKET), &settings).unwrap();
    aggregate_query_and_recover(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_go_to_their_own_table() {
    let Local { dir: _dir, store, bus, cfg } = Local::new(1);
    let mut p = bus.producer(&cfg.topic);
    // One stream: its own watermark decides lateness.
    let ev = |t: i64, track: u64| {
        Event::new(TenantId("acme".into()), "door".into(), track, 0, t, EventKind::ZoneEnter { zone: "z".into() })
    };
    // Minute 0, then ten minutes later, then a straggler for minute 0: too late for lateness 60 s.
    p.send(&[ev(T0, 1), ev(T0 + 600_000_000, 2), ev(T0 + 5_000_000, 3)]).unwrap();
    // The straggler delivered again (a producer's resend): still one late event.
    p.send(&[ev(T0 + 5_000_000, 3)]).unwrap();
    let lake = lake_config(store.url());
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    let stats = run(&lake, &cfg, &mut c, &mut bus.producer("x"), &store, StopWhen::Idle(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(stats.late, 2, "{stats:?}");
    let late = query(&store, "acme", "SELECT track_id FROM late_events").await.unwrap();
    assert_eq!(late.iter().map(arrow_array::RecordBatch::num_rows).sum::<usize>(), 1, "one row per late event");
    assert_eq!(late[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    let z = query(&store, "acme", "SELECT sum(entries) FROM zone_occupancy").await.unwrap();
    assert_eq!(z[0].column(0).as_primitive::<Int64Type>().value(0), 2, "the late event is not in the aggregates");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// A lake in a temp directory fed by an in-process bus: the setting of most tests here.
struct Local {
    dir: tempfile::TempDir,
    store: LakeStore,
    bus: MemoryBus,
    cfg: BusConfig,
}

impl Local {
    fn new(partitions: i32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = LakeStore::open(dir.path().to_str().unwrap(), &S3Settings::default()).unwrap();
        Local { dir, store, bus: MemoryBus::new(partitions), cfg: bus_config() }
    }
}

/// Runs the aggregator on `bus` until it has been idle for 300 ms.
async fn until_idle(lake: &LakeConfig, bus: &MemoryBus, store: &LakeStore) -> retail_lake::LakeStats {
    let cfg = bus_config();
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    let idle = StopWhen::Idle(Duration::from_millis(300));
    run(lake, &cfg, &mut c, &mut bus.producer("dead-letters"), store, idle).await.unwrap()
}

/// Events as a hostile or broken producer would put them on the topic: ids that try to
/// escape the tenant's prefix, upper-case tenants, times at the ends of i64 or far in the
/// future. Each is dead-lettered; the real events are stored on time and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_events_are_dead_lettered_and_change_nothing() {
    let Local { dir, store, bus, cfg } = Local::new(2);
    let mut p = bus.producer(&cfg.topic);
    let crossing = |tenant: &str, stream: &str, t: i64, track: u64| {
        let kind = EventKind::LineCrossing { line: "entrance".into(), direction: Direction::In };
        Event::new(TenantId(tenant.into()), stream.into(), track, track * 1000, t, kind)
    };
    let raw = |e: &Event, from: &str, to: &str| {
        let json = String::from_utf8(retail_bus::encode_event(e)).unwrap();
        assert!(json.contains(from));
        json.replace(from, to)
    };
    let mut hostile = Vec::new();
    for i in 0..50 {
        hostile.push(raw(&crossing("shopa", "door", T0 + i, i as u64), "\"shopa\"", "\"shopa/date=x\""));
    }
    hostile.push(raw(&crossing("shopa", "door", T0, 900), "\"shopa\"", "\"ShopA\""));
    hostile.push(raw(&crossing("shopa", "door", T0, 901), "\"door\"", "\"../door\""));
    let now = chrono::Utc::now().timestamp_micros();
    for (track, t) in [(902, i64::MAX), (903, i64::MIN), (904, now + 30 * 86_400_000_000)] {
        hostile.push(String::from_utf8(retail_bus::encode_event(&crossing("shopa", "door", t, track))).unwrap());
    }
    for h in &hostile {
        p.send_raw(&cfg.topic, Some(b"door"), h.as_bytes()).unwrap();
    }
    // The real events come after the far-future one, in the same stream.
    let real: Vec<Event> = (0..20).map(|i| crossing("shopa", "door", T0 + i * 10_000_000, 100 + i as u64)).collect();
    p.send(&real).unwrap();
    let lake = lake_config(store.url());
    let stats = until_idle(&lake, &bus, &store).await;
    assert_eq!(stats.dead_letters, hostile.len() as u64, "{stats:?}");
    assert_eq!(bus.messages(&cfg.dead_letter_topic).len(), hostile.len());
    assert_eq!((stats.accepted, stats.late), (20, 0), "{stats:?}");
    let n = query(&store, "shopa", "SELECT sum(in_count), count(DISTINCT stream) FROM line_counts").await.unwrap();
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 20);
    assert_eq!(n[0].column(1).as_primitive::<Int64Type>().value(0), 1);
    let dates: Vec<String> = std::fs::read_dir(dir.path().join("line_counts/tenant=shopa"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dates, ["date=2026-11-27"]);
    let tenants: Vec<String> = std::fs::read_dir(dir.path().join("line_counts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(tenants, ["tenant=shopa"]);
}

/// A dead-letter producer that fails its first `failures` sends, as an unreachable
/// dead-letter topic does.
struct FlakyDeadLetters {
    inner: retail_bus::MemoryProducer,
    failures: usize,
}

impl EventProducer for FlakyDeadLetters {
    fn send(&mut self, events: &[Event]) -> Result<(), retail_bus::BusError> {
        self.inner.send(events)
    }

    fn send_raw(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), retail_bus::BusError> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err(retail_bus::BusError::Kafka {
                brokers: "127.0.0.1:9".into(),
                operation: format!("send to {topic}"),
                reason: "Local: Message timed out".into(),
            });
        }
        self.inner.send_raw(topic, key, payload)
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), retail_bus::BusError> {
        self.inner.flush(timeout)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_dead_letter_topic_is_retried_not_fatal() {
    let Local { dir: _dir, store, bus, cfg } = Local::new(1);
    let mut p = bus.producer(&cfg.topic);
    let ev = |t: i64, track: u64| {
        Event::new(TenantId("acme".into()), "door".into(), track, track, t, EventKind::ZoneEnter { zone: "z".into() })
    };
    p.send(&[ev(T0, 1)]).unwrap();
    p.send_raw(&cfg.topic, None, b"not an event").unwrap();
    p.send(&[ev(T0 + 1, 2)]).unwrap();
    let lake = lake_config(store.url());
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    let mut dlq = FlakyDeadLetters { inner: bus.producer("x"), failures: 3 };
    let stats = run(&lake, &cfg, &mut c, &mut dlq, &store, StopWhen::Idle(Duration::from_millis(300))).await.unwrap();
    assert_eq!((stats.dead_letters, stats.accepted), (1, 2), "{stats:?}");
    assert_eq!(dlq.failures, 0, "every failure was retried");
    assert_eq!(bus.messages(&cfg.dead_letter_topic).len(), 1, "delivered once it worked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_their_memory_or_time_are_stopped_with_a_clear_error() {
    let Local { dir: _dir, store, bus, cfg } = Local::new(1);
    let kind = EventKind::ZoneEnter { zone: "z".into() };
    bus.producer(&cfg.topic).send(&[Event::new(TenantId("acme".into()), "door".into(), 1, 1, T0, kind)]).unwrap();
    let lake = lake_config(store.url());
    until_idle(&lake, &bus, &store).await;
    use retail_lake::query::{QueryLimits, query_with_limits};
    let limits = QueryLimits { memory_bytes: 32 << 20, timeout: Duration::from_secs(2) };
    let sql = "SELECT value % 20000000 AS k, count(*) AS n FROM generate_series(1, 40000000) GROUP BY value % 20000000";
    let err = query_with_limits(&store, "acme", sql, limits).await.unwrap_err().to_string();
    assert!(err.contains("query stopped") && err.contains("32 MiB of memory"), "{err}");
    let started = std::time::Instant::now();
    let sql = "SELECT count(*) FROM generate_series(1, 1000000000000)";
    let err = query_with_limits(&store, "acme", sql, limits).await.unwrap_err().to_string();
    assert!(err.contains("query stopped") && err.contains("2 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "stopped near its limit: {:?}", started.elapsed());
    // Within the limits the same session answers.
    let ok = query_with_limits(&store, "acme", "SELECT count(*) FROM generate_series(1, 1000)", limits).await.unwrap();
    assert_eq!(ok[0].column(0).as_primitive::<Int64Type>().value(0), 1000);
}

/// A zero-length events file (a disk that lost it) is moved to `_quarantine/` with an error
/// naming it instead of crash-looping the aggregator; the window stays closed, so what comes
/// for it is kept in `late_events` rather than overwriting its aggregates with a part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lake_file_is_quarantined_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let rel = "events/tenant=acme/date=2026-11-27/minute-0900-door.parquet";
    std::fs::create_dir_all(dir.path().join(rel).parent().unwrap()).unwrap();
    std::fs::write(dir.path().join(rel), b"").unwrap();
    let store = LakeStore::open(dir.path().to_str().unwrap(), &S3Settings::default()).unwrap();
    let bus = MemoryBus::new(1);
    let cfg = bus_config();
    let kind = EventKind::LineCrossing { line: "entrance".into(), direction: Direction::In };
    let events: Vec<Event> =
        (0..5).map(|i| Event::new(TenantId("acme".into()), "door".into(), i, i, T0 + i as i64, kind.clone())).collect();
    bus.producer(&cfg.topic).send(&events).unwrap();
    let lake = lake_config(store.url());
    let stats = until_idle(&lake, &bus, &store).await;
    assert_eq!((stats.accepted, stats.late, stats.windows_written), (0, 5, 0), "{stats:?}");
    assert_eq!(std::fs::metadata(dir.path().join("_quarantine").join(rel)).unwrap().len(), 0);
    assert!(!dir.path().join(rel).exists());
    let n = query(&store, "acme", "SELECT count(*) FROM late_events").await.unwrap();
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 5);
}

/// Two cameras; one stops. Its last minutes are written after `idle-flush-s` of processing
/// time while the other goes on sending, and an on-time event it sends afterwards reopens
/// its minute instead of turning late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_is_written_while_another_goes_on() {
    let Local { dir, store, bus, cfg } = Local::new(2);
    let lake = LakeConfig { idle_flush_s: 1, ..lake_config(store.url()) };
    let crossing = |stream: &str, t: i64, track: u64| {
        let kind = EventKind::LineCrossing { line: "entrance".into(), direction: Direction::In };
        Event::new(TenantId("acme".into()), stream.into(), track, track, t, kind)
    };
    let mut p = bus.producer(&cfg.topic);
    p.send(&[crossing("door", T0 + 5_000_000, 1), crossing("door", T0 + 65_000_000, 2)]).unwrap();
    let door_minute_1 = dir.path().join("line_counts/tenant=acme/date=2026-11-27/minute-0901-door.parquet");
    let sender = std::thread::spawn(move || {
        for i in 0..40 {
            p.send(&[crossing("till", T0 + i * 1_000_000, 100 + i as u64)]).unwrap();
            if i == 30 {
                assert!(door_minute_1.exists(), "the stopped stream's minute is written while the other sends");
                p.send(&[crossing("door", T0 + 70_000_000, 3)]).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    let stats = run(&lake, &cfg, &mut c, &mut bus.producer("x"), &store, StopWhen::Idle(Duration::from_millis(1500)))
        .await
        .unwrap();
    sender.join().unwrap();
    assert_eq!((stats.accepted, stats.late), (43, 0), "{stats:?}");
    let sql =
        "SELECT stream, sum(in_count), count(*) FROM line_counts WHERE in_count > 0 GROUP BY stream ORDER BY stream";
    let b = query(&store, "acme", sql).await.unwrap();
    let ins = b[0].column(1).as_primitive::<Int64Type>();
    let rows = b[0].column(2).as_primitive::<Int64Type>();
    // door: minute 0 (1 crossing) and minute 1 (2, rewritten whole after it reopened).
    assert_eq!((ins.value(0), rows.value(0)), (3, 2));
    assert_eq!(ins.value(1), 40);
}

/// Compaction deletes the minute files; a replay of part of a compacted window afterwards
/// (a fresh aggregator in the same group, so nothing is remembered) is still recognised as
/// repeats and changes no table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_a_compacted_day_counts_nothing_twice() {
    let Local { dir: _dir, store, bus, cfg } = Local::new(1);
    let lake = lake_config(store.url());
    let kind = EventKind::LineCrossing { line: "entrance".into(), direction: Direction::In };
    let events: Vec<Event> = (0..10)
        .map(|i| {
            Event::new(
                TenantId("acme".into()),
                "front door (north) #2".into(),
                i,
                i,
                T0 + i as i64 * 20_000_000,
                kind.clone(),
            )
        })
        .collect();
    let mut p = bus.producer(&cfg.topic);
    p.send(&events).unwrap();
    let idle = StopWhen::Idle(Duration::from_millis(300));
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    run(&lake, &cfg, &mut c, &mut bus.producer("x"), &store, idle).await.unwrap();
    let sums = || async {
        let b = query(&store, "acme", "SELECT sum(in_count) FROM line_counts").await.unwrap();
        let e = query(&store, "acme", "SELECT count(*) FROM events").await.unwrap();
        (b[0].column(0).as_primitive::<Int64Type>().value(0), e[0].column(0).as_primitive::<Int64Type>().value(0))
    };
    assert_eq!(sums().await, (10, 10));
    let fresh = retail_lake::compact(&store, "2099-01-01", Duration::from_secs(3600)).await.unwrap();
    assert_eq!(fresh.files_in, 0, "a day with files written in the last hour is left alone");
    assert!(retail_lake::compact(&store, "2099-01-01", Duration::ZERO).await.unwrap().files_in > 0);
    p.send(&events[2..5]).unwrap();
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    let stats = run(&lake, &cfg, &mut c, &mut bus.producer("x"), &store, idle).await.unwrap();
    assert_eq!((stats.duplicates, stats.accepted, stats.windows_written), (3, 0, 0), "{stats:?}");
    assert_eq!(sums().await, (10, 10));
}

/// A window written early (its camera went quiet) that the camera's watermark passes later
/// is rewritten as final when a late event arrives for it, so the same event sent again to a
/// restarted aggregator stays late instead of reopening the window and counting twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_passed_by_its_watermark_is_not_reopened_after_a_restart() {
    let Local { dir: _dir, store, bus, cfg } = Local::new(1);
    let lake = LakeConfig { idle_flush_s: 1, ..lake_config(store.url()) };
    let crossing = |t: i64, track: u64| {
        let kind = EventKind::LineCrossing { line: "entrance".into(), direction: Direction::In };
        Event::new(TenantId("acme".into()), "door".into(), track, track, t, kind)
    };
    let mut p = bus.producer(&cfg.topic);
    p.send(&[crossing(T0 + 5_000_000, 1)]).unwrap();
    let later = std::thread::spawn(move || {
        // By now minute 0 is written early: the camera was quiet for idle-flush-s.
        std::thread::sleep(Duration::from_millis(2500));
        p.send(&[crossing(T0 + 600_000_000, 2), crossing(T0 + 10_000_000, 3)]).unwrap();
        p
    });
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    let idle = StopWhen::Idle(Duration::from_secs(4));
    let stats = run(&lake, &cfg, &mut c, &mut bus.producer("dead-letters"), &store, idle).await.unwrap();
    let mut p = later.join().unwrap();
    assert_eq!((stats.accepted, stats.late), (2, 1), "{stats:?}");
    p.send(&[crossing(T0 + 10_000_000, 3)]).unwrap();
    let stats = until_idle(&lake, &bus, &store).await;
    assert_eq!((stats.accepted, stats.late), (0, 1), "{stats:?}");
    let b = query(&store, "acme", "SELECT sum(in_count) FROM line_counts").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    let l = query(&store, "acme", "SELECT count(*) FROM late_events").await.unwrap();
    assert_eq!(l[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

/// A group member whose partitions are taken away by a rebalance after `polls` polls and
/// given back `gap` later, as a broker does when a member joins or a dead one expires. While
/// it holds none it polls nothing, and what it read but did not commit comes again.
struct Rebalanced {
    bus: MemoryBus,
    cfg: BusConfig,
    group: String,
    inner: retail_bus::MemoryConsumer,
    polls: usize,
    gap: Duration,
    taken: Option<std::time::Instant>,
}

impl Rebalanced {
    fn in_gap(&self) -> bool {
        self.taken.is_some_and(|t| t.elapsed() < self.gap)
    }
}

impl RecordConsumer for Rebalanced {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, retail_bus::BusError> {
        if self.polls == 0 && self.taken.is_none() {
            self.taken = Some(std::time::Instant::now());
        }
        if self.in_gap() {
            std::thread::sleep(timeout.min(Duration::from_millis(50)));
            return Ok(Vec::new());
        }
        if self.taken.is_some_and(|t| t.elapsed() >= self.gap) && self.polls == 0 {
            // Given back: reading resumes at the group's commit.
            self.inner = self.bus.consumer(&self.cfg.topic, &self.group);
            self.polls = usize::MAX;
        }
        self.polls = self.polls.saturating_sub(1);
        self.inner.poll(max, timeout)
    }

    fn commit(&mut self, next: &[(i32, i64)]) -> Result<(), retail_bus::BusError> {
        self.inner.commit(next)
    }

    fn assignment(&self) -> Option<Vec<i32>> {
        Some(if self.in_gap() { Vec::new() } else { (0..self.cfg.partitions).collect() })
    }

    fn backlog(&mut self) -> Result<Option<retail_bus::Backlog>, retail_bus::BusError> {
        if !self.in_gap() {
            return self.inner.backlog();
        }
        let committed = self.bus.consumer(&self.cfg.topic, &self.group).backlog()?.unwrap_or_default();
        Ok(Some(retail_bus::Backlog { held: 0, held_unread: 0, elsewhere: committed.held_unread }))
    }
}

/// `--until-idle` in a consumer group: a rebalance that leaves the member without partitions
/// for longer than the idle time does not end the run with the rest of the topic unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_longer_than_the_idle_time_does_not_end_an_until_idle_run() {
    let Local { dir: _dir, store, bus, cfg } = Local::new(3);
    let cfg = BusConfig { partitions: 3, ..cfg };
    let events = synthetic();
    bus.producer(&cfg.topic).send(&events).unwrap();
    let lake = lake_config(store.url());
    let mut c = Rebalanced {
        inner: bus.consumer(&cfg.topic, &lake.group),
        bus: bus.clone(),
        cfg: cfg.clone(),
        group: lake.group.clone(),
        polls: 2,
        gap: Duration::from_millis(1500),
        taken: None,
    };
    let stats = run(&lake, &cfg, &mut c, &mut bus.producer("x"), &store, StopWhen::Idle(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(stats.records > 100, "{stats:?}");
    for tenant in ["acme", "globex"] {
        assert_eq!(totals(&store, tenant).await, truth(&events, tenant), "{tenant}: {stats:?}");
    }
}
