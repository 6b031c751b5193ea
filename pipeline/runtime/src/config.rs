//! The analysis config: one TOML file, kebab-case keys, unknown keys rejected, every key
//! optional with a documented default, overridable from the environment as
//! `RETAIL_AI__<SECTION>__<KEY>=value` (e.g. `RETAIL_AI__DETECTOR__WORKERS=1`).

use std::path::{Path, PathBuf};

use retail_analytics::{AnalyticsConfig, Anchor, LineConfig, MaskConfig, ZoneConfig};
use retail_bus::BusConfig;
use retail_core::{StreamId, TenantId};
use retail_infer::DetectorConfig;
use retail_ingest::{CameraUrl, IngestConfig, Transport};
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnalyticsSettings {
    /// `bottom-center` (feet, default) or `center` of each person's box.
    pub anchor: Anchor,
    /// A track is a person (for zones, dwell and the people count) once its anchor has moved
    /// this many box sizes from where it appeared; fixtures the detector mistakes for people
    /// never move. 0 counts every track.
    pub static_min_move: f32,
    /// How long an unmoved track is held (its zone visits back-dated if it then moves); after
    /// that it counts only from when it moves.
    pub static_after_s: f32,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        let rule = retail_analytics::StaticRule::default();
        AnalyticsSettings { anchor: Anchor::default(), static_min_move: rule.min_move, static_after_s: rule.after_s }
    }
}

impl AnalyticsSettings {
    fn static_rule(&self) -> retail_analytics::StaticRule {
        retail_analytics::StaticRule { min_move: self.static_min_move, after_s: self.static_after_s }
    }
}

/// `[[cameras]]`: a live camera that `retail-ai worker` analyses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CameraConfig {
    /// Tenant the camera belongs to; default `default`.
    #[serde(default)]
    pub tenant: TenantId,
    /// Stream id in events and metrics, unique in the file (e.g. `front-door`).
    pub id: StreamId,
    /// `rtsp://user:password@host:port/path`; the credentials are never logged or shown.
    pub url: CameraUrl,
    /// `tcp` (default), `udp` or `auto`.
    #[serde(default)]
    pub transport: Transport,
    /// Frames analysed per second (default 5); 0 analyses every frame the camera sends.
    #[serde(default = "default_analysis_fps")]
    pub analysis_fps: u32,
    /// Motion gating: a frame that differs from the last inferred one by less than this mean
    /// absolute difference in every one of 64 bands of rows (0..255 per pixel byte at the
    /// model's input size on the CPU, where 1.0–3.0 suits a still scene with sensor noise;
    /// per luma byte at the video's own size on the GPU path, where noise is not averaged
    /// away by scaling and colour alone does not count) skips inference and keeps the
    /// previous detections.
    /// 0 (default) infers every analysed frame.
    #[serde(default)]
    pub motion_threshold: f32,
    /// This camera's counting lines.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// This camera's zones.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// This camera's ignore masks: where no person can be.
    #[serde(default)]
    pub masks: Vec<MaskConfig>,
}

fn default_analysis_fps() -> u32 {
    5
}

