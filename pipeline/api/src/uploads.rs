//! Uploads over HTTP: announce the file (`POST /v1/uploads` with its name and size), send its
//! bytes in one or more `PATCH` requests, each starting at the `Upload-Offset` the upload
//! has reached (as in the tus protocol, so a dropped connection resumes instead of starting
//! over), read it back, delete it. The last byte triggers a decode check: a file that is
//! not a video or image GStreamer decodes is deleted and the request says why.

use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use retail_store::{Action, MediaInfo, PurgeRecord, StoreError, Upload};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::identity::Body;
use crate::{ApiError, AppState, Caller, ErrorBody};

/// The header that says where a `PATCH` continues (and, in answers, where the upload stands).
pub const UPLOAD_OFFSET: &str = "upload-offset";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadRequest {
    /// The file's name, for people; what it is comes from its bytes.
    filename: String,
    /// The file's exact size in bytes.
    size: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UploadView {
    id: String,
    filename: String,
    /// Bytes announced.
    size: i64,
    /// Bytes received: the next `PATCH` starts here.
    offset: i64,
    /// `receiving` or `ready`.
    state: String,
    /// `video` or `image`, from the first bytes.
    kind: Option<String>,
    media_type: Option<String>,
    duration_ms: Option<i64>,
    width: Option<i64>,
    height: Option<i64>,
    created_us: i64,
    /// When the bytes are purged (a day after the last part until complete, then the
    /// organisation's retention).
    expires_us: i64,
}

impl From<Upload> for UploadView {
    fn from(u: Upload) -> Self {
        UploadView {
            id: u.id,
            filename: u.filename,
            size: u.declared_bytes,
            offset: u.received_bytes,
            state: if u.state == retail_store::UploadState::Ready { "ready" } else { "receiving" }.into(),
            kind: u.kind.map(|k| k.as_str().to_owned()),
            media_type: u.media_type,
            duration_ms: u.duration_ms,
            width: u.width,
            height: u.height,
            created_us: u.created_us,
            expires_us: u.expires_us,
        }
    }
}

fn with_offset(status: StatusCode, up: Upload) -> Response {
    let offset = up.received_bytes;
    let mut r = (status, Json(UploadView::from(up))).into_response();
    r.headers_mut().insert(UPLOAD_OFFSET, offset.into());
    r
}

/// Announces an upload; its bytes follow with `PATCH /v1/uploads/{id}`.
#[utoipa::path(post, path = "/v1/uploads", tag = "uploads", request_body = CreateUploadRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 201, body = UploadView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create_upload(
    State(s): State<AppState>,
    caller: Caller,
    Body(r): Body<CreateUploadRequest>,
) -> Result<Response, ApiError> {
    caller.require(Action::Analyse)?;
    let up = s
        .storage
        .create_upload(&caller.org_id, &caller.actor(), &r.filename, r.size, s.config.max_upload_bytes)
        .await?;
    Ok(with_offset(StatusCode::CREATED, up))
}

/// The organisation's uploads, newest first.
#[utoipa::path(get, path = "/v1/uploads", tag = "uploads", security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = [UploadView]), (status = 403, body = ErrorBody)))]
pub async fn list_uploads(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<UploadView>>, ApiError> {
    caller.require(Action::Read)?;
    Ok(Json(s.storage.uploads(&caller.org_id).await?.into_iter().map(UploadView::from).collect()))
}

/// One upload, with the offset to resume at.
#[utoipa::path(get, path = "/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "the upload's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = UploadView), (status = 404, body = ErrorBody)))]
pub async fn get_upload(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Action::Read)?;
    Ok(with_offset(StatusCode::OK, s.storage.upload(&caller.org_id, &id).await?))
}

/// Sends bytes from `Upload-Offset` on; the request that brings the last byte also checks
/// that the whole file decodes.
#[utoipa::path(patch, path = "/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "the upload's id"),
           ("Upload-Offset" = i64, Header, description = "where these bytes start: the upload's current offset")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = UploadView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn append_upload(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    caller.require(Action::Analyse)?;
    let offset = headers
        .get(UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| ApiError::bad_request("header Upload-Offset: missing or not a whole number"))?;
    let up = match s.storage.append_upload(&caller.org_id, &id, offset, body.into_data_stream()).await {
        Ok(up) => up,
        Err(StoreError::Offset { expected, .. }) if expected >= 0 => {
            let mut r = ApiError::new(
                StatusCode::CONFLICT,
                "wrong_offset",
                format!("upload {id} has {expected} bytes; send Upload-Offset: {expected}"),
            )
            .into_response();
            r.headers_mut().insert(UPLOAD_OFFSET, HeaderValue::from(expected));
            return Ok(r);
        }
        Err(e) => return Err(e.into()),
    };
    if !up.is_complete() || up.state == retail_store::UploadState::Ready {
        return Ok(with_offset(StatusCode::OK, up));
    }
    let info = match check_decodes(&s, &caller.org_id, &up).await? {
        Ok(info) => info,
        Err(reason) => {
            s.storage.delete_upload(&caller.org_id, &id, "refused: does not decode").await?;
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undecodable", reason));
        }
    };
    Ok(with_offset(StatusCode::OK, s.storage.complete_upload(&caller.org_id, &id, info).await?))
}

