//! Uploads: streamed in one or more requests (each continuing at the offset the last one
//! reached, so a dropped connection costs only a resume), sniffed on their first bytes,
//! sealed part by part into [`Storage`], checked whole by the caller's decoder, and then
//! kept for the organisation's retention. An upload that is refused leaves nothing stored.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::db_err;
use crate::sniff::{MediaKind, SNIFF_BYTES, sniff};
use crate::storage::{DAY_US, INCOMPLETE_UPLOAD_DAYS, ObjectReader, RetentionClass, StoredObject};
use crate::{Storage, StoreError, new_id};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Bytes are still coming.
    Receiving,
    /// Every byte is in and it decodes: it can be analysed.
    Ready,
}

/// An upload as registered.
#[derive(Clone, Debug, Serialize)]
pub struct Upload {
    pub id: String,
    pub org_id: String,
    pub filename: String,
    pub declared_bytes: i64,
    pub received_bytes: i64,
    pub kind: Option<MediaKind>,
    pub media_type: Option<String>,
    pub state: UploadState,
    pub duration_ms: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub created_by: String,
    pub created_us: i64,
    pub completed_us: Option<i64>,
    pub expires_us: i64,
}

impl Upload {
    /// Every declared byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.received_bytes == self.declared_bytes
    }
}

/// What the decoder found in a complete upload.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MediaInfo {
    pub duration_ms: Option<i64>,
    pub width: i64,
    pub height: i64,
}

fn upload_from(row: &AnyRow) -> Result<Upload, StoreError> {
    let get = db_err("read upload");
    let kind: Option<String> = row.try_get("kind").map_err(&get)?;
    let state: String = row.try_get("state").map_err(&get)?;
    Ok(Upload {
        id: row.try_get("id").map_err(&get)?,
        org_id: row.try_get("org_id").map_err(&get)?,
        filename: row.try_get("filename").map_err(&get)?,
        declared_bytes: row.try_get("declared_bytes").map_err(&get)?,
        received_bytes: row.try_get("received_bytes").map_err(&get)?,
        kind: kind.as_deref().and_then(MediaKind::parse),
        media_type: row.try_get("media_type").map_err(&get)?,
        state: if state == "ready" { UploadState::Ready } else { UploadState::Receiving },
        duration_ms: row.try_get("duration_ms").map_err(&get)?,
        width: row.try_get("width").map_err(&get)?,
        height: row.try_get("height").map_err(&get)?,
        created_by: row.try_get("created_by").map_err(&get)?,
        created_us: row.try_get("created_us").map_err(&get)?,
        completed_us: row.try_get("completed_us").map_err(&get)?,
        expires_us: row.try_get("expires_us").map_err(&get)?,
    })
}

fn check_filename(name: &str) -> Result<String, StoreError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 255 || n.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(StoreError::Invalid("filename: 1 to 255 characters, no path separators".into()));
    }
    Ok(n.to_owned())
}

/// How one request's bytes ended.
enum BodyEnd {
    Done,
    /// The client went away (or the body failed) after some bytes.
    Cut,
}

impl Storage {
    /// Registers an upload of `declared_bytes` (from 1 byte to `max_bytes`).
    pub async fn create_upload(
        &self,
        org_id: &str,
        actor: &str,
        filename: &str,
        declared_bytes: i64,
        max_bytes: i64,
    ) -> Result<Upload, StoreError> {
        let filename = check_filename(filename)?;
        if declared_bytes <= 0 {
            return Err(StoreError::Invalid(format!("size: {declared_bytes} bytes; an upload is at least 1 byte")));
        }
        if declared_bytes > max_bytes {
            return Err(StoreError::TooLarge(format!(
                "size: {declared_bytes} bytes is over this service's limit of {max_bytes} bytes"
            )));
        }
        let id = new_id("upl");
        let now = self.db.now_us();
        sqlx::query(
            "INSERT INTO uploads (id, org_id, filename, declared_bytes, received_bytes, state, created_by, created_us, expires_us)
             VALUES ($1, $2, $3, $4, 0, 'receiving', $5, $6, $7)",
        )
        .bind(&id)
        .bind(org_id)
        .bind(&filename)
        .bind(declared_bytes)
        .bind(actor)
        .bind(now)
        .bind(now + INCOMPLETE_UPLOAD_DAYS * DAY_US)
        .execute(&self.db.pool)
        .await
        .map_err(db_err("create upload"))?;
        self.upload(org_id, &id).await
    }

