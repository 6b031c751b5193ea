//! Soak: the lake aggregator's resident memory over a long run. `retail_lake::run` reads
//! generated events (`--streams` cameras, one event per camera per second of event time)
//! from a consumer that makes them as they are polled, so nothing but the aggregator holds
//! memory; windows go to Parquet in a temp directory. Prints RSS every `--every` events.
//!
//! `~/.cache/retail-ai/target/debug/soak --events 1000000`

use std::time::{Duration, Instant};

use clap::Parser;
use retail_bus::{BusConfig, BusError, MemoryBus, Record, RecordConsumer, encode_event};
use retail_core::{Direction, Event, EventKind, TenantId};
use retail_lake::{LakeConfig, LakeStore, S3Settings, StopWhen};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 50)]
    streams: u64,
    #[arg(long, default_value_t = 100_000)]
    every: u64,
}

const PARTITIONS: u64 = 6;

struct Generated {
    next: u64,
    total: u64,
    streams: u64,
    every: u64,
    t0: i64,
    started: Instant,
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

impl Generated {
    fn event(&self, i: u64) -> Event {
        let (stream, second) = (i % self.streams, i / self.streams);
        let kind = match i % 3 {
            0 => EventKind::LineCrossing { line: "entrance".into(), direction: Direction::In },
            1 => EventKind::LineCrossing { line: "entrance".into(), direction: Direction::Out },
            _ => EventKind::ZoneEnter { zone: "till".into() },
        };
        let t = self.t0 + second as i64 * 1_000_000;
        Event::new(
            TenantId("soak".into()),
            format!("cam-{stream:03}").as_str().into(),
            i,
            second * 1_000_000_000,
            t,
            kind,
        )
    }
}

impl RecordConsumer for Generated {
    fn poll(&mut self, max: usize, _timeout: Duration) -> Result<Vec<Record>, BusError> {
        let mut out = Vec::with_capacity(max);
        while out.len() < max && self.next < self.total {
            let i = self.next;
            let stream = i % self.streams;
            let partition = stream % PARTITIONS;
            // Streams of one partition interleave in order: offsets count per partition.
            let per_partition = self.streams.div_ceil(PARTITIONS);
            let offset = (i / self.streams) * per_partition + stream / PARTITIONS;
            out.push(Record {
                topic: "soak".into(),
                partition: partition as i32,
                offset: offset as i64,
                key: None,
                payload: encode_event(&self.event(i)),
            });
            if i.is_multiple_of(self.every) {
                println!("| {i:>9} | {:>7.1} | {:>7.1} |", self.started.elapsed().as_secs_f64(), rss_mib());
            }
            self.next += 1;
        }
        Ok(out)
    }

    fn commit(&mut self, _next_offsets: &[(i32, i64)]) -> Result<(), BusError> {
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let store = LakeStore::open(dir.path().to_str().expect("utf-8 temp dir"), &S3Settings::default())?;
    let seconds = args.events / args.streams;
    // Event time ends an hour before now, inside the aggregator's time bounds.
    let t0 = chrono::Utc::now().timestamp_micros() - (seconds as i64 + 3600) * 1_000_000;
    let mut consumer = Generated {
        next: 0,
        total: args.events,
        streams: args.streams,
        every: args.every,
        t0,
        started: Instant::now(),
    };
    let bus = BusConfig::default();
    let lake = LakeConfig { url: store.url().to_owned(), batch_records: 1000, ..LakeConfig::default() };
    let mut dead_letters = MemoryBus::new(1).producer("dead-letters");
    println!("lake aggregator soak: {} events, {} streams, {seconds} s of event time each", args.events, args.streams);
    println!("| events    | elapsed | RSS MiB |");
    println!("|----------:|--------:|--------:|");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let stats = rt.block_on(retail_lake::run(
        &lake,
        &bus,
        &mut consumer,
        &mut dead_letters,
        &store,
        StopWhen::Idle(Duration::from_secs(1)),
    ))?;
    println!("| {:>9} | {:>7.1} | {:>7.1} |", consumer.next, consumer.started.elapsed().as_secs_f64(), rss_mib());
    println!("accepted {} windows written {} late {}", stats.accepted, stats.windows_written, stats.late);
    Ok(())
}