/// `[live]`: how cameras are watched and reconnected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LiveSettings {
    /// A live camera that sends no frame for this long is reconnected (seconds).
    pub watchdog_s: f64,
    /// A new connection that brings no frame for this long is given up and retried (seconds).
    pub connect_timeout_s: f64,
    /// First wait before reconnecting, doubled after each failure up to `backoff-max-s`; each
    /// wait is jittered by ±20 %.
    pub backoff_min_s: f64,
    pub backoff_max_s: f64,
    /// RTSP jitter-buffer latency (milliseconds).
    pub latency_ms: u32,
    /// How long a person may go unseen before their track ends, in seconds at the camera's
    /// analysis rate (replaces `tracker.max-lost-frames` for cameras).
    pub max_lost_s: f64,
    /// Workers sharing the file's cameras: each camera id maps to a partition of
    /// `cameras-topic`, and the workers in this Kafka consumer group divide the partitions
    /// among themselves (a dead worker's move to the others within `bus.session-timeout-s`).
    /// Unset, or with a `memory://` bus: this worker runs every camera.
    pub group: Option<String>,
    /// The topic whose partitions are the unit of assignment (it carries no messages).
    pub cameras_topic: String,
    /// Its partition count: the most workers that can share the cameras.
    pub cameras_partitions: i32,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            watchdog_s: 5.0,
            connect_timeout_s: 10.0,
            backoff_min_s: 0.5,
            backoff_max_s: 30.0,
            latency_ms: 200,
            max_lost_s: 3.0,
            group: None,
            cameras_topic: "retail.cameras".into(),
            cameras_partitions: 32,
        }
    }
}

impl LiveSettings {
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("watchdog-s", self.watchdog_s),
            ("connect-timeout-s", self.connect_timeout_s),
            ("backoff-min-s", self.backoff_min_s),
            ("backoff-max-s", self.backoff_max_s),
            ("max-lost-s", self.max_lost_s),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(format!("live.{key} must be a number of seconds above 0, got {v}"));
            }
        }
        if !(1..=1000).contains(&self.cameras_partitions) {
            return Err(format!("live.cameras-partitions must be 1..1000, got {}", self.cameras_partitions));
        }
        if self.group.as_deref().is_some_and(str::is_empty) || self.cameras_topic.is_empty() {
            return Err("live.group and live.cameras-topic must not be empty".into());
        }
        if self.backoff_min_s > self.backoff_max_s {
            return Err(format!(
                "live.backoff-min-s ({}) must not exceed live.backoff-max-s ({})",
                self.backoff_min_s, self.backoff_max_s
            ));
        }
        Ok(())
    }
}

/// `[server]`: `retail-ai serve`, the platform's HTTP API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: String,
    /// Where the embedded defaults keep their files (database, generated secrets).
    pub data_dir: PathBuf,
    /// Metadata database: `sqlite://PATH` or `postgres://user:pass@host/db`. Default: SQLite
    /// under `data-dir`.
    pub database_url: Option<retail_core::Secret>,
    /// Signs session cookies (HS256), at least 32 bytes. Default: generated once and kept in
    /// `data-dir/secrets/jwt.key` (mode 0600); set it for more than one server.
    pub jwt_secret: Option<retail_core::Secret>,
    /// How long a login lasts (hours).
    pub session_hours: u32,
    /// The session cookie's `Secure` flag; turn off only for plain-HTTP use on localhost.
    pub cookie_secure: bool,
    /// Login attempts per minute from one IP address.
    pub login_per_minute: u32,
    /// Requests per second per API key or session, and the burst allowed above it.
    pub requests_per_second: u32,
    pub burst: u32,
    /// Where uploads and results are stored, encrypted: a directory (`file:///srv/objects`
    /// or a plain path) or `s3://bucket/prefix`. Default: `data-dir/objects`.
    pub objects_url: Option<String>,
    /// S3 endpoint and credentials for an `s3://` objects-url.
    pub s3: retail_lake::S3Settings,
    /// Wraps the organisations' data keys: 32 bytes as 64 hex digits or base64. Set it from
    /// the environment (`RETAIL_AI__SERVER__MASTER_KEY`) or a secret store, never beside the
    /// data. Default: generated once into `data-dir/secrets/master.key` (mode 0600), which
    /// suits one machine only.
    pub master_key: Option<retail_core::Secret>,
    /// The largest upload accepted, in MiB.
    pub max_upload_mib: u64,
    /// How often `serve` deletes what has expired (and meters storage), in seconds.
    pub purge_interval_s: u64,
    /// Analysis jobs `serve` runs at once in its own process (0: only separate workers).
    pub job_workers: u32,
    /// A worker renews its job's lease this often times 3; a job whose lease runs out is
    /// taken by another worker.
    pub job_lease_s: u64,
    /// Runs of one job before it is failed (a worker killed mid-job counts as a run).
    pub job_attempts: u32,
    /// Credits charged per minute of video analysed (reserved from the video's duration).
    pub credits_per_minute: f64,
    /// Credits charged per GB-day stored, for uploads and results (metered daily).
    pub credits_per_gb_day: f64,
    /// Credits a new organisation starts with.
    pub signup_credits: f64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("retail-data"),
            database_url: None,
            jwt_secret: None,
            session_hours: 12,
            cookie_secure: true,
            login_per_minute: 10,
            requests_per_second: 20,
            burst: 40,
            objects_url: None,
            s3: Default::default(),
            master_key: None,
            max_upload_mib: 4096,
            purge_interval_s: 3600,
            job_workers: 1,
            job_lease_s: 60,
            job_attempts: 3,
            credits_per_minute: 1.0,
            credits_per_gb_day: 0.1,
            signup_credits: 60.0,
        }
    }
}

