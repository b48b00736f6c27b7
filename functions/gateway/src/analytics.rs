//! Analytics: DORA's four keys of a project (or of every project the
//! caller sees) computed on demand from the store's own records
//! (`bifrost_functions::insights`), beside the scheduled runs' cost and
//! anomalies over the same period; a run by hand; the price table. The
//! rules are in docs/analytics.md.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bifrost_core::analytics::cost::{Cost, Prices};
use bifrost_core::analytics::dora::FourKeys;
use bifrost_core::analytics::run::{AnalyticsResult, without_overlap};
use bifrost_core::analytics::window::Window;
use bifrost_core::domain::{Project, now};
use bifrost_functions::{analytics as runs, insights};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{Body, project_for};
use super::auth::{Admin, Viewer};
use super::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Days {
    /// The period, in days before now (1–365; default 30).
    pub days: Option<i64>,
}

fn days(q: &Days) -> ApiResult<i64> {
    match q.days.unwrap_or(30) {
        d @ 1..=365 => Ok(d),
        d => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("days={d}: from 1 to 365"))),
    }
}

/// The JSON of one period's keys: the names, the bands beside.
fn dora(k: &FourKeys) -> Value {
    json!({
        "deployment_frequency_per_day": k.deployment_frequency_per_day,
        "lead_time_seconds_p50": k.lead_time_seconds_p50,
        "lead_time_seconds_p90": k.lead_time_seconds_p90,
        "change_failure_rate": k.change_failure_rate,
        "time_to_restore_seconds_p50": k.time_to_restore_seconds_p50,
        "performance": k.performance,
        "changes": k.changes,
        "judged_changes": k.judged_changes,
        "failed_changes": k.failed_changes,
        "bands": k.bands,
    })
}

/// The results of the `days` before now, each window counted once.
async fn results_of(s: &AppState, p: &Project, days: i64) -> ApiResult<Vec<AnalyticsResult>> {
    let to = now();
    Ok(without_overlap(s.ctx.store.analytics(&p.id, to - chrono::Duration::days(days), to).await?))
}

/// The analysed windows of the period, counted once: their cost summed,
/// an hourly cost series, the anomalies found.
async fn runs_of(s: &AppState, p: &Project, days: i64) -> ApiResult<Value> {
    let results = results_of(s, p, days).await?;
    let currency = match results.last() {
        Some(r) => r.currency.clone(),
        None => runs::prices(&*s.ctx.store).await.map_err(unavailable)?.currency,
    };
    let mut cost = Cost::default();
    let mut hourly: std::collections::BTreeMap<i64, f64> = Default::default();
    let mut anomalies = vec![];
    for r in &results {
        cost.add(&r.cost);
        let hour = bifrost_core::analytics::window::align_down(r.window.start, chrono::Duration::hours(1));
        *hourly.entry(hour.timestamp()).or_default() += r.cost.total;
        anomalies.extend(r.anomalies.iter().cloned());
    }
    let series: Vec<Value> = hourly
        .iter()
        .filter_map(|(t, v)| Some(json!({"at": chrono::DateTime::from_timestamp(*t, 0)?.to_rfc3339(), "total": v})))
        .collect();
    Ok(json!({
        "cost": {
            "total": cost.total,
            "currency": currency,
            "cpu": cost.cpu,
            "memory": cost.memory,
            "idle": cost.idle,
            "requests": cost.requests,
            "per_1000_requests": cost.per_1000_requests,
            "by_deployment": cost.by_deployment,
            "hourly": series,
        },
        "anomalies": anomalies,
        "analysed": {
            "windows": results.len(),
            "first": results.first().map(|r| r.window.start.to_rfc3339()),
            "last": results.last().map(|r| r.window.end.to_rfc3339()),
        },
    }))
}

fn unavailable(e: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e)
}

async fn of_project(s: &AppState, name: &str, days: i64) -> ApiResult<Value> {
    let changes = insights::changes(&s.ctx, name).await.map_err(unavailable)?;
    let project = s.ctx.store.get_project(name).await?;
    let analysed = runs_of(s, &project, days).await?;
    let at = now();
    let periods: Vec<Value> = insights::PERIODS
        .iter()
        .map(|d| json!({"days": d, "dora": dora(&insights::over_days(&changes, at, *d))}))
        .collect();
    Ok(json!({
        "project": name,
        "days": days,
        "dora": dora(&insights::over_days(&changes, at, days)),
        "periods": periods,
        "cost": analysed["cost"],
        "anomalies": analysed["anomalies"],
        "analysed": analysed["analysed"],
    }))
}

