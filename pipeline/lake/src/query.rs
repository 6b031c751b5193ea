//! `retail-ai query`: SQL over the lake with DataFusion, scoped to one tenant.
//!
//! Tables are registered from the tenant's own prefix only (`{table}/tenant={t}/`), with
//! `date` as a partition column; DDL and DML are refused, so a query cannot reach files of
//! another tenant. Each table is a view with `SELECT DISTINCT` over its files: rows are
//! unique by construction, so the view only hides the moment during compaction when a row
//! exists in both a minute file and the compacted file.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::context::{SQLOptions, SessionContext};
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

/// A session with the tenant's tables registered.
pub async fn session(store: &LakeStore, tenant: &str) -> Result<SessionContext, LakeError> {
    let tenant =
        TenantId::parse(tenant).map_err(|reason| LakeError::UnknownTenant { tenant: tenant.into(), reason })?;
    let ctx = SessionContext::new();
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
        let distinct = if name == "events" { "SELECT DISTINCT ON (event_id) *" } else { "SELECT DISTINCT *" };
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

/// Runs one read-only statement for one tenant.
pub async fn query(store: &LakeStore, tenant: &str, sql: &str) -> Result<Vec<RecordBatch>, LakeError> {
    let ctx = session(store, tenant).await?;
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(q)?;
    df.collect().await.map_err(q)
}
