//! The lake's retention: aggregates and events are kept `lake.retention-days` (7 years by
//! default, the privacy policy's term for aggregated analytics), then deleted whole by their
//! `date=` partition. The aggregator runs this on start and once a day; the date in the path
//! is the events' own date, so old footage analysed today is kept from its own day on.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use tracing::{debug, info};

use crate::{LakeError, LakeStore};

/// Seven years of days, leap days included.
pub const SEVEN_YEARS_DAYS: u64 = 7 * 365 + 2;

/// What one purge removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LakePurge {
    /// Distinct `{table}/tenant=…/date=…` partitions emptied.
    pub partitions: u64,
    pub files: u64,
    pub bytes: u64,
}

/// The tables the aggregator writes; nothing else under the lake's URL is touched (it may
/// share a bucket with other data, and `_quarantine/` is the operator's to inspect).
const TABLES: [&str; 4] = ["events", "line_counts", "zone_occupancy", "late_events"];

/// The date of `{table}/tenant={t}/date={YYYY-MM-DD}/{file}.parquet` (relative to the lake's
/// root) when it is one of the aggregator's files.
fn partition_date(rel: &str) -> Option<chrono::NaiveDate> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [table, tenant, date, file] = parts[..] else { return None };
    let text = date.strip_prefix("date=")?;
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let canonical = date.format("%Y-%m-%d").to_string() == text;
    (canonical && TABLES.contains(&table) && tenant.starts_with("tenant=") && file.ends_with(".parquet"))
        .then_some(date)
}

/// Deletes every file of the aggregator's tables whose partition is dated before
/// `today - keep_days`.
pub async fn purge_expired(
    store: &LakeStore,
    keep_days: u64,
    today: chrono::NaiveDate,
) -> Result<LakePurge, LakeError> {
    let err = |e: object_store::Error| LakeError::Store { url: store.url().to_owned(), message: e.to_string() };
    let cutoff = today.checked_sub_days(chrono::Days::new(keep_days)).unwrap_or(chrono::NaiveDate::MIN);
    let os = store.object_store();
    let root = store.path("");
    let objects: Vec<_> =
        os.list(if root.as_ref().is_empty() { None } else { Some(&root) }).try_collect().await.map_err(err)?;
    let mut purge = LakePurge::default();
    let mut partitions = std::collections::BTreeSet::new();
    let prefix = if root.as_ref().is_empty() { String::new() } else { format!("{}/", root.as_ref()) };
    for o in objects {
        let loc = o.location.to_string();
        let rel = loc.strip_prefix(&prefix).unwrap_or(&loc);
        if partition_date(rel).is_none_or(|date| date >= cutoff) {
            continue;
        }
        match os.delete(&o.location).await {
            // Gone already (compaction or another aggregator): nothing left to do.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(err(e)),
        }
        debug!(file = %loc, keep_days, "lake file past its retention deleted");
        purge.files += 1;
        purge.bytes += o.size;
        partitions.insert(loc.rsplit_once('/').map_or(loc.as_str(), |(dir, _)| dir).to_owned());
    }
    if purge.files > 0 {
        info!(files = purge.files, partitions = partitions.len(), before = %cutoff, "lake partitions past their retention deleted");
    }
    purge.partitions = partitions.len() as u64;
    metrics::counter!("retail_lake_purged_files_total").increment(purge.files);
    Ok(purge)
}

#[cfg(test)]
mod tests {
    use super::partition_date;

    #[test]
    fn only_the_aggregators_own_dated_parquet_files_are_candidates() {
        let d = |s: &str| partition_date(s).map(|d| d.to_string());
        assert_eq!(
            d("line_counts/tenant=acme/date=2019-01-05/minute-0900-door.parquet").as_deref(),
            Some("2019-01-05")
        );
        assert_eq!(d("events/tenant=acme/date=2019-01-05/day-3.parquet").as_deref(), Some("2019-01-05"));
        for other in [
            "sales/region=eu/date=2019-01-05/part-0.parquet", // another team's table
            "_quarantine/events/tenant=a/date=2019-01-05/x.parquet", // the operator's
            "events/tenant=acme/date=2019-1-5/x.parquet",     // not canonical
            "events/tenant=acme/date=2019-01-05/notes.txt",
            "events/date=2019-01-05/x.parquet",
            "events/tenant=acme/date=invalid/x.parquet",
        ] {
            assert_eq!(d(other), None, "{other}");
        }
    }
}
