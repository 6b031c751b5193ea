//! Encrypted, retention-tagged storage: one test body against SQLite with a local directory
//! and against PostgreSQL with a real S3 server (SeaweedFS).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;
use retail_lake::S3Settings;
use retail_store::{
    DAY_US, Db, ManualClock, MasterKey, MediaInfo, MediaKind, RetentionClass, Signup, Storage, StoreError, UploadState,
};

const MAX: i64 = 64 * 1024 * 1024;

/// An MP4 signature and then 9 MiB that is easy to spot: more than one multipart part and
/// many encryption chunks.
fn footage() -> Vec<u8> {
    let mut v = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41".to_vec();
    let mut x: u32 = 1;
    while v.len() < 9 * 1024 * 1024 + 12_345 {
        if v.len().is_multiple_of(4096) {
            v.extend_from_slice(b"PLAINTEXT-MARKER");
        }
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        v.push((x >> 16) as u8);
    }
    v
}

/// `data` as a request body in pieces of `piece` bytes; `cut_after` ends it with an error
/// (a client that went away) after that many bytes.
fn body(
    data: &[u8],
    piece: usize,
    cut_after: Option<usize>,
) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
    let end = cut_after.unwrap_or(data.len());
    let mut items: Vec<Result<Bytes, String>> =
        data[..end].chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    if cut_after.is_some() {
        items.push(Err("connection reset".into()));
    }
    futures::stream::iter(items)
}

