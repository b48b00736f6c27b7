//! `bifrost policies`: the gates' Rego policies and their data. Admins
//! change them (every change a new, hash-chained version, refused with the
//! line if it does not compile); anyone may read them; deployers may test
//! one on an input without acting.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bifrost_core::policies::NewPolicyVersion;
use bifrost_functions::gates::{self, InForce};
use bifrost_policy::{Gate, PolicyError};

use super::AppState;
use super::api::Body;
use super::auth::{Admin, Deployer, Viewer};
use super::error::{ApiError, ApiResult};
use super::wire::*;
use bifrost_core::domain::Role;

fn gate(name: &str) -> ApiResult<Gate> {
    name.parse::<Gate>().map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.message))
}

fn policy_error(e: PolicyError) -> ApiError {
    let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_error", e.message);
    err.details = Some(serde_json::json!({ "line": e.line }));
    err
}

async fn policy_out(s: &AppState, gate: Gate) -> ApiResult<PolicyOut> {
    let versions = s.ctx.store.policy_versions(gate.name()).await?;
    let p = gates::in_force(&*s.ctx.store, gate).await?;
    Ok(PolicyOut {
        name: gate.name().into(),
        version: p.version,
        shipped: p.stored.is_none(),
        policy_sha256: bifrost_policy::sha256_text(&p.rego),
        data_sha256: bifrost_policy::sha256_data(&p.data),
        set_by: p.stored.as_ref().map(|v| v.set_by.to_string()),
        at: p.stored.as_ref().map(|v| rfc3339(&v.at)),
        projects: serde_json::to_value(p.stored.as_ref().map(|v| v.projects.clone()).unwrap_or_default())
            .unwrap_or_default(),
        rego: p.rego,
        data: p.data,
        sample_input: gate.sample_input(),
        history: versions
            .into_iter()
            .map(|v| PolicyVersionOut {
                version: v.version,
                set_by: v.set_by.to_string(),
                at: rfc3339(&v.at),
                reason: v.reason,
                hash: v.hash,
            })
            .collect(),
    })
}

#[utoipa::path(get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, body = PoliciesOut)), security(("token" = ["viewer"])))]
pub async fn list(State(s): State<AppState>, _caller: Viewer) -> ApiResult<Json<PoliciesOut>> {
    let mut policies = vec![];
    for g in Gate::ALL {
        policies.push(policy_out(&s, g).await?);
    }
    Ok(Json(PoliciesOut { policies }))
}

#[utoipa::path(get, path = "/api/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path, description = "deploy or promote")),
    responses((status = 200, body = PolicyOut), (status = 404, body = ErrorBody)), security(("token" = ["viewer"])))]
pub async fn show(State(s): State<AppState>, _caller: Viewer, Path(name): Path<String>) -> ApiResult<Json<PolicyOut>> {
    Ok(Json(policy_out(&s, gate(&name)?).await?))
}

/// What a change must pass: the Rego compiles (and evaluates once) as
/// `package <gate>`, the data is an object.
async fn check_draft(g: Gate, rego: String, data: &serde_json::Value) -> ApiResult<()> {
    tokio::task::spawn_blocking(move || bifrost_policy::check(g, &rego))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(policy_error)?;
    bifrost_policy::check_data(g, data).map_err(policy_error)
}

/// Stores `next` as the new version after `current`, checked first.
async fn store_version(
    s: &AppState,
    caller: &Admin,
    current: &InForce,
    next: NewPolicyVersion,
) -> ApiResult<Json<PolicyOut>> {
    let g = current.gate;
    check_draft(g, next.rego.clone(), &next.data).await?;
    let v = s.ctx.store.put_policy(next).await?;
    tracing::warn!(policy = %g, version = v.version, by = %caller.actor(), reason = %v.reason, "policy changed");
    Ok(Json(policy_out(s, g).await?))
}

#[utoipa::path(put, path = "/api/v1/policies/{name}", tag = "policies", request_body = PolicyIn,
    params(("name" = String, Path, description = "deploy or promote")),
    responses((status = 200, body = PolicyOut, description = "Stored as a new version, in force now"),
              (status = 422, body = ErrorBody, description = "It does not compile (`details.line`) or the data is not an object: nothing changed"),
              (status = 409, body = ErrorBody, description = "Another change came first (`base_version`)")),
    security(("token" = ["admin"])))]
