//! The lake's retention: aggregates and events are kept `lake.retention-days` (7 years by
//! default, the privacy policy's term for aggregated analytics), then deleted whole by their
//! `date=` partition. The aggregator runs this on start and once a day; the date in the path
//! is the events' own date, so old footage analysed today is kept from its own day on.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use tracing::info;

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

/// Deletes every file of every partition dated before `today - keep_days`.
pub async fn purge_expired(
    store: &LakeStore,
    keep_days: u64,
    today: chrono::NaiveDate,
) -> Result<LakePurge, LakeError> {
    let err = |e: object_store::Error| LakeError::Store { url: store.url().to_owned(), message: e.to_string() };
    let cutoff = today
        .checked_sub_days(chrono::Days::new(keep_days))
        .unwrap_or(chrono::NaiveDate::MIN)
        .format("%Y-%m-%d")
        .to_string();
    let os = store.object_store();
    let root = store.path("");
    let objects: Vec<_> =
        os.list(if root.as_ref().is_empty() { None } else { Some(&root) }).try_collect().await.map_err(err)?;
    let mut purge = LakePurge::default();
    let mut partitions = std::collections::BTreeSet::new();
    for o in objects {
        let loc = o.location.to_string();
        let Some((dir, _)) = loc.rsplit_once('/') else { continue };
        // Dates are YYYY-MM-DD, so they compare as text; a malformed one is left alone.
        let Some((_, date)) = dir.rsplit_once("/date=") else { continue };
        if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() || date >= cutoff.as_str() {
            continue;
        }
        os.delete(&o.location).await.map_err(err)?;
        info!(file = %loc, date, keep_days, "lake file past its retention deleted");
        purge.files += 1;
        purge.bytes += o.size;
        partitions.insert(dir.to_owned());
    }
    purge.partitions = partitions.len() as u64;
    metrics::counter!("retail_lake_purged_files_total").increment(purge.files);
    Ok(purge)
}
