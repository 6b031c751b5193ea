//! The platform's HTTP API on axum: signup and login (a JWT in an httpOnly cookie), API keys
//! for programs, roles checked on every route, per-key and per-IP rate limits, a request id
//! and one log line per request, JSON errors that name the problem, and the OpenAPI
//! document generated from the handlers at `/openapi.json`.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod auth;
mod error;
mod identity;
mod jobs;
mod limit;
mod request;
mod rights;
mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use retail_core::Secret;
use retail_store::{Db, Storage};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, SESSION_COOKIE};
pub use error::{ApiError, ErrorBody};
pub use limit::RateLimiter;
pub use uploads::UPLOAD_OFFSET;

/// What the API needs besides the database.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Signs session JWTs (HS256); at least 32 bytes.
    pub jwt_secret: Secret,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// The session cookie's `Secure` flag (off only for plain-HTTP local use).
    pub cookie_secure: bool,
    /// Login attempts per minute from one IP address.
    pub login_per_minute: u32,
    /// Requests per second for one API key or session (bursts up to `burst`).
    pub requests_per_second: u32,
    pub burst: u32,
    /// The largest upload accepted, in bytes.
    pub max_upload_bytes: i64,
    /// A private directory for decode checks of complete uploads (decrypted while checked).
    pub scratch_dir: std::path::PathBuf,
    /// The operator's analysis config: jobs bring only their lines, zones and settings.
    pub analysis: retail_runtime::Config,
    /// Millicredits per minute of video, reserved from its duration and charged as processed.
    pub milli_per_minute: i64,
    /// Millicredits a new organisation starts with.
    pub signup_credits: i64,
    /// Runs of one job before it fails.
    pub job_attempts: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            jwt_secret: Secret::default(),
            session_ttl: Duration::from_secs(12 * 3600),
            cookie_secure: true,
            login_per_minute: 10,
            requests_per_second: 20,
            burst: 40,
            max_upload_bytes: 4 * 1024 * 1024 * 1024,
            scratch_dir: std::env::temp_dir(),
            analysis: retail_runtime::Config::default(),
            milli_per_minute: 1000,
            signup_credits: 60_000,
            job_attempts: 3,
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub storage: Storage,
    pub config: Arc<ApiConfig>,
    login_limit: Arc<RateLimiter>,
    caller_limit: Arc<RateLimiter>,
}

impl AppState {
    pub fn new(storage: Storage, config: ApiConfig) -> Result<Self, ApiError> {
        let db = storage.db().clone();
        if config.jwt_secret.expose().len() < 32 {
            return Err(ApiError::internal("the JWT secret must be at least 32 bytes"));
        }
        let login_limit =
            RateLimiter::new(f64::from(config.login_per_minute) / 60.0, f64::from(config.login_per_minute));
        let caller_limit = RateLimiter::new(f64::from(config.requests_per_second), f64::from(config.burst));
        Ok(AppState {
            db,
            storage,
            config: Arc::new(config),
            login_limit: Arc::new(login_limit),
            caller_limit: Arc::new(caller_limit),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Retail AI", description = "Footfall, occupancy and dwell from store video."),
    modifiers(&Security),
    tags((name = "identity", description = "Organisations, users, sessions and API keys"),
         (name = "uploads", description = "Encrypted, resumable uploads of video and images, and their retention"),
         (name = "jobs", description = "Analyses of uploads, their results, and credits"))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("rk_…").build()),
        );
        components
            .add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))));
    }
}

/// The router and the OpenAPI document of its routes.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(identity::signup))
        .routes(routes!(identity::verify_email))
        .routes(routes!(identity::login))
        .routes(routes!(identity::logout))
        .routes(routes!(identity::me))
        .routes(routes!(identity::list_users, identity::add_user))
        .routes(routes!(identity::list_keys, identity::create_key))
        .routes(routes!(identity::revoke_key))
        .routes(routes!(uploads::create_upload, uploads::list_uploads))
        .routes(routes!(uploads::get_upload, uploads::append_upload, uploads::delete_upload))
        .routes(routes!(uploads::upload_content))
        .routes(routes!(uploads::purge_log))
        .routes(routes!(uploads::set_retention))
        .routes(routes!(rights::export))
        .routes(routes!(rights::erase))
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::job_result))
        .routes(routes!(jobs::credits))
        .split_for_parts();
    let doc_json = Arc::new(doc.to_pretty_json().unwrap_or_default());
    let router = api
        .route("/openapi.json", get(move || openapi_json(doc_json.clone())))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::not_found("route", "this path") })
        .layer(axum::middleware::from_fn(request::track))
        .with_state(state);
    (router, doc)
}

async fn openapi_json(doc: Arc<String>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned())
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = router(state);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
