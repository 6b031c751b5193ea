//! End-to-end tests of `retail-ai analyze` on real media with the real detector.
//!
//! They need what `scripts/setup.sh` installs (GStreamer plugins, ONNX Runtime, the NanoDet
//! model, vtest.avi and person.jpg); a missing piece fails with the reason, never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use retail_core::BBox;
use retail_infer::cache_dir;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_retail-ai"))
}

fn media(name: &str) -> PathBuf {
    let p = cache_dir().join("media").join(name);
    assert!(p.is_file(), "{} missing: run scripts/setup.sh first", p.display());
    p
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn parquet_sum(path: &Path, column: &str) -> i64 {
    retail_lake::read_parquet(path)
        .unwrap()
        .iter()
        .map(|b| b.column_by_name(column).unwrap().as_primitive::<Int64Type>().values().iter().sum::<i64>())
        .sum()
}

/// A summary's plaza counts are those of vtest analysed alone (tests/golden/vtest/int8):
/// exactly on the CPU kind the golden files were made on, within 2 elsewhere (INT8 kernels
/// differ between instruction sets; see tests/golden.rs).
fn assert_plaza_as_alone(summary: &Value, name: &str) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/vtest/int8");
    let made_on = std::fs::read_to_string(golden.join("cpu-kind.txt")).unwrap();
    let slack = if made_on.trim() == retail_testkit::cpu_kind() { 0 } else { 2 };
    let want: Value = serde_json::from_slice(&std::fs::read(golden.join("summary.json")).unwrap()).unwrap();
    for dir in ["in", "out"] {
        let (got, want) =
            (summary["lines"]["plaza"][dir].as_u64().unwrap(), want["lines"]["plaza"][dir].as_u64().unwrap());
        assert!(got.abs_diff(want) <= slack, "{name}: plaza {dir} {got}, alone {want} (slack {slack})");
    }
}

#[test]
fn vtest_end_to_end_counts_agree_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let detections = dir.path().join("detections.jsonl");
    let video = dir.path().join("annotated.mp4");
    let o = bin()
        .arg("analyze")
        .arg(media("vtest.avi"))
        .arg("--config")
        .arg(fixture("vtest.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--detections")
        .arg(&detections)
        .arg("--annotate")
        .arg(&video)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "analyze failed: {}", stderr(&o));

    // summary.json and the JSON printed agree, and hold what the product promises.
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary, printed);
    assert_eq!(summary["frames"], 795);
    assert!((summary["duration_s"].as_f64().unwrap() - 79.5).abs() < 0.2, "{summary}");
    assert!(summary["fps"].as_f64().unwrap() > 0.0);
    let people = summary["people"].as_u64().unwrap();
    assert!((10..=80).contains(&people), "implausible number of people: {people}");

    // People are found where they are plainly visible: vtest shows several on every frame.
    let frames = jsonl(&detections);
    assert_eq!(frames.len(), 795);
    let confident: Vec<usize> = frames
        .iter()
        .map(|f| f["detections"].as_array().unwrap().iter().filter(|d| d["score"].as_f64().unwrap() >= 0.35).count())
        .collect();
    assert!(confident.iter().all(|&c| c >= 1), "a frame without any confident person");
    let mean = confident.iter().sum::<usize>() as f64 / confident.len() as f64;
    assert!(mean >= 4.0, "mean confident people per frame {mean}");
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["frame"], i as u64);
        for d in f["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(b[0] <= b[2] && b[1] <= b[3] && b[2] <= 768.0 && b[3] <= 576.0, "box {b:?}");
        }
    }

    // Crossings: plausible, and the same in summary, events.jsonl and the Parquet aggregates.
    let events = jsonl(&out.join("events.jsonl"));
    let count = |dir: &str| {
        events.iter().filter(|e| e["kind"] == "line_crossing" && e["line"] == "plaza" && e["direction"] == dir).count()
            as i64
    };
    let (ins, outs) = (count("in"), count("out"));
    assert!(ins >= 3 && outs >= 3 && ins + outs <= 80, "implausible crossings in={ins} out={outs}");
    assert_eq!(summary["lines"]["plaza"]["in"], ins);
    assert_eq!(summary["lines"]["plaza"]["out"], outs);
    let lines = out.join("aggregates/line_counts.parquet");
    assert_eq!(parquet_sum(&lines, "in_count"), ins);
    assert_eq!(parquet_sum(&lines, "out_count"), outs);
    // 79.5 s starting at 09:00:00 covers two minutes: two rows for the one line.
    let batches = retail_lake::read_parquet(&lines).unwrap();
    assert_eq!(batches.iter().map(arrow_array::RecordBatch::num_rows).sum::<usize>(), 2);

    let entries = events.iter().filter(|e| e["kind"] == "zone_enter").count() as i64;
    let exits: Vec<&Value> = events.iter().filter(|e| e["kind"] == "zone_exit").collect();
    assert!(entries > 0);
    assert_eq!(entries, exits.len() as i64, "every visit is closed");
    let zones = out.join("aggregates/zone_occupancy.parquet");
    assert_eq!(parquet_sum(&zones, "entries"), entries);
    assert!(summary["zones"]["lower-left"]["peak"].as_u64().unwrap() >= 1);
    for e in &events {
        assert_eq!(e["stream"], "vtest");
        assert!(e["time"].as_str().unwrap().starts_with("2026-11-27T09:0"), "{e}");
    }

    // The annotated video is a real video of the same length.
    assert!(std::fs::metadata(&video).unwrap().len() > 100_000);
    let spec = retail_ingest::SourceSpec {
        stream: "annotated".into(),
        width: 64,
        height: 48,
        order: retail_ingest::PixelOrder::Rgb,
        display: false,
        cuda: None,
        software_decoding: false,
    };
    let mut src = retail_ingest::FileSource::open(&video, spec, &Default::default()).unwrap();
    assert_eq!((src.info().width, src.info().height), (768, 576));
    let mut n = 0;
    while src.next_frame().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 795);
    // Nothing temporary left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().contains("partial")), "{leftovers:?}");
}

