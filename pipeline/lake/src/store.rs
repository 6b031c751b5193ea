//! Parquet files on object storage, chosen by URL: a local directory (`file:///dir` or a
//! plain path, the default) or `s3://bucket/prefix`. Every file is one PUT of complete bytes,
//! which object stores make visible atomically (the local store writes a temp file and
//! renames), so no reader ever sees half a file.

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
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
    pub secret_access_key: Option<retail_core::Secret>,
}

/// The lake's storage; cheap to clone.
#[derive(Clone)]
pub struct LakeStore {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (the part of an `s3://` URL after the bucket).
    prefix: String,
    /// The directory of a local store: its files and directories are fsynced after each
    /// write, since the offsets that a write allows to commit must not outlive a power loss.
    local: Option<Arc<Local>>,
}

/// A local-directory store's handles for fsync.
struct Local {
    fs: Arc<LocalFileSystem>,
    root: std::path::PathBuf,
    /// Directories fsynced since this process started.
    synced_dirs: std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>,
}

fn fsync(path: &std::path::Path) -> Result<(), LakeError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| LakeError::Io { path: path.to_owned(), source })
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
                b = b.with_secret_access_key(k.expose());
            }
            let store = b.build().map_err(|e| bad(e.to_string()))?;
            return Ok(LakeStore {
                url: url.to_owned(),
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_owned(),
                local: None,
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.contains("://") {
            return Err(bad("scheme must be file:// (or a plain path) or s3://".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        let store = Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?);
        let root = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
        let local = Local { fs: store.clone(), root, synced_dirs: Default::default() };
        Ok(LakeStore { url: url.to_owned(), store, prefix: String::new(), local: Some(Arc::new(local)) })
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

    /// Writes one whole file; durable when this returns (S3: acknowledged PUT; a local
    /// directory: file and directories fsynced).
    pub async fn put_parquet(&self, rel: &str, batch: &RecordBatch) -> Result<(), LakeError> {
        self.put_parquet_with(rel, batch, &[]).await
    }

    /// [`put_parquet`](Self::put_parquet) with key-value metadata in the file footer.
    async fn put_parquet_with(&self, rel: &str, batch: &RecordBatch, meta: &[(&str, &str)]) -> Result<(), LakeError> {
        let bytes = parquet_bytes_with(rel, batch, meta)?;
        self.store.put(&self.path(rel), PutPayload::from(bytes)).await.map_err(store_err(&self.url))?;
        self.sync_local(rel)
    }

    /// Fsyncs a local file and its directory, and, the first time this process meets them,
    /// the directories above it up to the root (they may have just been created), so that
    /// neither the file's bytes nor its directory entries are lost in a power loss.
    fn sync_local(&self, rel: &str) -> Result<(), LakeError> {
        self.sync_location(&self.path(rel))
    }

    /// [`sync_local`](Self::sync_local) for a full location (prefix included).
    pub fn sync_location(&self, location: &ObjPath) -> Result<(), LakeError> {
        let Some(local) = &self.local else { return Ok(()) };
        let file = local.fs.path_to_filesystem(location).map_err(store_err(&self.url))?;
        fsync(&file)?;
        self.sync_dirs_of(&file)
    }

    fn sync_dirs_of(&self, file: &std::path::Path) -> Result<(), LakeError> {
        let Some(local) = &self.local else { return Ok(()) };
        // A directory is fsynced when it got a new entry: always the file's own; the one
        // above only while the one below is new to this process (it may have been created).
        let mut dir = file.parent().filter(|d| d.starts_with(&local.root));
        while let Some(d) = dir {
            fsync(d)?;
            let new = local.synced_dirs.lock().expect("dirs lock").insert(d.to_owned());
            dir = d.parent().filter(|p| new && p.starts_with(&local.root));
        }
        Ok(())
    }

    pub async fn get_parquet(&self, rel: &str) -> Result<Option<Vec<RecordBatch>>, LakeError> {
        Ok(self.get_parquet_with_meta(rel, "").await?.map(|(b, _)| b))
    }

    /// A file's batches and the value of one footer metadata key.
    async fn get_parquet_with_meta(
        &self,
        rel: &str,
        key: &str,
    ) -> Result<Option<(Vec<RecordBatch>, Option<String>)>, LakeError> {
        let bytes = match self.store.get(&self.path(rel)).await {
            Ok(r) => r.bytes().await.map_err(store_err(&self.url))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err(&self.url)(e)),
        };
        read_parquet_with_meta(rel, bytes, key).map(Some)
    }

    /// Moves a file that cannot be read (empty, torn, corrupt) to `_quarantine/`, outside
    /// every table, so that it neither crash-loops the aggregator nor breaks queries.
    async fn quarantine(&self, rel: &str, why: &LakeError) -> Result<(), LakeError> {
        let to = format!("_quarantine/{rel}");
        tracing::error!(file = %self.path(rel), moved_to = %self.path(&to), error = %why, "unreadable lake file quarantined");
        metrics::counter!("retail_lake_quarantined_files_total").increment(1);
        self.store.copy(&self.path(rel), &self.path(&to)).await.map_err(store_err(&self.url))?;
        self.sync_local(&to)?;
        self.store.delete(&self.path(rel)).await.map_err(store_err(&self.url))?;
        match &self.local {
            Some(local) => {
                self.sync_dirs_of(&local.fs.path_to_filesystem(&self.path(rel)).map_err(store_err(&self.url))?)
            }
            None => Ok(()),
        }
    }

    /// Writes a closed window: the aggregates first, the events file last, because the events
    /// file is what marks the window as written after a restart.
    pub async fn write_window(&self, w: &ClosedWindow) -> Result<(), LakeError> {
        self.put_parquet(&Self::minute_file("line_counts", &w.key), &tables::line_counts_batch(&w.events)?).await?;
        self.put_parquet(&Self::minute_file("zone_occupancy", &w.key), &tables::zone_occupancy_batch(&w.events)?)
            .await?;
        // The footer says whether the window may be reopened by on-time events after a restart.
        let state = if w.is_final { "final" } else { "early" };
        let events = tables::events_batch(&w.events)?;
        self.put_parquet_with(&Self::minute_file("events", &w.key), &events, &[(WINDOW_STATE, state)]).await
    }

    /// A window's events out of its day's compacted files (`compact` deletes the minute
    /// files, which are the dedup record): `None` if no compacted file holds the window.
    async fn compacted_window_events(&self, key: &WindowKey) -> Result<Option<Vec<retail_core::Event>>, LakeError> {
        use futures::TryStreamExt;
        // Compaction leaves today alone, so the common lookup (a new minute of today) costs
        // no listing.
        if !crate::compact::is_before_today(key.minute_us) {
            return Ok(None);
        }
        let dir = Self::partition("events", &key.tenant, key.minute_us);
        let listed: Vec<_> =
            self.store.list(Some(&self.path(&dir))).try_collect().await.map_err(store_err(&self.url))?;
        let mut found = Vec::new();
        for o in listed.iter().filter(|o| o.location.filename().is_some_and(|f| f.starts_with("day-"))) {
            let rel = format!("{dir}/{}", o.location.filename().unwrap_or_default());
            let Some(batches) = self.get_parquet(&rel).await? else { continue };
            let events = tables::events_from_batches(&key.tenant, &batches)
                .map_err(|message| LakeError::Parquet { path: rel.into(), message })?;
            found.extend(
                events.into_iter().filter(|e| e.stream == key.stream && crate::minute_of(e.time_us) == key.minute_us),
            );
        }
        Ok((!found.is_empty()).then_some(found))
    }

    /// The events of a window written earlier, and whether it may be reopened (only one
    /// written early, never one closed by its watermark or merged into a day file), or `None`
    /// if it was not written. An events file that cannot be read is quarantined, with an error
    /// naming it, and the window stays closed: what arrives for it goes to `late_events`, and
    /// its aggregates are not overwritten with a part of its events.
    pub async fn window_events(&self, key: &WindowKey) -> Result<Option<(Vec<retail_core::Event>, bool)>, LakeError> {
        let rel = Self::minute_file("events", key);
        let read = match self.get_parquet_with_meta(&rel, WINDOW_STATE).await {
            Ok(Some((b, state))) => tables::events_from_batches(&key.tenant, &b)
                .map(|events| (events, state.as_deref() == Some("early")))
                .map_err(|message| LakeError::Parquet { path: rel.clone().into(), message }),
            Ok(None) => return self.compacted_window_events(key).await.map(|e| e.map(|e| (e, false))),
            Err(e) => Err(e),
        };
        match read {
            Ok(found) => Ok(Some(found)),
            Err(e @ LakeError::Parquet { .. }) => {
                self.quarantine(&rel, &e).await?;
                Ok(Some((Vec::new(), false)))
            }
            Err(e) => Err(e),
        }
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

/// Footer key of an events file: `final` or `early` (see [`ClosedWindow::is_final`]).
const WINDOW_STATE: &str = "retail.window";

pub(crate) fn parquet_bytes(name: &str, batch: &RecordBatch) -> Result<Bytes, LakeError> {
    parquet_bytes_with(name, batch, &[])
}

fn parquet_bytes_with(name: &str, batch: &RecordBatch, meta: &[(&str, &str)]) -> Result<Bytes, LakeError> {
    let pq = |e: parquet::errors::ParquetError| LakeError::Parquet { path: name.into(), message: e.to_string() };
    let kv: Vec<KeyValue> = meta.iter().map(|(k, v)| KeyValue::new((*k).to_owned(), (*v).to_owned())).collect();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata((!kv.is_empty()).then_some(kv))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(pq)?;
    w.write(batch).map_err(pq)?;
    w.close().map_err(pq)?;
    Ok(Bytes::from(buf))
}

pub(crate) fn read_parquet_bytes(name: &str, bytes: Bytes) -> Result<Vec<RecordBatch>, LakeError> {
    read_parquet_with_meta(name, bytes, "").map(|(b, _)| b)
}

fn read_parquet_with_meta(
    name: &str,
    bytes: Bytes,
    key: &str,
) -> Result<(Vec<RecordBatch>, Option<String>), LakeError> {
    let pq = |e: parquet::errors::ParquetError| LakeError::Parquet { path: name.into(), message: e.to_string() };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(pq)?;
    let value = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == key))
        .and_then(|e| e.value.clone());
    let reader = builder.build().map_err(pq)?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LakeError::Parquet { path: name.into(), message: e.to_string() })?;
    Ok((batches, value))
}
