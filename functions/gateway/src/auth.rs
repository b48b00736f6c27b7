//! Who is calling: `Authorization: Bearer <token>`, checked against the
//! store's hashed tokens, with roles viewer < deployer < admin, and
//! optionally limited to one project.
//!
//! Handlers take [`Viewer`], [`Deployer`] or [`Admin`]: extractors that
//! authenticate *and* check the role from the request's head, so a caller
//! without the role is refused before a byte of its body is read.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bifrost_core::StoreError;
use bifrost_core::auth::hash_token;
use bifrost_core::domain::{Actor, ApiToken, Deployment, Project, Role};

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

    /// A project-limited token sees only its project: any other is "not
    /// found", exactly as if it did not exist.
    pub fn reach(&self, project: Project) -> Result<Project, ApiError> {
        if self.0.reaches(&project.id) {
            Ok(project)
        } else {
            Err(StoreError::not_found("project", &project.name).into())
        }
    }

    /// As [`Caller::reach`], for a deployment.
    pub fn reach_deployment(&self, d: Deployment) -> Result<Deployment, ApiError> {
        if self.0.reaches(&d.project_id) { Ok(d) } else { Err(StoreError::not_found("deployment", &d.id).into()) }
    }

    /// The project a limited token is limited to.
    pub fn project_limit(&self) -> Option<&str> {
        self.0.project_id.as_deref()
    }
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates a raw token: unknown, revoked, or limited to a project
/// that no longer exists, it is refused.
pub async fn authenticate(state: &AppState, token: &str) -> Result<ApiToken, ApiError> {
    let t = state
        .ctx
        .store
        .authenticate(&hash_token(token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked API token"))?;
    if let Some(p) = &t.project_id {
        match state.ctx.store.get_project(p).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::unauthorized("this token's project was deleted; the token no longer works"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(t)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "missing API token: send `Authorization: Bearer <token>` (bifrost login --token ...)",
            )
        })?;
        Ok(Caller(authenticate(state, token).await?))
    }
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(pub Caller);

        impl std::ops::Deref for $name {
            type Target = Caller;
            fn deref(&self) -> &Caller {
                &self.0
            }
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
                let caller = Caller::from_request_parts(parts, state).await?;
                caller.require($role)?;
                Ok($name(caller))
            }
        }
    };
}

role_extractor!(Viewer, Role::Viewer, "A caller with any role.");
role_extractor!(
    Deployer,
    Role::Deployer,
    "A caller with the deployer role or above (checked before the body is read)."
);
role_extractor!(Admin, Role::Admin, "A caller with the admin role (checked before the body is read).");
