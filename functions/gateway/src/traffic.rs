//! What the router saw of an app's traffic: per serving deployment its
//! last minute (rate, errors, p99) with the split and any chaos, and a
//! deployment's recent intervals for the dashboard's charts.

use axum::Json;
use axum::extract::{Path, State};
use bifrost_functions::traffic::TrafficPoint;

use super::AppState;
use super::api::{deployment_for, project_for};
use super::auth::Viewer;
use super::error::ApiResult;
use super::wire::*;

fn point(p: TrafficPoint) -> TrafficPointOut {
    TrafficPointOut { at: rfc3339(&p.at), requests_per_s: p.requests_per_s, error_rate: p.error_rate, p99_ms: p.p99_ms }
}

#[utoipa::path(get, path = "/api/v1/projects/{name}/traffic", tag = "projects",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectTrafficOut), (status = 404, body = ErrorBody)), security(("token" = ["viewer"])))]
pub async fn project(
    State(s): State<AppState>,
    caller: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectTrafficOut>> {
    let p = project_for(&s, &caller, &name).await?;
    let recorder = s.ctx.traffic.as_ref();
    let recent = |id: &str| recorder.and_then(|r| r.recent(id)).map(point);
    let split_share = p.split.as_ref().map_or(0, |sp| sp.weight);
    let mut serving: Vec<ServingOut> = p
        .live_deployment_id
        .iter()
        .map(|id| ServingOut {
            deployment_id: id.clone(),
            role: "live".into(),
            share: 100 - split_share,
            recent: recent(id),
        })
        .collect();
    if let Some(sp) = &p.split {
        serving.push(ServingOut {
            deployment_id: sp.deployment.clone(),
            role: "split".into(),
            share: sp.weight,
            recent: recent(&sp.deployment),
        });
    }
    let out = ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false);
    Ok(Json(ProjectTrafficOut {
        project: out.name,
        recorded: recorder.is_some(),
        serving,
        split: out.split,
        chaos: out.chaos.filter(|c| c.active),
    }))
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/traffic", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    responses((status = 200, body = [TrafficPointOut], description = "5-second intervals of the last 15 minutes, oldest first (empty when the deployment does not serve)"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn deployment(
    State(s): State<AppState>,
    caller: Viewer,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<TrafficPointOut>>> {
    let d = deployment_for(&s, &caller, &id).await?;
    let series = s.ctx.traffic.as_ref().map(|r| r.series(&d.id)).unwrap_or_default();
    Ok(Json(series.into_iter().map(point).collect()))
}
