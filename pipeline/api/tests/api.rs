//! The API through a real socket with an HTTP client, on SQLite and on a real PostgreSQL:
//! one test body for both. The server's log is captured and searched for secrets.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use retail_api::{ApiConfig, AppState};
use retail_store::{Db, ManualClock};
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
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start(db_url: &str) -> Server {
    let _ = log();
    let clock = Arc::new(ManualClock::starting_now());
    let db = Db::open_with_clock(db_url, clock.clone()).await.unwrap();
    let config = ApiConfig { jwt_secret: retail_core::Secret::new(JWT_SECRET), ..ApiConfig::default() };
    let state = AppState::new(db, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(retail_api::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Server { base, http: reqwest::Client::new(), clock, _shutdown: tx }
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
    let a_admin = Auth::Key(admin_secret.clone());
    let a_viewer = Auth::Key(viewer_secret.clone());
    let (s, list, _) = server.call("GET", "/v1/api-keys", &a_admin, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains(&admin_secret), "a listed key shows its secret");
    // A viewer cannot do an admin's action; an admin cannot make an owner key.
    let (s, v, _) = server.call("POST", "/v1/api-keys", &a_viewer, Some(json!({"name": "x", "role": "viewer"}))).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "a viewer cannot manage-access");
    let (s, v, _) = server.call("POST", "/v1/users", &Auth::Key(analyst_secret), Some(json!({"name": "Eve", "email": "eve@acme.test", "password": "a long enough password", "role": "viewer", "adult": true}))).await;
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

    // Tenant B, with every route of the OpenAPI document, gets nothing of A's.
    let b_session = server.login("bea@beta.test").await;
    let b_owner = Auth::Cookie(b_session);
    let (_, b_secret) = server.key(&b_owner, "owner").await;
    let a_ids = [a_org.clone(), a["user"]["id"].as_str().unwrap().to_owned(), admin_id.clone()];
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
    assert!(walked >= 2 * 3 * 6, "only {walked} calls: is the document missing routes?");
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
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from /openapi.json");
    }

    // Secrets never reach the log; requests do, by route template and tenant.
    let log = String::from_utf8(log().lock().unwrap().clone()).unwrap();
    for secret in
        [admin_secret.as_str(), viewer_secret.as_str(), a_session.as_str(), JWT_SECRET, "a long enough password"]
    {
        assert!(!log.contains(secret), "the log shows a secret");
    }
    assert!(log.contains("route=/v1/api-keys/{id}"), "no request line for the key route");
    assert!(log.contains(&format!("tenant={a_org}")), "request lines lack the tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&format!("sqlite://{}", dir.path().join("retail.db").display())).await;
    api_body(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_postgres() {
    let pg = retail_testkit::Postgres::start();
    let server = start(&pg.new_database()).await;
    api_body(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_from_one_address_are_limited_with_a_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&format!("sqlite://{}", dir.path().join("retail.db").display())).await;
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
