//! `retail-ai query`: SQL over the lake with DataFusion, scoped to one tenant.
//!
//! Tables are registered from the tenant's own prefix only (`{table}/tenant={t}/`), with
//! `date` as a partition column; DDL and DML are refused, so a query cannot reach files of
//! another tenant. Each table is a view with `SELECT DISTINCT` over its files: rows are
//! unique by construction, so the view only hides the moment during compaction when a row
//! exists in both a minute file and the compacted file.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use futures::TryStreamExt;
use retail_core::TenantId;

use crate::{LakeError, LakeStore, tables};

/// The tables a tenant can query, with their file schemas.
pub fn table_schemas() -> Vec<(&'static str, SchemaRef)> {
    vec![
        ("events", tables::events_schema()),
        ("line_counts", tables::lake_line_counts_schema()),
        ("zone_occupancy", tables::lake_zone_occupancy_schema()),
        ("late_events", tables::late_events_schema()),
    ]
}

fn q(e: impl std::fmt::Display) -> LakeError {
    LakeError::Query(e.to_string())
}

/// What one query may use. A query over the limit fails with [`LakeError::QueryLimit`]
/// instead of exhausting the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Memory for joins, sorts and aggregations (nothing spills to disk).
    pub memory_bytes: usize,
    /// Wall-clock time for planning and running the query.
    pub timeout: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { memory_bytes: 1 << 30, timeout: Duration::from_secs(120) }
    }
}

/// A session with the tenant's tables registered, under the default limits.
pub async fn session(store: &LakeStore, tenant: &str) -> Result<SessionContext, LakeError> {
    session_with_limits(store, tenant, QueryLimits::default()).await
}

async fn session_with_limits(
    store: &LakeStore,
    tenant: &str,
    limits: QueryLimits,
) -> Result<SessionContext, LakeError> {
    let tenant =
        TenantId::parse(tenant).map_err(|reason| LakeError::UnknownTenant { tenant: tenant.into(), reason })?;
    // No spilling: a query over its memory fails with a clear error instead of filling the disk.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()
        .map_err(q)?;
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    let base = url::Url::parse("lake://store/").expect("static url");
    ctx.register_object_store(&base, store.object_store());
    let mut found = false;
    for (name, schema) in table_schemas() {
        let prefix = store.path(&format!("{name}/tenant={tenant}"));
        let has_files = store.object_store().list(Some(&prefix)).try_next().await.map_err(q)?.is_some();
        found |= has_files;
        let raw = format!("_{name}_files");
        if has_files {
            let url = ListingTableUrl::parse(format!("lake://store/{prefix}/")).map_err(q)?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![("date".to_owned(), DataType::Utf8)]);
            let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
            ctx.register_table(raw.as_str(), Arc::new(ListingTable::try_new(config).map_err(q)?)).map_err(q)?;
        } else {
            // No files yet: an empty table with the right columns, so queries still plan.
            let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(arrow_schema::Field::new("date", DataType::Utf8, true));
            let empty = RecordBatch::new_empty(Arc::new(arrow_schema::Schema::new(fields)));
            ctx.register_batch(raw.as_str(), empty).map_err(q)?;
        }
        // An event is one row however often it was delivered, on time or late.
        let distinct = if matches!(name, "events" | "late_events") {
            "SELECT DISTINCT ON (event_id) *"
        } else {
            "SELECT DISTINCT *"
        };
        let view = ctx.sql(&format!("{distinct} FROM {raw}")).await.map_err(q)?.into_view();
        ctx.register_table(name, view).map_err(q)?;
    }
    if !found {
        return Err(LakeError::UnknownTenant {
            tenant: tenant.0,
            reason: format!("no data for this tenant in {}", store.url()),
        });
    }
    Ok(ctx)
}

/// Runs one read-only statement for one tenant under the default limits.
pub async fn query(store: &LakeStore, tenant: &str, sql: &str) -> Result<Vec<RecordBatch>, LakeError> {
    query_with_limits(store, tenant, sql, QueryLimits::default()).await
}

/// Runs one read-only statement for one tenant; over `limits` it fails with
/// [`LakeError::QueryLimit`].
pub async fn query_with_limits(
    store: &LakeStore,
    tenant: &str,
    sql: &str,
    limits: QueryLimits,
) -> Result<Vec<RecordBatch>, LakeError> {
    let run = async {
        let ctx = session_with_limits(store, tenant, limits).await?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await.map_err(q)?;
        df.collect().await.map_err(|e| match e.find_root() {
            DataFusionError::ResourcesExhausted(detail) => LakeError::QueryLimit {
                limit: format!("{} MiB of memory", limits.memory_bytes >> 20),
                detail: detail.lines().next().unwrap_or_default().to_owned(),
            },
            _ => q(e),
        })
    };
    tokio::time::timeout(limits.timeout, run).await.unwrap_or_else(|_| {
        Err(LakeError::QueryLimit {
            limit: format!("{} s", limits.timeout.as_secs_f64()),
            detail: "the query was stopped".into(),
        })
    })
}
