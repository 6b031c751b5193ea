//! Parquet files on object storage, chosen by URL: a local directory (`file:///dir` or a
//! plain path, the default) or `s3://bucket/prefix`. Every file is one PUT of complete bytes,
//! which object stores make visible atomically (the local store writes a temp file and
//! renames), so no reader ever sees half a file.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use retail_core::TenantId;

use crate::{ClosedWindow, LakeError, WindowKey, tables};

/// S3 settings for `s3://` lakes; credentials also come from the usual AWS_* variables.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Settings {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:8333`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// Never logged.
    pub secret_access_key: Option<String>,
}

/// The lake's storage; cheap to clone.
#[derive(Clone)]
pub struct LakeStore {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (the part of an `s3://` URL after the bucket).
    prefix: String,
}

fn store_err(url: &str) -> impl Fn(object_store::Error) -> LakeError + '_ {
    move |e| LakeError::Store { url: url.to_owned(), message: e.to_string() }
}

impl LakeStore {
    pub fn open(url: &str, s3: &S3Settings) -> Result<Self, LakeError> {
        let bad = |message: String| LakeError::Store { url: url.to_owned(), message };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket in s3:// url".into()));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(e) = &s3.endpoint {
                b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
            }
            if let Some(r) = &s3.region {
                b = b.with_region(r);
            }
            if let Some(k) = &s3.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = &s3.secret_access_key {
                b = b.with_secret_access_key(k);
            }
            let store = b.build().map_err(|e| bad(e.to_string()))?;
            return Ok(LakeStore {
                url: url.to_owned(),
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.contains("://") {
            return Err(bad("scheme must be file:// (or a plain path) or s3://".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
        Ok(LakeStore { url: url.to_owned(), store: Arc::new(store), prefix: String::new() })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Path of a file inside the store.
    pub fn path(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() { ObjPath::from(rel) } else { ObjPath::from(format!("{}/{rel}", self.prefix)) }
    }

    /// `{table}/tenant={t}/date={d}/` for a tenant and minute.
    pub fn partition(table: &str, tenant: &TenantId, minute_us: i64) -> String {
        let date = chrono::DateTime::from_timestamp_micros(minute_us).map(|t| t.format("%Y-%m-%d").to_string());
        format!("{table}/tenant={tenant}/date={}", date.unwrap_or_else(|| "invalid".into()))
    }

    fn minute_file(table: &str, key: &WindowKey) -> String {
        let hhmm = chrono::DateTime::from_timestamp_micros(key.minute_us).map(|t| t.format("%H%M").to_string());
        format!(
            "{}/minute-{}-{}.parquet",
            Self::partition(table, &key.tenant, key.minute_us),
            hhmm.unwrap_or_default(),
            file_safe(&key.stream.0)
        )
    }

    pub async fn put_parquet(&self, rel: &str, batch: &RecordBatch) -> Result<(), LakeError> {
        let bytes = parquet_bytes(rel, batch)?;
        self.store.put(&self.path(rel), PutPayload::from(bytes)).await.map_err(store_err(&self.url))?;
        Ok(())
    }

    pub async fn get_parquet(&self, rel: &str) -> Result<Option<Vec<RecordBatch>>, LakeError> {
        let bytes = match self.store.get(&self.path(rel)).await {
            Ok(r) => r.bytes().await.map_err(store_err(&self.url))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err(&self.url)(e)),
        };
        read_parquet_bytes(rel, bytes).map(Some)
    }

    /// Writes a closed window: the aggregates first, the events file last, because the events
    /// file is what marks the window as written after a restart.
    pub async fn write_window(&self, w: &ClosedWindow) -> Result<(), LakeError> {
        let m = w.key.minute_us;
        self.put_parquet(&Self::minute_file("line_counts", &w.key), &tables::line_counts_batch(m, &w.events)?).await?;
        self.put_parquet(&Self::minute_file("zone_occupancy", &w.key), &tables::zone_occupancy_batch(m, &w.events)?)
            .await?;
        self.put_parquet(&Self::minute_file("events", &w.key), &tables::events_batch(&w.events)?).await
    }

    /// Event ids of a window written earlier, or `None` if it was not.
    pub async fn window_ids(&self, key: &WindowKey) -> Result<Option<HashSet<String>>, LakeError> {
        let Some(batches) = self.get_parquet(&Self::minute_file("events", key)).await? else { return Ok(None) };
        let mut ids = HashSet::new();
        for b in batches {
            if let Some(col) = b.column_by_name("event_id") {
                ids.extend(col.as_string::<i32>().iter().flatten().map(str::to_owned));
            }
        }
        Ok(Some(ids))
    }

    /// Writes late events, one file per tenant and date, named by the offsets it covers.
    pub async fn write_late(&self, late: &[(i32, i64, retail_core::Event)]) -> Result<(), LakeError> {
        let mut groups: std::collections::BTreeMap<String, Vec<(i32, i64, retail_core::Event)>> = Default::default();
        for item in late {
            groups
                .entry(Self::partition("late_events", &item.2.tenant, item.2.time_us))
                .or_default()
                .push(item.clone());
        }
        for (dir, items) in groups {
            let (p, first) = (items[0].0, items[0].1);
            let last = items.iter().map(|i| i.1).max().unwrap_or(first);
            let rel = format!("{dir}/late-p{p}-{first}-{last}.parquet");
            self.put_parquet(&rel, &tables::late_events_batch(&items)?).await?;
        }
        Ok(())
    }
}

/// A stream id as a file-name part: kept if it is plain, else cleaned and suffixed with a
/// hash so two ids never share a name.
fn file_safe(id: &str) -> String {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return id.to_owned();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let clean: String =
        id.chars().take(40).map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{clean}~{h:016x}")
}

pub(crate) fn parquet_bytes(name: &str, batch: &RecordBatch) -> Result<Bytes, LakeError> {
    let pq = |e: parquet::errors::ParquetError| LakeError::Parquet { path: name.into(), message: e.to_string() };
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(pq)?;
    w.write(batch).map_err(pq)?;
    w.close().map_err(pq)?;
    Ok(Bytes::from(buf))
}

pub(crate) fn read_parquet_bytes(name: &str, bytes: Bytes) -> Result<Vec<RecordBatch>, LakeError> {
    let pq = |e: parquet::errors::ParquetError| LakeError::Parquet { path: name.into(), message: e.to_string() };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(pq)?.build().map_err(pq)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| LakeError::Parquet { path: name.into(), message: e.to_string() })
}
