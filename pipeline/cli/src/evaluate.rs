//! `retail-ai evaluate`: an analysis's output against labelled ground truth.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use retail_evaluate::{Report, Results, Truth, evaluate, mot_hypotheses};

use crate::Config;

/// What to compare, and where the JSON report goes.
pub struct EvaluateRequest {
    pub truth: PathBuf,
    pub results: PathBuf,
    /// The analysis config (its zones); lines come from the results' summary.
    pub config: Option<PathBuf>,
    pub detections: Option<PathBuf>,
    /// Default: `results/evaluation.json`.
    pub json: Option<PathBuf>,
}

/// Scores the results, writes `evaluation.json` and `hyp.txt` (the tracks as MOT rows)
/// beside them, and returns the report.
pub fn run(req: &EvaluateRequest) -> anyhow::Result<Report> {
    let config = Config::load(req.config.as_deref())?;
    let truth = Truth::load(&req.truth).context("ground truth")?;
    let results = Results::load(&req.results, req.detections.as_deref()).context("analysis results")?;
    let threshold = retail_runtime::ModelChoice::score_threshold(&config)?;
    let report = evaluate(&truth, &results, &config.analytics_config(), f64::from(threshold));
    let json = req.json.clone().unwrap_or_else(|| req.results.join("evaluation.json"));
    write_atomic(&json, serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_atomic(&json.with_file_name("hyp.txt"), mot_hypotheses(&results).as_bytes())?;
    Ok(report)
}

/// Temp name, fsync, rename: never a half-written report.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let mut f = std::fs::File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}