#[test]
fn detector_finds_the_person_in_person_jpg_int8() {
    person_jpg("int8");
}

#[test]
fn detector_finds_the_person_in_person_jpg_fp32() {
    person_jpg("fp32");
}

fn person_jpg(precision: &str) {
    let dir = tempfile::tempdir().unwrap();
    let detections = dir.path().join("d.jsonl");
    let o = bin()
        .env("RETAIL_AI__DETECTOR__PRECISION", precision)
        .arg("analyze")
        .arg(media("person.jpg"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--detections")
        .arg(&detections)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let frames = jsonl(&detections);
    assert_eq!(frames.len(), 1);
    // darknet's person.jpg (640x424): the woman stands at about (190, 98)-(274, 380).
    let truth = BBox::new(190.0, 98.0, 274.0, 380.0);
    let best = frames[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["score"].as_f64().unwrap() >= 0.35)
        .map(|d| {
            let b: Vec<f32> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            BBox::new(b[0], b[1], b[2], b[3]).iou(&truth)
        })
        .fold(0.0f32, f32::max);
    assert!(best > 0.7, "{precision}: best IoU with the person {best}");
}

/// Runs analyze expecting failure; checks the one-line error and that nothing was written.
fn expect_failure(args: &[&std::ffi::OsStr], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let detections = dir.path().join("det.jsonl");
    let o = bin()
        .arg("analyze")
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--detections")
        .arg(&detections)
        .arg("--quiet")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "error {:?} should mention {n:?}", lines[0]);
    }
    assert!(!out.exists(), "output directory left behind");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// A GPU asked for where there is none is an error naming it, not a silent CPU run.
#[test]
fn tensorrt_backend_where_it_cannot_run_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gpu.toml");
    std::fs::write(&cfg, "[detector]\nbackend = \"tensorrt\"\n").unwrap();
    let vtest = media("vtest.avi");
    expect_failure(&[os("--config"), cfg.as_os_str(), vtest.as_os_str()], &["TensorRT", "detector.backend"]);
}

#[test]
fn missing_file() {
    expect_failure(&[os("/nonexistent/store.mp4")], &["/nonexistent/store.mp4", "No such file"]);
}

