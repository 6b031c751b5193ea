//! Encrypted object storage with retention: every object is sealed under its
//! organisation's data key (see [`crypto`](crate::crypto)) on its way to the object store
//! (a local directory or S3, by URL), and registered in the database with a retention class
//! and an expiry *before* its first byte is written, so that no byte, not even one of a
//! write cut off by a crash, escapes the purge. Deleting an object removes its bytes, then
//! its row, and appends a line to the purge log.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use retail_lake::{LakeStore, S3Settings};
use serde::Serialize;
use sqlx::Row;

use crate::crypto::{DataKey, Header, MasterKey, Opener, Sealer, new_data_key_bytes};
use crate::error::db_err;
use crate::{Db, StoreError, new_id};

/// One day in microseconds.
pub const DAY_US: i64 = 86_400 * 1_000_000;
/// Aggregates and billing records are kept 7 years (tax and compliance).
pub const SEVEN_YEARS_DAYS: i64 = 7 * 365 + 2;
/// Parts of an upload that is never finished are purged this long after their last write.
pub const INCOMPLETE_UPLOAD_DAYS: i64 = 1;
/// Bytes per part of a multipart write (S3's minimum is 5 MiB), and parts in flight.
const PART_BYTES: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;
/// Chunks fetched per ranged read.
const CHUNKS_PER_READ: u64 = 16;

/// Why an object is kept, which says for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetentionClass {
    /// Uploaded footage and images: the organisation's upload retention (90 days by default).
    Upload,
    /// Inference results (events, summaries, annotated video): as uploads.
    Result,
    /// Aggregated analytics: 7 years.
    Aggregate,
    /// Billing records: 7 years.
    Billing,
}

impl RetentionClass {
    pub const ALL: [RetentionClass; 4] =
        [RetentionClass::Upload, RetentionClass::Result, RetentionClass::Aggregate, RetentionClass::Billing];

    pub fn as_str(self) -> &'static str {
        match self {
            RetentionClass::Upload => "upload",
            RetentionClass::Result => "result",
            RetentionClass::Aggregate => "aggregate",
            RetentionClass::Billing => "billing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Days an object of this class is kept, given the organisation's upload retention.
    pub fn days(self, upload_retention_days: i64) -> i64 {
        match self {
            RetentionClass::Upload | RetentionClass::Result => upload_retention_days,
            RetentionClass::Aggregate | RetentionClass::Billing => SEVEN_YEARS_DAYS,
        }
    }
}

/// A stored object as registered.
#[derive(Clone, Debug, Serialize)]
pub struct StoredObject {
    pub key: String,
    pub org_id: String,
    pub class: RetentionClass,
    /// The upload or job it belongs to.
    pub owner: String,
    /// Plaintext bytes; `None` while it is being written.
    pub bytes: Option<i64>,
    pub created_us: i64,
    pub expires_us: i64,
}

/// One line of the purge log.
#[derive(Clone, Debug, Serialize)]
pub struct PurgeRecord {
    pub id: String,
    pub org_id: String,
    pub object_key: String,
    pub class: String,
    pub bytes: i64,
    pub reason: String,
    pub deleted_us: i64,
}

/// The encrypted object store; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pub(crate) db: Db,
    store: LakeStore,
    master: Arc<MasterKey>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({}, {:?})", self.store.url(), self.master)
    }
}

fn store_err(url: &str) -> impl Fn(object_store::Error) -> StoreError + '_ {
    move |e| StoreError::Objects { url: url.to_owned(), message: e.to_string() }
}

fn lake_err(e: retail_lake::LakeError) -> StoreError {
    StoreError::Objects { url: String::new(), message: e.to_string() }
}

pub(crate) fn object_from(row: &sqlx::any::AnyRow) -> Result<StoredObject, StoreError> {
    let get = db_err("read object");
    let class: String = row.try_get("class").map_err(&get)?;
    Ok(StoredObject {
        key: row.try_get("key").map_err(&get)?,
        org_id: row.try_get("org_id").map_err(&get)?,
        class: RetentionClass::parse(&class)
            .ok_or_else(|| StoreError::Invalid(format!("unknown retention class {class} in the database")))?,
        owner: row.try_get("owner").map_err(&get)?,
        bytes: row.try_get("bytes").map_err(&get)?,
        created_us: row.try_get("created_us").map_err(&get)?,
        expires_us: row.try_get("expires_us").map_err(&get)?,
    })
}

