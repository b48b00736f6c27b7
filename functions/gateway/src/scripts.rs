//! `bifrost scripts`: push a routing script live, list the versions and how
//! they fare, roll back. A pushed script is compiled and dry-run on a
//! synthetic request under the router's limits before it is kept; one that
//! fails is refused (422, with the Lua error and line) and the running one
//! stays.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bifrost_core::scripts::{Manifest, ScriptHealth};
use bifrost_scripts::{Limits, Script};

use super::AppState;
use super::api::{Body, project_for};
use super::auth::{Deployer, Viewer};
use super::error::{ApiError, ApiResult};
use super::wire::*;

fn health_out(h: ScriptHealth) -> ScriptHealthOut {
    ScriptHealthOut {
        errors: h.errors,
        last_error: h.last_error,
        line: h.line,
        last_error_at: h.at.as_ref().map(rfc3339),
    }
}

/// The name errors give a pushed version (`web@v3`).
pub fn pushed_name(app: &str, version: u32) -> String {
    format!("{app}@v{version}")
}

async fn scripts_out(s: &AppState, project: &bifrost_core::Project, manifest: Manifest) -> ApiResult<ScriptsOut> {
    let app = &project.name;
    // This process's router and every router process that reported.
    let health = s.ctx.scripts.health_of(app).await?;
    let health = |sha256: &str| health_out(health.get(sha256).cloned().unwrap_or_default());
    let deployment_script = match &project.live_deployment_id {
        Some(id) => {
            let d = s.ctx.store.get_deployment(id).await?;
            d.config.and_then(|c| {
                let text = c.script?;
                let sha256 = bifrost_scripts::sha256(&text);
                Some(DeploymentScriptOut {
                    deployment_id: id.clone(),
                    path: c.config.traffic.script.unwrap_or_default(),
                    state: if manifest.active.is_some() { "overridden" } else { "running" }.into(),
                    health: health(&sha256),
                    sha256,
                })
            })
        }
        None => None,
    };
    let versions = manifest
        .versions
        .iter()
        .map(|v| ScriptVersionOut {
            version: v.version,
            sha256: v.sha256.clone(),
            bytes: v.bytes,
            pushed_by: v.pushed_by.to_string(),
            at: rfc3339(&v.at),
            state: if manifest.active == Some(v.version) { "running" } else { "kept" }.into(),
            health: health(&v.sha256),
        })
        .collect();
    Ok(ScriptsOut { project: app.clone(), running: manifest.active, deployment_script, versions })
}

#[utoipa::path(get, path = "/api/v1/projects/{name}/scripts", tag = "scripts",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ScriptsOut), (status = 404, body = ErrorBody)), security(("token" = ["viewer"])))]
pub async fn list(State(s): State<AppState>, caller: Viewer, Path(name): Path<String>) -> ApiResult<Json<ScriptsOut>> {
    let project = project_for(&s, &caller, &name).await?;
    let manifest = s.ctx.scripts.manifest(&project.name).await?;
    Ok(Json(scripts_out(&s, &project, manifest).await?))
}

/// Compiles and dry-runs `source` off the async threads.
async fn check(name: String, source: String) -> ApiResult<()> {
    let outcome = tokio::task::spawn_blocking(move || {
        bifrost_scripts::dry_run(&Script::new(&name, &source, Limits::default())).map(drop)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    outcome.map_err(|e| {
        let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "script_error", e.message.clone());
        err.details = Some(serde_json::json!({
            "kind": format!("{:?}", e.kind).to_lowercase(),
            "line": e.line,
        }));
        err
    })
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/scripts", tag = "scripts", request_body = ScriptIn,
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 201, body = ScriptsOut, description = "Kept and running (routers pick it up within 2 s)"),
              (status = 422, body = ErrorBody, description = "It does not compile or failed its dry run: the running script stays"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn push(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
    Body(req): Body<ScriptIn>,
) -> ApiResult<(StatusCode, Json<ScriptsOut>)> {
    let project = project_for(&s, &caller, &name).await?;
    let app = project.name.clone();
    if req.source.len() > bifrost_core::scripts::MAX_SCRIPT_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "the script is {} bytes; the limit is {}",
                req.source.len(),
                bifrost_core::scripts::MAX_SCRIPT_BYTES
            ),
        ));
    }
    let next = s.ctx.scripts.manifest(&app).await?.versions.last().map_or(1, |v| v.version + 1);
    check(pushed_name(&app, next), req.source.clone()).await?;
    let v = s.ctx.scripts.push(&app, &req.source, caller.actor()).await?;
    tracing::warn!(project = %app, version = v.version, sha256 = %v.sha256, by = %caller.actor(), "routing script pushed");
    let manifest = s.ctx.scripts.manifest(&app).await?;
    Ok((StatusCode::CREATED, Json(scripts_out(&s, &project, manifest).await?)))
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/scripts/rollback", tag = "scripts", request_body = ScriptRollbackIn,
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ScriptsOut), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Nothing earlier to go back to")),
    security(("token" = ["deployer"])))]
pub async fn rollback(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
    Body(req): Body<ScriptRollbackIn>,
) -> ApiResult<Json<ScriptsOut>> {
    let project = project_for(&s, &caller, &name).await?;
    let app = project.name.clone();
    let manifest = s.ctx.scripts.manifest(&app).await?;
    let to = match req.to {
        Some(0) => None,
        Some(v) => Some(v),
        None => {
            let Some(running) = manifest.active else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "nothing_to_roll_back",
                    format!("no pushed script runs for {app}: its deployment's own script (if any) does"),
                ));
            };
            // The version before the running one, else the deployment's own.
            manifest.versions.iter().rev().map(|v| v.version).find(|v| *v < running)
        }
    };
    let manifest = s.ctx.scripts.activate(&app, to, caller.actor()).await?;
    let what = to.map_or("the deployment's own script".to_string(), |v| format!("version {v}"));
    tracing::warn!(project = %app, by = %caller.actor(), "routing script rolled back to {what}");
    Ok(Json(scripts_out(&s, &project, manifest).await?))
}