pub async fn set(
    State(s): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
    Body(req): Body<PolicyIn>,
) -> ApiResult<Json<PolicyOut>> {
    let g = gate(&name)?;
    let current = gates::in_force(&*s.ctx.store, g).await?;
    if req.rego.is_none() && req.data.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "nothing to change: give rego and/or data",
        ));
    }
    let reason = match (&req.rego, &req.data) {
        (Some(_), Some(_)) => "policy text and data replaced",
        (Some(_), None) => "policy text replaced",
        _ => "data replaced",
    };
    let next = NewPolicyVersion {
        name: g.name().into(),
        rego: req.rego.unwrap_or_else(|| current.rego.clone()),
        data: req.data.unwrap_or_else(|| current.data.clone()),
        projects: current.stored.as_ref().map(|v| v.projects.clone()).unwrap_or_default(),
        set_by: caller.actor(),
        reason: reason.into(),
        base_version: req.base_version.unwrap_or(current.version),
    };
    store_version(&s, &caller, &current, next).await
}

#[utoipa::path(patch, path = "/api/v1/policies/{name}/data", tag = "policies", request_body = PolicyDataIn,
    params(("name" = String, Path, description = "deploy or promote")),
    responses((status = 200, body = PolicyOut, description = "Stored as a new version, in force now"),
              (status = 422, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn set_data(
    State(s): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
    Body(req): Body<PolicyDataIn>,
) -> ApiResult<Json<PolicyOut>> {
    let g = gate(&name)?;
    if req.set.is_empty() && req.unset.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "nothing to change: give set and/or unset",
        ));
    }
    let current = gates::in_force(&*s.ctx.store, g).await?;
    let mut data = current.data.clone();
    let mut projects = current.stored.as_ref().map(|v| v.projects.clone()).unwrap_or_default();
    let target = match &req.project {
        Some(p) => {
            // A value for a project that does not exist would never apply.
            let project = s.ctx.store.get_project(p).await?;
            projects.entry(project.name).or_insert_with(|| serde_json::json!({}))
        }
        None => &mut data,
    };
    let Some(obj) = target.as_object_mut() else {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "the data is not an object"));
    };
    let mut changes = vec![];
    for (k, v) in &req.set {
        obj.insert(k.clone(), v.clone());
        changes.push(format!("{k}={v}"));
    }
    for k in &req.unset {
        if obj.remove(k).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("{k:?} is not set{}", req.project.as_ref().map(|p| format!(" for {p}")).unwrap_or_default()),
            ));
        }
        changes.push(format!("{k} unset"));
    }
    projects.retain(|_, v| v.as_object().is_none_or(|o| !o.is_empty()));
    let scope = req.project.as_ref().map(|p| format!(" for {p}")).unwrap_or_default();
    let next = NewPolicyVersion {
        name: g.name().into(),
        rego: current.rego.clone(),
        data,
        projects,
        set_by: caller.actor(),
        reason: format!("data{scope}: {}", changes.join(", ")),
        base_version: current.version,
    };
    store_version(&s, &caller, &current, next).await
}

#[utoipa::path(post, path = "/api/v1/policies/{name}/test", tag = "policies", request_body = PolicyTestIn,
    params(("name" = String, Path, description = "deploy or promote")),
    responses((status = 200, body = DecisionOut, description = "The decision; nothing acted on"),
              (status = 422, body = ErrorBody, description = "The draft does not compile (`details.line`) or its data is not an object"),
              (status = 403, body = ErrorBody, description = "A draft (`rego` / `data`) from a caller below admin")),
    security(("token" = ["deployer"])))]
pub async fn test(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
    Body(req): Body<PolicyTestIn>,
) -> ApiResult<Json<DecisionOut>> {
    let g = gate(&name)?;
    let mut current = gates::in_force(&*s.ctx.store, g).await?;
    let draft = req.rego.is_some() || req.data.is_some();
    if draft {
        // Trying out a change is part of making one.
        caller.require(Role::Admin)?;
        let rego = req.rego.clone().unwrap_or_else(|| current.rego.clone());
        let data = req.data.clone().unwrap_or_else(|| current.data.clone());
        check_draft(g, rego.clone(), &data).await?;
        if let Some(stored) = current.stored.as_mut() {
            (stored.rego, stored.data) = (rego.clone(), data.clone());
        }
        (current.rego, current.data) = (rego, data);
    }
    let project = req.project.clone();
    let version = current.version;
    let d = tokio::task::spawn_blocking(move || gates::decide(&current, project.as_deref(), req.input))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(DecisionOut {
        gate: d.gate.name().into(),
        allow: d.allow,
        deny: d.deny,
        input: d.input,
        policy_version: version,
        policy_sha256: d.policy_sha256,
        data_sha256: d.data_sha256,
        error: d.error,
        draft,
    }))
}