impl Storage {
    /// Opens the object store at `url` (`file:///dir`, a plain path, or `s3://bucket/prefix`).
    pub fn open(db: Db, url: &str, s3: &S3Settings, master: MasterKey) -> Result<Self, StoreError> {
        let store = LakeStore::open(url, s3).map_err(lake_err)?;
        Ok(Storage { db, store, master: Arc::new(master) })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// The raw store, for tests and benchmarks that look at the sealed bytes.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.object_store()
    }

    /// Where `key` lies in the raw store.
    pub fn location(&self, key: &str) -> ObjPath {
        self.store.path(key)
    }

    /// The organisation's data key, made and wrapped on first use.
    async fn data_key(&self, org_id: &str) -> Result<(String, DataKey), StoreError> {
        if let Some(found) = self.find_data_key(org_id, None).await? {
            return Ok(found);
        }
        let id = new_id("dek");
        let dek = new_data_key_bytes();
        let wrapped = self.master.wrap(&dek, &format!("{org_id}/{id}"));
        sqlx::query(
            "INSERT INTO data_keys (id, org_id, master_key_id, wrapped, created_us) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(org_id)
        .bind(self.master.id())
        .bind(&wrapped)
        .bind(self.db.now_us())
        .execute(&self.db.pool)
        .await
        .map_err(db_err("store data key"))?;
        // Two first writes at once may both make one; each object names its own.
        Ok((id, DataKey::from_bytes(&dek)))
    }

    /// The oldest data key of `org_id`, or the one named `id` (which must be the org's).
    async fn find_data_key(&self, org_id: &str, id: Option<&str>) -> Result<Option<(String, DataKey)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, master_key_id, wrapped FROM data_keys WHERE org_id = $1 AND ($2 = '' OR id = $2)
             ORDER BY created_us, id LIMIT 1",
        )
        .bind(org_id)
        .bind(id.unwrap_or(""))
        .fetch_optional(&self.db.pool)
        .await
        .map_err(db_err("read data key"))?;
        let Some(row) = row else { return Ok(None) };
        let get = db_err("read data key");
        let key_id: String = row.try_get("id").map_err(&get)?;
        let master_id: String = row.try_get("master_key_id").map_err(&get)?;
        if master_id != self.master.id() {
            return Err(StoreError::Crypto(format!(
                "data key {key_id} was wrapped by master key {master_id}; this server has master key {}",
                self.master.id()
            )));
        }
        let wrapped: String = row.try_get("wrapped").map_err(&get)?;
        let key = self.master.unwrap(&wrapped, &format!("{org_id}/{key_id}"))?;
        Ok(Some((key_id, key)))
    }

    /// Registers `key` and starts writing it; nothing is visible under `key` until
    /// [`ObjectWriter::finish`].
    pub async fn create(
        &self,
        org_id: &str,
        key: &str,
        class: RetentionClass,
        owner: &str,
        expires_us: i64,
    ) -> Result<ObjectWriter, StoreError> {
        let (key_id, dek) = self.data_key(org_id).await?;
        sqlx::query(
            "INSERT INTO objects (key, org_id, class, owner, bytes, created_us, expires_us)
             VALUES ($1, $2, $3, $4, NULL, $5, $6)",
        )
        .bind(key)
        .bind(org_id)
        .bind(class.as_str())
        .bind(owner)
        .bind(self.db.now_us())
        .bind(expires_us)
        .execute(&self.db.pool)
        .await
        .map_err(db_err("register object"))?;
        let location = self.store.path(key);
        let upload = match self.store.object_store().put_multipart(&location).await {
            Ok(u) => u,
            Err(e) => {
                let _ = self.forget(key).await;
                return Err(store_err(self.url())(e));
            }
        };
        let mut out = Vec::new();
        let sealer = Sealer::new(dek, &key_id, key, &mut out);
        let mut write = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        write.write(&out);
        out.clear();
        Ok(ObjectWriter { storage: self.clone(), key: key.to_owned(), sealer, write, out, plain: 0 })
    }

    /// Stores `bytes` whole.
    pub async fn put(
        &self,
        org_id: &str,
        key: &str,
        class: RetentionClass,
        owner: &str,
        expires_us: i64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut w = self.create(org_id, key, class, owner, expires_us).await?;
        w.write(bytes).await?;
        w.finish().await.map(|_| ())
    }

    async fn forget(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM objects WHERE key = $1")
            .bind(key)
            .execute(&self.db.pool)
            .await
            .map_err(db_err("forget object"))?;
        Ok(())
    }

    /// The object registered as `key` for `org_id`.
    pub async fn object(&self, org_id: &str, key: &str) -> Result<StoredObject, StoreError> {
        let row = sqlx::query("SELECT * FROM objects WHERE key = $1 AND org_id = $2")
            .bind(key)
            .bind(org_id)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(db_err("read object"))?;
        let row = row.ok_or_else(|| StoreError::NotFound { what: "object", id: key.to_owned() })?;
        object_from(&row)
    }

    /// The objects of an owner (an upload or a job), oldest first.
    pub async fn objects_of(&self, org_id: &str, owner: &str) -> Result<Vec<StoredObject>, StoreError> {
        let rows = sqlx::query("SELECT * FROM objects WHERE org_id = $1 AND owner = $2 ORDER BY key")
            .bind(org_id)
            .bind(owner)
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_err("list objects"))?;
        rows.iter().map(object_from).collect()
    }

    /// Sets the expiry of every object of `owner`.
    pub(crate) async fn set_expiry(&self, org_id: &str, owner: &str, expires_us: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE objects SET expires_us = $1 WHERE org_id = $2 AND owner = $3")
            .bind(expires_us)
            .bind(org_id)
            .bind(owner)
            .execute(&self.db.pool)
            .await
            .map_err(db_err("set expiry"))?;
        Ok(())
    }

    /// Opens `key` (of `org_id`) for reading.
    pub async fn reader(&self, org_id: &str, key: &str) -> Result<ObjectReader, StoreError> {
        let object = self.object(org_id, key).await?;
        if object.bytes.is_none() {
            return Err(StoreError::NotFound { what: "object", id: key.to_owned() });
        }
        let location = self.store.path(key);
        let os = self.store.object_store();
        let url = self.url().to_owned();
        let meta = os.head(&location).await.map_err(store_err(&url))?;
        let head_len = (Header::MAX_LEN as u64).min(meta.size);
        let head = os.get_range(&location, 0..head_len).await.map_err(store_err(&url))?;
        let header = Header::parse(&head, key)?;
        let (_, dek) = self
            .find_data_key(org_id, Some(&header.key_id))
            .await?
            .ok_or_else(|| StoreError::Crypto(format!("{key}: its data key {} is gone", header.key_id)))?;
        let opener = Opener::new(dek, header, key, meta.size)?;
        Ok(ObjectReader { os, url, location, opener, next_chunk: 0, skip: 0 })
    }

    /// Deletes an object's bytes, then its row, and logs why.
    pub async fn delete(&self, object: &StoredObject, reason: &str) -> Result<(), StoreError> {
        match self.store.object_store().delete(&self.store.path(&object.key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err(self.url())(e)),
        }
        let mut tx = self.db.pool.begin().await.map_err(db_err("delete object"))?;
        let gone = sqlx::query("DELETE FROM objects WHERE key = $1")
            .bind(&object.key)
            .execute(&mut *tx)
            .await
            .map_err(db_err("delete object"))?;
        if gone.rows_affected() == 0 {
            // Another server's purge (or a request) deleted it first, and logged it.
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO purge_log (id, org_id, object_key, class, bytes, reason, deleted_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id("purge"))
        .bind(&object.org_id)
        .bind(&object.key)
        .bind(object.class.as_str())
        .bind(object.bytes.unwrap_or(0))
        .bind(reason)
        .bind(self.db.now_us())
        .execute(&mut *tx)
        .await
        .map_err(db_err("log deletion"))?;
        tx.commit().await.map_err(db_err("delete object"))?;
        tracing::info!(org = %object.org_id, object = %object.key, class = object.class.as_str(), reason, "object deleted");
        metrics::counter!("retail_objects_deleted_total", "class" => object.class.as_str()).increment(1);
        Ok(())
    }

    /// Objects whose expiry has passed, oldest first, at most `limit` after the first `skip`.
    pub async fn expired(&self, limit: i64, skip: i64) -> Result<Vec<StoredObject>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM objects WHERE expires_us <= $1 ORDER BY expires_us, key LIMIT $2 OFFSET $3")
                .bind(self.db.now_us())
                .bind(limit)
                .bind(skip)
                .fetch_all(&self.db.pool)
                .await
                .map_err(db_err("list expired objects"))?;
        rows.iter().map(object_from).collect()
    }

    /// Charges each organisation, once per day, for the bytes it stores in each retention
    /// class (GB-days at `milli_per_gb_day` millicredits), as `storage` rows in its ledger.
    /// Run daily (the scheduled task runs it with each purge); a day already charged is skipped.
    pub async fn meter_storage(
        &self,
        milli_per_gb_day: &(dyn Fn(RetentionClass) -> f64 + Sync),
    ) -> Result<usize, StoreError> {
        let day = self.db.now_us().div_euclid(DAY_US);
        let rows = sqlx::query(
            "SELECT org_id, class, CAST(SUM(COALESCE(bytes, 0)) AS BIGINT) AS b FROM objects GROUP BY org_id, class",
        )
        .fetch_all(&self.db.pool)
        .await
        .map_err(db_err("meter storage"))?;
        let mut charged = 0;
        for row in rows {
            let get = db_err("meter storage");
            let (org, class, bytes): (String, String, i64) = (
                row.try_get("org_id").map_err(&get)?,
                row.try_get("class").map_err(&get)?,
                row.try_get("b").map_err(&get)?,
            );
            let Some(class) = RetentionClass::parse(&class) else { continue };
            // The day's mark and its ledger row commit together: a crash between them would
            // otherwise skip the day's charge for good.
            let mut tx = self.db.pool.begin().await.map_err(db_err("meter storage"))?;
            let new = sqlx::query(
                "INSERT INTO storage_charges (org_id, day, class, bytes) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&org)
            .bind(day)
            .bind(class.as_str())
            .bind(bytes)
            .execute(&mut *tx)
            .await
            .map_err(db_err("meter storage"))?;
            let gb_days = bytes as f64 / 1e9;
            let amount = (gb_days * milli_per_gb_day(class)).ceil() as i64;
            if new.rows_affected() == 0 || amount == 0 {
                tx.commit().await.map_err(db_err("meter storage"))?;
                continue;
            }
            let date = chrono_day(day);
            let reason = format!("storage {date}: {gb_days:.6} GB-days of {} objects", class.as_str());
            let charge = crate::Movement {
                org_id: &org,
                kind: "storage",
                amount: -amount,
                job_id: None,
                actor: "system",
                reason: &reason,
                may_overdraw: true,
            };
            crate::ledger::move_credits_on(&mut tx, &charge, self.db.now_us()).await?;
            tx.commit().await.map_err(db_err("meter storage"))?;
            charged += 1;
        }
        Ok(charged)
    }

    /// The purge log of an organisation, newest first.
    pub async fn purge_log(&self, org_id: &str, limit: i64) -> Result<Vec<PurgeRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM purge_log WHERE org_id = $1 ORDER BY deleted_us DESC, id LIMIT $2")
            .bind(org_id)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_err("read purge log"))?;
        let get = db_err("read purge log");
        rows.iter()
            .map(|r| {
                Ok(PurgeRecord {
                    id: r.try_get("id").map_err(&get)?,
                    org_id: r.try_get("org_id").map_err(&get)?,
                    object_key: r.try_get("object_key").map_err(&get)?,
                    class: r.try_get("class").map_err(&get)?,
                    bytes: r.try_get("bytes").map_err(&get)?,
                    reason: r.try_get("reason").map_err(&get)?,
                    deleted_us: r.try_get("deleted_us").map_err(&get)?,
                })
            })
            .collect()
    }
}