#[test]
fn not_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.mp4");
    std::fs::write(&f, "these are meeting notes, not a video\n").unwrap();
    expect_failure(&[f.as_os_str()], &["notes.mp4", "not a video"]);
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.mkv");
    std::fs::write(&f, "").unwrap();
    expect_failure(&[f.as_os_str()], &["empty.mkv", "empty"]);
}

#[test]
fn truncated_video() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cut.avi");
    let bytes = std::fs::read(media("vtest.avi")).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    expect_failure(&[f.as_os_str()], &["cut.avi", "truncated"]);
}

#[test]
fn truncated_mp4_with_index_first() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.mp4");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=300", "!", "video/x-raw,width=320,height=240,framerate=30/1"])
        .args(["!", "x264enc", "!", "mp4mux", "faststart=true", "!", "filesink"])
        .arg(format!("location={}", full.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 4]).unwrap();
    expect_failure(&[cut.as_os_str()], &["cut.mp4", "truncated", "10.00 s"]);
}

#[test]
fn corrupt_header() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("scrambled.avi");
    let mut bytes = std::fs::read(media("vtest.avi")).unwrap();
    for (i, b) in bytes.iter_mut().take(4096).enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    std::fs::write(&f, &bytes).unwrap();
    expect_failure(&[f.as_os_str()], &["scrambled.avi", "not a video"]);
}

#[test]
fn audio_only_has_zero_video_frames() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("till-chime.ogg");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "audiotestsrc", "num-buffers=20", "!", "vorbisenc", "!", "oggmux", "!", "filesink"])
        .arg(format!("location={}", f.display()))
        .status()
        .unwrap();
    assert!(status.success());
    expect_failure(&[f.as_os_str()], &["till-chime.ogg", "no decodable video stream"]);
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("store.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn zone_point_outside_frame() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg =
        write_config(cfg_dir.path(), "[[zones]]\nname = \"till\"\npolygon = [[0.1, 0.1], [0.6, 0.1], [0.6, 1.4]]\n");
    let video = media("vtest.avi");
    expect_failure(&[video.as_os_str(), os("--config"), cfg.as_os_str()], &["store.toml", "zone `till`", "1.4"]);
}

#[test]
fn unknown_config_key() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_config(cfg_dir.path(), "[tracker]\nmax-lost-frames = 10\nmagic = true\n");
    let video = media("vtest.avi");
    expect_failure(&[video.as_os_str(), os("--config"), cfg.as_os_str()], &["store.toml", "magic"]);
}

#[test]
fn unreadable_config() {
    let video = media("vtest.avi");
    expect_failure(&[video.as_os_str(), os("--config"), os("/nonexistent/store.toml")], &["/nonexistent/store.toml"]);
}

#[test]
fn missing_model() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_config(cfg_dir.path(), "[detector]\nmodel = \"/models/gone.onnx\"\n");
    let video = media("vtest.avi");
    expect_failure(&[video.as_os_str(), os("--config"), cfg.as_os_str()], &["/models/gone.onnx", "not found"]);
}

#[test]
fn model_disagrees_with_manifest() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(fixture("../../models/nanodet-g/manifest.toml"))
        .unwrap()
        .replace("shape = [1, 3, 416, 416]", "shape = [1, 3, 320, 320]");
    let manifest_path = cfg_dir.path().join("manifest.toml");
    std::fs::write(&manifest_path, manifest).unwrap();
    let model = cache_dir().join("models/nanodet-g.onnx");
    let cfg = write_config(
        cfg_dir.path(),
        &format!(
            "[detector]\nmanifest = {:?}\nmodel = {:?}\n",
            manifest_path.display().to_string(),
            model.display().to_string()
        ),
    );
    let video = media("vtest.avi");
    expect_failure(
        &[video.as_os_str(), os("--config"), cfg.as_os_str()],
        &["does not match its manifest", "[1, 3, 416, 416]", "[1, 3, 320, 320]"],
    );
}

