//! Domain types shared by every stage of the pipeline.
//!
//! Geometry is normalised: x and y run from 0 to 1 across the frame, so boxes, lines and zones
//! survive a change of resolution between cameras, uploads and model inputs.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Identifies one video stream (an uploaded file or a camera) within a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId(pub String);

/// Longest stream id, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 200;

impl StreamId {
    /// Stream ids are free text (a camera name, a file name) but never empty, at most
    /// [`MAX_STREAM_ID_BYTES`], without control characters or `/`: they name files and
    /// appear in logs.
    pub fn parse(s: &str) -> Result<Self, String> {
        // `.` and `..` are refused too: ids name folders (one output folder per stream).
        let ok = !s.is_empty()
            && s.len() <= MAX_STREAM_ID_BYTES
            && !s.chars().any(|c| c.is_control() || c == '/')
            && s != "."
            && s != "..";
        if ok {
            Ok(StreamId(s.to_owned()))
        } else {
            Err(format!(
                "stream id {s:?} must be 1-{MAX_STREAM_ID_BYTES} bytes without '/' or control characters, and not . or .."
            ))
        }
    }
}

/// Ids arriving from outside (the bus, the API) are checked as they are decoded.
impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StreamId::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        StreamId(s.to_owned())
    }
}

/// A customer organisation; every stored row and object belongs to exactly one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

/// Tenant ids name storage prefixes: one that is not path-safe is refused as it is decoded,
/// so `acme/date=x` can never be written under `tenant=acme/`.
impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TenantId::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TenantId {
    /// Tenant ids appear in object paths (`tenant=…/`), so they are restricted to
    /// lower-case letters, digits, `-` and `_`, 1 to 64 characters.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok { Ok(TenantId(s.to_owned())) } else { Err(format!("tenant id {s:?} must be 1-64 of [a-z0-9_-]")) }
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for TenantId {
    fn default() -> Self {
        TenantId("default".into())
    }
}

/// A point in normalised frame coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// An axis-aligned box in normalised frame coordinates (`x1 <= x2`, `y1 <= y2`).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        BBox { x1, y1, x2, y2 }
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union; 0 for disjoint or degenerate boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    pub fn center(&self) -> Point {
        Point { x: (self.x1 + self.x2) * 0.5, y: (self.y1 + self.y2) * 0.5 }
    }

    /// Where a standing person touches the floor: the point footfall lines and zones use.
    pub fn bottom_center(&self) -> Point {
        Point { x: (self.x1 + self.x2) * 0.5, y: self.y2 }
    }

    /// The box clipped to the frame.
    pub fn clamped(&self) -> BBox {
        BBox {
            x1: self.x1.clamp(0.0, 1.0),
            y1: self.y1.clamp(0.0, 1.0),
            x2: self.x2.clamp(0.0, 1.0),
            y2: self.y2.clamp(0.0, 1.0),
        }
    }
}

/// One object found by the detector in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    /// Class index in the model's label list.
    pub class: u32,
}

/// Presentation timestamp in nanoseconds from the start of the stream.
pub type PtsNs = u64;

/// How a YUV picture's values map to RGB (from the video's colorimetry): the matrix, and
/// whether values use the full 0..255 (JPEG-style) or the video range (Y 16..235).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct YuvColour {
    pub matrix: YuvMatrix,
    pub full_range: bool,
}

/// The YUV -> RGB matrix of a video.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum YuvMatrix {
    /// SD video (ITU-R BT.601), and what a video that says nothing is taken to use.
    #[default]
    Bt601,
    /// HD video (ITU-R BT.709).
    Bt709,
    /// UHD video (ITU-R BT.2020, non-constant luminance).
    Bt2020,
}

/// A CUDA context shared by the decoder (GStreamer's CUDA elements) and the kernels: a device
/// address is only valid in the context it was allocated in, so both must use this one.
#[derive(Clone)]
pub struct CudaContextRef {
    /// The `CUcontext` handle.
    pub handle: usize,
    /// The `CUdevice` ordinal it belongs to.
    pub device: i32,
    /// Keeps the context alive while a pipeline or picture may use it.
    pub keep: Arc<dyn Send + Sync>,
}

impl fmt::Debug for CudaContextRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaContextRef {{ handle: {:#x}, device: {} }}", self.handle, self.device)
    }
}

/// The layout of a [`DevicePicture`]'s planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceYuv {
    /// Y, then interleaved UV at half height.
    Nv12,
    /// Y, U and V planes; chroma half size both ways.
    I420,
}

