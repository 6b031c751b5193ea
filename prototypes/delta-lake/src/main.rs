//! Prototype: the lake's per-window writes as Delta Lake commits, each carrying the
//! consumer's progress as a `txn` action (app id = group/partition, version = next offset),
//! the way Spark's exactly-once sinks do. Measures commits/s and reads the progress back.

use std::sync::Arc;
use std::time::Instant;

use deltalake::DeltaTable;
use deltalake::arrow::array::{Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    // Windows per commit: 1 = one commit per window; more = one commit per poll batch.
    let per_commit: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let dir = std::env::temp_dir().join(format!("delta-proto-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = url::Url::from_directory_path(&dir).map_err(|()| "bad dir")?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("date", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("line", DataType::Utf8, false),
        Field::new("minute", DataType::Int64, false),
        Field::new("in_count", DataType::Int64, false),
        Field::new("out_count", DataType::Int64, false),
    ]));
    let mut table = DeltaTable::try_from_url(url.clone()).await?;
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    let commits = n.div_ceil(per_commit);
    for c in 0..commits {
        let batches = (c * per_commit..((c + 1) * per_commit).min(n))
            .map(|i| window(&schema, i))
            .collect::<Result<Vec<_>, _>>()?;
        let t = Instant::now();
        let props =
            CommitProperties::default().with_application_transaction(Transaction::new("retail-lake/p0", c as i64 + 1));
        table = table.write(batches).with_partition_columns(["tenant", "date"]).with_commit_properties(props).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let total = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let progress = table.snapshot()?.transaction_version(table.log_store().as_ref(), "retail-lake/p0").await?;
    println!("| windows | windows/commit | commits/s | windows/s | median ms | p95 ms | txn version read back |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {per_commit} | {:.1} | {:.1} | {:.1} | {:.1} | {:?} |",
        commits as f64 / total,
        n as f64 / total,
        times[commits / 2],
        times[commits * 95 / 100],
        progress
    );
    let reopened = DeltaTable::try_from_url(url.clone()).await?;
    println!("table version {:?}, files {}", reopened.version(), reopened.get_file_uris()?.count());
    query(&url, "before optimize").await?;
    let (_, metrics) = reopened.optimize().await?;
    println!("optimize: {} files removed, {} added", metrics.num_files_removed, metrics.num_files_added);
    query(&url, "after optimize").await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Median of 5 runs of an analyst's query through DataFusion's Delta table provider.
async fn query(url: &url::Url, label: &str) -> Result<(), Box<dyn std::error::Error>> {
    let table = DeltaTable::try_from_url(url.clone()).await?;
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    ctx.register_table("lines", table.table_provider().await?)?;
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let out = ctx
            .sql("SELECT line, SUM(in_count), SUM(out_count) FROM lines WHERE tenant = 'acme' GROUP BY line")
            .await?
            .collect()
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        rows = out.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    times.sort_by(f64::total_cmp);
    println!("query {label}: median {:.1} ms, {rows} rows", times[2]);
    Ok(())
}

fn window(schema: &Arc<Schema>, i: usize) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["acme"; 2])),
                Arc::new(StringArray::from(vec!["2026-11-27"; 2])),
                Arc::new(StringArray::from(vec![format!("cam-{}", i % 50); 2])),
                Arc::new(StringArray::from(vec!["entrance", "exit"])),
                Arc::new(Int64Array::from(vec![i as i64 * 60_000_000; 2])),
                Arc::new(Int64Array::from(vec![3, 4])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
    }
}
