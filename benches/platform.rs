//! Platform benchmark, one table of medians:
//! - upload throughput (MB/s) through encryption into a local directory and into SeaweedFS,
//!   each beside a plain copy to the same place measured in the same run;
//! - a 2 GiB upload through the HTTP API on loopback: MB/s and the process's peak RSS
//!   growth (the server and the client share this process; the client reuses one buffer);
//! - job-status latency (p50/p99) under 200 concurrent clients on loopback.
//!
//! `cargo run -p retail-benches --bin platform -- --mib 256 --reps 3 --upload-mib 2048`
//! (needs scripts/setup-test-services.sh for SeaweedFS).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use object_store::{ObjectStoreExt, WriteMultipart};
use retail_api::{ApiConfig, AppState};
use retail_lake::S3Settings;
use retail_store::{Db, MasterKey, NewJob, RetentionClass, Signup, Storage};

#[derive(Parser)]
struct Args {
    /// MiB per throughput run.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// MiB of the upload through the API (RSS measured while it runs).
    #[arg(long, default_value_t = 2048)]
    upload_mib: usize,
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Status requests per client.
    #[arg(long, default_value_t = 25)]
    requests: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Peak resident set of this process so far, MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

/// 1 MiB of bytes that do not compress, after an MP4 signature.
fn buffer() -> Vec<u8> {
    let mut v = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41".to_vec();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while v.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn mbs(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

async fn signup(db: &Db, name: &str) -> String {
    let s = Signup {
        org_name: name.into(),
        name: "Bench".into(),
        email: format!("bench@{name}.test"),
        password: "a long enough password".into(),
        adult: true,
    };
    db.signup(&s).await.unwrap().org.id
}

/// MB/s of `mib` MiB: a plain copy, then sealed writes, into `storage`'s store. The plain
/// copy into a directory is a file written and fsynced (as the store fsyncs what it seals);
/// into S3, a multipart upload like the store's.
async fn throughput(
    storage: &Storage,
    local: Option<&std::path::Path>,
    org: &str,
    mib: usize,
    rep: usize,
) -> (f64, f64) {
    let buf = buffer();
    let t = Instant::now();
    if let Some(dir) = local {
        let path = dir.join(format!("plain-{rep}"));
        let mut f = std::fs::File::create(&path).unwrap();
        for _ in 0..mib {
            f.write_all(&buf).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        std::fs::remove_file(path).unwrap();
    } else {
        let os = storage.object_store();
        let plain_key = storage.location(&format!("bench/plain-{rep}"));
        let mut w = WriteMultipart::new_with_chunk_size(os.put_multipart(&plain_key).await.unwrap(), 8 << 20);
        for _ in 0..mib {
            w.write(&buf);
            w.wait_for_capacity(2).await.unwrap();
        }
        w.finish().await.unwrap();
        os.delete(&plain_key).await.unwrap();
    }
    let plain = mbs(mib << 20, t.elapsed());

    let key = format!("{org}/bench/sealed-{rep}");
    let t = Instant::now();
    let mut w = storage.create(org, &key, RetentionClass::Upload, "bench", i64::MAX).await.unwrap();
    for _ in 0..mib {
        w.write(&buf).await.unwrap();
    }
    w.finish().await.unwrap();
    let sealed = mbs(mib << 20, t.elapsed());
    let object = storage.object(org, &key).await.unwrap();
    storage.delete(&object, "benchmark").await.unwrap();
    (plain, sealed)
}

/// A server on loopback over `storage`; its address.
async fn serve(storage: Storage, scratch: &std::path::Path) -> String {
    let config = ApiConfig {
        jwt_secret: retail_core::Secret::new("bench-jwt-secret-0123456789abcdefghijklmnop"),
        requests_per_second: 1_000_000,
        burst: 1_000_000,
        max_upload_bytes: i64::MAX,
        scratch_dir: scratch.to_owned(),
        ..ApiConfig::default()
    };
    let state = AppState::new(storage, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(retail_api::serve(listener, state, std::future::pending()));
    addr
}

/// Streams `mib` MiB in one PATCH over a plain socket (one reused buffer); MB/s.
fn upload_over_http(addr: &str, key: &str, id: &str, mib: usize) -> f64 {
    let buf = buffer();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nUpload-Offset: 0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        mib << 20
    );
    let t = Instant::now();
    tcp.write_all(head.as_bytes()).unwrap();
    for _ in 0..mib {
        tcp.write_all(&buf).unwrap();
    }
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    let took = t.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "upload failed: {answer}");
    mbs(mib << 20, took)
}

async fn status_latency(addr: &str, key: &str, job: &str, clients: usize, requests: usize) -> Vec<f64> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap();
    let url = format!("http://{addr}/v1/jobs/{job}");
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, key) = (http.clone(), url.clone(), key.to_owned());
            tokio::spawn(async move {
                let mut ms = Vec::with_capacity(requests);
                for _ in 0..requests {
                    let t = Instant::now();
                    let r = http.get(&url).bearer_auth(&key).send().await.unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    r.bytes().await.unwrap();
                    ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                ms
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    all
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let master = MasterKey::generate();
    let db = Db::open(&format!("sqlite://{}", dir.path().join("bench.db").display())).await?;
    let org = signup(&db, "bench").await;
    let local = Storage::open(
        db.clone(),
        dir.path().join("objects").to_str().unwrap(),
        &S3Settings::default(),
        MasterKey::parse(&master)?,
    )?;
    let weed = retail_testkit::SeaweedFs::start();
    let s3 = S3Settings {
        endpoint: Some(weed.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(retail_testkit::S3_ACCESS_KEY.into()),
        secret_access_key: Some(retail_core::Secret::new(retail_testkit::S3_SECRET_KEY)),
    };
    let remote = Storage::open(
        db.clone(),
        &format!("s3://{}/bench", retail_testkit::S3_BUCKET),
        &s3,
        MasterKey::parse(&master)?,
    )?;

    println!("| measure | plain | encrypted | ratio |");
    println!("|---|---|---|---|");
    let objects = dir.path().join("objects");
    for (name, storage, local) in
        [("local directory, MB/s", &local, Some(objects.as_path())), ("SeaweedFS (S3), MB/s", &remote, None)]
    {
        let mut plain = Vec::new();
        let mut sealed = Vec::new();
        for rep in 0..args.reps {
            let (p, s) = throughput(storage, local, &org, args.mib, rep).await;
            plain.push(p);
            sealed.push(s);
        }
        let (p, s) = (median(plain), median(sealed));
        println!("| {name} ({} MiB, median of {}) | {p:.0} | {s:.0} | {:.2} |", args.mib, args.reps, s / p);
    }

    // The API: one large upload, then status under load.
    let addr = serve(local.clone(), dir.path()).await;
    let owner = db.users(&org).await?.remove(0);
    let made =
        db.create_api_key(&org, "bench", retail_store::Role::Owner, &owner.id, retail_store::Role::Owner).await?;
    let key = made.secret.expose().to_owned();
    // One byte more than sent: the upload stays open, so no decode check runs after it.
    let up = local.create_upload(&org, "bench", "big.mp4", ((args.upload_mib << 20) + 1) as i64, i64::MAX).await?;
    let before = peak_rss_mib();
    let (addr2, key2, id2, mib) = (addr.clone(), key.clone(), up.id.clone(), args.upload_mib);
    let rate = tokio::task::spawn_blocking(move || upload_over_http(&addr2, &key2, &id2, mib)).await?;
    let peak = peak_rss_mib();
    println!("| API upload of {} MiB, MB/s | | {rate:.0} | |", args.upload_mib);
    println!("| peak RSS before / after that upload, MiB | {before:.0} | {peak:.0} | +{:.0} |", peak - before);
    local.delete_upload(&org, &up.id, "benchmark").await?;

    let job = db
        .queue_job(&NewJob {
            org_id: &org,
            upload_id: &up.id,
            config: "",
            annotate: false,
            actor: "bench",
            reserve: 0,
            max_attempts: 1,
        })
        .await?;
    let lat = status_latency(&addr, &key, &job.id, args.clients, args.requests).await;
    println!(
        "| GET /v1/jobs/{{id}}, {} clients × {} requests, ms | p50 {:.1} | p99 {:.1} | max {:.1} |",
        args.clients,
        args.requests,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}