impl ServerSettings {
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| format!("server.listen must be host:port with an IP address, got {:?}", self.listen))?;
        if let Some(url) = &self.database_url {
            let u = url.expose();
            if !(u.starts_with("sqlite:") || u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err("server.database-url must start with sqlite:// or postgres://".into());
            }
        }
        if self.jwt_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
            return Err("server.jwt-secret must be at least 32 bytes".into());
        }
        for (key, v) in [
            ("credits-per-minute", self.credits_per_minute),
            ("credits-per-gb-day", self.credits_per_gb_day),
            ("signup-credits", self.signup_credits),
        ] {
            if !(0.0..=1e9).contains(&v) {
                return Err(format!("server.{key} must be 0 to 1e9, got {v}"));
            }
        }
        if let Some(key) = &self.master_key {
            // The store parses it; this only catches the obvious slip early, by its length.
            let k = key.expose().trim();
            let hex = k.len() == 64 && k.chars().all(|c| c.is_ascii_hexdigit());
            if !(hex || k.len() == 43 || k.len() == 44) {
                return Err("server.master-key must be 32 bytes as 64 hex digits or base64".into());
            }
        }
        if let Some(url) = &self.objects_url
            && url.contains("://")
            && !(url.starts_with("file://") || url.starts_with("s3://"))
        {
            return Err(format!("server.objects-url must be a directory, file:// or s3://, got {url:?}"));
        }
        for (key, v) in [
            ("session-hours", self.session_hours),
            ("login-per-minute", self.login_per_minute),
            ("requests-per-second", self.requests_per_second),
            ("burst", self.burst),
            ("max-upload-mib", u32::try_from(self.max_upload_mib).unwrap_or(u32::MAX)),
            ("purge-interval-s", u32::try_from(self.purge_interval_s).unwrap_or(u32::MAX)),
            ("job-lease-s", u32::try_from(self.job_lease_s).unwrap_or(u32::MAX)),
            ("job-attempts", self.job_attempts),
        ] {
            if v == 0 {
                return Err(format!("server.{key} must be above 0"));
            }
        }
        Ok(())
    }
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
    /// `[[masks]]`: ignore masks, places where no person can be (detections there are dropped).
    pub masks: Vec<MaskConfig>,
    /// `[live]`: camera watchdog and reconnection.
    pub live: LiveSettings,
    /// `[[cameras]]`: live cameras for `retail-ai worker`.
    pub cameras: Vec<CameraConfig>,
    /// `[server]`: `retail-ai serve`.
    pub server: ServerSettings,
}

const ENV_PREFIX: &str = "RETAIL_AI__";

