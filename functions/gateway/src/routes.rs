//! The routing table for `bifrost-router` nodes: `GET /api/v1/routes`,
//! and `GET /api/v1/routes/stream`, Server-Sent Events of its changes.
//! Readable with a `router` token (which reads nothing else) or an admin's.
//!
//! The stream's first event is the whole table (`snapshot`), then each
//! `change` (routes set and apps removed, from `base` to `version`); every
//! event's `id:` is the table version it leaves the router at. A router
//! reconnecting with `Last-Event-ID` gets only what changed since that
//! version if this gateway still has it, else a snapshot; nothing if the
//! table has not moved.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use bifrost_core::Role;
use bifrost_core::ports::{RouterTally, TrafficCounts};
use bifrost_core::routes::RouteTable;
use bifrost_core::scripts::{MAX_REPORTED_APPS, MAX_REPORTED_SCRIPTS, ScriptHealth};
use futures::Stream;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};

/// A caller that may read the routing table: a router, or an admin.
pub struct RouteReader(#[allow(dead_code)] Caller);

impl FromRequestParts<AppState> for RouteReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.0.role {
            Role::Router | Role::Admin => Ok(RouteReader(caller)),
            other => Err(ApiError::forbidden(format!(
                "token {:?} has role {other}; the routing table is read with a router token \
                 (bifrost tokens create NAME --role router) or an admin's",
                caller.0.name
            ))),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/routes", tag = "routes",
    responses((status = 200, description = "The routing table: `{version, routes: [{app, deployment, endpoints, \
traffic, script?, split?, chaos?}]}`"), (status = 403, body = super::wire::ErrorBody)),
    security(("token" = ["router", "admin"])))]
pub async fn table(State(s): State<AppState>, _caller: RouteReader) -> ApiResult<Json<RouteTable>> {
    let table = s.routes.current(&s.ctx).await?;
    Ok(Json(RouteTable::clone(&table)))
}

fn snapshot(t: &RouteTable) -> SseEvent {
    SseEvent::default().id(t.version.clone()).event("snapshot").data(serde_json::to_string(t).unwrap_or_default())
}

fn change(from: &RouteTable, to: &RouteTable) -> SseEvent {
    let c = to.since(from);
    SseEvent::default().id(to.version.clone()).event("change").data(serde_json::to_string(&c).unwrap_or_default())
}

#[utoipa::path(get, path = "/api/v1/routes/stream", tag = "routes",
    params(("Last-Event-ID" = Option<String>, Header, description = "The table version the router has")),
    responses((status = 200, description = "text/event-stream: a `snapshot` (the whole table) or, resuming, \
a `change` since the router's version; then a `change` for each new version. Each event's `id:` is the version \
it leads to."), (status = 403, body = super::wire::ErrorBody)),
    security(("token" = ["router", "admin"])))]
