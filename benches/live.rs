//! Live cameras per machine: N cameras of one loopback RTSP server (vtest.avi scaled to the
//! camera's resolution, H.264 at the camera's rate, as a store camera's substream would be)
//! analysed at `--analysis-fps` by one `Worker`, for each N. Per row: the frames analysed per
//! second against what the cameras asked for, frames dropped, CPU cores used (this process,
//! decoding included), and the mean inference and queue ms per frame; the last column says
//! whether every camera kept up without a drop in every run. Each column is the median of
//! `--reps` runs.
//!
//! `live --cameras 2,4,6,8 --seconds 20 --clips 1280x720@15,1920x1080@30`
//!
//! Soak: `live --soak-minutes 30 --cameras 8 --churn 1000 --clips 1280x720@15` runs the first
//! camera count for that long while one more camera is added and removed `--churn` times, and
//! prints the process's memory (RSS), threads and open files every `--sample-s`, then RSS at
//! the end against RSS after `--warmup-s`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use retail_runtime::{CameraConfig, Config, Worker};
use retail_testkit::rtsp::{RtspMedia, RtspServer, h264_clip, h264_clip_looped};

#[derive(Parser)]
struct Args {
    /// Camera counts to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,6,8")]
    cameras: Vec<usize>,
    /// Camera streams as WIDTHxHEIGHT@FPS, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1280x720@15,1920x1080@30")]
    clips: Vec<String>,
    /// Frames analysed per second per camera.
    #[arg(long, default_value_t = 5)]
    analysis_fps: u32,
    /// Seconds measured per row, after a warm-up of 4 s.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Motion gating threshold for every camera (0 = off); see README.
    #[arg(long, default_value_t = 0.0)]
    motion_threshold: f32,
    /// Frames per inference call, across cameras (1 = no cross-stream batching).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Inference workers (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Runs per row; each column is the median of them.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Soak for this many minutes instead of the table (see above).
    #[arg(long, default_value_t = 0.0)]
    soak_minutes: f64,
    /// Soak: times one extra camera is added and removed.
    #[arg(long, default_value_t = 1000)]
    churn: u32,
    /// Soak: seconds between samples.
    #[arg(long, default_value_t = 30)]
    sample_s: u64,
    /// Soak: the RSS the end is compared with is taken this long after the start.
    #[arg(long, default_value_t = 120)]
    warmup_s: u64,
}

/// This process's CPU seconds (user + system), from /proc.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("odd /proc/self/stat")?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ is 100 on Linux
}

struct Row {
    analysed_fps: f64,
    dropped: u64,
    cores: f64,
    infer_ms: f64,
    queue_ms: f64,
    reconnects: u64,
    gated: u64,
}

impl Row {
    /// Each column's median over `runs` (counts too: a row is what a typical run saw).
    fn median(runs: &[Row]) -> Row {
        fn mid<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            v[v.len() / 2]
        }
        Row {
            analysed_fps: mid(runs.iter().map(|r| r.analysed_fps).collect()),
            dropped: mid(runs.iter().map(|r| r.dropped).collect()),
            cores: mid(runs.iter().map(|r| r.cores).collect()),
            infer_ms: mid(runs.iter().map(|r| r.infer_ms).collect()),
            queue_ms: mid(runs.iter().map(|r| r.queue_ms).collect()),
            reconnects: mid(runs.iter().map(|r| r.reconnects).collect()),
            gated: mid(runs.iter().map(|r| r.gated).collect()),
        }
    }
}

fn camera(id: &str, url: &str, args: &Args) -> anyhow::Result<CameraConfig> {
    Ok(toml::from_str::<CameraConfig>(&format!(
        "id = \"{id}\"\nurl = \"{url}\"\nanalysis-fps = {}\nmotion-threshold = {}\n",
        args.analysis_fps, args.motion_threshold
    ))?)
}

