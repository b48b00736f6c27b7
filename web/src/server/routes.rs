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

use super::{Backend, WebState, seg, token_in};
use crate::app::{App, shell};

pub struct WebConfig {
    pub backend: Backend,
    /// Holds `pkg/` with the client's js and wasm (`cargo xtask web`).
    pub site_root: PathBuf,
    pub secure_cookies: bool,
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
    let state = WebState { backend: cfg.backend, secure_cookies: cfg.secure_cookies };
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
    pages.merge(live).nest_service(
        "/pkg",
        tower::ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            ))
            .service(pkg),
    )
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
    let signed_in = match token_in(req.headers()) {
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
    let Some(token) = token_in(&headers) else {
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
