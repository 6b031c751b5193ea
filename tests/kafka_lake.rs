//! The whole product path over real services: `retail-ai analyze --bus kafka://` into tansu
//! with the broker stopped for 20 s mid-analysis, malformed messages on the topic,
//! `retail-ai lake` in two consumer groups, and the lake read back with `retail-ai query` and
//! with pyarrow. Results must equal the analysis summary and the published truth. And the
//! aggregator killed with SIGKILL twice mid-run and restarted in the same group ends with
//! exactly the lake of a run that was never killed; two aggregators in one group share the
//! partitions and write the lake a single one writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use retail_bus::{BusConfig, EventProducer, KafkaConsumer, KafkaProducer, RecordConsumer};
use retail_core::{Direction, Event, EventKind, ExitReason, TenantId};
use retail_testkit::{Tansu, cache_home};
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_retail-ai"))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn write_config(dir: &Path, name: &str, brokers: &str, lake: &Path, group: &str) -> PathBuf {
    let fixture =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vtest.toml")).unwrap();
    let text = format!(
        "{fixture}\n[bus]\nurl = \"kafka://{brokers}\"\nspool-dir = {spool:?}\nflush-timeout-s = 120\nmessage-timeout-s = 120\n\n\
         [lake]\nurl = {lake:?}\ngroup = \"{group}\"\nlateness-s = 30\nidle-flush-s = 3600\n",
        spool = dir.join(format!("spool-{name}")).display().to_string(),
        lake = lake.display().to_string(),
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `retail-ai lake --until-idle 5`: its final statistics.
fn lake_until_idle(config: &Path) -> Value {
    serde_json::from_str(&ok(bin().args(["lake", "--until-idle", "5", "--config"]).arg(config).output().unwrap()))
        .unwrap()
}

fn query_csv(config: &Path, tenant: &str, sql: &str) -> String {
    ok(bin().args(["query", "--format", "csv", "--tenant", tenant, "--config"]).arg(config).arg(sql).output().unwrap())
}

/// Synthetic line crossings and zone visits on four cameras over an hour, plus two malformed
/// messages; returns the number of "in" crossings.
fn publish_synthetic(brokers: &str, spool: &Path) -> i64 {
    publish_events(brokers, spool, 6000)
}

fn publish_events(brokers: &str, spool: &Path, count: u64) -> i64 {
    let cfg =
        BusConfig { url: format!("kafka://{brokers}"), spool_dir: Some(spool.to_owned()), ..BusConfig::default() };
    let mut p = KafkaProducer::open(brokers, &cfg).unwrap();
    let t0 = 1_795_780_000_000_000; // 2026-11-27T11:46:40Z
    let mut ins = 0;
    let events: Vec<Event> = (0..count)
        .map(|i| {
            let dir = if i % 3 == 0 { Direction::Out } else { Direction::In };
            if dir == Direction::In && i % 5 != 4 {
                ins += 1;
            }
            let kind = match i % 5 {
                4 if i % 10 == 4 => EventKind::ZoneEnter { zone: "till".into() },
                4 => EventKind::ZoneExit { zone: "till".into(), dwell_s: (i % 97) as f64, reason: ExitReason::Left },
                _ => EventKind::LineCrossing { line: "plaza".into(), direction: dir },
            };
            let t = t0 + i as i64 * 600_000;
            Event::new(TenantId::default(), format!("cam-{}", i % 4).as_str().into(), i, i * 1000, t, kind)
        })
        .collect();
    p.send(&events).unwrap();
    p.flush(Duration::from_secs(120)).unwrap();
    // And junk: not JSON, and an event from a future schema.
    p.send_raw(&cfg.topic, Some(b"cam-0"), b"\xff\xfe garbage").unwrap();
    p.send_raw(&cfg.topic, Some(b"cam-0"), br#"{"schema_version":7,"event_id":"future"}"#).unwrap();
    ins
}

#[test]
fn analysis_through_kafka_survives_a_broker_outage() {
    let mut broker = Tansu::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let (lake_a, lake_b) = (dir.path().join("lake-a"), dir.path().join("lake-b"));
    let cfg_a = write_config(dir.path(), "a", &brokers, &lake_a, "aggregator-a");
    let cfg_b = write_config(dir.path(), "b", &brokers, &lake_b, "aggregator-b");
    let vtest = cache_home().join("media/vtest.avi");
    assert!(vtest.is_file(), "run scripts/setup.sh");

    // 1. Analysis with the broker stopped for 20 s in the middle.
    let out = dir.path().join("results");
    let analysis = bin()
        .args(["analyze", "--quiet", "--json", "--config"])
        .arg(&cfg_a)
        .arg("--out")
        .arg(&out)
        .arg(&vtest)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    broker.stop();
    std::thread::sleep(Duration::from_secs(20));
    broker.resume();
    let summary: Value = serde_json::from_str(&ok(analysis.wait_with_output().unwrap())).unwrap();
    let (ins, outs) =
        (summary["lines"]["plaza"]["in"].as_i64().unwrap(), summary["lines"]["plaza"]["out"].as_i64().unwrap());
    assert!(ins + outs > 0);
    let synthetic_ins = publish_synthetic(&brokers, &dir.path().join("spool-synthetic"));

    // 2. Aggregators A and B (separate groups, separate lakes) read the same topic.
    let stats_a = lake_until_idle(&cfg_a);
    let stats_b = lake_until_idle(&cfg_b);
    assert_eq!(stats_a["dead_letters"], 2, "{stats_a}");
    assert_eq!(stats_a["accepted"], stats_b["accepted"]);

    // 3. Same answers from both lakes, equal to the analysis and the synthetic truth.
    let sql = "SELECT stream, sum(in_count) AS i, sum(out_count) AS o FROM line_counts GROUP BY stream ORDER BY stream";
    let a = query_csv(&cfg_a, "default", sql);
    let b = query_csv(&cfg_b, "default", sql);
    assert_eq!(a, b, "two aggregators disagree (stats {stats_a} vs {stats_b})");
    assert!(a.contains(&format!("vtest,{ins},{outs}")), "{a}");
    // Zone occupancy reaches the lake too: every analysed frame, the peak, the visits.
    let zone = &summary["zones"]["lower-left"];
    let z = query_csv(
        &cfg_a,
        "default",
        "SELECT sum(frames) AS f, max(peak) AS p, sum(entries) AS e FROM zone_occupancy WHERE stream = 'vtest'",
    );
    assert_eq!(z.lines().nth(1).unwrap(), format!("{},{},{}", summary["frames"], zone["peak"], zone["visits"]), "{z}");
    let synthetic_total: i64 =
        a.lines().filter(|l| l.starts_with("cam-")).map(|l| l.split(',').nth(1).unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(synthetic_total, synthetic_ins);
    let events_a =
        query_csv(&cfg_a, "default", "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM _events_files");
    let n: Vec<i64> = events_a.lines().nth(1).unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(n[0], n[1], "no event stored twice");

    // 4. The dead-letter topic holds the two malformed messages.
    let dlq = BusConfig {
        topic: BusConfig::default().dead_letter_topic,
        dead_letter_topic: "unused-dlq".into(),
        ..BusConfig::default()
    };
    let mut c = KafkaConsumer::open(&brokers, &dlq, "dlq-reader").unwrap();
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.len() < 4 && Instant::now() < deadline {
        dead.extend(c.poll(10, Duration::from_millis(500)).unwrap());
    }
    assert!(dead.iter().any(|r| r.payload.starts_with(b"\xff\xfe garbage")));

    // 5. Ordinary Parquet: pyarrow reads the same totals.
    let python = cache_home().join("tools/pyarrow/bin/python");
    assert!(python.is_file(), "run scripts/setup-test-services.sh");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lake_totals.py");
    let py = ok(Command::new(python).arg(script).arg(&lake_a).arg("default").output().unwrap());
    let expected: i64 = a.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse::<i64>().unwrap()).sum();
    assert!(py.contains(&format!("in_count={expected}")), "pyarrow says {py}, query says {expected}");
}

fn parquet_files(dir: &Path) -> usize {
    fn walk(d: &Path, n: &mut usize) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

/// Everything an analyst could ask of one tenant's lake, as CSV.
fn lake_contents(config: &Path) -> String {
    [
        "SELECT * FROM line_counts ORDER BY minute, stream, line",
        "SELECT * FROM zone_occupancy ORDER BY minute, stream, zone",
        // The raw files, not the deduplicating view: no event may be stored twice.
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM _events_files",
        "SELECT count(*) AS n FROM late_events",
    ]
    .iter()
    .map(|sql| query_csv(config, "default", sql))
    .collect::<Vec<_>>()
    .join("\n")
}

/// Fails, naming the lines only one of two lakes has, unless their contents are equal.
fn assert_same_lake(got: &str, want: &str, context: &str) {
    if got == want {
        return;
    }
    let (g, w): (std::collections::BTreeSet<&str>, std::collections::BTreeSet<&str>) =
        (got.lines().collect(), want.lines().collect());
    let only =
        |a: &std::collections::BTreeSet<&str>, b| a.difference(b).take(20).copied().collect::<Vec<_>>().join("\n");
    panic!(
        "the lakes differ ({context}); {} lines only in the first:\n{}\n{} only in the second:\n{}",
        g.difference(&w).count(),
        only(&g, &w),
        w.difference(&g).count(),
        only(&w, &g)
    );
}

/// A broker holding `events` synthetic events, and two lake configs (separate groups and
/// directories) named `a` and `b`; also returns the published "in" crossings.
struct TwoLakes {
    _broker: Tansu,
    dir: tempfile::TempDir,
    cfg_a: PathBuf,
    cfg_b: PathBuf,
    ins: i64,
}

impl TwoLakes {
    fn new(a: &str, b: &str, events: u64) -> Self {
        let broker = Tansu::start();
        let brokers = broker.brokers();
        let dir = tempfile::tempdir().unwrap();
        let cfg_a = write_config(dir.path(), a, &brokers, &dir.path().join(format!("lake-{a}")), a);
        let cfg_b = write_config(dir.path(), b, &brokers, &dir.path().join(format!("lake-{b}")), b);
        let ins = publish_events(&brokers, &dir.path().join("spool-synthetic"), events);
        TwoLakes { _broker: broker, dir, cfg_a, cfg_b, ins }
    }
}

/// Like [`lake_until_idle`], with `--metrics-addr`: while it runs, its Prometheus endpoint
/// must count `records` consumed records and the two dead letters.
fn lake_until_idle_scraping_metrics(config: &Path, records: u64) -> Value {
    use std::io::{Read, Write};
    let port = retail_testkit::free_port();
    let child = bin()
        .args(["lake", "--until-idle", "5", "--metrics-addr", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let scrape = || -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let want = format!("retail_lake_records_total {records}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while !last.lines().any(|l| l == want) {
        assert!(Instant::now() < deadline, "metrics never reached `{want}`:\n{last}");
        std::thread::sleep(Duration::from_millis(200));
        last = scrape().unwrap_or_default();
    }
    assert!(last.lines().any(|l| l == "retail_lake_dead_letters_total 2"), "{last}");
    serde_json::from_str(&ok(child.wait_with_output().unwrap())).unwrap()
}

#[test]
fn aggregator_killed_twice_mid_run_ends_with_the_fault_free_lake() {
    let setup = TwoLakes::new("reference", "crashing", 30_000);
    let (cfg_ref, cfg_crash, ins) = (&setup.cfg_a, &setup.cfg_b, setup.ins);
    let lake_crash = setup.dir.path().join("lake-crashing");

    // Two kills: once the first windows are on disk, and again a little later.
    let mut kills = 0;
    for wait_for_files in [1, parquet_files(&lake_crash) + 1] {
        let before = parquet_files(&lake_crash);
        let target = before.max(wait_for_files) + 20;
        let mut child = bin()
            .args(["lake", "--config"])
            .arg(cfg_crash)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(180);
        while parquet_files(&lake_crash) < target {
            assert!(Instant::now() < deadline, "the aggregator wrote no windows (run {kills})");
            assert!(child.try_wait().unwrap().is_none(), "the aggregator exited by itself");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    let written_at_kill = parquet_files(&lake_crash);
    let resumed = lake_until_idle(cfg_crash);
    assert!(resumed["windows_written"].as_u64().unwrap() > 0, "the kills came too late to test anything: {resumed}");
    let reference = lake_until_idle_scraping_metrics(cfg_ref, 30_002);
    assert_eq!(kills, 2);
    assert!(written_at_kill > 0);

    let (crashed, fault_free) = (lake_contents(cfg_crash), lake_contents(cfg_ref));
    assert_same_lake(&crashed, &fault_free, &format!("resumed {resumed}, reference {reference}"));
    let total_in: i64 = query_csv(cfg_ref, "default", "SELECT sum(in_count) AS i FROM line_counts")
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(total_in, ins, "the reference run counted every published crossing");
}

#[test]
fn two_aggregators_in_one_group_share_the_work_and_match_a_single_one() {
    let setup = TwoLakes::new("single", "pair", 20_000);
    let (cfg_single, cfg_pair) = (&setup.cfg_a, &setup.cfg_b);

    let lake = |cfg: &Path| {
        bin()
            .args(["lake", "--until-idle", "10", "--config"])
            .arg(cfg)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // The second member joins a moment later, so the group rebalances while the first works.
    let first = lake(cfg_pair);
    std::thread::sleep(Duration::from_secs(2));
    let second = lake(cfg_pair);
    let stats: Vec<Value> = [first, second]
        .into_iter()
        .map(|c| serde_json::from_str(&ok(c.wait_with_output().unwrap())).unwrap())
        .collect();
    assert!(stats.iter().all(|s| s["accepted"].as_u64().unwrap() > 0), "both members did some of the work: {stats:?}");
    lake_until_idle(cfg_single);
    assert_same_lake(&lake_contents(cfg_pair), &lake_contents(cfg_single), &format!("pair: {stats:?}"));
}

/// Three `analyze --bus kafka://` runs and the aggregator started together on one machine,
/// all with one spool directory (as with the default `~/.cache/retail-ai/spool`): every
/// event of each analysis is on the topic exactly once and in the lake, and every spool is
/// gone at the end.
#[test]
fn three_analyses_and_the_lake_at_once_lose_and_repeat_nothing() {
    let broker = Tansu::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = write_config(dir.path(), "shared", &brokers, &lake, "aggregator");
    let vtest = cache_home().join("media/vtest.avi");
    let piped = std::process::Stdio::piped;
    let aggregator = bin().args(["lake", "--until-idle", "10", "--config"]).arg(&cfg).stdout(piped()).spawn().unwrap();
    let runs: Vec<_> = (0..3)
        .map(|i| {
            bin()
                .args(["analyze", "--quiet", "--json", "--stream-id", &format!("vtest-{i}"), "--config"])
                .arg(&cfg)
                .arg("--out")
                .arg(dir.path().join(format!("out-{i}")))
                .arg(&vtest)
                .stdout(piped())
                .stderr(piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let summaries: Vec<Value> =
        runs.into_iter().map(|r| serde_json::from_str(&ok(r.wait_with_output().unwrap())).unwrap()).collect();
    ok(aggregator.wait_with_output().unwrap());
    // Whatever the first aggregator left (it may have gone idle between bursts) is read now.
    lake_until_idle(&cfg);

    // On the topic: each analysis's events, each exactly once.
    let want: usize = (0..3)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("out-{i}/events.jsonl"))).unwrap().lines().count())
        .sum();
    let bus = BusConfig { url: format!("kafka://{brokers}"), ..BusConfig::default() };
    let mut c = KafkaConsumer::open(&brokers, &bus, "exactly-once-check").unwrap();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.values().sum::<usize>() < want && Instant::now() < deadline {
        for r in c.poll(1000, Duration::from_millis(500)).unwrap() {
            *seen.entry(retail_bus::decode_event(&r.payload).unwrap().event_id).or_default() += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for r in c.poll(1000, Duration::from_millis(500)).unwrap() {
        *seen.entry(retail_bus::decode_event(&r.payload).unwrap().event_id).or_default() += 1;
    }
    assert_eq!(seen.len(), want, "every event of every analysis arrived");
    assert!(seen.values().all(|n| *n == 1), "and none twice");

    // In the lake: each analysis's counts.
    let sql = "SELECT stream, sum(in_count) AS i, sum(out_count) AS o FROM line_counts GROUP BY stream ORDER BY stream";
    let csv = query_csv(&cfg, "default", sql);
    for (i, s) in summaries.iter().enumerate() {
        let line = format!("vtest-{i},{},{}", s["lines"]["plaza"]["in"], s["lines"]["plaza"]["out"]);
        assert!(csv.lines().any(|l| l == line), "{line} missing from\n{csv}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path().join("spool-shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spool-"))
        .collect();
    assert!(left.is_empty(), "spools left behind: {left:?}");
}