#[utoipa::path(get, path = "/api/v1/analytics/projects/{name}", tag = "analytics",
    params(("name" = String, Path, description = "Project name or id"), Days),
    responses((status = 200, description = "`{project, days, dora: {deployment_frequency_per_day, lead_time_seconds_p50, \
lead_time_seconds_p90, change_failure_rate, time_to_restore_seconds_p50, performance, changes, judged_changes, failed_changes, bands}, \
periods: [{days: 7|30|90, dora}], cost: {total, currency, cpu, memory, idle, requests, per_1000_requests, by_deployment, \
hourly: [{at, total}]}, anomalies: [{series, at, value, baseline, score}], analysed: {windows, first, last}}` (docs/analytics.md)"), (status = 404, body = super::wire::ErrorBody),
        (status = 422, body = super::wire::ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn project(
    State(s): State<AppState>,
    caller: Viewer,
    Path(name): Path<String>,
    Query(q): Query<Days>,
) -> ApiResult<Json<Value>> {
    let days = days(&q)?;
    let p = project_for(&s, &caller, &name).await?;
    Ok(Json(of_project(&s, &p.name, days).await?))
}

#[utoipa::path(get, path = "/api/v1/analytics/projects/{name}/anomalies", tag = "analytics",
    params(("name" = String, Path, description = "Project name or id"), Days),
    responses((status = 200, description = "`{project, days, anomalies: [{series, at, value, baseline, score}]}`: the anomalies \
the analytics runs found in the period, oldest first — the analytics answer without the four keys and the cost (the \
deployment page's chart markers)"), (status = 404, body = super::wire::ErrorBody), (status = 422, body = super::wire::ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn anomalies(
    State(s): State<AppState>,
    caller: Viewer,
    Path(name): Path<String>,
    Query(q): Query<Days>,
) -> ApiResult<Json<Value>> {
    let days = days(&q)?;
    let p = project_for(&s, &caller, &name).await?;
    let results = results_of(&s, &p, days).await?;
    let found: Vec<_> = results.iter().flat_map(|r| r.anomalies.iter()).collect();
    Ok(Json(json!({"project": p.name, "days": days, "anomalies": found})))
}

#[utoipa::path(get, path = "/api/v1/analytics/summary", tag = "analytics", params(Days),
    responses((status = 200, description = "`{days, projects: [{project, dora, cost, anomalies}]}`: every project the caller sees, by name"),
        (status = 422, body = super::wire::ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn summary(State(s): State<AppState>, caller: Viewer, Query(q): Query<Days>) -> ApiResult<Json<Value>> {
    let days = days(&q)?;
    let mut projects = s.ctx.store.list_projects().await?;
    projects.retain(|p| caller.0.0.reaches(&p.id));
    projects.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::with_capacity(projects.len());
    for p in &projects {
        let one = of_project(&s, &p.name, days).await?;
        out.push(json!({"project": p.name, "dora": one["dora"], "cost": one["cost"], "anomalies": one["anomalies"]}));
    }
    Ok(Json(json!({"days": days, "projects": out})))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIn {
    /// `START/LENGTH`, e.g. `2026-11-29T10:00Z/1h` (default: the last full
    /// window of the schedule's length, 5 minutes).
    #[serde(default)]
    pub window: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/analytics/runs", tag = "analytics", request_body = RunIn,
    responses((status = 200, description = "`{window, run_id, stored, already, anomalies}`: projects analysed now, and those \
whose result for this window was kept already (a window is analysed once)"),
        (status = 422, body = super::wire::ErrorBody, description = "Not a window, or one that has not ended")),
    security(("token" = ["admin"])))]
pub async fn run(State(s): State<AppState>, caller: Admin, Body(req): Body<RunIn>) -> ApiResult<Json<Value>> {
    let at = now();
    let window = match &req.window {
        Some(w) => Window::parse(w, at).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e))?,
        None => Window::last_full(at, s.ctx.settings.analytics_every.unwrap_or(chrono::Duration::minutes(5))),
    };
    let summary = runs::run_window(&s.ctx, window).await.map_err(unavailable)?;
    tracing::info!(by = %caller.actor(), window = %window, "analytics run by hand");
    Ok(Json(serde_json::to_value(summary).map_err(|e| unavailable(e.to_string()))?))
}

/// What an admin may change of the price table (the rest is kept).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PricesIn {
    #[serde(default)]
    pub currency: Option<String>,
    /// Per vCPU-hour.
    #[serde(default)]
    pub cpu_core_hour: Option<f64>,
    /// Per GiB-hour.
    #[serde(default)]
    pub memory_gib_hour: Option<f64>,
}

fn prices_out(p: &Prices) -> Value {
    json!({"currency": p.currency, "cpu_core_hour": p.cpu_core_hour, "memory_gib_hour": p.memory_gib_hour,
        "default": *p == Prices::default()})
}

#[utoipa::path(get, path = "/api/v1/analytics/prices", tag = "analytics",
    responses((status = 200, description = "`{currency, cpu_core_hour, memory_gib_hour, default}`: the price table runs use")),
    security(("token" = ["viewer"])))]
pub async fn prices(State(s): State<AppState>, _caller: Viewer) -> ApiResult<Json<Value>> {
    Ok(Json(prices_out(&runs::prices(&*s.ctx.store).await.map_err(unavailable)?)))
}

#[utoipa::path(put, path = "/api/v1/analytics/prices", tag = "analytics", request_body = PricesIn,
    responses((status = 200, description = "The new table: runs from now on use it (results kept earlier keep theirs)"),
        (status = 422, body = super::wire::ErrorBody, description = "A negative or non-finite price, or not a currency code")),
    security(("token" = ["admin"])))]
pub async fn set_prices(State(s): State<AppState>, caller: Admin, Body(req): Body<PricesIn>) -> ApiResult<Json<Value>> {
    let mut p = runs::prices(&*s.ctx.store).await.map_err(unavailable)?;
    if let Some(c) = req.currency {
        p.currency = c;
    }
    if let Some(v) = req.cpu_core_hour {
        p.cpu_core_hour = v;
    }
    if let Some(v) = req.memory_gib_hour {
        p.memory_gib_hour = v;
    }
    p.check().map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e))?;
    runs::set_prices(&*s.ctx.store, &p).await.map_err(unavailable)?;
    tracing::warn!(by = %caller.actor(), currency = p.currency, cpu_core_hour = p.cpu_core_hour,
        memory_gib_hour = p.memory_gib_hour, "analytics prices set");
    Ok(Json(prices_out(&p)))
}