/// An object being written: plaintext in, sealed parts out to the store, in constant memory.
pub struct ObjectWriter {
    storage: Storage,
    key: String,
    sealer: Sealer,
    write: WriteMultipart,
    out: Vec<u8>,
    plain: u64,
}

impl ObjectWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.sealer.push(data, &mut self.out)?;
        self.plain += data.len() as u64;
        if !self.out.is_empty() {
            self.write.write(&self.out);
            self.out.clear();
        }
        // Bounds the parts in flight, and so the memory an upload holds.
        self.write.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(store_err(self.storage.url()))
    }

    /// Plaintext bytes written so far.
    pub fn written(&self) -> u64 {
        self.plain
    }

    /// Seals the last chunk and completes the object; durable when this returns.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        self.sealer.finish(&mut self.out)?;
        self.write.write(&self.out);
        let url = self.storage.url().to_owned();
        self.write.finish().await.map_err(store_err(&url))?;
        let location = self.storage.store.path(&self.key);
        self.storage.store.sync_location(&location).map_err(lake_err)?;
        let recorded = sqlx::query("UPDATE objects SET bytes = $1 WHERE key = $2")
            .bind(self.plain as i64)
            .bind(&self.key)
            .execute(&self.storage.db.pool)
            .await
            .map_err(db_err("record object size"))?;
        if recorded.rows_affected() != 1 {
            // Deleted while it was written (its upload deleted or purged): no bytes may stay
            // without a row, or no purge would ever find them.
            let _ = self.storage.store.object_store().delete(&location).await;
            return Err(StoreError::NotFound { what: "object", id: self.key });
        }
        Ok(self.plain)
    }

    /// Drops what was written and the object's row.
    pub async fn abort(self) -> Result<(), StoreError> {
        let _ = self.write.abort().await;
        self.storage.forget(&self.key).await
    }
}

