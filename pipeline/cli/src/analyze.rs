//! `retail-ai analyze`: the flags become a [`FilesRequest`] for the runtime library; this
//! module only draws progress bars and renders summaries.

use std::path::Path;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use retail_runtime::{FilesProgress, FilesRequest, RuntimeError, StreamProgress, Summary, analyze_files};

/// One progress bar per input, fed by the engine's progress values.
fn progress_bars(req: &FilesRequest) -> (MultiProgress, FilesProgress) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} {prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {msg}")
            .expect("static template")
            .progress_chars("=> ");
    let bars: Vec<ProgressBar> = req
        .inputs
        .iter()
        .map(|input| {
            let bar = multi.add(ProgressBar::no_length().with_style(style.clone()));
            bar.set_prefix(input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
            bar
        })
        .collect();
    let update = move |i: usize, p: &StreamProgress| {
        let Some(bar) = bars.get(i) else { return };
        if let Some(n) = p.expected_frames {
            bar.set_length(n.max(p.frames));
        }
        bar.set_position(p.frames);
        let rate = p.frames as f64 / p.elapsed_s.max(1e-9);
        let dropped = if p.frames_dropped > 0 { format!(", {} dropped", p.frames_dropped) } else { String::new() };
        bar.set_message(format!("{rate:.1} fps{dropped}"));
        if p.finished {
            bar.finish_and_clear();
        }
    };
    (multi, Arc::new(update))
}

/// Runs the analysis; each input's summary or error, in input order.
pub fn run(req: &FilesRequest, show_progress: bool) -> Result<Vec<Result<Summary, RuntimeError>>, RuntimeError> {
    if show_progress {
        let (_multi, update) = progress_bars(req);
        analyze_files(req, Some(update))
    } else {
        analyze_files(req, None)
    }
}

/// The summary as a terminal table.
pub fn render_table(s: &Summary, out_dir: Option<&Path>) -> String {
    let mut t = String::new();
    let row = |t: &mut String, k: &str, v: String| t.push_str(&format!("  {k:<22} {v}\n"));
    t.push_str(&format!("retail-ai analyze: {}\n", s.input));
    row(&mut t, "frames", format!("{} ({:.1} s of video)", s.frames, s.duration_s));
    row(&mut t, "processing rate", format!("{:.1} fps ({:.1} s, {} workers)", s.fps, s.elapsed_s, s.workers));
    row(&mut t, "people (unique tracks)", s.people.to_string());
    for (name, l) in &s.lines {
        row(&mut t, &format!("line {name}"), format!("in {}  out {}", l.ins, l.outs));
    }
    for (name, z) in &s.zones {
        let dwell = z.mean_dwell_s.map_or_else(|| "-".into(), |d| format!("{d:.1} s"));
        row(&mut t, &format!("zone {name}"), format!("peak {}  visits {}  mean dwell {dwell}", z.peak, z.visits));
    }
    if let Some(dir) = out_dir {
        row(&mut t, "outputs", dir.display().to_string());
    }
    t
}
