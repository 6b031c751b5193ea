//! `evaluate`'s scores against the reference implementation (motmetrics, installed by the
//! test set-up) on synthetic scenes with every kind of tracking error, and by hand on a
//! small one.

use std::fmt::Write as _;
use std::path::Path;

use retail_evaluate::{Report, Results, Truth, evaluate, mot_hypotheses};

/// xorshift: the same scenes on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0
    }
}

/// People walking across a 768×576 frame, and a tracker's view of them with jitter, misses,
/// false alarms, broken tracks and identity swaps. Returns (gt.txt, detections.jsonl).
fn scene(seed: u64, frames: u64) -> (String, String) {
    let mut rng = Rng(seed);
    let people: Vec<[f64; 6]> = (0..12)
        .map(|_| {
            let start = (rng.next() * frames as f64 * 0.7) as u64 as f64;
            let life = 20.0 + rng.next() * 80.0;
            [start, life, rng.next() * 700.0, rng.next() * 450.0, rng.next() * 6.0 - 3.0, rng.next() * 4.0 - 2.0]
        })
        .collect();
    let (mut gt, mut det) = (String::new(), String::new());
    let mut track_of: Vec<u64> = (0..people.len() as u64).map(|p| 100 + p).collect();
    let mut next_track = 500;
    for f in 1..=frames {
        let mut found = Vec::new();
        for (p, [start, life, x0, y0, vx, vy]) in people.iter().enumerate() {
            let age = f as f64 - start;
            if age < 0.0 || age > *life {
                continue;
            }
            let (x, y) = (x0 + vx * age, y0 + vy * age);
            let _ = writeln!(gt, "{f},{},{x:.1},{y:.1},40,100,1,1,1", p + 1);
            if rng.next() < 0.03 {
                track_of[p] = next_track; // the track breaks: a new id from here on
                next_track += 1;
            }
            if rng.next() < 0.1 {
                continue; // missed
            }
            let jitter = if rng.next() < 0.1 { 30.0 } else { 6.0 }; // sometimes badly placed
            let (dx, dy) = ((rng.next() - 0.5) * jitter, (rng.next() - 0.5) * jitter);
            let tracked = rng.next() < 0.9;
            found.push((x + dx, y + dy, tracked.then_some(track_of[p])));
        }
        if f % 17 == 0 && track_of.len() > 3 {
            track_of.swap(0, 1); // two people's tracks swap
        }
        if rng.next() < 0.3 {
            found.push((rng.next() * 700.0, rng.next() * 450.0, Some(900 + f % 5))); // a false alarm
        }
        let boxes: Vec<String> = found
            .iter()
            .map(|(x, y, t)| {
                let id = t.map_or("null".to_owned(), |t| t.to_string());
                let score = if t.is_some() { 0.8 } else { 0.3 };
                format!(
                    r#"{{"box":[{x:.1},{y:.1},{:.1},{:.1}],"score":{score},"class":"person","track_id":{id}}}"#,
                    x + 40.0,
                    y + 100.0
                )
            })
            .collect();
        let _ = writeln!(det, r#"{{"frame":{},"pts_s":0.0,"detections":[{}]}}"#, f - 1, boxes.join(","));
    }
    (gt, det)
}

const SUMMARY: &str = r#"{"people": 3, "lines": {"door": {"in": 2, "out": 0}}, "zones": {},
    "video": {"width": 768, "height": 576, "fps": 10.0}, "model": "test", "frames": 150, "fps": 30.0}"#;

fn write_case(dir: &Path, gt: &str, det: &str, frames: &[u64]) {
    std::fs::create_dir_all(dir.join("truth/gt")).unwrap();
    std::fs::create_dir_all(dir.join("results")).unwrap();
    std::fs::write(dir.join("truth/gt/gt.txt"), gt).unwrap();
    let list: String = frames.iter().map(|f| format!("{f}\n")).collect();
    std::fs::write(dir.join("truth/labelled_frames.txt"), list).unwrap();
    std::fs::write(dir.join("results/detections.jsonl"), det).unwrap();
    std::fs::write(dir.join("results/summary.json"), SUMMARY).unwrap();
}

