//! Arrow schemas and record batches of the lake's tables, built from closed windows.
//!
//! Layout (Hive-style, one tenant per prefix): `{table}/tenant={t}/date={YYYY-MM-DD}/…parquet`.
//! `tenant` and `date` come from the path; the files hold the columns below.
//!
//! * `events`: `event_id`, `stream`, `track_id`, `kind`, `line`, `direction`, `zone`, `dwell_s`,
//!   `reason`, `frames`, `peak`, `occupancy_sum` (the last three for `zone_occupancy` events),
//!   `pts_ns`, `time` (µs UTC), `schema_version` — deduplicated by `event_id`.
//! * `line_counts`: `stream`, `line`, `minute` (µs UTC), `in_count`, `out_count`.
//! * `zone_occupancy`: `stream`, `zone`, `minute`, `frames`, `peak`, `mean_occupancy`,
//!   `entries`, `exits`, `mean_dwell_s` (null without exits), `total_dwell_s` — dwell counted
//!   in the minute a visit ended. Both aggregate tables have the columns of the files
//!   `retail-ai analyze` writes.
//! * `late_events`: the `events` columns plus `partition`, `offset`: events that arrived after
//!   their minute was written.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use retail_core::{Direction, Event, EventKind, ExitReason};

use crate::LakeError;

fn ts(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false)
}

pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(event_fields()))
}

fn event_fields() -> Vec<Field> {
    vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("track_id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("line", DataType::Utf8, true),
        Field::new("direction", DataType::Utf8, true),
        Field::new("zone", DataType::Utf8, true),
        Field::new("dwell_s", DataType::Float64, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("frames", DataType::Int64, true),
        Field::new("peak", DataType::Int64, true),
        Field::new("occupancy_sum", DataType::Int64, true),
        Field::new("pts_ns", DataType::Int64, false),
        ts("time"),
        Field::new("schema_version", DataType::Int32, false),
    ]
}

pub fn late_events_schema() -> SchemaRef {
    let mut f = event_fields();
    f.push(Field::new("partition", DataType::Int32, false));
    f.push(Field::new("offset", DataType::Int64, false));
    Arc::new(Schema::new(f))
}

/// The same columns as the `line_counts` file `retail-ai analyze` writes, so one query works
/// on both.
pub fn lake_line_counts_schema() -> SchemaRef {
    crate::line_counts_schema()
}

pub fn lake_zone_occupancy_schema() -> SchemaRef {
    crate::zone_occupancy_schema()
}

fn arrow_err(table: &str) -> impl Fn(arrow_schema::ArrowError) -> LakeError + '_ {
    move |e| LakeError::Arrow { table: table.to_owned(), message: e.to_string() }
}

