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
    let c = retail_lake::compact(&store, "2099-01-01").await.unwrap();
    assert!(c.files_in > c.files_out && c.files_out > 0, "{c:?}");
    assert_eq!([totals(&store, "acme").await, totals(&store, "globex").await], before);
    assert_eq!(retail_lake::compact(&store, "2099-01-01").await.unwrap().files_in, 0, "nothing left to merge");

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
    let rows: usize = hourly.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    // Tenants never see each other, and nothing but reading is allowed.
    let err = query(&store, "initech", "SELECT 1").await.unwrap_err();
    assert!(matches!(err, LakeError::UnknownTenant { .. }), "{err}");
    let err = query(&store, "acme", "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/'").await.unwrap_err();
    assert!(err.to_string().contains("DDL"), "{err}");
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
        secret_access_key: Some(retail_testkit::S3_SECRET_KEY.into()),
    };
    let store = LakeStore::open(&format!("s3://{}/retail", retail_testkit::S3_BUCKET), &settings).unwrap();
    aggregate_query_and_recover(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_go_to_their_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = LakeStore::open(dir.path().to_str().unwrap(), &S3Settings::default()).unwrap();
    let bus = MemoryBus::new(1);
    let cfg = bus_config();
    let mut p = bus.producer(&cfg.topic);
    // One stream: its own watermark decides lateness.
    let ev = |t: i64, track: u64| {
        Event::new(TenantId("acme".into()), "door".into(), track, 0, t, EventKind::ZoneEnter { zone: "z".into() })
    };
    // Minute 0, then ten minutes later, then a straggler for minute 0: too late for lateness 60 s.
    p.send(&[ev(T0, 1), ev(T0 + 600_000_000, 2), ev(T0 + 5_000_000, 3)]).unwrap();
    let lake = lake_config(store.url());
    let mut c = bus.consumer(&cfg.topic, &lake.group);
    let stats = run(&lake, &cfg, &mut c, &mut bus.producer("x"), &store, StopWhen::Idle(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(stats.late, 1, "{stats:?}");
    let late = query(&store, "acme", "SELECT track_id FROM late_events").await.unwrap();
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
