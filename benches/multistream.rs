//! Multi-stream benchmark: several files at once through `retail-ai analyze a b c …` (one
//! engine, shared inference workers) against the same files one at a time, with and without
//! cross-stream batching; and one file through this binary against a baseline binary built
//! before the pipeline became a library, all in one run.
//!
//! `cargo run -p retail-benches --bin multistream -- --files 4,8 --reps 1 \
//!   --baseline ~/.cache/retail-ai/baseline/retail-ai-a14f793`
//! Every number is the median of `--reps` runs of the real binary on copies of vtest.avi.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use retail_infer::cache_dir;

#[derive(Parser)]
struct Args {
    /// How many files at once, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    files: Vec<usize>,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Batch settings to compare, as SIZE:DEADLINE_MS, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1:0,4:5,8:10")]
    batches: Vec<String>,
    /// A `retail-ai` binary to compare one file against (e.g. one built before a change).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds `bin analyze inputs…` takes, with `env` set.
fn run(bin: &Path, inputs: &[PathBuf], env: &[(&str, String)], config: &Path, out: &Path) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(out);
    let started = Instant::now();
    let o = Command::new(bin)
        .arg("analyze")
        .args(inputs)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .with_context(|| bin.display().to_string())?;
    let secs = started.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!("{} failed: {}", bin.display(), String::from_utf8_lossy(&o.stderr));
    }
    Ok(secs)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let vtest = cache_dir().join("media/vtest.avi");
    if !vtest.is_file() {
        bail!("{} missing: run scripts/setup.sh", vtest.display());
    }
    let bin = std::env::current_exe()?.with_file_name("retail-ai");
    if !bin.is_file() {
        bail!("{} missing: cargo build --workspace first", bin.display());
    }
    let dir = tempfile::tempdir()?;
    let most = args.files.iter().copied().max().unwrap_or(1);
    let copies: Vec<PathBuf> = (0..most)
        .map(|i| {
            let p = dir.path().join(format!("cam-{i}.avi"));
            std::os::unix::fs::symlink(&vtest, &p).map(|()| p)
        })
        .collect::<Result<_, _>>()?;
    // vtest.toml names its stream; several files are named after themselves instead.
    let fixture = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vtest.toml"))?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, fixture.lines().filter(|l| !l.starts_with("id =")).collect::<Vec<_>>().join("\n"))?;
    let out = dir.path().join("out");
    const FRAMES: f64 = 795.0;
    let reps = args.reps.max(1);
    let measure = |inputs: &[PathBuf], env: &[(&str, String)], bin: &Path| -> anyhow::Result<f64> {
        let times = (0..reps).map(|_| run(bin, inputs, env, &config, &out)).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(FRAMES * inputs.len() as f64 / median(times))
    };
    let mut rows: Vec<(String, f64, Option<f64>)> = Vec::new();
    let single = measure(&copies[..1], &[], &bin)?;
    rows.push(("1 file, this binary (one at a time: the baseline)".into(), single, Some(1.0)));
    if let Some(base) = &args.baseline {
        let old = measure(&copies[..1], &[], base)?;
        rows.push((format!("1 file, {}", base.display()), old, Some(old / single)));
    }
    for &n in &args.files {
        for b in &args.batches {
            let (size, deadline) = b.split_once(':').context("--batches takes SIZE:DEADLINE_MS")?;
            let env = [
                ("RETAIL_AI__DETECTOR__BATCH_SIZE", size.to_owned()),
                ("RETAIL_AI__DETECTOR__BATCH_DEADLINE_MS", deadline.to_owned()),
            ];
            let fps = measure(&copies[..n], &env, &bin)?;
            rows.push((format!("{n} files at once, batch {size}, deadline {deadline} ms"), fps, Some(fps / single)));
        }
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let mut table = format!("{:<width$}  {:>10}  {:>8}\n", "total frames/s (median of reps)", "frames/s", "vs 1 file");
    for (name, fps, ratio) in &rows {
        let ratio = ratio.map(|r| format!("{r:.2}x")).unwrap_or_default();
        table.push_str(&format!("{name:<width$}  {fps:>10.1}  {ratio:>8}\n"));
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    table.push_str(&format!("reps={reps}, cores={cores}, int8, vtest.avi ({FRAMES} frames) per file\n"));
    print!("{table}");
    Ok(())
}