fn worker_config(args: &Args, url: &str, n: usize) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.detector.workers = args.workers;
    config.detector.batch_size = args.batch_size;
    config.bus.url = "memory://bench-live".into();
    config.cameras = (0..n).map(|i| camera(&format!("cam-{i}"), url, args)).collect::<Result<_, _>>()?;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

fn measure(args: &Args, url: &str, n: usize) -> anyhow::Result<Row> {
    let config = worker_config(args, url, n)?;
    let mut worker = Worker::start(config)?;
    let tick = |w: &mut Worker, d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            w.tick();
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    tick(&mut worker, Duration::from_secs(4));
    let before = worker.cameras();
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    tick(&mut worker, Duration::from_secs(args.seconds));
    let after = worker.cameras();
    let (cpu, secs) = (cpu_seconds()? - cpu0, t0.elapsed().as_secs_f64());
    let sum = |r: &[retail_runtime::CameraReport], f: &dyn Fn(&retail_runtime::CameraReport) -> u64| -> u64 {
        r.iter().map(f).sum()
    };
    let frames = sum(&after, &|r| r.status.frames) - sum(&before, &|r| r.status.frames);
    let row = Row {
        analysed_fps: frames as f64 / secs,
        dropped: sum(&after, &|r| r.frames_dropped) - sum(&before, &|r| r.frames_dropped),
        cores: cpu / secs,
        infer_ms: after.iter().map(|r| r.latency.infer_ms).sum::<f64>() / n as f64,
        queue_ms: after.iter().map(|r| r.latency.queue_ms).sum::<f64>() / n as f64,
        reconnects: sum(&after, &|r| r.status.reconnects),
        gated: sum(&after, &|r| r.frames_gated) - sum(&before, &|r| r.frames_gated),
    };
    drop(worker.shutdown());
    Ok(row)
}

fn parse_clip(text: &str) -> anyhow::Result<(u32, u32, u32)> {
    let (size, fps) = text.split_once('@').context("clip is WIDTHxHEIGHT@FPS")?;
    let (w, h) = size.split_once('x').context("clip is WIDTHxHEIGHT@FPS")?;
    Ok((w.parse()?, h.parse()?, fps.parse()?))
}

fn main() -> anyhow::Result<()> {
    // This binary is also the RTSP server's child process.
    retail_testkit::rtsp::serve_if_child();
    let args = Args::parse();
    if args.soak_minutes > 0.0 {
        return soak(&args);
    }
    println!(
        "| camera stream | cameras | asked fps | frames in /s | dropped | reconnects | gated | CPU cores | infer ms | queue ms | keeps up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut setup = String::new();
    if args.batch_size > 1 {
        setup.push_str(&format!(", batch {}", args.batch_size));
    }
    if args.motion_threshold > 0.0 {
        setup.push_str(&format!(", gating {}", args.motion_threshold));
    }
    for clip in &args.clips {
        let (w, h, fps) = parse_clip(clip)?;
        let file = h264_clip(w, h, fps);
        let length_s = 795.0 / f64::from(fps);
        if length_s < args.seconds as f64 + 6.0 {
            bail!("{clip}: the clip lasts {length_s:.0} s, too short for --seconds {}", args.seconds);
        }
        let server = RtspServer::start(RtspMedia::file(file));
        for &n in &args.cameras {
            let runs =
                (0..args.reps.max(1)).map(|_| measure(&args, &server.url(), n)).collect::<Result<Vec<_>, _>>()?;
            let r = Row::median(&runs);
            let asked = (n as u32 * args.analysis_fps.min(fps)) as f64;
            // Kept up: in every run, not only the median one.
            let ok = runs.iter().all(|r| r.dropped == 0 && r.reconnects == 0 && r.analysed_fps >= asked * 0.95);
            println!(
                "| {w}x{h} H.264 {fps} fps{setup} | {n} | {asked:.0} | {:.1} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {} |",
                r.analysed_fps,
                r.dropped,
                r.reconnects,
                r.gated,
                r.cores,
                r.infer_ms,
                r.queue_ms,
                if ok { "yes" } else { "no" }
            );
        }
    }
    Ok(())
}

/// A line of `/proc/self/status` (`VmRSS`, `Threads`) as a number (kB for sizes).
fn proc_status(key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} in /proc/self/status"))?;
    Ok(line.split_whitespace().nth(1).context("odd /proc/self/status")?.parse()?)
}

