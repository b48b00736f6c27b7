//! The dashboard's axum router: pages (server-rendered, then hydrated),
//! server functions under [`crate::FN_PREFIX`], live events under
//! `/ui/events`, and the client wasm under `/pkg`.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use super::{Backend, SessionKey, WebState, seg};
use crate::app::{App, shell};

pub struct WebConfig {
    pub backend: Backend,
    /// Holds `pkg/` with the client's js and wasm (`cargo xtask web`).
    pub site_root: PathBuf,
    pub secure_cookies: bool,
    /// Seals the session cookie.
    pub session_key: SessionKey,
    /// The dashboard's public URL (`https://bifrost.example.com`): a
    /// state-changing request must come from it (or from the request's own
    /// host).
    pub public_origin: Option<String>,
}

/// Is `next` a path on this site? Only `/…`; never `//host`, `/\host` (a
/// browser reads both as another host), a scheme, or control characters.
pub fn same_site_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Browsers send `Origin` with every POST; a state-changing call carrying
/// the session cookie must come from the dashboard itself: another origin
/// (an app's page on `<app>.localhost`, any site) is refused, however its
/// cookies were obtained (`SameSite` does not separate same-site hosts).
fn origin_allowed(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Fetch metadata, where a client sent no Origin.
        return headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_none_or(|s| s == "same-origin");
    };
    let origin = origin.trim_end_matches('/');
    if public_origin.is_some_and(|p| p.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

async fn check_origin(State(cfg): State<Option<String>>, req: Request, next: Next) -> Response {
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let has_session = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.split(';').any(|p| p.trim().split_once('=').is_some_and(|(k, _)| k == super::COOKIE)));
    if changes_state && has_session && !origin_allowed(req.headers(), cfg.as_deref()) {
        tracing::warn!(path = %req.uri().path(), origin = ?req.headers().get(header::ORIGIN), "cross-origin request refused");
        return (
            StatusCode::FORBIDDEN,
            "cross-origin request refused: this action must come from the dashboard's own pages",
        )
            .into_response();
    }
    next.run(req).await
}

/// Where the client bundle is looked for when not told: beside the binary
/// (`target/<profile>/../site`, or a container's `/app/site`).
pub fn default_site_root() -> PathBuf {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let candidates = exe_dir.iter().flat_map(|d| [d.join("site"), d.join("../site")]).collect::<Vec<_>>();
    candidates
        .iter()
        .find(|c| c.join("pkg/bifrost_web.js").is_file())
        .cloned()
        .unwrap_or_else(|| candidates.last().cloned().unwrap_or_else(|| PathBuf::from("site")))
}

/// True when the client bundle is present (pages hydrate and go live).
pub fn client_built(site_root: &std::path::Path) -> bool {
    site_root.join("pkg/bifrost_web.js").is_file() && site_root.join("pkg/bifrost_web_bg.wasm").is_file()
}

pub fn router(cfg: WebConfig) -> Router {
    let options = LeptosOptions::builder()
        .output_name("bifrost_web")
        .site_root(cfg.site_root.display().to_string())
        .site_pkg_dir("pkg")
        .build();
    let state = WebState { backend: cfg.backend, secure_cookies: cfg.secure_cookies, session: cfg.session_key };
    let routes = generate_route_list(App);
    let context_state = state.clone();
    let shell_options = options.clone();
    let pages = Router::<LeptosOptions>::new()
        .leptos_routes_with_context(
            &options,
            routes,
            move || provide_context(context_state.clone()),
            move || shell(shell_options.clone()),
        )
        .layer(middleware::from_fn_with_state(state.clone(), sign_in_first))
        .with_state(options);
    // The bundle's names are fixed, so browsers revalidate (ETag/Last-Modified).
    let pkg = ServeDir::new(cfg.site_root.join("pkg")).precompressed_gzip();
    let live = Router::new()
        .route("/ui/events", get(all_events))
        .route("/ui/events/{id}", get(deployment_events))
        .with_state(state);
    pages
        .merge(live)
        .nest_service(
            "/pkg",
            tower::ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-cache"),
                ))
                .service(pkg),
        )
        .layer(middleware::from_fn_with_state(cfg.public_origin, check_origin))
}

/// Pages need a session: without one (or with a revoked token) the browser
/// goes to the login page and comes back after. Server functions answer 401
/// themselves, so scripts see an error instead of a redirect.
async fn sign_in_first(State(state): State<WebState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let is_page = req.method() == Method::GET && !path.starts_with(crate::FN_PREFIX) && path != "/login";
    if !is_page {
        return next.run(req).await;
    }
    let signed_in = match state.token_in(req.headers()) {
        Some(token) => state.backend.get::<serde_json::Value>("/api/v1/whoami", &token).await.is_ok(),
        None => false,
    };
    if signed_in {
        next.run(req).await
    } else {
        let back = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        Redirect::to(&format!("/login?next={}", seg(&back))).into_response()
    }
}

/// The browser's EventSource cannot send a bearer token: these relay the
/// API's streams with the session's token, passing `Last-Event-ID` and
/// `?after=` through so a reconnect resumes exactly.
async fn relay(state: WebState, headers: HeaderMap, path: String) -> Response {
    let Some(token) = state.token_in(&headers) else {
        return (StatusCode::UNAUTHORIZED, "not signed in").into_response();
    };
    let mut extra = HeaderMap::new();
    if let Some(v) = headers.get("last-event-id") {
        extra.insert("last-event-id", v.clone());
    }
    match state.backend.request(Method::GET, &path, &token, None, extra).await {
        Ok(resp) => resp,
        Err(e) => (e.status, e.message).into_response(),
    }
}

fn with_query(path: String, q: Option<String>) -> String {
    match q {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    }
}

async fn all_events(State(state): State<WebState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    relay(state, headers, with_query("/api/v1/events".into(), q)).await
}

async fn deployment_events(
    State(state): State<WebState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    relay(state, headers, with_query(format!("/api/v1/deployments/{}/events", seg(&id)), q)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_followed_after_sign_in() {
        for ok in ["/", "/projects/web", "/deployments/d1?x=1"] {
            assert!(same_site_path(ok), "{ok}");
        }
        for bad in ["//evil.example", "/\\evil.example", "https://evil.example", "evil", "/\tevil", "/ x", ""] {
            assert!(!same_site_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn state_changing_calls_must_come_from_the_dashboard() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
            }
            m
        };
        assert!(origin_allowed(&h(&[("host", "127.0.0.1:7070"), ("origin", "http://127.0.0.1:7070")]), None));
        assert!(!origin_allowed(&h(&[("host", "127.0.0.1:7070"), ("origin", "http://hello.localhost:7070")]), None));
        assert!(!origin_allowed(&h(&[("host", "localhost:7070"), ("origin", "http://evil.example")]), None));
        assert!(origin_allowed(
            &h(&[("host", "internal:8080"), ("origin", "https://bifrost.example.com")]),
            Some("https://bifrost.example.com/")
        ));
        assert!(!origin_allowed(&h(&[("host", "x"), ("sec-fetch-site", "same-site")]), None));
        assert!(origin_allowed(&h(&[("host", "x"), ("sec-fetch-site", "same-origin")]), None));
    }
}