/// What a tenant may set for one analysis job: its lines, zones, masks, analytics settings and the
/// video's start time, in the config file's TOML. Everything else (detector, bus, server)
/// stays the operator's, so unknown sections are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobAnalysis {
    pub stream: JobStream,
    pub analytics: AnalyticsSettings,
    pub lines: Vec<LineConfig>,
    pub zones: Vec<ZoneConfig>,
    pub masks: Vec<MaskConfig>,
}

/// `[stream]` of a job: only its start time (tenant and stream id are the platform's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobStream {
    pub start_time: Option<StartTime>,
}

impl JobAnalysis {
    /// Parses and checks a job's TOML with the rules and messages of the config file.
    pub fn parse(text: &str, base: &Config) -> Result<Self, String> {
        let job: JobAnalysis = toml::from_str(text).map_err(|e| toml_reason(text, &e))?;
        job.apply(base)?;
        Ok(job)
    }

    /// `base` with this job's lines, zones and settings, validated.
    pub fn apply(&self, base: &Config) -> Result<Config, String> {
        let mut c = base.clone();
        c.stream.start_time = self.stream.start_time;
        c.analytics = self.analytics.clone();
        c.lines = self.lines.clone();
        c.zones = self.zones.clone();
        c.masks = self.masks.clone();
        c.validate()?;
        Ok(c)
    }
}