/// A decoded 4:2:0 picture left in GPU memory (GStreamer's `memory:CUDAMemory`): plane
/// addresses and pitches in `context`, held there until the last clone is dropped.
/// The kernels only read through these addresses and trust them: retail-gst-cuda makes them
/// from mapped decoder memory; anything else handing one over vouches for them the same way.
#[derive(Clone)]
pub struct DevicePicture {
    pub format: DeviceYuv,
    /// Even sides: an odd last row or column is left out, as with host I420 frames.
    pub width: u32,
    pub height: u32,
    pub luma: u64,
    /// NV12: the UV plane; I420: U.
    pub chroma_u: u64,
    /// I420: V; NV12: 0.
    pub chroma_v: u64,
    pub luma_pitch: usize,
    pub chroma_pitch: usize,
    /// The `CUcontext` the addresses belong to.
    pub context: usize,
    /// The mapped decoder buffer: unmapped and released when the last clone goes.
    pub keep: Arc<dyn Send + Sync>,
}

impl fmt::Debug for DevicePicture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePicture")
            .field("format", &self.format)
            .field("size", &(self.width, self.height))
            .field("pitches", &(self.luma_pitch, self.chroma_pitch))
            .field("context", &format_args!("{:#x}", self.context))
            .finish_non_exhaustive()
    }
}

pub fn pts_seconds(pts: PtsNs) -> f64 {
    pts as f64 / 1e9
}

/// A confirmed track's state in one frame, as the tracker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedObject {
    pub track_id: u64,
    pub bbox: BBox,
    pub score: f32,
}

/// Direction of a line crossing, relative to the line's configured inside point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

/// Why a zone visit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The person left the zone.
    Left,
    /// The track was lost (occluded too long or out of frame) while inside.
    TrackLost,
    /// The video ended while the person was inside.
    EndOfStream,
}

/// What happened, without the when and who that every event carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    LineCrossing {
        line: String,
        direction: Direction,
    },
    ZoneEnter {
        zone: String,
    },
    ZoneExit {
        zone: String,
        dwell_s: f64,
        reason: ExitReason,
    },
    /// People in a zone over the analysed frames of one wall-clock minute, sent when the
    /// minute ends (or the stream does). `track_id` is 0 and `pts_ns` is the minute's last
    /// frame; several such events for one minute (e.g. from two clips) add up.
    ZoneOccupancy {
        zone: String,
        frames: u64,
        peak: u64,
        occupancy_sum: u64,
    },
}

/// Version of the [`Event`] wire format; consumers reject versions they do not know.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One analytics event.
///
/// `event_id` is derived from tenant, stream, track, kind, pts and wall-clock time: what
/// happened, where and when. Replaying after a crash, or re-analysing the same video with the
/// same start time, yields the same ids, and every table deduplicates on them. Re-analysing
/// it with another start time places the events at other times: those are other events, in
/// every table alike (replacing an earlier analysis is an explicit erasure, not a dedup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema_version: u32,
    pub event_id: String,
    pub tenant: TenantId,
    pub stream: StreamId,
    pub track_id: u64,
    pub pts_ns: PtsNs,
    /// Wall-clock time of the frame: the stream's start time plus pts, in Unix microseconds.
    pub time_us: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// Builds an event with the current schema version and its deterministic id.
    pub fn new(
        tenant: TenantId,
        stream: StreamId,
        track_id: u64,
        pts_ns: PtsNs,
        time_us: i64,
        kind: EventKind,
    ) -> Self {
        let event_id = event_id(&tenant, &stream, track_id, pts_ns, time_us, &kind);
        Event { schema_version: EVENT_SCHEMA_VERSION, event_id, tenant, stream, track_id, pts_ns, time_us, kind }
    }
}