    /// The upload `id` of `org_id` (another organisation's is "not found").
    pub async fn upload(&self, org_id: &str, id: &str) -> Result<Upload, StoreError> {
        let row = sqlx::query("SELECT * FROM uploads WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(db_err("read upload"))?;
        upload_from(&row.ok_or_else(|| StoreError::NotFound { what: "upload", id: id.to_owned() })?)
    }

    /// The organisation's uploads, newest first.
    pub async fn uploads(&self, org_id: &str) -> Result<Vec<Upload>, StoreError> {
        let rows = sqlx::query("SELECT * FROM uploads WHERE org_id = $1 ORDER BY created_us DESC, id")
            .bind(org_id)
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_err("list uploads"))?;
        rows.iter().map(upload_from).collect()
    }

    /// Appends one request's body at `offset`, which must be where the upload stands. The
    /// first bytes of an upload are sniffed: anything but a video or an image deletes it.
    /// Bytes beyond the declared size delete it too. A body cut off keeps what arrived.
    pub async fn append_upload<S, E>(&self, org_id: &str, id: &str, offset: i64, body: S) -> Result<Upload, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let up = self.upload(org_id, id).await?;
        if offset != up.received_bytes {
            return Err(StoreError::Offset { id: id.to_owned(), expected: up.received_bytes, given: offset });
        }
        let mut body = body;
        let mut head = Vec::new();
        let mut end = BodyEnd::Done;
        if up.received_bytes == 0 {
            while head.len() < SNIFF_BYTES {
                match body.next().await {
                    Some(Ok(b)) => head.extend_from_slice(&b),
                    Some(Err(_)) => {
                        end = BodyEnd::Cut;
                        break;
                    }
                    None => break,
                }
            }
            if head.is_empty() {
                return self.ended(up, end);
            }
            let Some((kind, media_type)) = sniff(&head) else {
                self.delete_upload(org_id, id, "refused: neither video nor image").await?;
                return Err(StoreError::Unsupported(format!(
                    "{}: neither a video nor an image (its first bytes match no container this service decodes)",
                    up.filename
                )));
            };
            self.set_kind(id, kind, media_type).await?;
        }
        let remaining = up.declared_bytes - up.received_bytes;
        let part = self.write_part(&up, &head, &mut body, remaining, &mut end).await?;
        let Some(written) = part else {
            self.delete_upload(org_id, id, "refused: larger than declared").await?;
            return Err(StoreError::TooLarge(format!(
                "{}: more bytes than the {} declared; the upload is deleted",
                up.filename, up.declared_bytes
            )));
        };
        let up = if written > 0 { self.upload(org_id, id).await? } else { up };
        self.ended(up, end)
    }

    fn ended(&self, up: Upload, end: BodyEnd) -> Result<Upload, StoreError> {
        match end {
            BodyEnd::Cut => {
                Err(StoreError::Interrupted { id: up.id, received: up.received_bytes, declared: up.declared_bytes })
            }
            BodyEnd::Done => Ok(up),
        }
    }

    async fn set_kind(&self, id: &str, kind: MediaKind, media_type: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE uploads SET kind = $1, media_type = $2 WHERE id = $3")
            .bind(kind.as_str())
            .bind(media_type)
            .bind(id)
            .execute(&self.db.pool)
            .await
            .map_err(db_err("record upload kind"))?;
        Ok(())
    }

    /// Seals `head` and the rest of `body` as the upload's next part; the bytes written, or
    /// `None` when the body holds more than `remaining` (the part is then dropped).
    async fn write_part<S, E>(
        &self,
        up: &Upload,
        head: &[u8],
        body: &mut S,
        remaining: i64,
        end: &mut BodyEnd,
    ) -> Result<Option<i64>, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let index: i64 = sqlx::query("SELECT COUNT(*) AS n FROM upload_parts WHERE upload_id = $1")
            .bind(&up.id)
            .fetch_one(&self.db.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(db_err("count parts"))?;
        // A random tail: two requests racing at one offset write different objects.
        let key = format!("{}/uploads/{}/part-{index:05}-{}", up.org_id, up.id, &new_id("p")[2..10]);
        // An unfinished upload lives a day past its last part.
        let expires = self.db.now_us() + INCOMPLETE_UPLOAD_DAYS * DAY_US;
        let mut w = self.create(&up.org_id, &key, RetentionClass::Upload, &up.id, expires).await?;
        let mut next = (!head.is_empty()).then(|| Bytes::copy_from_slice(head));
        loop {
            let bytes = match next.take() {
                Some(b) => b,
                None => match body.next().await {
                    Some(Ok(b)) => b,
                    Some(Err(_)) => {
                        *end = BodyEnd::Cut;
                        break;
                    }
                    None => break,
                },
            };
            if w.written() + bytes.len() as u64 > remaining as u64 {
                w.abort().await?;
                return Ok(None);
            }
            if let Err(e) = w.write(&bytes).await {
                let _ = w.abort().await;
                return Err(e);
            }
        }
        if w.written() == 0 {
            w.abort().await?;
            return Ok(Some(0));
        }
        let written = w.finish().await? as i64;
        self.record_part(up, index, written, &key, expires).await?;
        Ok(Some(written))
    }

    async fn record_part(
        &self,
        up: &Upload,
        index: i64,
        written: i64,
        key: &str,
        expires: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.pool.begin().await.map_err(db_err("record part"))?;
        let moved = sqlx::query(
            "UPDATE uploads SET received_bytes = $1, expires_us = $2 WHERE id = $3 AND received_bytes = $4",
        )
        .bind(up.received_bytes + written)
        .bind(expires)
        .bind(&up.id)
        .bind(up.received_bytes)
        .execute(&mut *tx)
        .await
        .map_err(db_err("record part"))?;
        if moved.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO upload_parts (upload_id, idx, start_bytes, bytes, object_key) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&up.id)
            .bind(index)
            .bind(up.received_bytes)
            .bind(written)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db_err("record part"))?;
            tx.commit().await.map_err(db_err("record part"))?;
            return self.set_expiry(&up.org_id, &up.id, expires).await;
        }
        drop(tx);
        // Another request got there first: this part is surplus.
        let object = self.object(&up.org_id, key).await?;
        self.delete(&object, "superseded by a concurrent request at the same offset").await?;
        let expected = self.upload(&up.org_id, &up.id).await?.received_bytes;
        Err(StoreError::Offset { id: up.id.clone(), expected, given: up.received_bytes })
    }

    /// Marks a complete upload ready and starts its retention.
    pub async fn complete_upload(&self, org_id: &str, id: &str, info: MediaInfo) -> Result<Upload, StoreError> {
        let days: i64 = sqlx::query("SELECT upload_retention_days FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_one(&self.db.pool)
            .await
            .and_then(|r| r.try_get("upload_retention_days"))
            .map_err(db_err("read retention"))?;
        let now = self.db.now_us();
        let expires = now + RetentionClass::Upload.days(days) * DAY_US;
        sqlx::query(
            "UPDATE uploads SET state = 'ready', completed_us = $1, expires_us = $2, duration_ms = $3, width = $4, height = $5
             WHERE id = $6 AND org_id = $7 AND received_bytes = declared_bytes",
        )
        .bind(now)
        .bind(expires)
        .bind(info.duration_ms)
        .bind(info.width)
        .bind(info.height)
        .bind(id)
        .bind(org_id)
        .execute(&self.db.pool)
        .await
        .map_err(db_err("complete upload"))?;
        self.set_expiry(org_id, id, expires).await?;
        self.upload(org_id, id).await
    }

    /// Deletes an upload's bytes (each logged with `reason`), then its rows.
    pub async fn delete_upload(&self, org_id: &str, id: &str, reason: &str) -> Result<usize, StoreError> {
        self.upload(org_id, id).await?;
        let mut objects: Vec<StoredObject> = self.objects_of(org_id, id).await?;
        // Its jobs' results go with it.
        for job in self.db.jobs_of_upload(org_id, id).await? {
            objects.extend(self.objects_of(org_id, &job.id).await?);
        }
        for object in &objects {
            self.delete(object, reason).await?;
        }
        let mut tx = self.db.pool.begin().await.map_err(db_err("delete upload"))?;
        for sql in ["DELETE FROM upload_parts WHERE upload_id = $1", "DELETE FROM uploads WHERE id = $1"] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(db_err("delete upload"))?;
        }
        tx.commit().await.map_err(db_err("delete upload"))?;
        Ok(objects.len())
    }

    /// Reads a whole upload's plaintext, part after part.
    pub async fn upload_reader(&self, org_id: &str, id: &str) -> Result<UploadReader, StoreError> {
        self.upload(org_id, id).await?;
        let rows = sqlx::query("SELECT object_key FROM upload_parts WHERE upload_id = $1 ORDER BY idx")
            .bind(id)
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_err("list parts"))?;
        let keys = rows
            .iter()
            .map(|r| r.try_get::<String, _>("object_key"))
            .collect::<Result<VecDeque<_>, _>>()
            .map_err(db_err("list parts"))?;
        Ok(UploadReader { storage: self.clone(), org_id: org_id.to_owned(), keys, current: None })
    }

    /// Reads the objects `keys` of `org_id` one after the other.
    pub fn reader_of(&self, org_id: &str, keys: Vec<String>) -> UploadReader {
        UploadReader { storage: self.clone(), org_id: org_id.to_owned(), keys: keys.into(), current: None }
    }

    /// Decrypts a whole upload into a new file at `path` (mode 0600).
    pub async fn upload_to_file(&self, org_id: &str, id: &str, path: &std::path::Path) -> Result<u64, StoreError> {
        use std::io::Write;
        let io = |source| StoreError::Io { path: path.to_owned(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let mut reader = self.upload_reader(org_id, id).await?;
        let mut total = 0;
        while let Some(b) = reader.next().await? {
            file.write_all(&b).map_err(io)?;
            total += b.len() as u64;
        }
        file.sync_all().map_err(io)?;
        Ok(total)
    }

    /// Sets how long the organisation's uploads and results are kept, and moves the expiry
    /// of those already stored to match (counted from each upload's completion).
    pub async fn set_upload_retention(&self, org_id: &str, days: i64) -> Result<(), StoreError> {
        if !(1..=3650).contains(&days) {
            return Err(StoreError::Invalid(format!("upload_retention_days: 1 to 3650 days, got {days}")));
        }
        let mut tx = self.db.pool.begin().await.map_err(db_err("set retention"))?;
        let run = |sql: &'static str| sqlx::query(sql).bind(org_id);
        run("UPDATE orgs SET upload_retention_days = $2 WHERE id = $1")
            .bind(days)
            .execute(&mut *tx)
            .await
            .map_err(db_err("set retention"))?;
        run("UPDATE uploads SET expires_us = completed_us + $2 WHERE org_id = $1 AND state = 'ready'")
            .bind(days * DAY_US)
            .execute(&mut *tx)
            .await
            .map_err(db_err("set retention"))?;
        // Parts and results take their upload's new expiry.
        for sql in [
            "UPDATE objects SET expires_us = (SELECT u.expires_us FROM uploads u WHERE u.id = objects.owner)
             WHERE org_id = $1 AND class = 'upload'
               AND owner IN (SELECT id FROM uploads WHERE org_id = $1 AND state = 'ready')",
            "UPDATE objects SET expires_us = (SELECT u.expires_us FROM uploads u JOIN jobs j ON j.upload_id = u.id
                                               WHERE j.id = objects.owner)
             WHERE org_id = $1 AND class = 'result'
               AND owner IN (SELECT j.id FROM jobs j JOIN uploads u ON u.id = j.upload_id
                             WHERE j.org_id = $1 AND u.state = 'ready')",
        ] {
            run(sql).execute(&mut *tx).await.map_err(db_err("set retention"))?;
        }
        tx.commit().await.map_err(db_err("set retention"))?;
        tracing::info!(org = %org_id, days, "upload retention changed");
        Ok(())
    }

    /// Deletes every expired upload and object (with its reason in the purge log).
    pub async fn purge(&self) -> Result<PurgeReport, StoreError> {
        let mut report = PurgeReport::default();
        let now = self.db.now_us();
        let rows = sqlx::query("SELECT id, org_id, state FROM uploads WHERE expires_us <= $1 ORDER BY expires_us")
            .bind(now)
            .fetch_all(&self.db.pool)
            .await
            .map_err(db_err("list expired uploads"))?;
        for row in rows {
            let get = db_err("list expired uploads");
            let (id, org, state): (String, String, String) = (
                row.try_get("id").map_err(&get)?,
                row.try_get("org_id").map_err(&get)?,
                row.try_get("state").map_err(&get)?,
            );
            let reason = if state == "ready" { "retention expired" } else { "upload never completed" };
            // One failure must not hold back the rest: it is logged and retried next time.
            match self.delete_upload(&org, &id, reason).await {
                Ok(n) => {
                    report.objects += n;
                    report.uploads += 1;
                }
                Err(e) => {
                    tracing::error!(org = %org, upload = %id, error = %e, "purge of an upload failed");
                    report.failed += 1;
                }
            }
        }
        let mut offset = 0;
        loop {
            let batch = self.expired(500, offset).await?;
            if batch.is_empty() {
                break;
            }
            for object in &batch {
                match self.delete(object, "retention expired").await {
                    Ok(()) => report.objects += 1,
                    Err(e) => {
                        tracing::error!(object = %object.key, error = %e, "purge of an object failed");
                        report.failed += 1;
                        offset += 1;
                    }
                }
            }
        }
        tracing::info!(uploads = report.uploads, objects = report.objects, "purge done");
        Ok(report)
    }
}

/// What one purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub uploads: usize,
    pub objects: usize,
    /// Deletions that failed (logged; tried again at the next purge).
    pub failed: usize,
}

/// An upload's plaintext, part after part.
pub struct UploadReader {
    storage: Storage,
    org_id: String,
    keys: VecDeque<String>,
    current: Option<ObjectReader>,
}

impl UploadReader {
    /// The next plaintext bytes, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if let Some(reader) = &mut self.current
                && let Some(b) = reader.next().await?
            {
                return Ok(Some(b));
            }
            let Some(key) = self.keys.pop_front() else { return Ok(None) };
            self.current = Some(self.storage.reader(&self.org_id, &key).await?);
        }
    }
}
