//! A stream's output files (`events.jsonl`, `aggregates/*.parquet`, `summary.json`,
//! detections), written under temporary names and moved into place only when the stream
//! succeeds: a failed or cancelled analysis leaves nothing half-written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use retail_core::{Detection, Event, pts_seconds};

use crate::RuntimeError;

/// A number no other staging directory of this process has.
fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Output files being written in a staging directory, moved into place only on success.
pub struct Outputs {
    out_dir: Option<PathBuf>,
    created_out_dir: bool,
    staging: Option<PathBuf>,
    events: Option<(PathBuf, BufWriter<File>)>,
    detections: Option<(PathBuf, PathBuf, BufWriter<File>)>,
    committed: bool,
}

fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

pub(crate) fn output_err(path: &Path) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Output { path: path.to_owned(), source }
}

impl Outputs {
    pub fn create(out_dir: Option<&Path>, detections: Option<&Path>) -> Result<Self, RuntimeError> {
        let mut o = Outputs {
            out_dir: out_dir.map(Path::to_owned),
            created_out_dir: false,
            staging: None,
            events: None,
            detections: None,
            committed: false,
        };
        if let Some(dir) = out_dir {
            o.created_out_dir = !dir.exists();
            std::fs::create_dir_all(dir).map_err(output_err(dir))?;
            let staging = dir.join(format!(".retail-ai-partial-{}-{}", std::process::id(), unique()));
            std::fs::create_dir_all(staging.join("aggregates")).map_err(output_err(&staging))?;
            let events = staging.join("events.jsonl");
            let file = File::create(&events).map_err(output_err(&events))?;
            o.events = Some((events, BufWriter::new(file)));
            o.staging = Some(staging);
        }
        if let Some(path) = detections {
            let partial = partial_of(path);
            let file = File::create(&partial).map_err(output_err(&partial))?;
            o.detections = Some((path.to_owned(), partial, BufWriter::new(file)));
        }
        Ok(o)
    }

    pub fn write_event(&mut self, event: &Event) -> Result<(), RuntimeError> {
        if let Some((path, w)) = &mut self.events {
            let mut v = serde_json::to_value(event).map_err(|e| RuntimeError::Internal(e.to_string()))?;
            v["pts_s"] = serde_json::json!(pts_seconds(event.pts_ns));
            v["time"] = serde_json::json!(format_time(event.time_us));
            writeln!(w, "{v}").map_err(output_err(path))?;
        }
        Ok(())
    }

    pub fn write_detections(
        &mut self,
        frame: (u64, u64, &[Detection]),
        size: (u32, u32),
        (assignments, status): (&[Option<u64>], &[Option<retail_analytics::Status>]),
        labels: &[String],
    ) -> Result<(), RuntimeError> {
        let Some((_, partial, w)) = &mut self.detections else {
            return Ok(());
        };
        let (fw, fh) = (size.0 as f32, size.1 as f32);
        let round = |v: f32| (v as f64 * 10.0).round() / 10.0;
        let (index, pts_ns, detections) = frame;
        let dets: Vec<_> = detections
            .iter()
            .zip(assignments.iter().zip(status))
            .map(|(d, (id, status))| {
                serde_json::json!({
                    "box": [round(d.bbox.x1 * fw), round(d.bbox.y1 * fh), round(d.bbox.x2 * fw), round(d.bbox.y2 * fh)],
                    "score": (d.score as f64 * 1000.0).round() / 1000.0,
                    "class": labels.get(d.class as usize).map_or("?", String::as_str),
                    "track_id": id,
                    // person (moved since it appeared), pending (not yet) or fixture (never
                    // moved in static-after-s): what the static rule made of the track so far.
                    "motion": status.map(retail_analytics::Status::as_str),
                })
            })
            .collect();
        let line = serde_json::json!({ "frame": index, "pts_s": pts_seconds(pts_ns), "detections": dets });
        writeln!(w, "{line}").map_err(output_err(partial))
    }

    pub fn staging_path(&self, name: &str) -> Option<PathBuf> {
        self.staging.as_ref().map(|s| s.join(name))
    }

    /// Flushes everything and moves the files to their final names.
    pub fn commit(&mut self) -> Result<Vec<PathBuf>, RuntimeError> {
        let mut written = Vec::new();
        if let Some((path, mut w)) = self.events.take() {
            w.flush().map_err(output_err(&path))?;
        }
        if let Some((path, partial, mut w)) = self.detections.take() {
            w.flush().map_err(output_err(&partial))?;
            std::fs::rename(&partial, &path).map_err(output_err(&path))?;
            written.push(path);
        }
        if let (Some(staging), Some(out)) = (self.staging.clone(), self.out_dir.clone()) {
            std::fs::create_dir_all(out.join("aggregates")).map_err(output_err(&out))?;
            for name in
                ["events.jsonl", "aggregates/line_counts.parquet", "aggregates/zone_occupancy.parquet", "summary.json"]
            {
                let from = staging.join(name);
                if from.exists() {
                    let to = out.join(name);
                    std::fs::rename(&from, &to).map_err(output_err(&to))?;
                    written.push(to);
                }
            }
            let _ = std::fs::remove_dir_all(&staging);
        }
        self.committed = true;
        Ok(written)
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Some((_, partial, _)) = self.detections.take() {
            let _ = std::fs::remove_file(partial);
        }
        if let Some(staging) = &self.staging {
            let _ = std::fs::remove_dir_all(staging);
        }
        if self.created_out_dir
            && let Some(out) = &self.out_dir
        {
            let _ = std::fs::remove_dir(out);
        }
    }
}

pub fn format_time(time_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(time_us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
