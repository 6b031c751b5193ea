//! The API through a real socket with an HTTP client, on SQLite and on a real PostgreSQL:
//! one test body for both. The server's log is captured and searched for secrets.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use retail_api::{ApiConfig, AppState};
use retail_lake::S3Settings;
use retail_store::{Db, ManualClock, MasterKey, Storage};
use serde_json::{Value, json};

const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijklmnop";

/// Everything the process logs, for the secret checks.
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Server {
    base: String,
    http: reqwest::Client,
    clock: Arc<ManualClock>,
    storage: Storage,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const MAX_UPLOAD: i64 = 40 * 1024 * 1024;

async fn start(db_url: &str, objects: &str, s3: &S3Settings, scratch: &std::path::Path) -> Server {
    let _ = log();
    let clock = Arc::new(ManualClock::starting_now());
    let db = Db::open_with_clock(db_url, clock.clone()).await.unwrap();
    let storage = Storage::open(db, objects, s3, MasterKey::parse(MASTER_KEY).unwrap()).unwrap();
    let config = ApiConfig {
        jwt_secret: retail_core::Secret::new(JWT_SECRET),
        // The walk below makes many calls with one key; the per-key limit is not under test here.
        requests_per_second: 10_000,
        burst: 10_000,
        max_upload_bytes: MAX_UPLOAD,
        scratch_dir: scratch.to_owned(),
        ..ApiConfig::default()
    };
    let state = AppState::new(storage.clone(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(retail_api::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Server { base, http: reqwest::Client::new(), clock, storage, _shutdown: tx }
}

/// How a request authenticates.
#[derive(Clone)]
enum Auth {
    None,
    Key(String),
    Cookie(String),
}

impl Server {
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        req = match auth {
            Auth::None => req,
            Auth::Key(k) => req.bearer_auth(k),
            Auth::Cookie(c) => req.header("cookie", format!("retail_session={c}")),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }

    async fn signup(&self, org: &str, email: &str) -> Value {
        let (s, v, _) = self
            .call("POST", "/v1/signup", &Auth::None, Some(json!({"organisation": org, "name": "Ada", "email": email, "password": "a long enough password", "adult": true})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Logs in; the session token from the cookie.
    async fn login(&self, email: &str) -> String {
        let (s, v, h) = self
            .call("POST", "/v1/login", &Auth::None, Some(json!({"email": email, "password": "a long enough password"})))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let cookie = h.get("set-cookie").unwrap().to_str().unwrap().to_owned();
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "the session cookie lacks {attr}: {cookie}");
        }
        cookie.strip_prefix("retail_session=").unwrap().split(';').next().unwrap().to_owned()
    }

    async fn key(&self, auth: &Auth, role: &str) -> (String, String) {
        let (s, v, _) =
            self.call("POST", "/v1/api-keys", auth, Some(json!({"name": format!("{role} key"), "role": role}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (v["key"]["id"].as_str().unwrap().to_owned(), v["secret"].as_str().unwrap().to_owned())
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, words: &str) {
    assert_eq!(status, want, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "error message {message:?} lacks {words:?}");
    assert!(body["request_id"].as_str().is_some_and(|id| id.starts_with("req_")), "{body}");
}

async fn api_body(server: Server) {
    let none = Auth::None;
    // Signup: 18+ attested, fields named in errors.
    let (s, v, _) = server
        .call("POST", "/v1/signup", &none, Some(json!({"organisation": "Acme", "name": "Ada", "email": "ada@acme.test", "password": "a long enough password", "adult": false})))
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "18 or older");
    let (s, v, _) = server.call("POST", "/v1/signup", &none, Some(json!({"organisation": "Acme"}))).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "missing field");
    let a = server.signup("Acme", "ada@acme.test").await;
    let b = server.signup("Beta", "bea@beta.test").await;
    let a_org = a["organisation"]["id"].as_str().unwrap().to_owned();

    // Login: a wrong password and an unknown email get the same 401.
    let (s, v, _) = server
        .call("POST", "/v1/login", &none, Some(json!({"email": "ada@acme.test", "password": "wrong password!"})))
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "wrong email or password");
    let a_session = server.login("ada@acme.test").await;
    let a_owner = Auth::Cookie(a_session.clone());
    let (s, me, _) = server.call("GET", "/v1/me", &a_owner, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((me["organisation"]["id"].as_str(), me["role"].as_str()), (Some(a_org.as_str()), Some("owner")));

    // Keys: shown once, scoped to a role.
    let (admin_id, admin_secret) = server.key(&a_owner, "admin").await;
    let (_, viewer_secret) = server.key(&a_owner, "viewer").await;
    let (_, analyst_secret) = server.key(&a_owner, "analyst").await;
    let analyst_secret_copy = analyst_secret.clone();
    let a_admin = Auth::Key(admin_secret.clone());
    let a_viewer = Auth::Key(viewer_secret.clone());
    let (s, list, _) = server.call("GET", "/v1/api-keys", &a_admin, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains(&admin_secret), "a listed key shows its secret");
    // A viewer cannot do an admin's action; an admin cannot make an owner key.
    let (s, v, _) = server.call("POST", "/v1/api-keys", &a_viewer, Some(json!({"name": "x", "role": "viewer"}))).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "a viewer cannot manage-access");
    let (s, v, _) = server.call("POST", "/v1/users", &Auth::Key(analyst_secret_copy), Some(json!({"name": "Eve", "email": "eve@acme.test", "password": "a long enough password", "role": "viewer", "adult": true}))).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "cannot manage-access");
    let (s, v, _) = server.call("POST", "/v1/api-keys", &a_admin, Some(json!({"name": "x", "role": "owner"}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "cannot make a key with role owner");
    let (s, _, _) = server.call("GET", "/v1/me", &a_viewer, None).await;
    assert_eq!(s, StatusCode::OK);

    // Wrong, revoked and tampered credentials: 401.
    let (s, v, _) = server.call("GET", "/v1/me", &Auth::Key("rk_not_a_key".into()), None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "invalid or revoked API key");
    let mut tampered: Vec<char> = a_session.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let (s, v, _) = server.call("GET", "/v1/me", &Auth::Cookie(tampered.into_iter().collect()), None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "invalid session");
    let (s, v, _) = server.call("GET", "/v1/me", &none, None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "authentication required");

    let upload_id = uploads_body(&server, &analyst_secret, &viewer_secret).await;

    // Tenant B, with every route of the OpenAPI document, gets nothing of A's.
    let b_session = server.login("bea@beta.test").await;
    let b_owner = Auth::Cookie(b_session);
    let (_, b_secret) = server.key(&b_owner, "owner").await;
    let a_ids = [a_org.clone(), a["user"]["id"].as_str().unwrap().to_owned(), admin_id.clone(), upload_id.clone()];
    let (s, doc, _) = server.call("GET", "/openapi.json", &none, None).await;
    assert_eq!(s, StatusCode::OK);
    let mut walked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("security").is_none() {
                continue; // public routes (signup, login, …) act for nobody yet
            }
            for auth in [Auth::Key(b_secret.clone()), b_owner.clone()] {
                for id in &a_ids {
                    let concrete = path.replace("{id}", id);
                    let body = (method == "post").then(|| json!({}));
                    let (s, v, _) = server.call(&method.to_uppercase(), &concrete, &auth, body).await;
                    walked += 1;
                    // The id B asked for may be echoed ("… not found"); nothing else of A's may show.
                    let text = v.to_string().replace(id.as_str(), "<asked>");
                    for secret_or_id in a_ids.iter().chain([&admin_secret, &a_session]) {
                        assert!(
                            !text.contains(secret_or_id.as_str()),
                            "{method} {concrete} as B shows A's {secret_or_id}: {text}"
                        );
                    }
                    assert!(!s.is_server_error(), "{method} {concrete}: {s} {v}");
                }
            }
        }
    }
    assert!(walked >= 2 * 4 * 13, "only {walked} calls: is the document missing routes?");
    // A's upload is still there: B's DELETE did not delete it.
    let (s, v, _) = server.call("GET", &format!("/v1/uploads/{upload_id}"), &a_viewer, None).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("ready")), "{v}");
    let (s, _, _) = server.call("DELETE", &format!("/v1/uploads/{upload_id}"), &a_viewer, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a viewer deleted data");
    let (s, _, _) =
        server.call("DELETE", &format!("/v1/uploads/{upload_id}"), &Auth::Key(analyst_secret.clone()), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = server.call("GET", &format!("/v1/uploads/{upload_id}/content"), &a_viewer, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(raw_objects(&server.storage).await.is_empty(), "bytes left after the delete");
    let (s, purged, _) = server.call("GET", "/v1/purge-log", &a_owner, None).await;
    assert_eq!(s, StatusCode::OK, "{purged}");
    assert!(purged.to_string().contains("deleted on request by"), "{purged}");
    // Retention is the organisation's setting: admins and owners only.
    let (s, v, _) = server.call("PUT", "/v1/retention", &a_viewer, Some(json!({"upload_retention_days": 30}))).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "cannot manage-settings");
    let (s, v, _) = server.call("PUT", "/v1/retention", &a_owner, Some(json!({"upload_retention_days": 0}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "1 to 3650 days");
    let (s, v, _) = server.call("PUT", "/v1/retention", &a_owner, Some(json!({"upload_retention_days": 30}))).await;
    assert_eq!((s, v["upload_retention_days"].as_i64()), (StatusCode::OK, Some(30)), "{v}");
    // A's key still works: B's DELETE did not revoke it.
    let (s, _, _) = server.call("GET", "/v1/me", &a_admin, None).await;
    assert_eq!(s, StatusCode::OK, "B revoked A's key");
    let (s, users, _) = server.call("GET", "/v1/users", &Auth::Key(b_secret), None).await;
    assert_eq!((s, users.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    assert_eq!(b["organisation"]["name"], "Beta");

    // Revoked: 401 at once. Expired sessions: 401 (the clock moves past 12 hours).
    let (s, _, _) = server.call("DELETE", &format!("/v1/api-keys/{admin_id}"), &a_owner, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v, _) = server.call("GET", "/v1/me", &a_admin, None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "invalid or revoked");
    server.clock.advance_s(12 * 3600 + 1);
    let (s, v, _) = server.call("GET", "/v1/me", &a_owner, None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "expired");

    // JSON 404s; the OpenAPI document lists every route.
    let (s, v, _) = server.call("GET", "/v1/nothing", &none, None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not found");
    for p in [
        "/v1/signup",
        "/v1/login",
        "/v1/logout",
        "/v1/verify-email",
        "/v1/me",
        "/v1/users",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/uploads",
        "/v1/uploads/{id}",
        "/v1/uploads/{id}/content",
        "/v1/purge-log",
        "/v1/retention",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/results/{name}",
        "/v1/credits",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from /openapi.json");
    }

    // Secrets never reach the log; requests do, by route template and tenant.
    let log = String::from_utf8(log().lock().unwrap().clone()).unwrap();
    for secret in [
        admin_secret.as_str(),
        viewer_secret.as_str(),
        a_session.as_str(),
        JWT_SECRET,
        MASTER_KEY,
        "a long enough password",
    ] {
        assert!(!log.contains(secret), "the log shows a secret");
    }
    assert!(log.contains("route=/v1/api-keys/{id}"), "no request line for the key route");
    assert!(log.contains(&format!("tenant={a_org}")), "request lines lack the tenant");
}

/// Every object in the raw store.
async fn raw_objects(storage: &Storage) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = storage.location("");
    let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
    storage.object_store().list(prefix.as_ref()).map_ok(|m| m.location.to_string()).try_collect().await.unwrap()
}

/// Sends a PATCH whose connection drops after `cut` of `data`'s bytes.
async fn patch_cut_off(base: &str, key: &str, id: &str, data: &[u8], cut: usize) {
    use std::io::Write;
    let addr = base.trim_start_matches("http://").to_owned();
    let head = format!(
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    let sent = data[..cut].to_vec();
    tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        tcp.write_all(&sent).unwrap();
        tcp.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    })
    .await
    .unwrap();
}

/// A PATCH at offset 0 written whole onto a socket before its answer is read.
async fn patch_whole(base: &str, key: &str, id: &str, body: Vec<u8>) -> (StatusCode, Value) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").to_owned();
    let head = format!(
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nUpload-Offset: 0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        let _ = tcp.write_all(&body);
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (StatusCode::from_u16(status).unwrap(), serde_json::from_str(json).unwrap_or(Value::Null))
}

async fn patch(
    server: &Server,
    auth: &Auth,
    id: &str,
    offset: usize,
    bytes: Vec<u8>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req =
        server.http.patch(format!("{}/v1/uploads/{id}", server.base)).header("upload-offset", offset).body(bytes);
    if let Auth::Key(k) = auth {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap(), headers)
}

/// Uploads through the API: resumed after a dropped connection, read back, and every kind
/// of bad file refused with its reason and nothing left stored. The good upload's id.
async fn uploads_body(server: &Server, analyst: &str, viewer: &str) -> String {
    let (analyst, viewer) = (Auth::Key(analyst.to_owned()), Auth::Key(viewer.to_owned()));
    let video = std::fs::read(retail_testkit::rtsp::h264_fixture(20)).unwrap();
    let announce = |name: &str, size: usize, auth: &Auth| {
        let body = json!({"filename": name, "size": size});
        let auth = auth.clone();
        async move { server.call("POST", "/v1/uploads", &auth, Some(body)).await }
    };
    let (s, v, _) = announce("door.mp4", video.len(), &viewer).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "a viewer cannot analyse");
    let (s, up, _) = announce("door.mp4", video.len(), &analyst).await;
    assert_eq!(s, StatusCode::CREATED, "{up}");
    let id = up["id"].as_str().unwrap().to_owned();

    // The connection drops a third of the way in; the client asks where to go on, and does.
    let cut = video.len() / 3;
    patch_cut_off(
        &server.base,
        match &analyst {
            Auth::Key(k) => k,
            _ => unreachable!(),
        },
        &id,
        &video,
        cut,
    )
    .await;
    let mut offset = 0;
    for _ in 0..50 {
        let (_, v, h) = server.call("GET", &format!("/v1/uploads/{id}"), &viewer, None).await;
        offset = v["offset"].as_u64().unwrap() as usize;
        assert_eq!(h.get("upload-offset").unwrap().to_str().unwrap(), offset.to_string());
        if offset > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(offset, cut, "the bytes before the drop were not kept");
    // Small bodies where the server answers without reading them: a large one could still be
    // on its way when the connection closes, and the client would see a broken pipe instead.
    let (s, v, h) = patch(server, &analyst, &id, 0, video[..100].to_vec()).await;
    assert_error(s, &v, StatusCode::CONFLICT, &format!("Upload-Offset: {cut}"));
    assert_eq!(h.get("upload-offset").unwrap().to_str().unwrap(), cut.to_string());
    let (s, v, _) = patch(server, &analyst, &id, cut, video[cut..].to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["kind"].as_str(), v["width"].as_i64()),
        (Some("ready"), Some("video"), Some(768)),
        "{v}"
    );
    assert!(v["duration_ms"].as_i64().is_some_and(|d| (39_000..41_000).contains(&d)), "{v}");
    let back = server
        .http
        .get(format!("{}/v1/uploads/{id}/content", server.base))
        .bearer_auth(match &viewer {
            Auth::Key(k) => k,
            _ => unreachable!(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(back.headers().get("content-type").unwrap(), "video/mp4");
    assert!(back.bytes().await.unwrap() == video, "the download differs from the upload");
    let good_objects = raw_objects(&server.storage).await;
    assert_eq!(good_objects.len(), 2, "{good_objects:?}");

    // Refused, each with its reason, and nothing of them stored.
    let junk: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let truncated = video[..video.len() * 6 / 10].to_vec();
    for (name, bytes, status, words) in [
        ("junk.mp4", junk, StatusCode::UNSUPPORTED_MEDIA_TYPE, "junk.mp4: neither a video nor an image"),
        ("cut.mp4", truncated, StatusCode::UNPROCESSABLE_ENTITY, "cut.mp4"),
    ] {
        let (s, up, _) = announce(name, bytes.len(), &analyst).await;
        assert_eq!(s, StatusCode::CREATED, "{up}");
        let (s, v, _) = patch(server, &analyst, up["id"].as_str().unwrap(), 0, bytes).await;
        assert_error(s, &v, status, words);
        assert!(!v.to_string().contains(".check"), "the scratch path leaked: {v}");
    }
    let (s, v, _) = announce("empty.mp4", 0, &analyst).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "at least 1 byte");
    let (s, v, _) = announce("huge.mp4", MAX_UPLOAD as usize + 1, &analyst).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "limit");
    let (s, small, _) = announce("small.mp4", 1000, &analyst).await;
    assert_eq!(s, StatusCode::CREATED);
    // The server answers before reading the rest, so the whole body is sent before the answer
    // is read (an HTTP client may see the connection closed mid-body instead).
    let key = match &analyst {
        Auth::Key(k) => k.clone(),
        _ => unreachable!(),
    };
    let (s, v) = patch_whole(&server.base, &key, small["id"].as_str().unwrap(), video[..5000].to_vec()).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "more bytes than the 1000 declared");
    let (_, list, _) = server.call("GET", "/v1/uploads", &viewer, None).await;
    let ids: Vec<&str> = list.as_array().unwrap().iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids, vec![id.as_str()], "refused uploads are still listed");
    assert_eq!(raw_objects(&server.storage).await, good_objects, "refused uploads left bytes");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_sqlite_and_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let server = start(
        &format!("sqlite://{}", dir.path().join("retail.db").display()),
        objects.to_str().unwrap(),
        &S3Settings::default(),
        dir.path(),
    )
    .await;
    api_body(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_postgres_and_s3() {
    let pg = retail_testkit::Postgres::start();
    let s3 = retail_testkit::SeaweedFs::start();
    let settings = S3Settings {
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(retail_testkit::S3_ACCESS_KEY.into()),
        secret_access_key: Some(retail_core::Secret::new(retail_testkit::S3_SECRET_KEY)),
    };
    let dir = tempfile::tempdir().unwrap();
    let objects = format!("s3://{}/api-test", retail_testkit::S3_BUCKET);
    let server = start(&pg.new_database(), &objects, &settings, dir.path()).await;
    api_body(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_from_one_address_are_limited_with_a_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("retail.db").display());
    let server = start(&db, dir.path().join("objects").to_str().unwrap(), &S3Settings::default(), dir.path()).await;
    server.signup("Acme", "ada@acme.test").await;
    let mut refused = None;
    for attempt in 1..=12 {
        let (s, v, h) = server
            .call(
                "POST",
                "/v1/login",
                &Auth::None,
                Some(json!({"email": "ada@acme.test", "password": "guess number one"})),
            )
            .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert!(h.get("retry-after").is_some(), "429 without Retry-After");
            assert_error(s, &v, StatusCode::TOO_MANY_REQUESTS, "too many login attempts");
            refused = Some(attempt);
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(refused, Some(11), "the 11th login in a minute must be refused");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_exports_everything_and_erases_the_organisation() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("retail.db").display());
    let server = start(&db, dir.path().join("objects").to_str().unwrap(), &S3Settings::default(), dir.path()).await;
    let org = server.signup("Acme", "ada@acme.test").await["organisation"]["id"].as_str().unwrap().to_owned();
    let owner_cookie = Auth::Cookie(server.login("ada@acme.test").await);
    let (_, owner_secret) = server.key(&owner_cookie, "owner").await;
    let (_, admin_secret) = server.key(&owner_cookie, "admin").await;
    let owner = Auth::Key(owner_secret.clone());
    let video = std::fs::read(retail_testkit::rtsp::h264_fixture(20)).unwrap();
    let (_, up, _) =
        server.call("POST", "/v1/uploads", &owner, Some(json!({"filename": "door.mp4", "size": video.len()}))).await;
    let (s, v, _) = patch(&server, &owner, up["id"].as_str().unwrap(), 0, video).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Export: the owner's alone; everything, and no secret.
    let (s, v, _) = server.call("GET", "/v1/export", &Auth::Key(admin_secret), None).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "an admin cannot manage-billing");
    let (s, export, _) = server.call("GET", "/v1/export", &owner, None).await;
    assert_eq!(s, StatusCode::OK, "{export}");
    assert_eq!(export["organisation"]["id"], org.as_str());
    assert_eq!(export["users"][0]["email"], "ada@acme.test");
    assert_eq!(export["uploads"].as_array().unwrap().len(), 1);
    assert_eq!(export["api_keys"].as_array().unwrap().len(), 2);
    assert_eq!(export["ledger"][0]["kind"], "grant");
    let text = export.to_string();
    assert!(!text.contains("argon2") && !text.contains(&owner_secret), "the export shows a secret");

    // Erasure: confirmed by the id; then nothing of the organisation answers or remains,
    // but its ledger and the purge log of what went.
    let (s, v, _) = server.call("DELETE", "/v1/organisation", &owner, Some(json!({"confirm": "acme"}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "type the organisation's id");
    let (s, v, _) = server.call("DELETE", "/v1/organisation", &owner, Some(json!({"confirm": org}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["uploads"].as_u64(), v["users"].as_u64(), v["api_keys"].as_u64()),
        (Some(1), Some(1), Some(2)),
        "{v}"
    );
    let (s, _, _) = server.call("GET", "/v1/me", &owner, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = server.call("GET", "/v1/me", &owner_cookie, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a session outlived the erasure");
    let (s, _, _) = server
        .call(
            "POST",
            "/v1/login",
            &Auth::None,
            Some(json!({"email": "ada@acme.test", "password": "a long enough password"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(raw_objects(&server.storage).await.is_empty(), "bytes left after the erasure");
    let log = server.storage.purge_log(&org, 100).await.unwrap();
    assert!(!log.is_empty() && log.iter().all(|l| l.reason.starts_with("organisation erased on request")), "{log:?}");
    assert!(!server.storage.db().ledger(&org, 10).await.unwrap().is_empty(), "billing records went with it");
    assert!(server.storage.db().outbox("ada@acme.test").await.unwrap().is_empty(), "mail to the member stayed");
}