/// Decrypts the upload into a private scratch file and opens it with the decoder: the
/// first frame must come out. The inner error is the file's fault and names its file name
/// (not the scratch path); the outer one is the server's, and deletes nothing.
async fn check_decodes(s: &AppState, org_id: &str, up: &Upload) -> Result<Result<MediaInfo, String>, ApiError> {
    // A name of its own: two requests may check one upload at once.
    let path = s.config.scratch_dir.join(format!("{}.check", retail_store::new_id(&up.id)));
    let written = s.storage.upload_to_file(org_id, &up.id, &path).await;
    let _cleanup = RemoveOnDrop(path.clone());
    written?;
    let probe_path = path.clone();
    let result = tokio::task::spawn_blocking(move || probe(&probe_path))
        .await
        .map_err(|e| ApiError::internal(format!("the decode check stopped: {e}")))?;
    Ok(result.map_err(|e| e.replace(&path.display().to_string(), &up.filename)))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens a file with GStreamer and decodes its first frame.
fn probe(path: &FsPath) -> Result<MediaInfo, String> {
    let spec = retail_ingest::SourceSpec {
        stream: retail_core::StreamId("upload-check".into()),
        width: 32,
        height: 32,
        order: retail_ingest::PixelOrder::Rgb,
        display: false,
        cuda: None,
        software_decoding: false,
    };
    let mut source = retail_ingest::FileSource::open(path, spec, &retail_ingest::IngestConfig::default())
        .map_err(|e| e.to_string())?;
    let info = source.info().clone();
    match source.next_frame() {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("{}: no frames", path.display())),
        Err(e) => return Err(e.to_string()),
    }
    Ok(MediaInfo {
        duration_ms: info.duration_ns.map(|ns| (ns / 1_000_000) as i64),
        width: i64::from(info.width),
        height: i64::from(info.height),
    })
}

/// The upload's bytes, decrypted as they stream out.
#[utoipa::path(get, path = "/v1/uploads/{id}/content", tag = "uploads", params(("id" = String, Path, description = "the upload's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)))]
pub async fn upload_content(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Action::Read)?;
    let up = s.storage.upload(&caller.org_id, &id).await?;
    if up.state != retail_store::UploadState::Ready {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_ready", format!("upload {id} is not complete")));
    }
    let reader = s.storage.upload_reader(&caller.org_id, &id).await?;
    let media_type = up.media_type.unwrap_or_else(|| "application/octet-stream".into());
    Ok((
        [
            (header::CONTENT_TYPE, media_type),
            (header::CONTENT_LENGTH, up.declared_bytes.to_string()),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
        streamed(reader),
    )
        .into_response())
}

/// A response body that decrypts as it is sent.
pub(crate) fn streamed(reader: retail_store::UploadReader) -> axum::body::Body {
    let stream = futures::stream::try_unfold(reader, |mut r| async move {
        match r.next().await {
            Ok(Some(b)) => Ok(Some((b, r))),
            Ok(None) => Ok(None),
            Err(e) => {
                // The headers are sent by now: the error cuts the body short, and is logged.
                tracing::error!(error = %e, "stored object read failed");
                Err(std::io::Error::other(e.to_string()))
            }
        }
    });
    axum::body::Body::from_stream(stream)
}

/// Deletes an upload and its results at once (the purge log records who asked).
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "the upload's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_upload(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::DeleteData)?;
    let reason = format!("deleted on request by {}", caller.actor());
    s.storage.delete_upload(&caller.org_id, &id, &reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct PurgeView {
    object: String,
    class: String,
    bytes: i64,
    reason: String,
    deleted_us: i64,
}

impl From<PurgeRecord> for PurgeView {
    fn from(p: PurgeRecord) -> Self {
        PurgeView { object: p.object_key, class: p.class, bytes: p.bytes, reason: p.reason, deleted_us: p.deleted_us }
    }
}

/// What was deleted, when and why (newest first, at most 1000).
#[utoipa::path(get, path = "/v1/purge-log", tag = "uploads", security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = [PurgeView]), (status = 403, body = ErrorBody)))]
pub async fn purge_log(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<PurgeView>>, ApiError> {
    caller.require(Action::ManageSettings)?;
    Ok(Json(s.storage.purge_log(&caller.org_id, 1000).await?.into_iter().map(PurgeView::from).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    /// Days uploads and their results are kept (1 to 3650); stored ones are moved to match.
    upload_retention_days: i64,
}

/// Sets how long the organisation's uploads and results are kept.
#[utoipa::path(put, path = "/v1/retention", tag = "uploads", request_body = RetentionRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = crate::identity::OrgView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_retention(
    State(s): State<AppState>,
    caller: Caller,
    Body(r): Body<RetentionRequest>,
) -> Result<Json<crate::identity::OrgView>, ApiError> {
    caller.require(Action::ManageSettings)?;
    s.storage.set_upload_retention(&caller.org_id, r.upload_retention_days).await?;
    Ok(Json(s.db.org(&caller.org_id).await?.into()))
}