/// Three files at once through one engine: each gets its own folder and exactly the counts
/// of a lone analysis (tests/golden/vtest/int8), so streams do not leak into each other.
#[test]
fn several_files_at_once_each_count_as_alone() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["door-a", "door-b", "door-c"];
    for n in names {
        std::os::unix::fs::symlink(media("vtest.avi"), dir.path().join(format!("{n}.avi"))).unwrap();
    }
    let out = dir.path().join("results");
    let cfg = write_config(
        dir.path(),
        "[stream]\nstart-time = \"2026-11-27T09:00:00Z\"\n[[lines]]\nname = \"plaza\"\nfrom = [0.5, 0.15]\nto = [0.5, 1.0]\ninside = [0.9, 0.5]\n",
    );
    let o = bin()
        .arg("analyze")
        .args(names.map(|n| dir.path().join(format!("{n}.avi"))))
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "analyze failed: {}", stderr(&o));
    let printed: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed.len(), 3);
    for (n, s) in names.iter().zip(&printed) {
        assert_eq!(s["stream"], *n);
        assert_eq!(s["frames"], 795);
        assert_plaza_as_alone(s, n);
        let written: Value = serde_json::from_slice(&std::fs::read(out.join(n).join("summary.json")).unwrap()).unwrap();
        assert_eq!(&written, s);
        let events = jsonl(&out.join(n).join("events.jsonl"));
        assert!(events.iter().all(|e| e["stream"] == *n), "{n}: another stream's event in its file");
        // The Parquet aggregates agree with the summary.
        let ins = s["lines"]["plaza"]["in"].as_i64().unwrap();
        assert_eq!(parquet_sum(&out.join(n).join("aggregates/line_counts.parquet"), "in_count"), ins);
    }
}

#[test]
fn several_files_with_one_stream_id_or_the_same_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a/door.avi");
    let b = dir.path().join("b/door.avi");
    for p in [&a, &b] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(media("vtest.avi"), p).unwrap();
    }
    let out = dir.path().join("out");
    let o = bin().arg("analyze").arg(&a).arg(&b).arg("--out").arg(&out).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("both stream door"), "{}", stderr(&o));
    let o = bin()
        .arg("analyze")
        .arg(&a)
        .arg(media("vtest.avi"))
        .args(["--stream-id", "x", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("names one stream"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");
}

/// Ctrl-C during an analysis cancels it: a clear message, a failed exit, and nothing left in
/// the output folder (no staging folder, no partial files).
#[test]
fn ctrl_c_cancels_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let detections = dir.path().join("detections.jsonl");
    let child = bin()
        .arg("analyze")
        .arg(media("vtest.avi"))
        .arg("--config")
        .arg(fixture("vtest.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--detections")
        .arg(&detections)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the analysis is under way (its staging folder exists).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
        assert!(std::time::Instant::now() < deadline, "analysis never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "an interrupted analysis must not report success");
    assert!(stderr(&o).contains("cancelled"), "{}", stderr(&o));
    assert!(!out.exists(), "left behind: {:?}", std::fs::read_dir(&out).map(Iterator::count));
    assert!(!detections.exists() && !dir.path().join("detections.jsonl.partial").exists());
}

/// One bad file among several costs only itself: the good one is analysed as if alone, the
/// bad one is named in the error, and the exit status says something failed.
#[test]
fn a_bad_file_among_several_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("door.avi");
    std::os::unix::fs::symlink(media("vtest.avi"), &good).unwrap();
    let bad = dir.path().join("till.mp4");
    std::fs::write(&bad, b"this is not a video").unwrap();
    let out = dir.path().join("results");
    let cfg = write_config(
        dir.path(),
        "[stream]\nstart-time = \"2026-11-27T09:00:00Z\"\n[[lines]]\nname = \"plaza\"\nfrom = [0.5, 0.15]\nto = [0.5, 1.0]\ninside = [0.9, 0.5]\n",
    );
    let o =
        bin().arg("analyze").arg(&good).arg(&bad).arg("--config").arg(&cfg).arg("--out").arg(&out).output().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("till.mp4") && err.contains("1 of 2 inputs failed"), "{err}");
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("door/summary.json")).unwrap()).unwrap();
    assert_plaza_as_alone(&summary, "door");
    assert!(!out.join("till").exists(), "the bad file left an output folder");
}
