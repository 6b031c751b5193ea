//! `retail-ai doctor`: what the binary found on this machine.

use std::fmt::Write;

use retail_infer::{Manifest, Precision, RuntimeInfo};

/// One check's outcome.
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Runs every check; the report is printable and `ok` is false if analysis cannot run.
pub fn run() -> (bool, String) {
    let mut checks = Vec::new();
    match retail_ingest::init() {
        Ok(()) => {
            let (major, minor, micro, _) = gstreamer::version();
            checks.push(Check { name: "GStreamer".into(), ok: true, detail: format!("{major}.{minor}.{micro}") });
            for (element, found) in retail_ingest::check_elements() {
                checks.push(Check {
                    name: format!("  element {element}"),
                    ok: found,
                    detail: if found {
                        "found".into()
                    } else {
                        "MISSING: install the GStreamer plugin packages".into()
                    },
                });
            }
        }
        Err(e) => checks.push(Check { name: "GStreamer".into(), ok: false, detail: e.to_string() }),
    }
    let runtime: Result<RuntimeInfo, _> = retail_infer::init_runtime(None);
    match &runtime {
        Ok(info) => checks.push(Check {
            name: "ONNX Runtime".into(),
            ok: true,
            detail: format!("{} ({})", info.library.display(), info.build_info.lines().next().unwrap_or("")),
        }),
        Err(e) => checks.push(Check { name: "ONNX Runtime".into(), ok: false, detail: e.to_string() }),
    }
    let manifest = Manifest::bundled();
    for precision in [Precision::Fp32, Precision::Int8] {
        let name = format!("model {} ({precision:?})", manifest.name).to_lowercase();
        let check = match manifest.resolve_model(None, None, precision) {
            Ok(path) if runtime.is_ok() => {
                match retail_infer::Detector::load(&manifest, &path, 1, vec![manifest.labels.person], 0.35, 0.5) {
                    Ok(_) => Check { name, ok: true, detail: format!("{} (matches its manifest)", path.display()) },
                    Err(e) => Check { name, ok: false, detail: e.to_string() },
                }
            }
            Ok(path) => Check { name, ok: false, detail: format!("{} (not loaded: no ONNX Runtime)", path.display()) },
            Err(e) => Check { name, ok: false, detail: e.to_string() },
        };
        checks.push(check);
    }
    let media = retail_infer::cache_dir().join("media");
    for name in ["vtest.avi", "person.jpg"] {
        let p = media.join(name);
        checks.push(Check {
            name: format!("sample {name}"),
            ok: true,
            detail: if p.is_file() {
                p.display().to_string()
            } else {
                "not downloaded (optional; set-up fetches it)".into()
            },
        });
    }
    let ok = checks.iter().all(|c| c.ok);
    let mut out = String::new();
    for c in &checks {
        let _ = writeln!(out, "{} {:<28} {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
    }
    (ok, out)
}
