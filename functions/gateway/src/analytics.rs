//! Delivery analytics on demand: DORA's four keys of a project (or of
//! every project the caller sees) from the store's own records
//! (`bifrost_functions::insights`; the rules are in docs/analytics.md).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bifrost_core::analytics::dora::FourKeys;
use bifrost_core::domain::now;
use bifrost_functions::insights;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::project_for;
use super::auth::Viewer;
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

async fn of_project(s: &AppState, name: &str, days: i64) -> ApiResult<Value> {
    let changes = insights::changes(&s.ctx, name)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
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
    }))
}

#[utoipa::path(get, path = "/api/v1/analytics/projects/{name}", tag = "analytics",
    params(("name" = String, Path, description = "Project name or id"), Days),
    responses((status = 200, description = "`{project, days, dora: {deployment_frequency_per_day, lead_time_seconds_p50, \
lead_time_seconds_p90, change_failure_rate, time_to_restore_seconds_p50, performance, changes, judged_changes, failed_changes, bands}, \
periods: [{days: 7|30|90, dora}]}` (docs/analytics.md)"), (status = 404, body = super::wire::ErrorBody),
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

#[utoipa::path(get, path = "/api/v1/analytics/summary", tag = "analytics", params(Days),
    responses((status = 200, description = "`{days, projects: [{project, dora}]}`: every project the caller sees, by name"),
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
        out.push(json!({"project": p.name, "dora": one["dora"]}));
    }
    Ok(Json(json!({"days": days, "projects": out})))
}
