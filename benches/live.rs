//! Live cameras per machine: N cameras of one loopback RTSP server (vtest.avi scaled to the
//! camera's resolution, H.264 at the camera's rate, as a store camera's substream would be)
//! analysed at `--analysis-fps` by one `Worker`, for each N. Per row: the frames analysed per
//! second against what the cameras asked for, frames dropped, CPU cores used (this process,
//! decoding included), and the mean inference and queue ms per frame; the last column says
//! whether every camera kept up without a drop.
//!
//! `live --cameras 2,4,6,8 --seconds 20 --clips 1280x720@15,1920x1080@30`

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use retail_runtime::{CameraConfig, Config, Worker};
use retail_testkit::rtsp::{RtspMedia, RtspServer, h264_clip};

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
    /// Inference workers (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
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

fn measure(args: &Args, url: &str, n: usize) -> anyhow::Result<Row> {
    let mut config = Config::default();
    config.detector.workers = args.workers;
    config.bus.url = "memory://bench-live".into();
    config.cameras = (0..n)
        .map(|i| {
            toml::from_str::<CameraConfig>(&format!(
                "id = \"cam-{i}\"\nurl = \"{url}\"\nanalysis-fps = {}\nmotion-threshold = {}\n",
                args.analysis_fps, args.motion_threshold
            ))
        })
        .collect::<Result<_, _>>()?;
    config.validate().map_err(anyhow::Error::msg)?;
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
    println!(
        "| camera stream | cameras | asked fps | frames in /s | dropped | reconnects | gated | CPU cores | infer ms | queue ms | keeps up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for clip in &args.clips {
        let (w, h, fps) = parse_clip(clip)?;
        let file = h264_clip(w, h, fps);
        let length_s = 795.0 / f64::from(fps);
        if length_s < args.seconds as f64 + 6.0 {
            bail!("{clip}: the clip lasts {length_s:.0} s, too short for --seconds {}", args.seconds);
        }
        let server = RtspServer::start(RtspMedia { file, credentials: None });
        for &n in &args.cameras {
            let r = measure(&args, &server.url(), n)?;
            let asked = (n as u32 * args.analysis_fps.min(fps)) as f64;
            let ok = r.dropped == 0 && r.reconnects == 0 && r.analysed_fps >= asked * 0.95;
            println!(
                "| {w}x{h} H.264 {fps} fps | {n} | {asked:.0} | {:.1} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {} |",
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