/// First 128 bits of SHA-256 over the fields that make an event unique, as hex.
pub fn event_id(
    tenant: &TenantId,
    stream: &StreamId,
    track_id: u64,
    pts_ns: PtsNs,
    time_us: i64,
    kind: &EventKind,
) -> String {
    use sha2::{Digest, Sha256};
    let what = match kind {
        EventKind::LineCrossing { line, direction } => format!("line_crossing\u{0}{line}\u{0}{direction:?}"),
        EventKind::ZoneEnter { zone } => format!("zone_enter\u{0}{zone}"),
        EventKind::ZoneExit { zone, .. } => format!("zone_exit\u{0}{zone}"),
        EventKind::ZoneOccupancy { zone, .. } => format!("zone_occupancy\u{0}{zone}"),
    };
    let mut h = Sha256::new();
    h.update(format!("v2\u{0}{tenant}\u{0}{stream}\u{0}{track_id}\u{0}{pts_ns}\u{0}{time_us}\u{0}{what}").as_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox::new(0.0, 0.0, 0.2, 0.2);
        let b = BBox::new(0.1, 0.0, 0.3, 0.2);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox::new(0.5, 0.5, 0.6, 0.6)), 0.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn event_json_is_flat_and_tagged() {
        let e = Event::new(
            TenantId::default(),
            "cam1".into(),
            7,
            1_500_000_000,
            0,
            EventKind::LineCrossing { line: "door".into(), direction: Direction::In },
        );
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["schema_version"], 1);
        assert_eq!(j["event_id"].as_str().unwrap().len(), 32);
        assert_eq!(j["kind"], "line_crossing");
        assert_eq!(j["direction"], "in");
        assert_eq!(j["line"], "door");
        let back: Event = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let kind = EventKind::ZoneEnter { zone: "till".into() };
        let a = Event::new(TenantId::default(), "cam".into(), 3, 100, 5, kind.clone());
        let again = Event::new(TenantId::default(), "cam".into(), 3, 100, 5, kind.clone());
        assert_eq!(a.event_id, again.event_id, "a replay or re-analysis at the same time is the same event");
        let b = Event::new(TenantId::default(), "cam".into(), 3, 100, 99, kind.clone());
        assert_ne!(a.event_id, b.event_id, "placed at another time, it is another event");
        let other_tenant = Event::new(TenantId("acme".into()), "cam".into(), 3, 100, 5, kind.clone());
        let other_pts = Event::new(TenantId::default(), "cam".into(), 3, 101, 5, kind);
        let exit = Event::new(
            TenantId::default(),
            "cam".into(),
            3,
            100,
            5,
            EventKind::ZoneExit { zone: "till".into(), dwell_s: 1.0, reason: ExitReason::Left },
        );
        let ids = [&a, &other_tenant, &other_pts, &exit].map(|e| e.event_id.clone());
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                assert_ne!(ids[i], ids[j]);
            }
        }
    }

    /// The id must never change between releases, or replays double-count: pinned literals.
    #[test]
    fn event_ids_are_pinned() {
        let enter =
            Event::new(TenantId::default(), "cam".into(), 3, 100, 5, EventKind::ZoneEnter { zone: "till".into() });
        assert_eq!(enter.event_id, PINNED_ENTER);
        let crossing = Event::new(
            TenantId("acme".into()),
            "front-door".into(),
            42,
            1_500_000_000,
            0,
            EventKind::LineCrossing { line: "entrance".into(), direction: Direction::Out },
        );
        assert_eq!(crossing.event_id, PINNED_CROSSING);
    }

    const PINNED_ENTER: &str = "1d10ad5b64743164f26ba9f4d30ea162";
    const PINNED_CROSSING: &str = "978892edfb2a228b17cc10dd6e0c1f86";

    #[test]
    fn hostile_ids_are_refused_when_decoded() {
        let good =
            Event::new(TenantId("shopa".into()), "cam".into(), 1, 2, 3, EventKind::ZoneEnter { zone: "z".into() });
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), good);
        for (from, to) in [
            ("\"tenant\":\"shopa\"", "\"tenant\":\"shopa/date=x\""),
            ("\"tenant\":\"shopa\"", "\"tenant\":\"ShopA\""),
            ("\"tenant\":\"shopa\"", "\"tenant\":\"\""),
            ("\"stream\":\"cam\"", "\"stream\":\"../cam\""),
            ("\"stream\":\"cam\"", "\"stream\":\"a\\nb\""),
            ("\"stream\":\"cam\"", "\"stream\":\"\""),
        ] {
            let bad = json.replace(from, to);
            assert_ne!(bad, json);
            let err = serde_json::from_str::<Event>(&bad).unwrap_err().to_string();
            assert!(err.contains("must be"), "{to}: {err}");
        }
        assert!(StreamId::parse(&"x".repeat(MAX_STREAM_ID_BYTES + 1)).is_err());
        assert!(StreamId::parse("Front door (north) #2").is_ok());
    }

    #[test]
    fn tenant_ids_are_path_safe() {
        assert!(TenantId::parse("acme-retail_01").is_ok());
        for bad in ["", "Acme", "a/b", "..", "x y"] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }
}

/// A credential (S3 secret key, camera password, API key) from config. `Debug`, `Display` and
/// `Serialize` print `<redacted>`, so a config dump, a log line or an error message can never
/// carry it; [`Secret::expose`] is the one way to read it, at the point of use.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the client that needs it. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Any scalar is taken as the secret's text: an environment override such as `123456` reads
/// as a number, and a type error would otherwise print it.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret (text)")
            }
            fn visit_str<E>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(Text)
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn dot_stream_ids_are_refused() {
        for bad in [".", "..", "", "a/b"] {
            assert!(StreamId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StreamId::parse("...").is_ok());
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        #[derive(Debug, Serialize, Deserialize)]
        struct S3 {
            key: Secret,
        }
        let n: S3 = serde_json::from_str(r#"{"key":123456}"#).unwrap();
        assert_eq!(n.key.expose(), "123456", "a number-looking secret is still read, never shown in a type error");
        let s: S3 = serde_json::from_str(r#"{"key":"hunter2"}"#).unwrap();
        assert_eq!(s.key.expose(), "hunter2");
        for shown in [format!("{s:?}"), format!("{}", s.key), serde_json::to_string(&s).unwrap()] {
            assert!(!shown.contains("hunter2") && shown.contains("<redacted>"), "{shown}");
        }
    }
}
