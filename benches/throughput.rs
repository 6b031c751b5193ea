//! Throughput benchmark: end-to-end, decode-only and inference-only frames per second on
//! vtest.avi and a 1080p H.264 clip, all measured in one run, printed as one table.
//!
//! `make bench` (or `cargo run -p retail-benches --bin throughput -- --reps 3`). Each number
//! is the median of `--reps` runs; ratios are against the sequential baseline (one worker:
//! decode, infer and track one after another, as a plain script would) from the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use retail_infer::{Precision, cache_dir};
use retail_ingest::FileSource;
use retail_runtime::{Config, FilesRequest, ModelChoice, analyze_files};

#[derive(Parser)]
struct Args {
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Frames for the inference-only measurement.
    #[arg(long, default_value_t = 200)]
    infer_frames: usize,
    /// Skip the 1080p clip.
    #[arg(long)]
    no_1080p: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn make_1080p(src: &Path) -> anyhow::Result<PathBuf> {
    let out = cache_dir().join("media").join("vtest-1080p-h264.mp4");
    if out.is_file() {
        return Ok(out);
    }
    let partial = out.with_extension("mp4.partial");
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", src.display()))
        .args(["!", "decodebin", "!", "videoscale", "!", "video/x-raw,width=1920,height=1080"])
        .args(["!", "videoconvert", "!", "x264enc", "speed-preset=fast", "bitrate=6000", "!", "mp4mux"])
        .args(["!", "filesink"])
        .arg(format!("location={}", partial.display()))
        .status()
        .context("gst-launch-1.0")?;
    if !status.success() {
        bail!("x264enc failed making {}", out.display());
    }
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

fn decode_fps(path: &Path, model: &ModelChoice) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut src = FileSource::open(path, model.source_spec("bench".into(), false), &Default::default())?;
    let mut n = 0u64;
    while src.next_frame()?.is_some() {
        n += 1;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn e2e_fps(path: &Path, workers: usize, precision: Precision) -> anyhow::Result<f64> {
    let mut config = Config::default();
    config.detector.workers = workers;
    config.detector.precision = precision;
    let req = FilesRequest {
        inputs: vec![path.to_owned()],
        config,
        out_dir: None,
        annotate: None,
        detections: None,
        stop: None,
    };
    let summary = analyze_files(&req, None)?.pop().context("no result")??;
    Ok(summary.fps)
}

/// Inference only (preprocess + ONNX Runtime + decode + NMS) on one decoded frame, with
/// `workers` sessions in parallel threads.
fn infer_fps(path: &Path, model: &ModelChoice, frames: usize, workers: usize) -> anyhow::Result<f64> {
    let mut src = FileSource::open(path, model.source_spec("bench".into(), false), &Default::default())?;
    let frame = src.next_frame()?.context("no frame")?;
    let mut detectors =
        (0..workers).map(|_| model.load_detector(1, &retail_infer::Accelerator::Cpu)).collect::<Result<Vec<_>, _>>()?;
    for d in &mut detectors {
        d.detect(&frame.pixels)?; // warm-up
    }
    let started = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = detectors
            .iter_mut()
            .map(|d| {
                let pixels = &frame.pixels;
                s.spawn(move || -> anyhow::Result<()> {
                    for _ in 0..frames / workers {
                        d.detect(pixels)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    Ok((frames / workers * workers) as f64 / started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let vtest = cache_dir().join("media").join("vtest.avi");
    if !vtest.is_file() {
        bail!("{} missing: run scripts/setup.sh", vtest.display());
    }
    let model = ModelChoice::resolve(&Config::default())?;
    let mut fp32_config = Config::default();
    fp32_config.detector.precision = Precision::Fp32;
    let model_fp32 = ModelChoice::resolve(&fp32_config)?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut clips = vec![("vtest.avi 768x576 MPEG-4", vtest.clone())];
    if !args.no_1080p {
        clips.push(("1080p H.264 (x264enc)", make_1080p(&vtest)?));
    }
    let reps = args.reps.max(1);
    let measure = |f: &dyn Fn() -> anyhow::Result<f64>| -> anyhow::Result<f64> {
        Ok(median((0..reps).map(|_| f()).collect::<anyhow::Result<Vec<_>>>()?))
    };

    let mut rows: Vec<(String, f64, Option<f64>)> = Vec::new();
    let infer1 = measure(&|| infer_fps(&vtest, &model, args.infer_frames, 1))?;
    let infer_n = measure(&|| infer_fps(&vtest, &model, args.infer_frames, cores))?;
    let infer1_fp32 = measure(&|| infer_fps(&vtest, &model_fp32, args.infer_frames, 1))?;
    for (name, path) in &clips {
        let decode = measure(&|| decode_fps(path, &model))?;
        let seq = measure(&|| e2e_fps(path, 1, Precision::Int8))?;
        let par = measure(&|| e2e_fps(path, cores, Precision::Int8))?;
        let fp32 = measure(&|| e2e_fps(path, cores, Precision::Fp32))?;
        rows.push((format!("{name}: decode only"), decode, None));
        rows.push((format!("{name}: end-to-end int8, 1 worker (sequential baseline)"), seq, Some(1.0)));
        rows.push((format!("{name}: end-to-end int8, {cores} workers"), par, Some(par / seq)));
        rows.push((format!("{name}: end-to-end fp32, {cores} workers"), fp32, Some(fp32 / seq)));
    }
    rows.push((format!("{} fp32: inference only, 1 session", model.manifest.name), infer1_fp32, None));
    rows.push((format!("{} int8: inference only, 1 session", model.manifest.name), infer1, Some(infer1 / infer1_fp32)));
    rows.push((format!("{} int8: inference only, {cores} sessions", model.manifest.name), infer_n, None));

    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let mut table = format!("{:<width$}  {:>8}  {:>9}\n", "measurement (median of reps)", "fps", "vs base");
    for (name, fps, ratio) in &rows {
        let ratio = ratio.map(|r| format!("{r:.2}x")).unwrap_or_default();
        table.push_str(&format!("{name:<width$}  {fps:>8.1}  {ratio:>9}\n"));
    }
    table.push_str(&format!("reps={reps}, cores={cores}, model={}\n", model.model_path.display()));
    print!("{table}");
    Ok(())
}
