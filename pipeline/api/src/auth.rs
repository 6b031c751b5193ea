//! Who is calling: an API key (`Authorization: Bearer rk_…`) or a session cookie holding a
//! JWT (HS256, signed with the server's secret). Either way the caller's organisation and
//! role come from the database on each request, so a revoked key or a removed user stops at
//! once; a session also ends at its expiry, read on the store's clock.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use retail_store::{Action, Role};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState, request};

pub const SESSION_COOKIE: &str = "retail_session";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub org_id: String,
    pub role: Role,
    /// The user behind a session, or the creator's id is not known for a key: `None`.
    pub user_id: Option<String>,
    pub key_id: Option<String>,
}

impl Caller {
    /// Refuses (403) what the caller's role does not allow.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.role.can(action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{} cannot {}", with_article(self.role), action.as_str())))
        }
    }

    /// The id recorded as the actor of what this caller does.
    pub fn actor(&self) -> String {
        self.user_id.clone().or_else(|| self.key_id.clone()).unwrap_or_default()
    }
}

/// "a viewer", "an admin".
pub(crate) fn with_article(role: Role) -> String {
    let name = role.as_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {name}")
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    org: String,
    iat: i64,
    exp: i64,
}

/// A signed session for `user_id`, valid for the configured time from `now_us`.
pub(crate) fn session_token(state: &AppState, user_id: &str, org_id: &str, now_us: i64) -> Result<String, ApiError> {
    let now_s = now_us / 1_000_000;
    let claims = Claims {
        sub: user_id.to_owned(),
        org: org_id.to_owned(),
        iat: now_s,
        exp: now_s + state.config.session_ttl.as_secs() as i64,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(state.config.jwt_secret.expose().as_bytes()),
    )
    .map_err(|e| ApiError::internal(format!("cannot sign the session: {e}")))
}

/// The `Set-Cookie` value carrying a session (or clearing it, for `None`).
pub(crate) fn session_cookie(state: &AppState, token: Option<&str>) -> String {
    let secure = if state.config.cookie_secure { "; Secure" } else { "" };
    match token {
        Some(t) => format!(
            "{SESSION_COOKIE}={t}; HttpOnly{secure}; SameSite=Strict; Path=/; Max-Age={}",
            state.config.session_ttl.as_secs()
        ),
        None => format!("{SESSION_COOKIE}=; HttpOnly{secure}; SameSite=Strict; Path=/; Max-Age=0"),
    }
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let caller = if let Some(value) = parts.headers.get(AUTHORIZATION) {
            let text = value.to_str().unwrap_or_default();
            let secret = text
                .strip_prefix("Bearer ")
                .ok_or_else(|| ApiError::unauthenticated("Authorization: expected \"Bearer <api key>\""))?;
            let key = state
                .db
                .authenticate_key(secret.trim())
                .await?
                .ok_or_else(|| ApiError::unauthenticated("invalid or revoked API key"))?;
            Caller { org_id: key.org_id, role: key.role, user_id: None, key_id: Some(key.key_id) }
        } else if let Some(token) = cookie(parts, SESSION_COOKIE).filter(|t| !t.is_empty()) {
            from_session(&state, token).await?
        } else {
            return Err(ApiError::unauthenticated(
                "authentication required: an API key (Authorization: Bearer) or a session cookie",
            ));
        };
        request::set_tenant(&caller.org_id);
        let limit_key = caller.key_id.clone().or_else(|| caller.user_id.clone()).unwrap_or_default();
        state
            .caller_limit
            .take(&limit_key)
            .map_err(|wait| ApiError::too_many(wait, "too many requests for this key; slow down"))?;
        Ok(caller)
    }
}

async fn from_session(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked below on the store's clock (tests move it), not the system's.
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(state.config.jwt_secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|_| ApiError::unauthenticated("invalid session; log in again"))?;
    if data.claims.exp * 1_000_000 <= state.db.now_us() {
        return Err(ApiError::unauthenticated("the session has expired; log in again"));
    }
    let user = state
        .db
        .user(&data.claims.org, &data.claims.sub)
        .await
        .map_err(|_| ApiError::unauthenticated("the session's user no longer exists; log in again"))?;
    Ok(Caller { org_id: user.org_id, role: user.role, user_id: Some(user.id), key_id: None })
}
