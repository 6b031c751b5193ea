//! Per request: an id (the caller's `x-request-id` if it is a sane one, else a new one), the
//! tenant once known, and one log line (route template, tenant, status, latency, id) with
//! nothing from headers or bodies, so no secret can reach it.

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub(crate) struct RequestInfo {
    pub id: String,
    pub tenant: Mutex<Option<String>>,
}

tokio::task_local! {
    static REQUEST: RequestInfo;
}

/// The current request's id ("" outside a request).
pub(crate) fn current_id() -> String {
    REQUEST.try_with(|r| r.id.clone()).unwrap_or_default()
}

/// Notes the tenant the request acts for, for its log line.
pub(crate) fn set_tenant(org_id: &str) {
    let _ = REQUEST.try_with(|r| {
        if let Ok(mut t) = r.tenant.lock() {
            *t = Some(org_id.to_owned());
        }
    });
}

fn sane_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok =
        (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| text.to_owned())
}

pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request.headers().get("x-request-id").and_then(sane_id).unwrap_or_else(|| retail_store::new_id("req"));
    let route = request.extensions().get::<MatchedPath>().map_or("(no route)", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let info = RequestInfo { id: id.clone(), tenant: Mutex::new(None) };
    let (mut response, tenant) = REQUEST
        .scope(info, async move {
            let response = next.run(request).await;
            let tenant = REQUEST.with(|r| r.tenant.lock().ok().and_then(|t| t.clone()));
            (response, tenant)
        })
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "retail_api::request",
        request_id = %id,
        %method,
        route = %route,
        tenant = %tenant.as_deref().unwrap_or("-"),
        status,
        latency_ms = %format!("{latency_ms:.1}"),
        "request"
    );
    metrics::counter!("retail_api_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("retail_api_request_seconds", "route" => route).record(latency_ms / 1000.0);
    response
}