fn ours(dir: &Path) -> Report {
    let truth = Truth::load(&dir.join("truth")).unwrap();
    let results = Results::load(&dir.join("results"), None).unwrap();
    std::fs::write(dir.join("hyp.txt"), mot_hypotheses(&results)).unwrap();
    evaluate(&truth, &results, &Default::default(), 0.5)
}

fn reference(dir: &Path) -> serde_json::Value {
    let python = retail_testkit::cache_home().join("tools/motmetrics/bin/python");
    assert!(python.exists(), "{} missing: run scripts/setup-test-services.sh (make test does)", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/motmetrics_check.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(dir.join("truth/gt/gt.txt"))
        .arg(dir.join("hyp.txt"))
        .arg(dir.join("truth/labelled_frames.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "motmetrics: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn mota_and_idf1_equal_motmetrics_on_scenes_with_every_kind_of_error() {
    for seed in [7_u64, 1234, 98_765, 31_337] {
        let dir = tempfile::tempdir().unwrap();
        let (gt, det) = scene(seed, 150);
        // Every third frame, and a stretch where nobody is labelled yet.
        let frames: Vec<u64> = (1..=150).filter(|f| f % 3 == 1).collect();
        write_case(dir.path(), &gt, &det, &frames);
        let r = ours(dir.path());
        let m = reference(dir.path());
        let t = &r.tracking;
        let pairs = [
            ("num_objects", t.objects as f64),
            ("num_predictions", t.predictions as f64),
            ("num_matches", t.matches as f64),
            ("num_switches", t.switches as f64),
            ("num_misses", t.misses as f64),
            ("num_false_positives", t.false_positives as f64),
            ("idtp", t.idtp as f64),
            ("mota", t.mota.unwrap()),
            ("idf1", t.idf1.unwrap()),
        ];
        for (name, value) in pairs {
            let expected = m[name].as_f64().unwrap();
            assert!((value - expected).abs() < 1e-9, "seed {seed}: {name} = {value}, motmetrics {expected}");
        }
        assert!(t.switches > 0 && t.false_positives > 0 && t.misses > 0, "seed {seed}: a scene without errors: {t:?}");
        assert_eq!(r.detection.detected, t.predictions, "low-score candidates are not detections");
    }
}

#[test]
fn a_small_scene_scores_as_counted_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    // Person 1 is tracked as 7, then as 8 (a switch); person 2 is missed once; one false alarm.
    let gt = "1,1,100,100,40,100,1,1,1\n1,2,400,100,40,100,1,1,1\n2,1,110,100,40,100,1,1,1\n\
              2,2,410,100,40,100,1,1,1\n3,1,120,100,40,100,1,1,1\n3,2,420,100,40,100,1,1,1\n";
    let det = [
        r#"{"frame":0,"detections":[{"box":[100,100,140,200],"score":0.9,"class":"person","track_id":7},{"box":[400,100,440,200],"score":0.9,"class":"person","track_id":9}]}"#,
        r#"{"frame":1,"detections":[{"box":[110,100,150,200],"score":0.9,"class":"person","track_id":7},{"box":[600,300,640,400],"score":0.9,"class":"person","track_id":3}]}"#,
        r#"{"frame":2,"detections":[{"box":[120,100,160,200],"score":0.9,"class":"person","track_id":8},{"box":[420,100,460,200],"score":0.9,"class":"person","track_id":9}]}"#,
    ]
    .join("\n");
    write_case(dir.path(), gt, &det, &[1, 2, 3]);
    let r = ours(dir.path());
    let t = &r.tracking;
    assert_eq!((t.objects, t.matches, t.switches, t.misses, t.false_positives), (6, 4, 1, 1, 1), "{t:?}");
    assert!((t.mota.unwrap() - (1.0 - 3.0 / 6.0)).abs() < 1e-12);
    // Identities: 1↔7 for 2 boxes, 2↔9 for 2: IDTP 4 of 6 labelled + 6 tracked boxes.
    assert_eq!(t.idtp, 4);
    assert!((t.idf1.unwrap() - 8.0 / 12.0).abs() < 1e-12);
    assert_eq!((r.detection.matched, r.detection.detected, r.detection.labelled), (5, 6, 6));
    let m = reference(dir.path());
    assert_eq!(m["num_switches"].as_f64(), Some(1.0));
    assert_eq!(m["idtp"].as_f64(), Some(4.0));
}
