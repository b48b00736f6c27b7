//! Who is calling: `Authorization: Bearer <token>`, checked against the
//! store's hashed tokens, with roles viewer < deployer < admin.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bifrost_shared::auth::hash_token;
use bifrost_shared::domain::{Actor, ApiToken, Role};

use super::AppState;
use super::error::ApiError;

/// An authenticated caller.
pub struct Caller(pub ApiToken);

impl Caller {
    /// Refuses with 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<&Self, ApiError> {
        if self.0.role >= role {
            Ok(self)
        } else {
            Err(ApiError::forbidden(format!(
                "token {:?} has role {}, this needs {} or above",
                self.0.name, self.0.role, role
            )))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor::token(&self.0.name)
    }
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "missing API token: send `Authorization: Bearer <token>` (bifrost login --token ...)",
            )
        })?;
        match state.ctx.store.authenticate(&hash_token(token)).await? {
            Some(t) => Ok(Caller(t)),
            None => Err(ApiError::unauthorized("invalid or revoked API token")),
        }
    }
}
