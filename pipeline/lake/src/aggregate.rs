use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use retail_core::{Direction, Event, EventKind};

use crate::{LakeError, minute_of};

fn minute_field() -> Field {
    Field::new("minute", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false)
}

/// Schema of `line_counts` (see the crate docs).
pub fn line_counts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("line", DataType::Utf8, false),
        minute_field(),
        Field::new("in_count", DataType::Int64, false),
        Field::new("out_count", DataType::Int64, false),
    ]))
}

/// Schema of `zone_occupancy` (see the crate docs).
pub fn zone_occupancy_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("zone", DataType::Utf8, false),
        minute_field(),
        Field::new("frames", DataType::Int64, false),
        Field::new("peak", DataType::Int64, false),
        Field::new("mean_occupancy", DataType::Float64, false),
        Field::new("entries", DataType::Int64, false),
        Field::new("exits", DataType::Int64, false),
        Field::new("mean_dwell_s", DataType::Float64, true),
        Field::new("total_dwell_s", DataType::Float64, false),
    ]))
}

#[derive(Clone, Debug, Default)]
struct Minute {
    ins: Vec<i64>,
    outs: Vec<i64>,
    frames: Vec<i64>,
    occupancy_sum: Vec<i64>,
    peak: Vec<i64>,
    entries: Vec<i64>,
    exits: Vec<i64>,
    dwell_s: Vec<f64>,
}

/// Accumulates one stream's events (occupancy included) into per-minute rows.
pub struct MinuteAggregator {
    stream: String,
    lines: Vec<String>,
    zones: Vec<String>,
    minutes: BTreeMap<i64, Minute>,
}

impl MinuteAggregator {
    pub fn new(stream: &str, lines: Vec<String>, zones: Vec<String>) -> Self {
        MinuteAggregator { stream: stream.to_owned(), lines, zones, minutes: BTreeMap::new() }
    }

    /// The aggregator of one lake window (one tenant, stream and minute): its lines and
    /// zones are those its events name, in name order, so a line with no crossing that
    /// minute has no row (the lake does not know the stream's config).
    pub fn of_window(events: &[Event]) -> Self {
        let mut lines: Vec<String> = Vec::new();
        let mut zones: Vec<String> = Vec::new();
        for e in events {
            match &e.kind {
                EventKind::LineCrossing { line, .. } => lines.push(line.clone()),
                EventKind::ZoneEnter { zone }
                | EventKind::ZoneExit { zone, .. }
                | EventKind::ZoneOccupancy { zone, .. } => zones.push(zone.clone()),
            }
        }
        for names in [&mut lines, &mut zones] {
            names.sort();
            names.dedup();
        }
        let stream = events.first().map(|e| e.stream.0.as_str()).unwrap_or_default();
        let mut a = MinuteAggregator::new(stream, lines, zones);
        for e in events {
            a.observe_event(e);
        }
        a
    }

    fn minute(&mut self, time_us: i64) -> &mut Minute {
        let (nl, nz) = (self.lines.len(), self.zones.len());
        self.minutes.entry(minute_of(time_us)).or_insert_with(|| Minute {
            ins: vec![0; nl],
            outs: vec![0; nl],
            occupancy_sum: vec![0; nz],
            peak: vec![0; nz],
            entries: vec![0; nz],
            exits: vec![0; nz],
            dwell_s: vec![0.0; nz],
            frames: vec![0; nz],
        })
    }

    pub fn observe_event(&mut self, event: &Event) {
        let line_idx = |name: &str, names: &[String]| names.iter().position(|n| n == name);
        match &event.kind {
            EventKind::LineCrossing { line, direction } => {
                if let Some(i) = line_idx(line, &self.lines) {
                    let m = self.minute(event.time_us);
                    match direction {
                        Direction::In => m.ins[i] += 1,
                        Direction::Out => m.outs[i] += 1,
                    }
                }
            }
            EventKind::ZoneEnter { zone } => {
                if let Some(i) = line_idx(zone, &self.zones) {
                    self.minute(event.time_us).entries[i] += 1;
                }
            }
            EventKind::ZoneExit { zone, dwell_s, .. } => {
                if let Some(i) = line_idx(zone, &self.zones) {
                    let m = self.minute(event.time_us);
                    m.exits[i] += 1;
                    m.dwell_s[i] += dwell_s;
                }
            }
            EventKind::ZoneOccupancy { zone, frames, peak, occupancy_sum } => {
                if let Some(i) = line_idx(zone, &self.zones) {
                    let m = self.minute(event.time_us);
                    m.frames[i] += *frames as i64;
                    m.peak[i] = m.peak[i].max(*peak as i64);
                    m.occupancy_sum[i] += *occupancy_sum as i64;
                }
            }
        }
    }