impl Config {
    /// Reads `path` (or the defaults when `None`), applies environment overrides, validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let origin = path.map_or_else(|| PathBuf::from("<defaults>"), Path::to_owned);
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError::Unreadable { path: p.to_owned(), reason: e.to_string() })?,
            None => String::new(),
        };
        let invalid =
            |e: &toml::de::Error| ConfigError::Invalid { path: origin.clone(), reason: toml_reason(&text, e) };
        let mut table: toml::Table = text.parse().map_err(|e| invalid(&e))?;
        apply_env(&mut table, std::env::vars())?;
        // Errors here quote no source text (there is none), only the key and the problem.
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
        self.live.validate()?;
        self.server.validate()?;
        self.lake.validate()?;
        // Back-dated zone visits must still reach the lake's open minute, not late_events.
        if f64::from(self.analytics.static_after_s) >= self.lake.lateness_s as f64 {
            return Err(format!(
                "analytics.static-after-s ({}) must be less than lake.lateness-s ({}): visits are back-dated by up to that long",
                self.analytics.static_after_s, self.lake.lateness_s
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for cam in &self.cameras {
            if !ids.insert(&cam.id) {
                return Err(format!("camera {}: the id is given twice in [[cameras]]", cam.id));
            }
            if !(0.0..=255.0).contains(&cam.motion_threshold) {
                return Err(format!(
                    "camera {}: motion-threshold must be 0..255, got {}",
                    cam.id, cam.motion_threshold
                ));
            }
            if cam.analysis_fps > 120 {
                return Err(format!("camera {}: analysis-fps must be 0..120, got {}", cam.id, cam.analysis_fps));
            }
            self.camera_analytics(cam).validate().map_err(|e| format!("camera {}: {e}", cam.id))?;
        }
        Ok(())
    }

    /// A camera's lines and zones with the file's analytics settings.
    pub fn camera_analytics(&self, cam: &CameraConfig) -> AnalyticsConfig {
        AnalyticsConfig {
            anchor: self.analytics.anchor,
            lines: cam.lines.clone(),
            zones: cam.zones.clone(),
            static_rule: self.analytics.static_rule(),
            masks: cam.masks.clone(),
        }
    }

    pub fn analytics_config(&self) -> AnalyticsConfig {
        AnalyticsConfig {
            anchor: self.analytics.anchor,
            lines: self.lines.clone(),
            zones: self.zones.clone(),
            static_rule: self.analytics.static_rule(),
            masks: self.masks.clone(),
        }
    }
}

/// A TOML error as `line N: message`, without the quoted source line that toml adds: that
/// line may hold a secret (a camera password, a storage key).
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) if !text.is_empty() => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        _ => e.message().to_owned(),
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

    const CAMERA: &str = "[[cameras]]\nid = \"front-door\"\nurl = \"rtsp://admin:hunter2@10.0.0.5/stream1\"\n";

    #[test]
    fn cameras_load_with_defaults_and_hide_their_passwords() {
        let f = write(&format!(
            "{CAMERA}[[cameras.lines]]\nname = \"door\"\nfrom = [0.5, 0.0]\nto = [0.5, 1.0]\ninside = [0.9, 0.5]\n"
        ));
        let c = Config::load(Some(f.path())).unwrap();
        let cam = &c.cameras[0];
        assert_eq!(cam.id, StreamId::from("front-door"));
        assert_eq!(cam.analysis_fps, 5);
        assert_eq!(cam.transport, Transport::Tcp);
        assert_eq!(cam.lines.len(), 1);
        assert_eq!(cam.url.credentials(), (Some("admin"), Some("hunter2")));
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("hunter2") && !shown.contains("admin"), "{shown}");
    }

    #[test]
    fn camera_mistakes_are_named_and_never_echo_the_password() {
        let twice = write(&format!("{CAMERA}{CAMERA}"));
        let err = Config::load(Some(twice.path())).unwrap_err().to_string();
        assert!(err.contains("front-door") && err.contains("twice"), "{err}");
        for (text, expect) in [
            ("[[cameras]]\nid = \"x\"\nurl = \"http://admin:hunter2@cam/x\"\n", "rtsp://"),
            ("[[cameras]]\nid = \"x\"\nurl = \"rtsp://admin:hunter2@cam/x\n", "line 3"),
            ("[[cameras]]\nid = \"x\"\nurl = \"rtsp://admin:hunter2@cam/x\"\nanalysis-fps = 500\n", "analysis-fps"),
        ] {
            let f = write(text);
            let err = Config::load(Some(f.path())).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
            assert!(!err.contains("hunter2"), "the password is echoed: {err}");
        }
    }

    #[test]
    fn the_readme_camera_example_loads() {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
        let block = readme.split("```toml\n[live]").nth(1).and_then(|b| b.split("```").next()).unwrap();
        let f = write(&format!("[live]{block}"));
        let c = Config::load(Some(f.path())).unwrap();
        assert_eq!(c.cameras[0].id, StreamId::from("front-door"));
        assert_eq!(c.cameras[0].zones.len(), 1);
    }

    #[test]
    fn the_deploy_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        let worker = Config::load(Some(&dir.join("worker.toml"))).unwrap();
        assert_eq!(worker.live.group.as_deref(), Some("retail-workers"));
        assert_eq!(worker.cameras.len(), 2);
        let lake = Config::load(Some(&dir.join("lake.toml"))).unwrap();
        assert!(lake.lake.url.starts_with("s3://"));
        let platform = Config::load(Some(&dir.join("platform.toml"))).unwrap();
        assert_eq!((platform.server.job_workers, platform.server.objects_url.as_deref()), (0, Some("s3://objects/")));
        assert_eq!(worker.server.objects_url, platform.server.objects_url, "workers read what serve stores");
    }

    #[test]
    fn live_settings_are_checked() {
        let f = write("[live]\nbackoff-min-s = 10\nbackoff-max-s = 1\n");
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("live.backoff-min-s"), "{err}");
    }

    #[test]
    fn back_dating_stays_within_the_lakes_lateness() {
        let f = write("[analytics]\nstatic-after-s = 200\n");
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("analytics.static-after-s (200)") && err.contains("lake.lateness-s (120)"), "{err}");
    }

    #[test]
    fn lake_retention_must_outlast_the_oldest_accepted_event() {
        assert_eq!(Config::default().lake.retention_days, 2557);
        let f = write("[lake]\nmax-age-days = 400\nretention-days = 365\n");
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("lake.retention-days (365)") && err.contains("lake.max-age-days (400)"), "{err}");
    }
}
