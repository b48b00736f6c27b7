//! The server half of the dashboard: the session (token cookie → API
//! calls), the conversions from API answers to page models, and the axum
//! router that serves pages, server functions, live events and the wasm.

pub mod analytics;
pub mod backend;
pub mod cluster;
pub mod convert;
pub mod markdown;
pub mod rollout;
pub mod routes;
pub mod session;

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use leptos::prelude::*;
use leptos_axum::ResponseOptions;
use serde::de::DeserializeOwned;

pub use backend::{ApiFailure, Backend};
pub use routes::{WebConfig, router};
pub use session::{COOKIE, SessionKey};

use crate::model::Me;

/// Given to every page render and server function through context.
#[derive(Clone)]
pub struct WebState {
    pub backend: Backend,
    /// Mark the cookie `Secure` (the dashboard is served over https).
    pub secure_cookies: bool,
    /// Seals the session cookie.
    pub session: SessionKey,
}

impl WebState {
    /// The signed-in token a request's session cookie holds (sealed), if any.
    pub fn token_in(&self, headers: &HeaderMap) -> Option<String> {
        session_value(headers).and_then(|v| self.session.open(&v))
    }

    /// The `Set-Cookie` value that signs `token` in (`None`: signs out).
    pub fn session_cookie(&self, token: Option<&str>) -> String {
        session::cookie(token.map(|t| self.session.seal(t)).as_deref(), self.secure_cookies)
    }
}

/// The raw session cookie of a request.
fn session_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The signed-in token of the request being rendered or served.
pub fn current_token() -> Option<String> {
    let state = use_context::<WebState>()?;
    use_context::<Parts>().and_then(|p| state.token_in(&p.headers))
}

/// Turns an API failure into a server-function error, with the API's status
/// on the response (a viewer's deploy is a 403, an unknown id a 404).
pub fn fail(e: ApiFailure) -> ServerFnError {
    if let Some(r) = use_context::<ResponseOptions>() {
        r.set_status(e.status);
    }
    ServerFnError::new(e.message)
}

pub fn state() -> Result<WebState, ServerFnError> {
    use_context::<WebState>().ok_or_else(|| ServerFnError::new("dashboard state missing from context"))
}

/// The caller of a page render or server function.
pub struct Session {
    pub backend: Backend,
    pub token: String,
}

impl Session {
    pub fn current() -> Result<Session, ServerFnError> {
        let state = state()?;
        let token = use_context::<Parts>().and_then(|p| state.token_in(&p.headers));
        match token {
            Some(token) => Ok(Session { backend: state.backend, token }),
            None => Err(fail(ApiFailure {
                status: StatusCode::UNAUTHORIZED,
                message: "not signed in: sign in with an API token at /login".into(),
            })),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: impl AsRef<str>) -> Result<T, ServerFnError> {
        self.backend.get(path.as_ref(), &self.token).await.map_err(fail)
    }

    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ServerFnError> {
        self.backend.call(method, path, &self.token, Some(body)).await.map_err(fail)
    }

    pub async fn me(&self) -> Result<Me, ServerFnError> {
        let t: bifrost_api::TokenOut = self.get("/api/v1/whoami").await?;
        Ok(convert::me(&t))
    }

    /// The caller, refused with 403 unless their role is at least `role`:
    /// every action checks here before it calls the API (which checks again).
    pub async fn require(&self, role: &str, doing: &str) -> Result<Me, ServerFnError> {
        let me = self.me().await?;
        let rank = |r: &str| match r {
            "admin" => 3,
            "deployer" => 2,
            "viewer" => 1,
            _ => 0,
        };
        if rank(&me.role) >= rank(role) {
            Ok(me)
        } else {
            Err(fail(ApiFailure {
                status: StatusCode::FORBIDDEN,
                message: format!("token {:?} has role {}; {doing} needs {role} or above", me.name, me.role),
            }))
        }
    }
}

pub use crate::model::seg;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sealed_session_among_other_cookies() {
        let key = SessionKey::new([1; 32]);
        let sealed = key.seal("bft_abc");
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, format!("theme=dark; bifrost_session={sealed}; x=1").parse().expect("header"));
        let state = WebState { backend: Backend::http("http://x"), secure_cookies: false, session: key };
        assert_eq!(state.token_in(&h).as_deref(), Some("bft_abc"));
        // A raw token in the cookie is not a session.
        let mut raw = HeaderMap::new();
        raw.append(header::COOKIE, "bifrost_session=bft_abc".parse().expect("header"));
        assert_eq!(state.token_in(&raw), None);
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, "bifrost_session=".parse().expect("header"));
        assert_eq!(state.token_in(&empty), None);
    }
}
