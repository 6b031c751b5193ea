//! Shared by the engine tests: the vtest clip, its fixture config and an in-process bus.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use retail_infer::cache_dir;
use retail_runtime::{Config, SharedBus};

pub fn vtest() -> PathBuf {
    let p = cache_dir().join("media/vtest.avi");
    assert!(p.is_file(), "{} missing: run scripts/setup.sh first", p.display());
    p
}

pub fn config() -> Config {
    Config::load(Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vtest.toml"))).unwrap()
}

pub fn memory_bus(name: &str) -> SharedBus {
    let cfg = retail_bus::BusConfig { url: format!("memory://{name}"), ..Default::default() };
    Arc::new(Mutex::new(retail_bus::open_producer(&cfg).unwrap()))
}
