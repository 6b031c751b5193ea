//! Lake benchmark: events/s end to end (producer → tansu → aggregator → Parquet) and the
//! latency of an analyst query (hourly footfall per store for a month) over generated minute
//! aggregates for 100 cameras × 30 days. Prints one table of medians.
//!
//! `cargo run -p retail-benches --bin lake -- --events 20000 --reps 3` (needs
//! scripts/setup-test-services.sh for tansu).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use clap::Parser;
use retail_bus::{BusConfig, EventProducer, KafkaConsumer, KafkaProducer};
use retail_core::{Direction, Event, EventKind, TenantId};
use retail_lake::{LakeConfig, LakeStore, S3Settings, StopWhen, query::query, tables};
use retail_testkit::Tansu;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value_t = 100)]
    cameras: usize,
    #[arg(long, default_value_t = 30)]
    days: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const T0: i64 = 1_795_737_600_000_000; // 2026-11-27T00:00:00Z

fn end_to_end(n: u64, rep: usize) -> anyhow::Result<(f64, f64)> {
    let broker = Tansu::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir()?;
    let bus = BusConfig {
        url: format!("kafka://{brokers}"),
        topic: format!("bench-{rep}"),
        spool_dir: Some(dir.path().join("spool")),
        ..BusConfig::default()
    };
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let kind = EventKind::LineCrossing {
                line: "door".into(),
                direction: if i % 2 == 0 { Direction::In } else { Direction::Out },
            };
            Event::new(
                TenantId::default(),
                format!("cam-{}", i % 16).as_str().into(),
                i,
                i * 1000,
                T0 + i as i64 * 10_000,
                kind,
            )
        })
        .collect();
    let started = Instant::now();
    let mut p = KafkaProducer::open(&brokers, &bus)?;
    for chunk in events.chunks(1000) {
        p.send(chunk)?;
    }
    p.flush(Duration::from_secs(600))?;
    let produced = started.elapsed().as_secs_f64();
    let store = LakeStore::open(dir.path().join("lake").to_str().context("path")?, &S3Settings::default())?;
    let lake = LakeConfig { lateness_s: 5, ..LakeConfig::default() };
    let mut consumer = KafkaConsumer::open(&brokers, &bus, "bench")?;
    let mut dlq = KafkaProducer::open(&brokers, &BusConfig { spool_dir: Some(dir.path().join("dlq")), ..bus.clone() })?;
    let rt = tokio::runtime::Runtime::new()?;
    let idle = Duration::from_secs(2);
    let stats = rt.block_on(retail_lake::run(&lake, &bus, &mut consumer, &mut dlq, &store, StopWhen::Idle(idle)))?;
    anyhow::ensure!(stats.accepted == n, "aggregated {} of {n}", stats.accepted);
    // The idle wait at the end is not work.
    let total = started.elapsed().as_secs_f64() - idle.as_secs_f64();
    Ok((n as f64 / produced, n as f64 / total))
}

fn generate(store: &LakeStore, cameras: usize, days: usize) -> anyhow::Result<usize> {
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = 0;
    for day in 0..days {
        let day_start = T0 - (days - day) as i64 * 86_400_000_000;
        for cam in 0..cameras {
            let minutes: Vec<i64> = (0..1440).map(|m| day_start + m * 60_000_000).collect();
            let cols: Vec<ArrayRef> = vec![
                // Four cameras (door lines) per store stream.
                Arc::new(StringArray::from(vec![format!("store-{}", cam / 4); 1440])),
                Arc::new(StringArray::from(vec![format!("door-{}", cam % 4); 1440])),
                Arc::new(TimestampMicrosecondArray::from(minutes).with_timezone("UTC")),
                Arc::new(Int64Array::from((0..1440).map(|m| (m % 7) as i64).collect::<Vec<_>>())),
                Arc::new(Int64Array::from((0..1440).map(|m| (m % 5) as i64).collect::<Vec<_>>())),
            ];
            let batch = RecordBatch::try_new(tables::lake_line_counts_schema(), cols)?;
            let dir = LakeStore::partition("line_counts", &TenantId::default(), day_start);
            rt.block_on(store.put_parquet(&format!("{dir}/day-cam{cam}.parquet"), &batch))?;
            rows += 1440;
        }
    }
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut produce = Vec::new();
    let mut e2e = Vec::new();
    for rep in 0..args.reps {
        let (p, e) = end_to_end(args.events, rep)?;
        produce.push(p);
        e2e.push(e);
    }
    let dir = tempfile::tempdir()?;
    let store = LakeStore::open(dir.path().to_str().context("path")?, &S3Settings::default())?;
    let rows = generate(&store, args.cameras, args.days)?;
    let sql = "SELECT stream AS store, date_trunc('hour', minute) AS hour, sum(in_count) AS footfall \
               FROM line_counts GROUP BY 1, 2 ORDER BY 1, 2";
    let rt = tokio::runtime::Runtime::new()?;
    let mut latency = Vec::new();
    let mut result_rows = 0;
    for _ in 0..args.reps.max(3) {
        let started = Instant::now();
        let batches = rt.block_on(query(&store, "default", sql))?;
        latency.push(started.elapsed().as_secs_f64() * 1000.0);
        result_rows = batches.iter().map(arrow_array::RecordBatch::num_rows).sum::<usize>();
    }
    println!("{:<66} {:>12}", "measurement (median)", "value");
    println!(
        "{:<66} {:>12.0}",
        format!("publish {} events to tansu (spool + idempotent producer), events/s", args.events),
        median(produce)
    );
    println!("{:<66} {:>12.0}", "end to end: publish → tansu → aggregator → Parquet, events/s", median(e2e));
    println!(
        "{:<66} {:>12.0}",
        format!(
            "hourly footfall per store, {} cameras × {} days ({rows} rows → {result_rows}), ms",
            args.cameras, args.days
        ),
        median(latency)
    );
    println!("reps={}", args.reps);
    Ok(())
}
