//! The platform end to end: the real `retail-ai serve` binary on its embedded defaults
//! (SQLite, a local encrypted object store, in-process job workers), driven through its
//! socket with an HTTP client: signup, key, upload, an analysis job killed with its server
//! mid-run and finished by the next one, results equal to `retail-ai analyze` of the same
//! file, credits settled once and equal to the ledger, 402 without credits, delete.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(config: &Path, log: &Path) -> Self {
        let text = std::fs::read_to_string(config).unwrap();
        let listen = text.lines().find_map(|l| l.strip_prefix("listen = ")).unwrap().trim_matches('"').to_owned();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_retail-ai"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let base = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "serve did not listen on {listen}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Serve { child, base }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Signs up an organisation and takes an API key with `role`.
    async fn sign_up(&mut self, role: &str) {
        let (s, v) = self
            .call("POST", "/v1/signup", Some(json!({"organisation": "Acme", "name": "Ada", "email": "ada@acme.test", "password": "a long enough password", "adult": true})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let login = json!({"email": "ada@acme.test", "password": "a long enough password"});
        let resp = self.http.post(format!("{}/v1/login", self.base)).json(&login).send().await.unwrap();
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        let resp = self
            .http
            .post(format!("{}/v1/api-keys", self.base))
            .header("cookie", cookie)
            .json(&json!({"name": "ci", "role": role}))
            .send()
            .await
            .unwrap();
        let key: Value = resp.json().await.unwrap();
        self.key = Some(key["secret"].as_str().unwrap().to_owned());
    }

    /// Uploads a file in one request; its id.
    async fn upload(&self, path: &Path) -> String {
        let bytes = std::fs::read(path).unwrap();
        let (s, up) =
            self.call("POST", "/v1/uploads", Some(json!({"filename": "plaza.mp4", "size": bytes.len()}))).await;
        assert_eq!(s, StatusCode::CREATED, "{up}");
        let id = up["id"].as_str().unwrap().to_owned();
        let resp = self
            .http
            .patch(format!("{}/v1/uploads/{id}", self.base))
            .bearer_auth(self.key.as_ref().unwrap())
            .header("upload-offset", 0)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        id
    }

    /// Polls a job until it has succeeded or failed, for at most 300 s.
    async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let j = self.job(id).await;
            if j["state"] == "succeeded" || j["state"] == "failed" {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {j}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn job(&self, id: &str) -> Value {
        let (s, v) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

/// The job config: the sample's lines and zones (a job may not set the stream id).
fn job_config() -> String {
    std::fs::read_to_string(fixture("vtest.toml"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("id ="))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_its_server_being_killed_and_matches_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let port = retail_testkit::free_port();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata-dir = \"{}\"\ncookie-secure = false\njob-lease-s = 3\nsignup-credits = 1.0\ncredits-per-minute = 1.0\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut serve = Serve::start(&config, &log);
    let mut c = Client { http: reqwest::Client::new(), base: serve.base.clone(), key: None };

    c.sign_up("owner").await;

    // Upload the sample (39.75 s of video) in one request.
    let video_path = retail_testkit::rtsp::h264_fixture(20);
    let upload_id = c.upload(&video_path).await;

    // A bad config is refused with the CLI's message; a good one is queued.
    let bad = "[[lines]]\nname = \"door\"\nfrom = [0.5, 0.2]\nto = [0.5, 0.2]\ninside = [0.9, 0.5]\n";
    let (s, v) = c.call("POST", "/v1/jobs", Some(json!({"upload_id": upload_id, "config": bad}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let message = v["error"]["message"].as_str().unwrap().strip_prefix("config: ").unwrap().to_owned();
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let cli = Command::new(env!("CARGO_BIN_EXE_retail-ai"))
        .arg("analyze")
        .arg(&video_path)
        .arg("--config")
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&cli.stderr).contains(&message), "the CLI says otherwise than {message:?}");
    let (s, job) = c.call("POST", "/v1/jobs", Some(json!({"upload_id": upload_id, "config": job_config()}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["reserved_credits"], 0.663);
    // What is left (0.337) does not cover a second analysis: 402, and nothing queued.
    let (s, v) = c.call("POST", "/v1/jobs", Some(json!({"upload_id": upload_id, "config": job_config()}))).await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("this needs 0.663, the balance is 0.337"), "{v}");

    // The server dies mid-job; the next one takes the job over after its lease.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = c.job(&id).await;
        if j["state"] == "running" && j["frames"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the job never ran: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serve.kill();
    let mut serve = Serve::start(&config, &log);
    c.base = serve.base.clone();
    let done = c.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let (q, st, f) = (
        done["queued_us"].as_i64().unwrap(),
        done["started_us"].as_i64().unwrap(),
        done["finished_us"].as_i64().unwrap(),
    );
    assert!(q <= st && st <= f, "{done}");

    // The results are the CLI's on the same file with the same config.
    let (s, summary) = c.call("GET", &format!("/v1/jobs/{id}/results/summary.json"), None).await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    std::fs::write(dir.path().join("job.toml"), job_config()).unwrap();
    let out = dir.path().join("cli-out");
    let cli = Command::new(env!("CARGO_BIN_EXE_retail-ai"))
        .arg("analyze")
        .arg(&video_path)
        .arg("--config")
        .arg(dir.path().join("job.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let want: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    for field in ["frames", "people", "events", "lines", "zones"] {
        assert_eq!(summary[field], want[field], "{field} differs from the CLI's");
    }
    assert!(done["results"].as_array().unwrap().iter().any(|r| r == "events.jsonl"), "{done}");

    // Charged once, for the minutes processed; the balance is the ledger's sum.
    let charged = done["charged_credits"].as_f64().unwrap();
    assert!((0.6..=0.663).contains(&charged), "{done}");
    let (_, credits) = c.call("GET", "/v1/credits", None).await;
    let balance = credits["balance"].as_f64().unwrap();
    let ledger = credits["ledger"].as_array().unwrap();
    let of = |kind: &str| {
        ledger.iter().filter(|e| e["kind"] == kind).map(|e| e["credits"].as_f64().unwrap()).collect::<Vec<_>>()
    };
    // The stored bytes are metered too (each server meters at start, once a day).
    let storage: f64 = of("storage").iter().sum();
    assert_eq!(of("reserve"), [-0.663], "{credits}");
    assert!(of("refund").len() <= 1, "settled twice: {credits}");
    assert!((balance - (1.0 - charged + storage)).abs() < 1e-9, "{credits}");
    let sum: f64 = ledger.iter().map(|e| e["credits"].as_f64().unwrap()).sum();
    assert!((sum - balance).abs() < 1e-9, "ledger sums to {sum}: {credits}");

    // Deleting the upload takes its results with it.
    let (s, _) = c.call("DELETE", &format!("/v1/uploads/{upload_id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = c.call("GET", &format!("/v1/jobs/{id}/results/summary.json"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let objects = dir.path().join("data/objects");
    let left: Vec<_> = walk(&objects);
    assert!(left.is_empty(), "bytes left after the delete: {left:?}");
    serve.kill();

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains(c.key.as_ref().unwrap().as_str()), "the API key reached the log");
    let master = std::fs::read_to_string(dir.path().join("data/secrets/master.key")).unwrap();
    assert!(!log.contains(master.trim()), "the master key reached the log");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_worker_takes_the_jobs_of_a_server_that_runs_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = retail_testkit::free_port();
    let server = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata-dir = \"{data}\"\ncookie-secure = false\n\
         database-url = \"sqlite://{data}/shared.db\"\nobjects-url = \"{data}/shared-objects\"\n\
         master-key = \"{}\"\njob-lease-s = 3\n",
        "ab".repeat(32),
        data = data.display()
    );
    let serve_config = dir.path().join("serve.toml");
    std::fs::write(&serve_config, format!("{server}job-workers = 0\n")).unwrap();
    let worker_config = dir.path().join("worker.toml");
    std::fs::write(&worker_config, format!("{server}job-workers = 1\n")).unwrap();
    let log = dir.path().join("serve.log");
    let serve = Serve::start(&serve_config, &log);
    let mut c = Client { http: reqwest::Client::new(), base: serve.base.clone(), key: None };
    c.sign_up("analyst").await;
    let upload_id = c.upload(&retail_testkit::rtsp::h264_fixture(20)).await;
    let (s, job) = c.call("POST", "/v1/jobs", Some(json!({"upload_id": upload_id, "config": job_config()}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    // Nobody runs it until a worker comes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.job(&id).await["state"], "queued");
    let metrics = retail_testkit::free_port();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_retail-ai"))
        .args(["worker", "--metrics-addr", &format!("127.0.0.1:{metrics}"), "--config"])
        .arg(&worker_config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("worker.log")).unwrap())
        .spawn()
        .unwrap();
    let done = c.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    let (s, summary) = c.call("GET", &format!("/v1/jobs/{id}/results/summary.json"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(summary["frames"], 795, "{summary}");

    // A video whose first frames decode (so the upload is accepted) but which stops half-way
    // fails its own job, with the reason in the file's name, and is refunded whole.
    let mkv = dir.path().join("plaza.mkv");
    let made = Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", retail_testkit::rtsp::h264_fixture(20).display()))
        .args(["!", "qtdemux", "!", "h264parse", "!", "matroskamux", "!", "filesink"])
        .arg(format!("location={}", mkv.display()))
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::read(&mkv).unwrap();
    let half = dir.path().join("half.mkv");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let bad_upload = c.upload(&half).await;
    let (_, before) = c.call("GET", "/v1/credits", None).await;
    let (s, job) = c.call("POST", "/v1/jobs", Some(json!({"upload_id": bad_upload, "config": job_config()}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let bad = job["id"].as_str().unwrap().to_owned();
    let failed = c.finished(&bad).await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("plaza.mp4: truncated video"), "{reason}");
    assert!(!reason.contains("worker-scratch"), "the scratch path leaked: {reason}");
    let (_, after) = c.call("GET", "/v1/credits", None).await;
    assert_eq!(before["balance"], after["balance"], "the failed job was not refunded");
    // The good job's results are untouched.
    let (s, _) = c.call("GET", &format!("/v1/jobs/{id}/results/summary.json"), None).await;
    assert_eq!(s, StatusCode::OK);
}