/// Reads an object's plaintext, a few chunks per ranged request.
pub struct ObjectReader {
    os: Arc<dyn ObjectStore>,
    url: String,
    location: ObjPath,
    opener: Opener,
    next_chunk: u64,
    /// Plaintext bytes to drop from the next chunk (after a seek).
    skip: usize,
}

impl ObjectReader {
    pub fn len(&self) -> u64 {
        self.opener.plain_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Continues reading from plaintext offset `offset`.
    pub fn seek(&mut self, offset: u64) {
        let size = self.opener.chunk_size();
        self.next_chunk = offset / size;
        self.skip = (offset % size) as usize;
    }

    /// The next plaintext bytes, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        if self.next_chunk >= self.opener.chunks() || self.opener.plain_len() == 0 {
            return Ok(None);
        }
        let last = (self.next_chunk + CHUNKS_PER_READ).min(self.opener.chunks());
        let range = self.opener.chunk_range(self.next_chunk).start..self.opener.chunk_range(last - 1).end;
        let sealed = self.os.get_range(&self.location, range.clone()).await.map_err(store_err(&self.url))?;
        let mut sealed = sealed.to_vec();
        let mut plain = Vec::with_capacity(sealed.len());
        for index in self.next_chunk..last {
            let r = self.opener.chunk_range(index);
            let (a, b) = ((r.start - range.start) as usize, (r.end - range.start) as usize);
            let chunk =
                sealed.get_mut(a..b).ok_or_else(|| StoreError::Crypto(format!("{}: cut short", self.location)))?;
            plain.extend_from_slice(self.opener.open(index, chunk)?);
        }
        self.next_chunk = last;
        let skip = std::mem::take(&mut self.skip).min(plain.len());
        Ok(Some(Bytes::from(plain).slice(skip..)))
    }

    /// Everything from the current position.
    pub async fn read_all(&mut self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        while let Some(b) = self.next().await? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }
}

/// `YYYY-MM-DD` of a day number since 1970-01-01.
fn chrono_day(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map_or_else(|| format!("day {day}"), |t| t.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_are_dates() {
        assert_eq!(super::chrono_day(0), "1970-01-01");
        assert_eq!(super::chrono_day(20_790), "2026-12-03");
        assert_eq!(super::chrono_day(11_016), "2000-02-29");
    }
}
