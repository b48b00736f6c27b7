//! The server half of the dashboard: the session (token cookie → API
//! calls), the conversions from API answers to page models, and the axum
//! router that serves pages, server functions, live events and the wasm.

pub mod backend;
pub mod convert;
pub mod routes;

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use leptos::prelude::*;
use leptos_axum::ResponseOptions;
use serde::de::DeserializeOwned;

pub use backend::{ApiFailure, Backend};
pub use routes::{WebConfig, router};

use crate::model::Me;

/// The HttpOnly cookie holding the signed-in API token.
pub const COOKIE: &str = "bifrost_session";

/// Given to every page render and server function through context.
#[derive(Clone)]
pub struct WebState {
    pub backend: Backend,
    /// Mark the cookie `Secure` (the dashboard is served over https).
    pub secure_cookies: bool,
}

/// The session token in a request's cookies.
pub fn token_in(headers: &HeaderMap) -> Option<String> {
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

/// The `Set-Cookie` value that signs in (`Some`) or out (`None`).
pub fn session_cookie(token: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(t) => format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000{secure}"),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    }
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
        let token = use_context::<Parts>().and_then(|p| token_in(&p.headers));
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
        let v: serde_json::Value = self.get("/api/v1/whoami").await?;
        Ok(convert::me(&v))
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
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "theme=dark; bifrost_session=bft_abc; x=1".parse().expect("header"));
        assert_eq!(token_in(&h).as_deref(), Some("bft_abc"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, "bifrost_session=".parse().expect("header"));
        assert_eq!(token_in(&empty), None);
    }

    #[test]
    fn cookie_is_http_only_and_clears() {
        let on = session_cookie(Some("t"), true);
        assert!(on.contains("HttpOnly") && on.contains("Secure") && on.starts_with("bifrost_session=t;"));
        assert!(session_cookie(None, false).contains("Max-Age=0"));
    }
}