async fn raw_keys(storage: &Storage) -> Vec<String> {
    let os = storage.object_store();
    let prefix = storage.location("");
    let mut keys: Vec<String> = os
        .list(if prefix.as_ref().is_empty() { None } else { Some(&prefix) })
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn storage_body(db: Db, clock: Arc<ManualClock>, url: &str, s3: &S3Settings) {
    let master = MasterKey::generate();
    let storage = Storage::open(db.clone(), url, s3, MasterKey::parse(&master).unwrap()).unwrap();
    let signup = |org: &str, email: &str| Signup {
        org_name: org.into(),
        name: "Ada".into(),
        email: email.into(),
        password: "a long enough password".into(),
        adult: true,
    };
    let a = db.signup(&signup("Acme", "ada@example.com")).await.unwrap().org.id;
    let b = db.signup(&signup("Bolt", "bob@example.com")).await.unwrap().org.id;
    let data = footage();

    // Declared sizes: empty and over the limit are refused before a byte is sent.
    let err = storage.create_upload(&a, "u", "x.mp4", 0, MAX).await.unwrap_err();
    assert!(err.to_string().contains("at least 1 byte"), "{err}");
    let err = storage.create_upload(&a, "u", "x.mp4", MAX + 1, MAX).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge(_)) && err.to_string().contains("limit"), "{err}");

    // Streamed in two requests: the first is cut off, the second resumes where it stopped.
    let up = storage.create_upload(&a, "u", "door.mp4", data.len() as i64, MAX).await.unwrap();
    let cut = 3 * 1024 * 1024 + 77;
    let err = storage.append_upload(&a, &up.id, 0, body(&data, 64 * 1024 + 3, Some(cut))).await.unwrap_err();
    assert!(matches!(err, StoreError::Interrupted { received, .. } if received == cut as i64), "{err}");
    assert_eq!(storage.upload(&a, &up.id).await.unwrap().received_bytes, cut as i64);
    let err = storage.append_upload(&a, &up.id, 0, body(&data, 1000, None)).await.unwrap_err();
    assert!(err.to_string().contains(&format!("continue at offset {cut}")), "{err}");
    let done = storage.append_upload(&a, &up.id, cut as i64, body(&data[cut..], 100_000, None)).await.unwrap();
    assert!(done.is_complete() && done.kind == Some(MediaKind::Video), "{done:?}");
    let info = MediaInfo { duration_ms: Some(39_750), width: 768, height: 576 };
    let ready = storage.complete_upload(&a, &up.id, info).await.unwrap();
    assert_eq!(ready.state, UploadState::Ready);
    assert_eq!(ready.expires_us, clock_now(&db) + 90 * DAY_US);
    // The organisation's retention moves what is stored too; 90 days again for what follows.
    let err = storage.set_upload_retention(&a, 0).await.unwrap_err();
    assert!(err.to_string().contains("1 to 3650 days"), "{err}");
    storage.set_upload_retention(&a, 30).await.unwrap();
    assert_eq!(storage.upload(&a, &up.id).await.unwrap().expires_us, ready.completed_us.unwrap() + 30 * DAY_US);
    let parts = storage.objects_of(&a, &up.id).await.unwrap();
    assert!(parts.iter().all(|o| o.expires_us == ready.completed_us.unwrap() + 30 * DAY_US), "{parts:?}");
    assert_eq!(storage.upload(&b, &up.id).await.map(|u| u.expires_us).ok(), None);
    storage.set_upload_retention(&a, 90).await.unwrap();
    assert_eq!(storage.upload(&a, &up.id).await.unwrap().expires_us, ready.expires_us);

    // What comes back is what went in; what lies in the store is not.
    let mut reader = storage.upload_reader(&a, &up.id).await.unwrap();
    let mut back = Vec::new();
    while let Some(b) = reader.next().await.unwrap() {
        back.extend_from_slice(&b);
    }
    assert!(back == data, "read back {} bytes, differently", back.len());
    let keys = raw_keys(&storage).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let os = storage.object_store();
    for k in &keys {
        let raw = os.get(&ObjPath::from(k.as_str())).await.unwrap().bytes().await.unwrap();
        assert!(!raw.windows(16).any(|w| w == b"PLAINTEXT-MARKER"), "plaintext in {k}");
    }
    // Seeking: a range from inside the second part.
    let part = storage.objects_of(&a, &up.id).await.unwrap().pop().unwrap();
    let mut r = storage.reader(&a, &part.key).await.unwrap();
    r.seek(1_000_003);
    let tail = r.read_all().await.unwrap();
    assert!(tail == data[cut + 1_000_003..], "seek read the wrong bytes");
    // Another organisation sees none of it.
    assert!(matches!(storage.upload(&b, &up.id).await, Err(StoreError::NotFound { .. })));
    assert!(storage.reader(&b, &part.key).await.is_err());
    assert!(storage.uploads(&b).await.unwrap().is_empty());

    // A flipped byte in the store fails the read.
    let first = ObjPath::from(keys[0].as_str());
    let mut raw = os.get(&first).await.unwrap().bytes().await.unwrap().to_vec();
    let at = raw.len() / 2;
    raw[at] ^= 0x40;
    os.put(&first, raw.clone().into()).await.unwrap();
    let mut reader = storage.upload_reader(&a, &up.id).await.unwrap();
    let err = loop {
        match reader.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a flipped byte went unnoticed"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("fails authentication"), "{err}");
    raw[at] ^= 0x40;
    os.put(&first, raw.into()).await.unwrap();

    // Refused uploads leave nothing: random bytes, more than declared.
    let before = raw_keys(&storage).await;
    let junk: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let j = storage.create_upload(&a, "u", "notes.mp4", junk.len() as i64, MAX).await.unwrap();
    let err = storage.append_upload(&a, &j.id, 0, body(&junk, 700, None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unsupported(_)) && err.to_string().contains("notes.mp4"), "{err}");
    let big = storage.create_upload(&a, "u", "big.mp4", 1_000_000, MAX).await.unwrap();
    let err = storage.append_upload(&a, &big.id, 0, body(&data[..1_500_000], 65_536, None)).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge(_)), "{err}");
    assert_eq!(raw_keys(&storage).await, before);
    let ids: Vec<String> = storage.uploads(&a).await.unwrap().into_iter().map(|u| u.id).collect();
    assert_eq!(ids, vec![up.id.clone()]);

    // Retention: an unfinished upload goes after a day; the finished one after 90; the
    // aggregates and billing records stay 7 years.
    let half = storage.create_upload(&a, "u", "half.mp4", 2_000_000, MAX).await.unwrap();
    let _ = storage.append_upload(&a, &half.id, 0, body(&data[..500_000], 65_536, Some(400_000))).await;
    let year7 = clock_now(&db) + RetentionClass::Aggregate.days(90) * DAY_US;
    storage.put(&a, "acme/aggregates/2026.parquet", RetentionClass::Aggregate, "lake", year7, b"agg").await.unwrap();
    storage.put(&a, "acme/billing/2026-12.json", RetentionClass::Billing, "ledger", year7, b"bill").await.unwrap();
    clock.advance_s(2 * 86_400);
    let report = storage.purge().await.unwrap();
    assert_eq!((report.uploads, report.objects), (1, 1), "{report:?}");
    assert!(storage.upload(&a, &half.id).await.is_err());
    clock.advance_s(89 * 86_400);
    let report = storage.purge().await.unwrap();
    assert_eq!((report.uploads, report.objects), (1, 2), "{report:?}");
    let left = raw_keys(&storage).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|k| k.contains("aggregates") || k.contains("billing")), "{left:?}");
    let mut r = storage.reader(&a, "acme/billing/2026-12.json").await.unwrap();
    assert_eq!(r.read_all().await.unwrap(), b"bill");
    let log = storage.purge_log(&a, 100).await.unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().any(|l| l.reason == "retention expired" && l.class == "upload" && l.bytes > 0), "{log:?}");
    assert!(log.iter().any(|l| l.reason == "upload never completed"), "{log:?}");
    assert!(storage.purge_log(&b, 100).await.unwrap().is_empty());

    // Deleting on request removes the bytes at once.
    let now = storage.create_upload(&b, "u", "b.mp4", 100_000, MAX).await.unwrap();
    storage.append_upload(&b, &now.id, 0, body(&data[..100_000], 10_000, None)).await.unwrap();
    assert_eq!(raw_keys(&storage).await.len(), 3);
    storage.delete_upload(&b, &now.id, "deleted on request by usr_x").await.unwrap();
    assert_eq!(raw_keys(&storage).await.len(), 2);
    assert_eq!(storage.purge_log(&b, 10).await.unwrap()[0].reason, "deleted on request by usr_x");

    // An object deleted while it is written (its upload deleted, or purged) leaves no bytes.
    let key = format!("{a}/results/job_x/summary.json");
    let mut w = storage.create(&a, &key, RetentionClass::Result, "job_x", year7).await.unwrap();
    w.write(&data[..300_000]).await.unwrap();
    let object = storage.object(&a, &key).await.unwrap();
    storage.delete(&object, "deleted on request by usr_x").await.unwrap();
    assert!(w.finish().await.is_err(), "a deleted object was completed");
    assert_eq!(raw_keys(&storage).await.len(), 2, "bytes without a row");
    // A second purger (another server) that read the same row logs no second deletion.
    let logged = storage.purge_log(&a, 100).await.unwrap().len();
    storage.delete(&object, "retention expired").await.unwrap();
    assert_eq!(storage.purge_log(&a, 100).await.unwrap().len(), logged, "one deletion logged twice");

    // Storage is metered once a day per class from the objects' tags (billing records free here).
    let rate = |c: RetentionClass| if c == RetentionClass::Billing { 0.0 } else { 1000.0 };
    assert_eq!(storage.meter_storage(&rate).await.unwrap(), 1);
    assert_eq!(storage.meter_storage(&rate).await.unwrap(), 0, "a day was charged twice");
    let ledger = db.ledger(&a, 10).await.unwrap();
    assert_eq!(ledger[0].kind, "storage");
    assert!(ledger[0].reason.contains("GB-days of aggregate objects"), "{:?}", ledger[0]);
    assert_eq!(db.balance(&a).await.unwrap(), -1);
    assert_eq!(db.ledger_sum(&a).await.unwrap(), -1);
    clock.advance_s(86_400);
    assert_eq!(storage.meter_storage(&rate).await.unwrap(), 1);

    // Another master key opens nothing, and says so.
    let wrong = Storage::open(db.clone(), url, s3, MasterKey::parse(&MasterKey::generate()).unwrap()).unwrap();
    let err = wrong.reader(&a, "acme/billing/2026-12.json").await.err().unwrap();
    assert!(err.to_string().contains("master key"), "{err}");
    assert!(!err.to_string().contains(&master), "{err}");
}

fn clock_now(db: &Db) -> i64 {
    db.now_us()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_on_sqlite_and_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("retail.db").display());
    let clock = Arc::new(ManualClock::starting_now());
    let db = Db::open_with_clock(&url, clock.clone()).await.unwrap();
    let objects = dir.path().join("objects");
    storage_body(db, clock, objects.to_str().unwrap(), &S3Settings::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_on_postgres_and_s3() {
    let pg = retail_testkit::Postgres::start();
    let s3 = retail_testkit::SeaweedFs::start();
    let clock = Arc::new(ManualClock::starting_now());
    let db = Db::open_with_clock(&pg.new_database(), clock.clone()).await.unwrap();
    let settings = S3Settings {
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(retail_testkit::S3_ACCESS_KEY.into()),
        secret_access_key: Some(retail_core::Secret::new(retail_testkit::S3_SECRET_KEY)),
    };
    storage_body(db, clock, &format!("s3://{}/uploads-test", retail_testkit::S3_BUCKET), &settings).await;
}