    fn arrow_err(table: &str) -> impl Fn(arrow_schema::ArrowError) -> LakeError + '_ {
        move |e| LakeError::Arrow { table: table.to_owned(), message: e.to_string() }
    }

    /// Rows of `line_counts`, one per line per minute covered.
    pub fn line_counts(&self) -> Result<RecordBatch, LakeError> {
        let (mut line, mut minute, mut ins, mut outs) = (vec![], vec![], vec![], vec![]);
        for (&t, m) in &self.minutes {
            for (i, name) in self.lines.iter().enumerate() {
                line.push(name.as_str());
                minute.push(t);
                ins.push(m.ins[i]);
                outs.push(m.outs[i]);
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.stream.as_str(); line.len()])),
            Arc::new(StringArray::from(line)),
            Arc::new(TimestampMicrosecondArray::from(minute).with_timezone("UTC")),
            Arc::new(Int64Array::from(ins)),
            Arc::new(Int64Array::from(outs)),
        ];
        RecordBatch::try_new(line_counts_schema(), cols).map_err(Self::arrow_err("line_counts"))
    }

    /// Rows of `zone_occupancy`, one per zone per minute covered.
    pub fn zone_occupancy(&self) -> Result<RecordBatch, LakeError> {
        let mut zone = vec![];
        let (mut minute, mut frames, mut peak, mut entries, mut exits) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut mean_occ, mut mean_dwell, mut total_dwell) = (vec![], vec![], vec![]);
        for (&t, m) in &self.minutes {
            for (i, name) in self.zones.iter().enumerate() {
                zone.push(name.as_str());
                minute.push(t);
                frames.push(m.frames[i]);
                peak.push(m.peak[i]);
                mean_occ.push(if m.frames[i] > 0 { m.occupancy_sum[i] as f64 / m.frames[i] as f64 } else { 0.0 });
                entries.push(m.entries[i]);
                exits.push(m.exits[i]);
                mean_dwell.push((m.exits[i] > 0).then(|| m.dwell_s[i] / m.exits[i] as f64));
                total_dwell.push(m.dwell_s[i]);
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.stream.as_str(); zone.len()])),
            Arc::new(StringArray::from(zone)),
            Arc::new(TimestampMicrosecondArray::from(minute).with_timezone("UTC")),
            Arc::new(Int64Array::from(frames)),
            Arc::new(Int64Array::from(peak)),
            Arc::new(Float64Array::from(mean_occ)),
            Arc::new(Int64Array::from(entries)),
            Arc::new(Int64Array::from(exits)),
            Arc::new(Float64Array::from(mean_dwell)),
            Arc::new(Float64Array::from(total_dwell)),
        ];
        RecordBatch::try_new(zone_occupancy_schema(), cols).map_err(Self::arrow_err("zone_occupancy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MINUTE_US, read_parquet, write_parquet_atomic};
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use retail_core::{ExitReason, StreamId, TenantId};

    fn event(time_us: i64, kind: EventKind) -> Event {
        Event::new(TenantId::default(), StreamId("cam".into()), 1, time_us as u64, time_us, kind)
    }

    fn sample() -> MinuteAggregator {
        let mut a = MinuteAggregator::new("cam", vec!["door".into()], vec!["till".into()]);
        let t0 = 10 * MINUTE_US;
        // Two frames (1 and 3 people) in minute 10, one empty frame in minute 11.
        let occupancy =
            |frames, peak, occupancy_sum| EventKind::ZoneOccupancy { zone: "till".into(), frames, peak, occupancy_sum };
        a.observe_event(&event(t0 + 2, occupancy(2, 3, 4)));
        a.observe_event(&event(t0 + MINUTE_US + 5, occupancy(1, 0, 0)));
        a.observe_event(&event(t0 + 1, EventKind::LineCrossing { line: "door".into(), direction: Direction::In }));
        a.observe_event(&event(t0 + 2, EventKind::LineCrossing { line: "door".into(), direction: Direction::In }));
        a.observe_event(&event(
            t0 + MINUTE_US + 5,
            EventKind::LineCrossing { line: "door".into(), direction: Direction::Out },
        ));
        a.observe_event(&event(t0 + 2, EventKind::ZoneEnter { zone: "till".into() }));
        a.observe_event(&event(
            t0 + MINUTE_US + 5,
            EventKind::ZoneExit { zone: "till".into(), dwell_s: 4.5, reason: ExitReason::Left },
        ));
        a
    }

    #[test]
    fn parquet_round_trip_keeps_schema_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let a = sample();
        let lines = dir.path().join("line_counts.parquet");
        let zones = dir.path().join("zone_occupancy.parquet");
        write_parquet_atomic(&lines, &[a.line_counts().unwrap()]).unwrap();
        write_parquet_atomic(&zones, &[a.zone_occupancy().unwrap()]).unwrap();
        assert!(!dir.path().join("line_counts.parquet.partial").exists());

        let back = read_parquet(&lines).unwrap();
        assert_eq!(back[0].schema(), line_counts_schema());
        let b = &back[0];
        assert_eq!(b.num_rows(), 2);
        let minutes: Vec<i64> = b.column(2).as_primitive::<TimestampMicrosecondType>().values().to_vec();
        assert_eq!(minutes, vec![10 * MINUTE_US, 11 * MINUTE_US]);
        assert_eq!(b.column(3).as_primitive::<Int64Type>().values().to_vec(), vec![2, 0]);
        assert_eq!(b.column(4).as_primitive::<Int64Type>().values().to_vec(), vec![0, 1]);

        let z = &read_parquet(&zones).unwrap()[0];
        assert_eq!(z.schema(), zone_occupancy_schema());
        assert_eq!(z.column(4).as_primitive::<Int64Type>().values().to_vec(), vec![3, 0]);
        assert_eq!(z.column(5).as_primitive::<Float64Type>().values().to_vec(), vec![2.0, 0.0]);
        let mean_dwell = z.column(8).as_primitive::<Float64Type>();
        assert!(mean_dwell.is_null(0));
        assert_eq!(mean_dwell.value(1), 4.5);
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("x.parquet");
        let err = write_parquet_atomic(&path, &[sample().line_counts().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("x.parquet.partial"), "{err}");
        assert!(!path.exists());
    }
}
