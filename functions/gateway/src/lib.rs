//! The gateway: the platform's edges. REST API under `/api/v1`, the GitHub
//! webhook, `/healthz` and the OpenAPI document at `/api/openapi.json`
//! ([`router`]); the live SSE fan-out and the listener that hands it event
//! streams ([`fanout`], [`listener`]); the sidecars' gRPC [`ingest`].

pub mod analytics;
pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod fanout;
pub mod ingest;
pub mod listener;
pub mod live;
pub mod openapi;
pub mod policies;
pub mod report;
pub mod rollout;
pub mod routes;
pub mod scripts;
pub mod traffic;
pub mod webhook;
pub mod wire;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::routing::{delete, get, post};

use bifrost_functions::Ctx;
use error::ApiError;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Ctx,
    /// Branch heads the webhook confirmed a moment ago (see [`webhook::Heads`]).
    pub heads: std::sync::Arc<webhook::Heads>,
    /// The routing table as routers follow it (`/api/v1/routes`).
    pub routes: std::sync::Arc<bifrost_functions::routes::RouteFeed>,
    /// What the routers following this gateway say of their cluster.
    pub routers: std::sync::Arc<routes::RouterReports>,
}

/// The gateway's routes. `bifrost up` merges the router and dashboard onto
/// the same listener; the Cloud Run `gateway` service serves this alone.
pub fn router(ctx: Ctx) -> Router {
    let isolation = ctx.settings.isolation.clone();
    let state = AppState { ctx, heads: Default::default(), routes: Default::default(), routers: Default::default() };
    let v1 = Router::new()
        .route("/projects", get(api::list_projects).post(api::create_project))
        .route("/projects/{name}", get(api::get_project).delete(api::delete_project))
        .route("/projects/{name}/deployments", get(api::list_project_deployments).post(api::create_deployment))
        .route("/deployments", get(api::list_deployments))
        .route("/deployments/{id}", get(api::get_deployment))
        .route("/deployments/{id}/history", get(api::deployment_events))
        .route("/deployments/{id}/events", get(live::deployment_events))
        .route("/deployments/{id}/logs", get(api::deployment_logs))
        .route("/deployments/{id}/replicas", get(api::replicas))
        .route("/deployments/{id}/health", get(api::health))
        .route("/projects/{name}/rollback", post(api::rollback))
        .route("/projects/{name}/chaos", axum::routing::put(api::set_chaos).delete(api::end_chaos))
        .route("/projects/{name}/traffic", get(traffic::project))
        .route("/deployments/{id}/traffic", get(traffic::deployment))
        .route("/projects/{name}/split", axum::routing::put(api::set_split).delete(api::reset_split))
        .route("/projects/{name}/rollout/promote", post(rollout::promote))
        .route("/projects/{name}/rollout/abort", post(rollout::abort))
        .route("/projects/{name}/scripts", get(scripts::list).post(scripts::push))
        .route("/projects/{name}/scripts/rollback", post(scripts::rollback))
        .route("/routes", get(routes::table))
        .route("/routes/stream", get(routes::stream))
        .route("/routers", get(routes::routers))
        .route("/analytics/projects/{name}", get(analytics::project))
        .route("/analytics/projects/{name}/anomalies", get(analytics::anomalies))
        .route("/analytics/summary", get(analytics::summary))
        .route("/analytics/runs", post(analytics::run))
        .route("/analytics/prices", get(analytics::prices).put(analytics::set_prices))
        .route("/routers/report", post(routes::report))
        .route("/policies", get(policies::list))
        .route("/policies/{name}", get(policies::show).put(policies::set))
        .route("/policies/{name}/data", axum::routing::patch(policies::set_data))
        .route("/policies/{name}/test", post(policies::test))
        .route("/events", get(live::all_events))
        .route("/secrets", get(api::list_all_secrets))
        .route("/secrets/{name}", axum::routing::put(api::global_secret_moved).delete(api::global_secret_moved))
        .route("/projects/{name}/secrets", get(api::list_secrets))
        .route("/projects/{name}/secrets/{secret}", axum::routing::put(api::set_secret).delete(api::delete_secret))
        .route("/deployments/{id}/retry", post(api::retry))
        .route("/deployments/{id}/cancel", post(api::cancel))
        .route("/audit", get(api::audit))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/report", get(audit::report))
        .route("/events/dead", get(api::dead_letters))
        .route("/events/dead/redrive", post(api::redrive))
        .route("/tokens", get(api::list_tokens).post(api::create_token))
        .route("/tokens/{name}", delete(api::revoke_token))
        .route("/whoami", get(api::whoami))
        .route("/validate", post(api::validate))
        .route("/webhooks/github", post(webhook::github))
        .fallback(error::not_found);
    Router::new()
        .nest("/api/v1", v1)
        .route("/api/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/metrics", get(metrics))
        .route("/healthz", get(move || healthz(isolation.clone())))
        // JSON bodies: 64 KiB. Routes that take more (uploads, webhooks)
        // read the raw body with their own limit (read_body).
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(state)
}

/// `GET /metrics`: Prometheus exposition of the platform and its router.
/// Any role but `router` may read it, but only with a token not limited to a project
/// (the families name every app); `--metrics-public` drops the token.
async fn metrics(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
) -> Result<axum::response::Response, ApiError> {
    let (parts, _) = req.into_parts();
    let openmetrics = parts
        .headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if !s.ctx.settings.metrics_public {
        let token = auth::bearer(&parts).ok_or_else(|| {
            ApiError::unauthorized(
                "missing API token: send `Authorization: Bearer <token>` (or start with --metrics-public)",
            )
        })?;
        let token = auth::authenticate(&s, token).await?;
        auth::Caller(token.clone()).require(bifrost_core::Role::Viewer)?;
        if token.project_id.is_some() {
            return Err(ApiError::forbidden("metrics cover every app: use a token that is not limited to a project"));
        }
    }
    use bifrost_functions::metrics::{OPENMETRICS, PROMETHEUS_TEXT, to_prometheus_text};
    let body = s.ctx.metrics.encode(&s.ctx).await;
    let (ctype, body) = if openmetrics { (OPENMETRICS, body) } else { (PROMETHEUS_TEXT, to_prometheus_text(&body)) };
    Ok(axum::response::IntoResponse::into_response(([(axum::http::header::CONTENT_TYPE, ctype)], body)))
}

/// The largest JSON body a route without its own limit accepts.
pub const MAX_JSON_BYTES: usize = 64 << 10;

/// Liveness, and what confines apps here: a platform running them
/// unconfined says so on every check.
async fn healthz(isolation: Option<bifrost_core::ports::Isolation>) -> Json<serde_json::Value> {
    let mut v = serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")});
    if let Some(i) = isolation {
        v["sandbox"] = serde_json::to_value(&i).unwrap_or_default();
        if !i.enforced {
            v["status"] = "insecure".into();
        }
    }
    Json(v)
}

/// Bodies past the limit are still read (and dropped) up to this much, so
/// the client finishes sending and sees the 413 instead of a broken pipe.
const DRAIN_LIMIT: usize = 64 << 20;

/// Reads a request body of at most `limit` bytes; larger is a 413 with a
/// JSON body.
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_LIMIT {
                break;
            }
            if seen <= limit {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(buf.freeze())
}