fn event_columns(events: &[&Event]) -> Vec<ArrayRef> {
    let s = |f: &dyn Fn(&Event) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(events.iter().map(|e| f(e)).collect::<Vec<_>>()))
    };
    vec![
        s(&|e| Some(e.event_id.clone())),
        s(&|e| Some(e.stream.0.clone())),
        Arc::new(Int64Array::from(events.iter().map(|e| e.track_id as i64).collect::<Vec<_>>())),
        s(&|e| {
            Some(
                match e.kind {
                    EventKind::LineCrossing { .. } => "line_crossing",
                    EventKind::ZoneEnter { .. } => "zone_enter",
                    EventKind::ZoneExit { .. } => "zone_exit",
                    EventKind::ZoneOccupancy { .. } => "zone_occupancy",
                }
                .into(),
            )
        }),
        s(&|e| match &e.kind {
            EventKind::LineCrossing { line, .. } => Some(line.clone()),
            _ => None,
        }),
        s(&|e| match &e.kind {
            EventKind::LineCrossing { direction: Direction::In, .. } => Some("in".into()),
            EventKind::LineCrossing { direction: Direction::Out, .. } => Some("out".into()),
            _ => None,
        }),
        s(&|e| match &e.kind {
            EventKind::ZoneEnter { zone }
            | EventKind::ZoneExit { zone, .. }
            | EventKind::ZoneOccupancy { zone, .. } => Some(zone.clone()),
            _ => None,
        }),
        Arc::new(Float64Array::from(
            events
                .iter()
                .map(|e| match e.kind {
                    EventKind::ZoneExit { dwell_s, .. } => Some(dwell_s),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        s(&|e| match e.kind {
            EventKind::ZoneExit { reason, .. } => Some(
                match reason {
                    ExitReason::Left => "left",
                    ExitReason::TrackLost => "track_lost",
                    ExitReason::EndOfStream => "end_of_stream",
                }
                .into(),
            ),
            _ => None,
        }),
        occupancy_column(events, |frames, _, _| frames),
        occupancy_column(events, |_, peak, _| peak),
        occupancy_column(events, |_, _, sum| sum),
        Arc::new(Int64Array::from(events.iter().map(|e| e.pts_ns as i64).collect::<Vec<_>>())),
        Arc::new(
            TimestampMicrosecondArray::from(events.iter().map(|e| e.time_us).collect::<Vec<_>>()).with_timezone("UTC"),
        ),
        Arc::new(Int32Array::from(events.iter().map(|e| e.schema_version as i32).collect::<Vec<_>>())),
    ]
}

fn occupancy_column(events: &[&Event], field: impl Fn(u64, u64, u64) -> u64) -> ArrayRef {
    Arc::new(Int64Array::from(
        events
            .iter()
            .map(|e| match e.kind {
                EventKind::ZoneOccupancy { frames, peak, occupancy_sum, .. } => {
                    Some(field(frames, peak, occupancy_sum) as i64)
                }
                _ => None,
            })
            .collect::<Vec<_>>(),
    ))
}

pub fn events_batch(events: &[Event]) -> Result<RecordBatch, LakeError> {
    let refs: Vec<&Event> = events.iter().collect();
    RecordBatch::try_new(events_schema(), event_columns(&refs)).map_err(arrow_err("events"))
}

pub fn late_events_batch(late: &[(i32, i64, Event)]) -> Result<RecordBatch, LakeError> {
    let refs: Vec<&Event> = late.iter().map(|(_, _, e)| e).collect();
    let mut cols = event_columns(&refs);
    cols.push(Arc::new(Int32Array::from(late.iter().map(|(p, _, _)| *p).collect::<Vec<_>>())));
    cols.push(Arc::new(Int64Array::from(late.iter().map(|(_, o, _)| *o).collect::<Vec<_>>())));
    RecordBatch::try_new(late_events_schema(), cols).map_err(arrow_err("late_events"))
}

/// Per-minute line counts of one window's events: the same code as `retail-ai analyze`'s
/// `aggregates/line_counts.parquet` ([`MinuteAggregator`](crate::MinuteAggregator)).
pub fn line_counts_batch(events: &[Event]) -> Result<RecordBatch, LakeError> {
    crate::MinuteAggregator::of_window(events).line_counts()
}

/// Per-minute zone occupancy, entries, exits and dwell of one window's events (the same
/// code as `analyze`'s `aggregates/zone_occupancy.parquet`).
pub fn zone_occupancy_batch(events: &[Event]) -> Result<RecordBatch, LakeError> {
    crate::MinuteAggregator::of_window(events).zone_occupancy()
}

/// Events back from `events` batches (the tenant comes from the file's path). Used to reopen
/// a window that was written early; an error says what is wrong with the file.
pub fn events_from_batches(tenant: &retail_core::TenantId, batches: &[RecordBatch]) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    for b in batches {
        let json = arrow_json_rows(b)?;
        for mut row in json {
            row.insert("tenant".into(), serde_json::Value::String(tenant.0.clone()));
            let time = row.remove("time").ok_or("no time column")?;
            row.insert("time_us".into(), time);
            out.push(serde_json::from_value(serde_json::Value::Object(row)).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// One JSON object per row, null columns left out, timestamps as integers.
fn arrow_json_rows(b: &RecordBatch) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
    let mut rows = vec![serde_json::Map::new(); b.num_rows()];
    for (field, col) in b.schema().fields().iter().zip(b.columns()) {
        for (i, row) in rows.iter_mut().enumerate() {
            if col.is_null(i) {
                continue;
            }
            let v = match col.data_type() {
                DataType::Utf8 => serde_json::Value::from(col.as_string::<i32>().value(i)),
                DataType::Int64 => serde_json::Value::from(col.as_primitive::<Int64Type>().value(i)),
                DataType::Int32 => serde_json::Value::from(col.as_primitive::<Int32Type>().value(i)),
                DataType::Float64 => serde_json::Value::from(col.as_primitive::<Float64Type>().value(i)),
                DataType::Timestamp(_, _) => {
                    serde_json::Value::from(col.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                other => return Err(format!("column {} has unexpected type {other}", field.name())),
            };
            row.insert(field.name().clone(), v);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use retail_core::TenantId;

    #[test]
    fn events_come_back_from_their_table_unchanged() {
        let t = TenantId("acme".into());
        let kinds = [
            EventKind::LineCrossing { line: "door".into(), direction: Direction::Out },
            EventKind::ZoneEnter { zone: "till".into() },
            EventKind::ZoneExit { zone: "till".into(), dwell_s: 12.5, reason: ExitReason::TrackLost },
            EventKind::ZoneOccupancy { zone: "till".into(), frames: 600, peak: 3, occupancy_sum: 950 },
        ];
        let events: Vec<Event> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                Event::new(t.clone(), "cam 1".into(), i as u64, i as u64 * 7, 1_795_770_000_000_000 + i as i64, k)
            })
            .collect();
        let batch = events_batch(&events).unwrap();
        assert_eq!(events_from_batches(&t, &[batch]).unwrap(), events);
    }
}