pub async fn stream(
    State(s): State<AppState>,
    _caller: RouteReader,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let have = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim);
    // What the router has, if this gateway remembers that version.
    let held: Option<Arc<RouteTable>> = have.and_then(|v| s.routes.recent(v));
    let mut rx = s.routes.follow(&s.ctx);
    rx.mark_changed();
    let open = s.ctx.metrics.sse_open();
    let events = futures::stream::unfold((rx, held, open), |(mut rx, held, open)| async move {
        loop {
            rx.changed().await.ok()?;
            let Some(now) = rx.borrow_and_update().clone() else { continue };
            let event = match &held {
                Some(h) if h.version == now.version => continue,
                Some(h) => change(h, &now),
                None => snapshot(&now),
            };
            return Some((Ok(event), (rx, Some(now), open)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// What the routers following this gateway last said of their cluster
/// (each posts its `/cluster/status` every few seconds): the dashboard's
/// cluster page. Kept in memory, per gateway process; a report older than
/// [`REPORT_KEPT`] is forgotten.
#[derive(Default)]
pub struct RouterReports {
    by_node: std::sync::Mutex<std::collections::HashMap<String, (serde_json::Value, std::time::Instant)>>,
}

/// How long a router's report is shown after it stopped reporting.
pub const REPORT_KEPT: Duration = Duration::from_secs(300);

/// The largest report accepted (a status of a few hundred nodes).
const MAX_REPORT_BYTES: usize = 256 << 10;

#[utoipa::path(post, path = "/api/v1/routers/report", tag = "routes",
    request_body(content = Object, description = "The router's `GET /cluster/status` answer"),
    responses((status = 204), (status = 403, body = super::wire::ErrorBody), (status = 422, body = super::wire::ErrorBody)),
    security(("token" = ["router", "admin"])))]
pub async fn report(
    State(s): State<AppState>,
    _caller: RouteReader,
    req: axum::extract::Request,
) -> ApiResult<axum::http::StatusCode> {
    let body = super::read_body(req, MAX_REPORT_BYTES).await?;
    let mut status: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("a router report is its /cluster/status JSON: {e}"),
        )
    })?;
    let traffic = match status.as_object_mut().and_then(|o| o.remove("traffic")) {
        Some(t) => tallies(&t).map_err(|e| {
            ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("traffic: {e}"))
        })?,
        None => (0, vec![]),
    };
    let scripts = match status.as_object_mut().and_then(|o| o.remove("scripts")) {
        Some(v) => script_failures(&v).map_err(|e| {
            ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("scripts: {e}"))
        })?,
        None => vec![],
    };
    let node = status["local_node"]
        .as_str()
        .filter(|n| !n.is_empty() && n.len() <= 253)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "a router report names its local_node",
            )
        })?
        .to_string();
    let (started_ms, counts) = traffic;
    let router = format!("{node}@{started_ms}");
    if !counts.is_empty() {
        let at = bifrost_core::domain::now();
        let tallies = counts
            .into_iter()
            .map(|(deployment_id, counts)| RouterTally { router: node.clone(), started_ms, deployment_id, counts, at })
            .collect();
        s.ctx.store.record_tallies(tallies).await?;
    }
    if let Ok(mut m) = s.routers.by_node.lock() {
        m.retain(|_, (_, at)| at.elapsed() < REPORT_KEPT);
        m.insert(node, (status, std::time::Instant::now()));
    }
    // Last: when the scripts store fails, the counts and the status are
    // kept, and the router sends all again (its counts are cumulative).
    for (app, failures) in &scripts {
        s.ctx.scripts.record_router_errors(app, &router, failures).await?;
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Deployments one report may give counts of.
const MAX_TALLIES: usize = 256;

/// A report's `traffic`: `{"started_ms": …, "deployments": {id: counts}}`,
/// each checked ([`TrafficCounts::check`]) before anything is kept.
fn tallies(t: &serde_json::Value) -> Result<(i64, Vec<(String, TrafficCounts)>), String> {
    let started_ms = t["started_ms"].as_i64().filter(|s| *s >= 0).ok_or("started_ms: a start time in ms")?;
    let deployments = t["deployments"].as_object().ok_or("deployments: an object of deployment ids to counts")?;
    if deployments.len() > MAX_TALLIES {
        return Err(format!("counts of {} deployments (at most {MAX_TALLIES} a report)", deployments.len()));
    }
    let counts = deployments
        .iter()
        .map(|(id, c)| {
            let plausible = !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !plausible {
                return Err(format!("{id:?} is not a deployment id"));
            }
            let counts: TrafficCounts = serde_json::from_value(c.clone()).map_err(|e| format!("{id}: {e}"))?;
            counts.check().map_err(|e| format!("{id}: {e}"))?;
            Ok((id.clone(), counts))
        })
        .collect::<Result<_, String>>()?;
    Ok((started_ms, counts))
}

/// One app's scripts' failures in one router process, by sha256.
type ScriptFailures = BTreeMap<String, ScriptHealth>;

/// A report's `scripts`: `{app: {sha256: {"errors", "last_error", "line",
/// "at_ms"}}}`, the router process's cumulative failures of each script it
/// ran (shown by `bifrost scripts list`), each checked before anything is
/// kept. The error text is the router's Lua error, cut to 500 characters.
fn script_failures(v: &serde_json::Value) -> Result<Vec<(String, ScriptFailures)>, String> {
    let apps = v.as_object().ok_or("an object of apps to their scripts' failures")?;
    if apps.len() > MAX_REPORTED_APPS {
        return Err(format!("failures of {} apps (at most {MAX_REPORTED_APPS} a report)", apps.len()));
    }
    apps.iter()
        .map(|(app, scripts)| {
            if !bifrost_core::domain::is_dns_label(app) {
                return Err(format!("{app:?} is not an app name"));
            }
            let scripts = scripts.as_object().ok_or_else(|| format!("{app}: an object of sha256 to failures"))?;
            if scripts.len() > MAX_REPORTED_SCRIPTS {
                return Err(format!("{app}: {} scripts (at most {MAX_REPORTED_SCRIPTS})", scripts.len()));
            }
            let failures = scripts
                .iter()
                .map(|(sha256, f)| {
                    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                        return Err(format!("{app}: {sha256:?} is not a sha256"));
                    }
                    let errors = f["errors"].as_u64().filter(|n| *n > 0).ok_or_else(|| format!("{app}: errors"))?;
                    let at = f["at_ms"].as_i64().and_then(chrono::DateTime::from_timestamp_millis);
                    let health = ScriptHealth {
                        errors,
                        last_error: f["last_error"].as_str().map(|e| e.chars().take(500).collect()),
                        line: f["line"].as_u64().and_then(|l| u32::try_from(l).ok()),
                        at: Some(at.ok_or_else(|| format!("{app}: at_ms, a time in ms"))?),
                    };
                    Ok((sha256.clone(), health))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()?;
            Ok((app.clone(), failures))
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/routers", tag = "routes",
    responses((status = 200, description = "`{routes_version, routers: [{node, reported_s_ago, status}]}`: each router's \
last report (newest first) and the table version this gateway serves now")),
    security(("token" = ["viewer"])))]
pub async fn routers(State(s): State<AppState>, _caller: super::auth::Viewer) -> ApiResult<Json<serde_json::Value>> {
    let mut list: Vec<(String, serde_json::Value, Duration)> = s
        .routers
        .by_node
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(_, (_, at))| at.elapsed() < REPORT_KEPT)
                .map(|(n, (v, at))| (n.clone(), v.clone(), at.elapsed()))
                .collect()
        })
        .unwrap_or_default();
    list.sort_by_key(|(n, _, age)| (*age, n.clone()));
    // Only when routers listen: otherwise nothing needs the table.
    let version = if list.is_empty() { None } else { s.routes.current(&s.ctx).await.ok().map(|t| t.version.clone()) };
    let routers: Vec<serde_json::Value> = list
        .into_iter()
        .map(|(node, status, age)| serde_json::json!({"node": node, "reported_s_ago": age.as_secs(), "status": status}))
        .collect();
    Ok(Json(serde_json::json!({"routes_version": version, "routers": routers})))
}
