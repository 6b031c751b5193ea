//! Errors as JSON: `{"error": {"code", "message"}, "request_id"}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use retail_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to the caller.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable machine-readable code (`invalid_request`, `unauthenticated`, …).
    pub code: &'static str,
    /// What is wrong, for a person: names the field or the thing.
    pub message: String,
    /// Seconds to wait, for 429.
    pub retry_after_s: Option<u64>,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// The request's id, also in the `x-request-id` header and the server's log.
    pub request_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {id} not found"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn too_many(retry_after_s: u64, message: impl Into<String>) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Conflict { what } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("{what} already exists"))
            }
            StoreError::NotFound { what, id } => ApiError::not_found(what, &id),
            StoreError::BadLogin => ApiError::unauthenticated("wrong email or password"),
            e @ StoreError::InsufficientCredits { .. } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "insufficient_credits", e.to_string())
            }
            StoreError::Unsupported(m) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media", m),
            StoreError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            e @ StoreError::Offset { .. } => ApiError::new(StatusCode::CONFLICT, "wrong_offset", e.to_string()),
            e @ StoreError::Interrupted { .. } => ApiError::new(StatusCode::BAD_REQUEST, "interrupted", e.to_string()),
            other => {
                // The detail goes to the log under the request id; the caller gets the id.
                tracing::error!(error = %other, "store error");
                ApiError::internal("internal error; quote the request id to support")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.to_owned(), message: self.message },
            request_id: crate::request::current_id(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
    }
}
