//! The privacy policy's rights over HTTP: export everything held about the organisation, and
//! erase it (owners only; erasure asks for the organisation's id to be typed back).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use retail_store::Action;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::identity::Body;
use crate::{ApiError, AppState, Caller, ErrorBody};

/// Everything held about the organisation, as one JSON document: organisation, members (no
/// password hashes), API keys (no secrets), uploads, jobs, the ledger and the purge log.
/// The uploads' and results' bytes are downloaded from their own routes.
#[utoipa::path(get, path = "/v1/export", tag = "identity", security(("api_key" = []), ("session" = [])),
    responses((status = 200, content_type = "application/json", body = Object), (status = 403, body = ErrorBody)))]
pub async fn export(State(s): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Action::ManageBilling)?;
    let export = s.storage.export(&caller.org_id).await?;
    let json = serde_json::to_vec_pretty(&export).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"retail-ai-export.json\""),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The organisation's id, typed back.
    confirm: String,
}

/// Erases the organisation at once: uploads, results, members, keys, jobs. The credit
/// ledger, billing records and the purge log are kept for their 7 years.
#[utoipa::path(delete, path = "/v1/organisation", tag = "identity", request_body = EraseRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn erase(
    State(s): State<AppState>,
    caller: Caller,
    Body(r): Body<EraseRequest>,
) -> Result<Json<retail_store::Erasure>, ApiError> {
    caller.require(Action::ManageBilling)?;
    if r.confirm != caller.org_id {
        return Err(ApiError::bad_request("confirm: type the organisation's id to erase it"));
    }
    Ok(Json(s.storage.erase_org(&caller.org_id, &caller.actor()).await?))
}
