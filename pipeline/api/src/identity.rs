//! Signup, email verification, login and logout, the caller, members and API keys.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest, Path, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use retail_store::{Action, ApiKey, Org, Role, Signup, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{session_cookie, session_token};
use crate::{ApiError, AppState, Caller, ErrorBody, request};

/// JSON bodies whose errors are JSON too, naming the field or the syntax problem.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::new(r.status(), "invalid_request", r.body_text())
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The new organisation's name.
    organisation: String,
    name: String,
    email: String,
    /// At least 10 characters.
    password: String,
    /// The user attests being 18 or older; signup is refused without it.
    adult: bool,
}

#[derive(Serialize, ToSchema)]
pub struct OrgView {
    id: String,
    name: String,
    upload_retention_days: i64,
}

impl From<Org> for OrgView {
    fn from(o: Org) -> Self {
        OrgView { id: o.id, name: o.name, upload_retention_days: o.upload_retention_days }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: String,
    organisation: String,
    name: String,
    email: String,
    #[schema(value_type = String, example = "analyst")]
    role: Role,
    email_verified: bool,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            organisation: u.org_id,
            name: u.name,
            email: u.email,
            role: u.role,
            email_verified: u.email_verified,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SignupResponse {
    organisation: OrgView,
    user: UserView,
}

/// Creates an organisation and its owner; a verification token is mailed.
#[utoipa::path(post, path = "/v1/signup", tag = "identity", request_body = SignupRequest,
    responses((status = 201, body = SignupResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn signup(
    State(s): State<AppState>,
    Body(r): Body<SignupRequest>,
) -> Result<(StatusCode, Json<SignupResponse>), ApiError> {
    let done =
        s.db.signup(&Signup {
            org_name: r.organisation,
            name: r.name,
            email: r.email,
            password: r.password,
            adult: r.adult,
        })
        .await?;
    request::set_tenant(&done.org.id);
    if s.config.signup_credits > 0 {
        s.db.move_credits(&retail_store::Movement {
            org_id: &done.org.id,
            kind: "grant",
            amount: s.config.signup_credits,
            job_id: None,
            actor: "system",
            reason: "credits for a new organisation",
            may_overdraw: false,
        })
        .await?;
    }
    Ok((StatusCode::CREATED, Json(SignupResponse { organisation: done.org.into(), user: done.user.into() })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The token from the verification mail.
    token: String,
}

/// Confirms an email address with the mailed token (once, within 48 hours).
#[utoipa::path(post, path = "/v1/verify-email", tag = "identity", request_body = VerifyRequest,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody)))]
pub async fn verify_email(State(s): State<AppState>, Body(r): Body<VerifyRequest>) -> Result<Json<UserView>, ApiError> {
    Ok(Json(s.db.verify_email(&r.token).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

/// Logs in: the session comes back as an httpOnly, Secure, SameSite=Strict cookie.
#[utoipa::path(post, path = "/v1/login", tag = "identity", request_body = LoginRequest,
    responses((status = 200, body = UserView, headers(("set-cookie" = String, description = "the session"))),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(r): Body<LoginRequest>,
) -> Result<Response, ApiError> {
    s.login_limit
        .take(&peer.ip().to_string())
        .map_err(|wait| ApiError::too_many(wait, "too many login attempts from this address; wait and try again"))?;
    let user = s.db.login(&r.email, &r.password).await?;
    request::set_tenant(&user.org_id);
    let token = session_token(&s, &user.id, &user.org_id, s.db.now_us())?;
    let cookie = session_cookie(&s, Some(&token));
    Ok(([(SET_COOKIE, cookie)], Json(UserView::from(user))).into_response())
}

/// Ends the session (clears the cookie).
#[utoipa::path(post, path = "/v1/logout", tag = "identity", responses((status = 204)))]
pub async fn logout(State(s): State<AppState>) -> Response {
    (StatusCode::NO_CONTENT, [(SET_COOKIE, session_cookie(&s, None))]).into_response()
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    organisation: OrgView,
    #[schema(value_type = String)]
    role: Role,
    /// The logged-in user (sessions), or `null` for an API key.
    user: Option<UserView>,
    /// The API key's id, for keys.
    key: Option<String>,
}

/// Who the caller is: organisation, role, and the user or key.
#[utoipa::path(get, path = "/v1/me", tag = "identity", security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(State(s): State<AppState>, caller: Caller) -> Result<Json<MeResponse>, ApiError> {
    caller.require(Action::Read)?;
    let org = s.db.org(&caller.org_id).await?;
    let user = match &caller.user_id {
        Some(id) => Some(s.db.user(&caller.org_id, id).await?.into()),
        None => None,
    };
    Ok(Json(MeResponse { organisation: org.into(), role: caller.role, user, key: caller.key_id }))
}

/// The organisation's members.
#[utoipa::path(get, path = "/v1/users", tag = "identity", security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody)))]
pub async fn list_users(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<UserView>>, ApiError> {
    caller.require(Action::Read)?;
    Ok(Json(s.db.users(&caller.org_id).await?.into_iter().map(UserView::from).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUserRequest {
    name: String,
    email: String,
    password: String,
    #[schema(value_type = String, example = "viewer")]
    role: Role,
    /// The member is 18 or older.
    adult: bool,
}

/// Adds a member (admins and owners; nobody grants a role above their own).
#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = AddUserRequest, security(("api_key" = []), ("session" = [])),
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_user(
    State(s): State<AppState>,
    caller: Caller,
    Body(r): Body<AddUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    caller.require(Action::ManageAccess)?;
    if r.role > caller.role {
        return Err(ApiError::forbidden(format!(
            "{} cannot make {}",
            crate::auth::with_article(caller.role),
            crate::auth::with_article(r.role)
        )));
    }
    let user = s.db.add_user(&caller.org_id, &r.name, &r.email, &r.password, r.role, r.adult).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    name: String,
    #[schema(value_type = String)]
    role: Role,
    created_by: String,
    created_us: i64,
    revoked_us: Option<i64>,
    last_used_us: Option<i64>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role,
            created_by: k.created_by,
            created_us: k.created_us,
            revoked_us: k.revoked_us,
            last_used_us: k.last_used_us,
        }
    }
}

/// The organisation's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "identity", security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = [KeyView]), (status = 403, body = ErrorBody)))]
pub async fn list_keys(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<KeyView>>, ApiError> {
    caller.require(Action::ManageAccess)?;
    Ok(Json(s.db.api_keys(&caller.org_id).await?.into_iter().map(KeyView::from).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    name: String,
    #[schema(value_type = String, example = "analyst")]
    role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct NewKeyResponse {
    key: KeyView,
    /// The secret, shown this once: only its SHA-256 is kept.
    secret: String,
}

/// Makes an API key with a role up to the caller's own; its secret is shown once.
#[utoipa::path(post, path = "/v1/api-keys", tag = "identity", request_body = CreateKeyRequest, security(("api_key" = []), ("session" = [])),
    responses((status = 201, body = NewKeyResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_key(
    State(s): State<AppState>,
    caller: Caller,
    Body(r): Body<CreateKeyRequest>,
) -> Result<(StatusCode, Json<NewKeyResponse>), ApiError> {
    caller.require(Action::ManageAccess)?;
    let made = s.db.create_api_key(&caller.org_id, &r.name, r.role, &caller.actor(), caller.role).await?;
    Ok((StatusCode::CREATED, Json(NewKeyResponse { key: made.key.into(), secret: made.secret.expose().to_owned() })))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "identity", params(("id" = String, Path, description = "the key's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = KeyView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    caller.require(Action::ManageAccess)?;
    Ok(Json(s.db.revoke_api_key(&caller.org_id, &id).await?.into()))
}
