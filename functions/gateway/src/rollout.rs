//! `bifrost rollout promote|abort`: a deployer moves a canary on by hand
//! (the next step without asking the gate — what a paused rollout waits
//! for) or ends it (weight 0; the canary is cancelled, the live deployment
//! untouched).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bifrost_core::domain::TrafficChange;
use bifrost_core::ports::Transition;
use bifrost_core::{Status, StoreError};
use bifrost_functions::canary::{self, RolloutError};

use super::AppState;
use super::api::project_for;
use super::auth::Deployer;
use super::error::{ApiError, ApiResult};
use super::wire::*;

fn no_rollout(name: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "no_rollout", format!("{name} has no canary rolling out"))
}

fn out(s: &AppState, p: bifrost_core::Project) -> Json<ProjectOut> {
    Json(ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false))
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/rollout/promote", tag = "projects",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut, description = "The canary takes its next step within a second"),
              (status = 409, body = ErrorBody, description = "No canary is rolling out"), (status = 404, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn promote(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectOut>> {
    let project = project_for(&s, &caller, &name).await?;
    match canary::request_promote(&s.ctx, &project, caller.actor()).await {
        Ok(_) => Ok(out(&s, s.ctx.store.get_project(&project.id).await?)),
        Err(RolloutError::NoRollout(n)) => Err(no_rollout(&n)),
        Err(RolloutError::Store(e)) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/rollout/abort", tag = "projects",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut, description = "The canary's share is 0 and it is cancelled"),
              (status = 409, body = ErrorBody, description = "No canary is rolling out"), (status = 404, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn abort(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectOut>> {
    let project = project_for(&s, &caller, &name).await?;
    let Some(state) = project.rollout.clone() else { return Err(no_rollout(&project.name)) };
    let reason = format!("canary aborted by {}", caller.actor());
    let c = TrafficChange::Rollout { rollout: None, split: None, expected_generation: Some(state.generation) };
    s.ctx.store.set_traffic(&project.id, c, &reason, caller.actor(), None).await?;
    let d = s.ctx.store.get_deployment(&state.deployment).await?;
    if !d.status.is_terminal() && d.status != Status::Healthy {
        let t = Transition::new(&d.id, d.status, Status::Cancelled, &reason, caller.actor()).at_version(d.version);
        match s.ctx.store.transition(t).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::warn!(project = %project.name, canary = %d.id, by = %caller.actor(), "canary aborted");
    Ok(out(&s, s.ctx.store.get_project(&project.id).await?))
}