fn open_files() -> anyhow::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

fn soak(args: &Args) -> anyhow::Result<()> {
    let n = *args.cameras.first().context("--cameras is empty")?;
    let (w, h, fps) = parse_clip(args.clips.first().context("--clips is empty")?)?;
    let total = Duration::from_secs_f64(args.soak_minutes * 60.0);
    // Long enough that no camera reaches the clip's end (which would be a reconnect).
    let play_s = 795.0 / f64::from(fps);
    let loops = ((total.as_secs_f64() + 120.0) / play_s).ceil() as u32;
    let server = RtspServer::start(RtspMedia::file(h264_clip_looped(w, h, fps, loops)));
    let url = server.url();
    let config = worker_config(args, &url, n)?;
    let steady = config.cameras.clone();
    let mut churned = steady.clone();
    churned.push(camera("churn", &url, args)?);
    let mut worker = Worker::start(config)?;
    let period = total / args.churn.max(1);
    println!(
        "soak: {n} cameras {w}x{h}@{fps} at {} analysis fps for {:.0} min, camera `churn` added and removed every {:.2} s",
        args.analysis_fps,
        args.soak_minutes,
        period.as_secs_f64()
    );
    println!(
        "| minute | RSS MiB | threads | open files | cameras live | frames analysed | dropped | reconnects | churn cycles |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let (mut cycles, mut next_sample, mut warm_rss) = (0u32, Duration::ZERO, None);
    let mut rss_samples = Vec::new();
    while start.elapsed() < total {
        let cycle_start = start + period * cycles;
        if cycles < args.churn && Instant::now() >= cycle_start {
            worker.apply(&churned);
            while Instant::now() < cycle_start + period / 2 {
                worker.tick();
                std::thread::sleep(Duration::from_millis(50));
            }
            worker.apply(&steady);
            cycles += 1;
        }
        worker.tick();
        if start.elapsed() >= next_sample {
            let rss = proc_status("VmRSS:")? as f64 / 1024.0;
            if warm_rss.is_none() && start.elapsed() >= Duration::from_secs(args.warmup_s) {
                warm_rss = Some(rss);
            }
            rss_samples.push(rss);
            let reports = worker.cameras();
            let steady_reports = reports.iter().filter(|r| r.camera != "churn");
            let (frames, dropped, reconnects) = steady_reports
                .fold((0, 0, 0), |(f, d, c), r| (f + r.status.frames, d + r.frames_dropped, c + r.status.reconnects));
            let live = reports
                .iter()
                .filter(|r| r.camera != "churn" && r.status.state == retail_ingest::CameraState::Live)
                .count();
            println!(
                "| {:.1} | {rss:.1} | {} | {} | {live}/{n} | {frames} | {dropped} | {reconnects} | {cycles} |",
                start.elapsed().as_secs_f64() / 60.0,
                proc_status("Threads:")?,
                open_files()?,
            );
            next_sample += Duration::from_secs(args.sample_s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let end_rss = proc_status("VmRSS:")? as f64 / 1024.0;
    let warm = warm_rss.context("the soak ended before the warm-up did")?;
    let change = (end_rss / warm - 1.0) * 100.0;
    println!(
        "RSS after warm-up ({} s) {warm:.1} MiB, at the end {end_rss:.1} MiB: {change:+.1} % ({}); peak {:.1} MiB; {cycles} churn cycles",
        args.warmup_s,
        if change.abs() <= 5.0 { "within 5 %" } else { "NOT within 5 %" },
        rss_samples.iter().copied().fold(0.0, f64::max),
    );
    drop(worker.shutdown());
    Ok(())
}
