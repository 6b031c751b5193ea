//! The analysis config: one TOML file, kebab-case keys, unknown keys rejected, every key
//! optional with a documented default, overridable from the environment as
//! `RETAIL_AI__<SECTION>__<KEY>=value` (e.g. `RETAIL_AI__DETECTOR__WORKERS=1`).

use std::path::{Path, PathBuf};

use retail_analytics::{AnalyticsConfig, Anchor, LineConfig, ZoneConfig};
use retail_bus::BusConfig;
use retail_core::{StreamId, TenantId};
use retail_infer::DetectorConfig;
use retail_ingest::IngestConfig;
use retail_lake::LakeConfig;
use retail_track::TrackerConfig;
use serde::{Deserialize, Serialize};

/// A wall-clock time given as RFC 3339 (`2026-11-27T09:00:00Z`), checked when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartTime {
    /// Microseconds since the Unix epoch.
    pub us: i64,
}

impl StartTime {
    pub fn parse(text: &str) -> Result<Self, String> {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| StartTime { us: t.timestamp_micros() })
            .map_err(|e| format!("{text:?} is not an RFC 3339 time (e.g. 2026-11-27T09:00:00Z): {e}"))
    }
}

impl std::fmt::Display for StartTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match chrono::DateTime::from_timestamp_micros(self.us) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            None => write!(f, "{} us", self.us),
        }
    }
}

impl Serialize for StartTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StartTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StartTime::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Why a config could not be used; always names the file and the key or value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    /// The file is not valid TOML or has an unknown key or a wrongly typed value.
    #[error("config {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// An environment override cannot be applied.
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
}

/// `[stream]`: what this video is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StreamConfig {
    /// Tenant (customer organisation) the video belongs to; default `default`.
    pub tenant: Option<TenantId>,
    /// Stream id written into events and aggregates; default: the input file's stem.
    pub id: Option<StreamId>,
    /// Wall-clock time of the first frame (RFC 3339, e.g. `2026-11-27T09:00:00Z`), so that
    /// events and per-minute aggregates carry real times; default: when analysis starts.
    pub start_time: Option<StartTime>,
}

/// `[analytics]`: settings that apply to every line and zone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnalyticsSettings {
    /// `bottom-center` (feet, default) or `center` of each person's box.
    pub anchor: Anchor,
}

/// The whole config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub stream: StreamConfig,
    pub ingest: IngestConfig,
    pub detector: DetectorConfig,
    pub tracker: TrackerConfig,
    pub analytics: AnalyticsSettings,
    /// Where events are published besides `events.jsonl`: `memory://` (default) or
    /// `kafka://host:port`.
    pub bus: BusConfig,
    /// `[lake]`: the aggregator's storage, consumer group and lateness.
    pub lake: LakeConfig,
    /// `[[lines]]`: counting lines.
    pub lines: Vec<LineConfig>,
    /// `[[zones]]`: occupancy and dwell zones.
    pub zones: Vec<ZoneConfig>,
}

const ENV_PREFIX: &str = "RETAIL_AI__";

impl Config {
    /// Reads `path` (or the defaults when `None`), applies environment overrides, validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let origin = path.map_or_else(|| PathBuf::from("<defaults>"), Path::to_owned);
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::Unreadable { path: p.to_owned(), reason: e.to_string() })?;
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Invalid { path: p.to_owned(), reason: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, std::env::vars())?;
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid { path: origin.clone(), reason: e.to_string() })?;
        config.validate().map_err(|reason| ConfigError::Invalid { path: origin, reason })?;
        Ok(config)
    }

    /// Range checks of every section and cross-field rules.
    pub fn validate(&self) -> Result<(), String> {
        self.ingest.validate()?;
        self.detector.validate()?;
        self.tracker.validate()?;
        self.bus.validate()?;
        self.analytics_config().validate()?;
        Ok(())
    }

    pub fn analytics_config(&self) -> AnalyticsConfig {
        AnalyticsConfig { anchor: self.analytics.anchor, lines: self.lines.clone(), zones: self.zones.clone() }
    }
}

/// Applies `RETAIL_AI__SECTION__KEY=value` overrides. Values parse as TOML (numbers, booleans,
/// arrays) and fall back to strings. Keys are lower-cased with `_` turned into `-`.
fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase().replace('_', "-")).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env { var, reason: "empty key segment".into() });
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let mut cur = &mut *table;
        for key in &path[..path.len() - 1] {
            let entry = cur.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::Env { var: var.clone(), reason: format!("`{key}` is not a section") })?;
        }
        cur.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vtest.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.lines.len(), 1);
        assert!(!c.zones.is_empty());
    }

    #[test]
    fn unknown_key_is_named_with_file() {
        let f = write("[detector]\nworkers = 2\nturbo = true\n");
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("turbo"), "{err}");
        assert!(err.contains(&f.path().display().to_string()), "{err}");
    }

    #[test]
    fn zone_outside_frame_is_rejected() {
        let f = write("[[zones]]\nname = \"till\"\npolygon = [[0.1, 0.1], [0.5, 0.1], [0.5, 1.5]]\n");
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("zone `till`") && err.contains("1.5"), "{err}");
    }

    #[test]
    fn env_overrides_apply() {
        let mut t: toml::Table = "[detector]\nworkers = 2\n".parse().unwrap();
        let vars = vec![
            ("RETAIL_AI__DETECTOR__WORKERS".to_owned(), "1".to_owned()),
            ("RETAIL_AI__STREAM__ID".to_owned(), "front-door".to_owned()),
            ("RETAIL_AI__TRACKER__MAX_LOST_FRAMES".to_owned(), "12".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        apply_env(&mut t, vars.into_iter()).unwrap();
        let c: Config = t.try_into().unwrap();
        assert_eq!(c.detector.workers, 1);
        assert_eq!(c.stream.id, Some(StreamId::from("front-door")));
        assert_eq!(c.tracker.max_lost_frames, 12);
    }

    #[test]
    fn bad_start_time_is_named() {
        let f = write("[stream]\nstart-time = \"yesterday\"\n");
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("start-time") && err.contains("yesterday"), "{err}");
    }
}
