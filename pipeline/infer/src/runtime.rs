use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::InferError;

/// What was loaded, for `retail-ai doctor` and logs.
#[derive(Clone, Debug)]
pub struct RuntimeInfo {
    pub library: PathBuf,
    pub build_info: String,
}

/// Where set-up puts downloaded and converted artefacts: `$RETAIL_AI_HOME`, else
/// `$XDG_CACHE_HOME/retail-ai`, else `~/.cache/retail-ai`.
pub fn cache_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("RETAIL_AI_HOME") {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("retail-ai");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".cache").join("retail-ai")
}

/// Finds the ONNX Runtime shared library: `ORT_DYLIB_PATH`, the set-up cache, then next to
/// the executable (`./` and `../lib/`), as `(path, where it came from)` candidates in order.
pub fn onnxruntime_candidates() -> Vec<(PathBuf, &'static str)> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        c.push((PathBuf::from(p), "ORT_DYLIB_PATH"));
    }
    c.push((cache_dir().join("lib").join("libonnxruntime.so"), "set-up cache"));
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_owned)) {
        c.push((dir.join("libonnxruntime.so"), "next to the executable"));
        c.push((dir.join("../lib/libonnxruntime.so"), "next to the executable"));
    }
    c
}

/// The first ONNX Runtime library candidate that exists.
pub fn find_onnxruntime() -> Result<PathBuf, InferError> {
    let candidates = onnxruntime_candidates();
    candidates.iter().find(|(p, _)| p.is_file()).map(|(p, _)| p.clone()).ok_or_else(|| InferError::Runtime {
        reason: format!(
            "libonnxruntime.so not found (looked at {}); run scripts/setup.sh or set ORT_DYLIB_PATH",
            candidates.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })
}

struct Loaded {
    info: RuntimeInfo,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// Loads ONNX Runtime from `library` (or the first one found) once per process.
pub fn init_runtime(library: Option<&Path>) -> Result<RuntimeInfo, InferError> {
    let loaded = RUNTIME.get_or_init(|| {
        let path = match library {
            Some(p) => p.to_owned(),
            None => find_onnxruntime().map_err(|e| e.to_string())?,
        };
        let builder = ort::init_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let env = builder.with_name("retail-ai").build().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Loaded { info: RuntimeInfo { library: path, build_info: ort::info().to_owned() }, env })
    });
    match loaded {
        Ok(l) => Ok(l.info.clone()),
        Err(reason) => Err(InferError::Runtime { reason: reason.clone() }),
    }
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub(crate) fn environment() -> Result<&'static ort::environment::Environment, InferError> {
    init_runtime(None)?;
    match RUNTIME.get() {
        Some(Ok(l)) => Ok(&l.env),
        Some(Err(reason)) => Err(InferError::Runtime { reason: reason.clone() }),
        None => Err(InferError::Runtime { reason: "not initialised".into() }),
    }
}
