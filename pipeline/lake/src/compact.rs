//! Compaction: the many per-minute files of a day become one file per table, tenant and day,
//! with the same rows, so every query gives the same answer before and after.
//!
//! Only days before `before`, and never today (UTC), are touched. A redelivered event finds its window in the day
//! file once the minute file is gone (and is dropped as a repeat, or kept as late: a window
//! in a day file is never rewritten). The new file is written before the old ones are
//! deleted; the query views' `DISTINCT` hides the moment when a row exists in both.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;
use serde::Serialize;

use crate::store::read_parquet_bytes;
use crate::{LakeError, LakeStore};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactStats {
    pub partitions: u64,
    pub files_in: u64,
    pub files_out: u64,
    pub rows: u64,
}

/// Compacts every `{table}/tenant=*/date=D/` with `D < before` (`YYYY-MM-DD`) holding more
/// than one file, none of them written in the last `settle` (an aggregator may still be
/// writing a day of old footage: a file it rewrites while the day is merged would be lost or
/// counted twice).
pub async fn compact(store: &LakeStore, before: &str, settle: std::time::Duration) -> Result<CompactStats, LakeError> {
    let err = |e: object_store::Error| LakeError::Store { url: store.url().to_owned(), message: e.to_string() };
    let os = store.object_store();
    let root = store.path("");
    let objects: Vec<_> =
        os.list(if root.as_ref().is_empty() { None } else { Some(&root) }).try_collect().await.map_err(err)?;
    let mut groups: BTreeMap<String, Vec<ObjPath>> = BTreeMap::new();
    let mut unsettled: std::collections::BTreeSet<String> = Default::default();
    let settled_before = chrono::Duration::from_std(settle)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for o in objects {
        let loc = o.location.to_string();
        let Some((dir, file)) = loc.rsplit_once('/') else { continue };
        let date = dir.rsplit_once("/date=").map(|(_, d)| d);
        if file.ends_with(".parquet") && date.is_some_and(|d| d < before && d < today.as_str()) {
            if o.last_modified > settled_before {
                unsettled.insert(dir.to_owned());
            }
            groups.entry(dir.to_owned()).or_default().push(o.location);
        }
    }
    let mut stats = CompactStats::default();
    for (dir, mut files) in groups {
        if files.len() < 2 || unsettled.contains(&dir) {
            continue;
        }
        files.sort();
        let mut batches: Vec<RecordBatch> = Vec::new();
        for f in &files {
            let bytes = os.get(f).await.map_err(err)?.bytes().await.map_err(err)?;
            batches.extend(read_parquet_bytes(f.as_ref(), bytes)?);
        }
        let Some(first) = batches.first() else { continue };
        let merged = arrow_select_concat(first.schema(), &batches, &dir)?;
        let out = ObjPath::from(format!("{dir}/day-{}.parquet", files.len()));
        let bytes = crate::store::parquet_bytes(out.as_ref(), &merged)?;
        os.put(&out, bytes.into()).await.map_err(err)?;
        // The day file is durable before the minute files it replaces are gone.
        store.sync_location(&out)?;
        for f in files.iter().filter(|f| **f != out) {
            os.delete(f).await.map_err(err)?;
        }
        stats.partitions += 1;
        stats.files_in += files.len() as u64;
        stats.files_out += 1;
        stats.rows += merged.num_rows() as u64;
    }
    Ok(stats)
}

fn arrow_select_concat(
    schema: arrow_schema::SchemaRef,
    batches: &[RecordBatch],
    dir: &str,
) -> Result<RecordBatch, LakeError> {
    datafusion::arrow::compute::concat_batches(&schema, batches)
        .map_err(|e| LakeError::Arrow { table: dir.to_owned(), message: e.to_string() })
}

/// Whether `minute_us` falls on a day before today (UTC): only such days can be compacted.
pub(crate) fn is_before_today(minute_us: i64) -> bool {
    let today = chrono::Utc::now().date_naive();
    chrono::DateTime::from_timestamp_micros(minute_us).is_some_and(|t| t.date_naive() < today)
}
