//! REST handlers under `/api/v1`: projects, deployments, dead letters,
//! tokens, validation.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use bifrost_core::auth::{generate_secret, generate_token, hash_token};
use bifrost_core::config;
use bifrost_core::domain::{NewDeployment, NewProject, Project, Role, Source, TrafficChange};
use bifrost_core::ports::Transition;
use bifrost_core::repo::is_remote;
use bifrost_core::seal;
use bifrost_core::{Status, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{Admin, Caller, Deployer, Viewer};
use super::error::{ApiError, ApiResult};
use super::wire::*;
use super::{AppState, read_body};

/// JSON body whose rejection is a JSON error too.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), "bad_json", r.body_text())
    }
}

/// Query string whose rejection is a JSON error too.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
    }
}

#[derive(Deserialize, IntoParams, Debug)]
pub struct ListParams {
    /// At most this many, newest first (default 50, max 1000).
    pub limit: Option<usize>,
}

#[derive(Deserialize, IntoParams, Debug)]
pub struct EventParams {
    /// Only events with a larger sequence number.
    pub after: Option<u64>,
}

fn limit(p: &ListParams) -> usize {
    p.limit.unwrap_or(50).clamp(1, 1000)
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = ProjectOut, description = "Created; the answer carries the webhook secret, once"),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn create_project(
    State(s): State<AppState>,
    caller: Admin,
    Body(req): Body<CreateProject>,
) -> ApiResult<(StatusCode, Json<ProjectOut>)> {
    let repo = match req.repo.map(|r| r.trim().to_string()).filter(|r| !r.is_empty()) {
        Some(r) if !is_remote(&r) && !r.starts_with('/') && !r.starts_with("file://") => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("repo {r:?} must be a git URL or an absolute path on the platform's machine"),
            ));
        }
        Some(r) => {
            s.ctx.sources.check_repo(&r).await?;
            Some(r)
        }
        None => None,
    };
    // No branch given: the one the repository's HEAD names (`master` on
    // hosts whose git says so), `main` for upload-only projects.
    let branch = match (req.branch.filter(|b| !b.is_empty()), &repo) {
        (Some(b), _) => b,
        (None, Some(r)) => s.ctx.sources.default_branch(r).await?,
        (None, None) => "main".into(),
    };
    if branch.is_empty() || branch.starts_with('-') || branch.contains("..") || branch.contains(char::is_whitespace) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("branch {branch:?} is not a valid branch name"),
        ));
    }
    let webhook_secret = req.webhook_secret.filter(|w| !w.is_empty()).unwrap_or_else(generate_secret);
    let keys = s.ctx.keys().map_err(ApiError::unavailable)?;
    let sealed = keys.webhooks.seal(&webhook_secret, &seal::webhook_context(&req.name));
    let mut project =
        s.ctx.store.create_project(NewProject { name: req.name, repo, branch, webhook_secret: Some(sealed) }).await?;
    tracing::info!(project = %project.name, by = %caller.actor(), "project created");
    // The answer carries the secret once, in the clear; the store keeps it sealed.
    project.webhook_secret = Some(webhook_secret);
    Ok((
        StatusCode::CREATED,
        Json(ProjectOut::from_project(project, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, true)),
    ))
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    responses((status = 200, body = Vec<ProjectOut>)), security(("token" = ["viewer"])))]
pub async fn list_projects(State(s): State<AppState>, caller: Viewer) -> ApiResult<Json<Vec<ProjectOut>>> {
    let url = &s.ctx.settings.public_url;
    Ok(Json(
        s.ctx
            .store
            .list_projects()
            .await?
            .into_iter()
            .filter(|p| caller.0.0.reaches(&p.id))
            .map(|p| ProjectOut::from_project(p, url, &s.ctx.settings.app_domain, false))
            .collect(),
    ))
}

/// A project the caller may see (a project-limited token sees only its own).
pub(crate) async fn project_for(s: &AppState, caller: &Caller, name: &str) -> ApiResult<Project> {
    caller.reach(s.ctx.store.get_project(name).await?)
}

/// A deployment the caller may see.
pub(crate) async fn deployment_for(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<bifrost_core::domain::Deployment> {
    caller.reach_deployment(s.ctx.store.get_deployment(id).await?)
}

#[utoipa::path(get, path = "/api/v1/projects/{name}", tag = "projects",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut), (status = 404, body = ErrorBody)), security(("token" = ["viewer"])))]
pub async fn get_project(
    State(s): State<AppState>,
    caller: Viewer,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectOut>> {
    let p = project_for(&s, &caller, &name).await?;
    Ok(Json(ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false)))
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}", tag = "projects",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut, description = "Deleted; its in-flight deployments were cancelled"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn delete_project(
    State(s): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectOut>> {
    let p = s.ctx.store.delete_project(&name, caller.actor()).await?;
    tracing::info!(project = %p.name, by = %caller.actor(), "project deleted");
    // Its build output and caches go too (replicas stop on the cancel events).
    s.ctx.builder.discard_project(&p.id).await;
    Ok(Json(ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false)))
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/deployments", tag = "deployments",
    params(("name" = String, Path, description = "Project name or id")),
    request_body(content = CreateDeployment, description = "JSON `{\"ref\": ...}` to deploy from the project's repo, \
        or a `.tar.gz` of the source (Content-Type: application/gzip) to deploy an upload",
        content_type = "application/json"),
    responses((status = 201, body = CreatedDeployment), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn create_deployment(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<(StatusCode, Json<CreatedDeployment>)> {
    let project = project_for(&s, &caller, &name).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let source = if content_type.starts_with("application/gzip")
        || content_type.starts_with("application/x-gzip")
        || content_type.starts_with("application/octet-stream")
    {
        let bytes = read_body(req, s.ctx.settings.max_upload_bytes).await?;
        s.ctx.sources.store_archive(bytes.into()).await?
    } else if content_type.starts_with("application/json") {
        let bytes = read_body(req, 64 << 10).await?;
        let body: CreateDeployment = if bytes.is_empty() {
            CreateDeployment::default()
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?
        };
        let repo = project.repo.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_repo",
                format!("project {} has no repo; deploy an upload instead (bifrost deploy PATH)", project.name),
            )
        })?;
        let git_ref = body.git_ref.filter(|r| !r.is_empty()).unwrap_or_else(|| project.branch.clone());
        let commit = s.ctx.sources.resolve(&repo, &git_ref).await?;
        Source::Git { repo, git_ref, commit, committed_at: None }
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {content_type:?}: send application/json ({{\"ref\": ...}}) or application/gzip (a source .tar.gz)"
            ),
        ));
    };
    let created = s
        .ctx
        .store
        .create_deployment(NewDeployment {
            project: project.name.clone(),
            source,
            actor: caller.actor(),
            dedupe_key: None,
            rollback_of: None,
            artifact: None,
        })
        .await?;
    tracing::info!(deployment = %created.deployment.id, project = %project.name, by = %caller.actor(), "deployment queued");
    Ok((
        StatusCode::CREATED,
        Json(CreatedDeployment { deployment: created.deployment.into(), superseded: created.superseded }),
    ))
}

#[utoipa::path(get, path = "/api/v1/projects/{name}/deployments", tag = "deployments",
    params(("name" = String, Path, description = "Project name or id"), ListParams),
    responses((status = 200, body = Vec<DeploymentOut>), (status = 404, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn list_project_deployments(
    State(s): State<AppState>,
    caller: Viewer,
    Path(name): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Vec<DeploymentOut>>> {
    let project = project_for(&s, &caller, &name).await?;
    let list = s.ctx.store.list_deployments(Some(&project.id), limit(&p)).await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", params(ListParams),
    responses((status = 200, body = Vec<DeploymentOut>)), security(("token" = ["viewer"])))]
pub async fn list_deployments(
    State(s): State<AppState>,
    caller: Viewer,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Vec<DeploymentOut>>> {
    let list = match caller.project_limit() {
        Some(project) => s.ctx.store.list_deployments(Some(project), limit(&p)).await?,
        None => s.ctx.store.list_deployments(None, limit(&p)).await?,
    };
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    responses((status = 200, body = DeploymentDetail), (status = 404, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn get_deployment(
    State(s): State<AppState>,
    caller: Viewer,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentDetail>> {
    let d = deployment_for(&s, &caller, &id).await?;
    let history = s.ctx.store.history(&id).await?;
    // A live deployment whose replicas are not all healthy is degraded
    // (it keeps being restarted; it is never stopped for it).
    let degraded = if d.status == Status::Healthy {
        let replicas = s.ctx.runtime.status(&id).await;
        let down: Vec<String> = replicas
            .iter()
            .filter(|r| !r.healthy)
            .map(|r| {
                format!(
                    "replica {}: {} ({} restarts)",
                    r.index,
                    r.last_exit.as_deref().or(r.last_probe.as_deref()).unwrap_or("not healthy"),
                    r.restarts
                )
            })
            .collect();
        (!down.is_empty()).then_some(down)
    } else {
        None
    };
    Ok(Json(DeploymentDetail {
        deployment: d.into(),
        history: history.into_iter().map(Into::into).collect(),
        degraded,
    }))
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/history", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), EventParams),
    responses((status = 200, body = Vec<EventOut>, description = "Events of the deployment, oldest first"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn deployment_events(
    State(s): State<AppState>,
    caller: Viewer,
    Path(id): Path<String>,
    Query(p): Query<EventParams>,
) -> ApiResult<Json<Vec<EventOut>>> {
    deployment_for(&s, &caller, &id).await?;
    let events = s.ctx.store.events(Some(&id), p.after.unwrap_or(0), 10_000).await?;
    Ok(Json(events.into_iter().map(Into::into).collect()))
}

#[utoipa::path(post, path = "/api/v1/deployments/{id}/retry", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    responses((status = 200, body = DeploymentOut, description = "Queued again, attempt + 1"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn retry(
    State(s): State<AppState>,
    caller: Deployer,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentOut>> {
    let d = deployment_for(&s, &caller, &id).await?;
    if !matches!(d.status, Status::Failed | Status::Cancelled) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!("deployment {id} is {}; only failed or cancelled deployments can be retried", d.status),
        ));
    }
    let t = Transition::new(
        &id,
        d.status,
        Status::Queued,
        format!("retry requested by {}", caller.actor()),
        caller.actor(),
    )
    .at_version(d.version);
    Ok(Json(s.ctx.store.transition(t).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/deployments/{id}/cancel", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    responses((status = 200, body = DeploymentOut, description = "Cancelled"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn cancel(
    State(s): State<AppState>,
    caller: Deployer,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentOut>> {
    // Retry the read-then-CAS a few times: the pipeline may move it meanwhile.
    for _ in 0..5 {
        let d = deployment_for(&s, &caller, &id).await?;
        if d.status == Status::Healthy {
            // Cancelling the live deployment would take the app down.
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "live",
                format!(
                    "deployment {id} is live; it cannot be cancelled. Roll back (bifrost rollback {}) or deploy \
                     another version instead",
                    d.project
                ),
            ));
        }
        if d.status.is_terminal() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_finished",
                format!("deployment {id} is already {}", d.status),
            ));
        }
        let t = Transition::new(
            &id,
            d.status,
            Status::Cancelled,
            format!("cancelled by {}", caller.actor()),
            caller.actor(),
        )
        .at_version(d.version);
        match s.ctx.store.transition(t).await {
            Ok(d) => return Ok(Json(d.into())),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("deployment {id} kept changing; try again")))
}

#[utoipa::path(get, path = "/api/v1/events/dead", tag = "events",
    responses((status = 200, body = Vec<DeadLetterOut>)), security(("token" = ["viewer"])))]
pub async fn dead_letters(State(s): State<AppState>, caller: Viewer) -> ApiResult<Json<Vec<DeadLetterOut>>> {
    let all = s.ctx.dead_letters.dead_letters().await?;
    Ok(Json(all.into_iter().filter(|d| caller.0.0.reaches(&d.event.project_id)).map(Into::into).collect()))
}

#[utoipa::path(post, path = "/api/v1/events/dead/redrive", tag = "events", request_body = Redrive,
    responses((status = 200, body = Redriven), (status = 404, body = ErrorBody)), security(("token" = ["admin"])))]
pub async fn redrive(State(s): State<AppState>, caller: Admin, req: Request) -> ApiResult<Json<Redriven>> {
    let bytes = read_body(req, 1 << 20).await?;
    let ids = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Redrive>(&bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?
            .ids
    };
    let n = s.ctx.dead_letters.redrive(ids).await?;
    tracing::info!(count = n, by = %caller.actor(), "dead letters redriven");
    Ok(Json(Redriven { redriven: n }))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenOut>)), security(("token" = ["admin"])))]
pub async fn list_tokens(State(s): State<AppState>, _caller: Admin) -> ApiResult<Json<Vec<TokenOut>>> {
    let projects = s.ctx.store.list_projects().await?;
    let tokens = s.ctx.store.list_tokens().await?;
    Ok(Json(tokens.into_iter().map(|t| TokenOut::with_project(t, &projects)).collect()))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = TokenOut, description = "Created; the answer carries the secret, once"),
              (status = 409, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn create_token(
    State(s): State<AppState>,
    caller: Admin,
    Body(req): Body<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenOut>)> {
    let role: Role =
        req.role.parse().map_err(|e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e))?;
    let project = match req.project.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Some(s.ctx.store.get_project(p).await?),
        None => None,
    };
    let secret = generate_token();
    let t = s
        .ctx
        .store
        .create_token(&req.name, role, &hash_token(&secret), project.as_ref().map(|p| p.id.as_str()))
        .await?;
    tracing::info!(token = %t.name, role = %t.role, project = ?project.as_ref().map(|p| &p.name), by = %caller.actor(), "token created");
    let mut out = TokenOut::with_project(t, project.as_slice());
    out.token = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "Token name or id")),
    responses((status = 200, body = TokenOut), (status = 404, body = ErrorBody)), security(("token" = ["admin"])))]
pub async fn revoke_token(
    State(s): State<AppState>,
    _caller: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<TokenOut>> {
    Ok(Json(s.ctx.store.revoke_token(&name).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    responses((status = 200, body = TokenOut), (status = 401, body = ErrorBody)), security(("token" = ["viewer"])))]
pub async fn whoami(State(s): State<AppState>, caller: Viewer) -> ApiResult<Json<TokenOut>> {
    let projects = match &caller.0.0.project_id {
        Some(p) => vec![s.ctx.store.get_project(p).await?],
        None => vec![],
    };
    Ok(Json(TokenOut::with_project(caller.0.0, &projects)))
}

#[utoipa::path(post, path = "/api/v1/validate", tag = "deploy.toml",
    request_body(content = String, description = "A deploy.toml", content_type = "application/toml"),
    responses((status = 200, body = ValidationOut)), security(("token" = ["viewer"])))]
pub async fn validate(_caller: Viewer, req: Request) -> ApiResult<Json<ValidationOut>> {
    let bytes = read_body(req, config::MAX_CONFIG_BYTES).await?;
    let text =
        String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::bad_request("deploy.toml must be UTF-8 text"))?;
    Ok(Json(match config::parse(&text) {
        Ok(_) => ValidationOut { valid: true, errors: vec![] },
        Err(errors) => ValidationOut { valid: false, errors: errors.into_iter().map(Into::into).collect() },
    }))
}

#[derive(Deserialize, IntoParams, Debug)]
pub struct AuditParams {
    /// Only records with a smaller sequence number (the next page).
    pub before: Option<u64>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "events", params(AuditParams),
    responses((status = 200, body = Vec<AuditOut>, description = "Every deployment's transitions, newest first")),
    security(("token" = ["viewer"])))]
pub async fn audit(
    State(s): State<AppState>,
    caller: Viewer,
    Query(p): Query<AuditParams>,
) -> ApiResult<Json<Vec<AuditOut>>> {
    let records = s.ctx.store.audit(p.before, p.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(records.into_iter().filter(|r| caller.0.0.reaches(&r.project_id)).map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/logs", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), EventParams),
    responses((status = 200, body = Vec<FeedItemOut>, description = "Status changes and log lines so far, oldest first"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn deployment_logs(
    State(s): State<AppState>,
    caller: Viewer,
    Path(id): Path<String>,
    Query(p): Query<EventParams>,
) -> ApiResult<Json<Vec<FeedItemOut>>> {
    deployment_for(&s, &caller, &id).await?;
    let items = s.ctx.store.feed(Some(&id), p.after.unwrap_or(0), 100_000).await?;
    Ok(Json(items.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/replicas", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    responses((status = 200, body = Vec<ReplicaOut>), (status = 404, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn replicas(
    State(s): State<AppState>,
    caller: Viewer,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ReplicaOut>>> {
    deployment_for(&s, &caller, &id).await?;
    Ok(Json(s.ctx.runtime.status(&id).await.into_iter().map(Into::into).collect()))
}

#[derive(Deserialize, IntoParams, Debug)]
pub struct HealthParams {
    /// Only samples at or after this time (RFC 3339; default: one hour ago).
    pub since: Option<String>,
    /// At most this many (default 3600, max 100000).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/health", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), HealthParams),
    responses((status = 200, body = Vec<HealthSampleOut>, description = "The sidecars' reports, oldest first"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn health(
    State(s): State<AppState>,
    caller: Viewer,
    Path(id): Path<String>,
    Query(p): Query<HealthParams>,
) -> ApiResult<Json<Vec<HealthSampleOut>>> {
    deployment_for(&s, &caller, &id).await?;
    let since = match &p.since {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", format!("since {t:?}: {e}")))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now() - chrono::Duration::hours(1),
    };
    let samples = s.ctx.store.health(&id, since, p.limit.unwrap_or(3600).clamp(1, 100_000)).await?;
    Ok(Json(samples.into_iter().map(Into::into).collect()))
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/rollback", tag = "deployments", request_body = Rollback,
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 201, body = CreatedDeployment, description = "A new deployment running the earlier build"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn rollback(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<(StatusCode, Json<CreatedDeployment>)> {
    let project = project_for(&s, &caller, &name).await?;
    let bytes = read_body(req, 64 << 10).await?;
    let body: Rollback = if bytes.iter().all(u8::is_ascii_whitespace) {
        Rollback::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?
    };
    let candidates = s.ctx.store.list_deployments(Some(&project.id), 1000).await?;
    let mut ever_healthy = vec![];
    for d in candidates {
        if d.artifact.is_some() && Some(&d.id) != project.live_deployment_id.as_ref() {
            let history = s.ctx.store.history(&d.id).await?;
            if history.iter().any(|h| h.to == Status::Healthy) {
                ever_healthy.push(d);
            }
        }
    }
    let target = match &body.to {
        Some(id) => {
            let d = s.ctx.store.get_deployment(id).await?;
            if d.project_id != project.id {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("deployment {id} belongs to project {}", d.project),
                ));
            }
            ever_healthy.into_iter().find(|c| c.id == d.id).ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "not_rollbackable",
                    format!("deployment {id} was never healthy (or is live now), so it cannot be rolled back to"),
                )
            })?
        }
        None => ever_healthy.into_iter().next().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "not_rollbackable",
                format!("project {} has no earlier healthy deployment", project.name),
            )
        })?,
    };
    let created = s
        .ctx
        .store
        .create_deployment(NewDeployment {
            project: project.name.clone(),
            source: target.source.clone(),
            actor: caller.actor(),
            dedupe_key: None,
            rollback_of: Some(target.id.clone()),
            artifact: target.artifact.clone(),
        })
        .await?;
    tracing::info!(project = %project.name, to = %target.id, deployment = %created.deployment.id, "rollback queued");
    Ok((
        StatusCode::CREATED,
        Json(CreatedDeployment { deployment: created.deployment.into(), superseded: created.superseded }),
    ))
}

#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets",
    responses((status = 200, body = Vec<SecretOut>, description = "Every project's secrets (names only; values never leave)")),
    security(("token" = ["admin"])))]
pub async fn list_all_secrets(State(s): State<AppState>, _caller: Admin) -> ApiResult<Json<Vec<SecretOut>>> {
    let projects = s.ctx.store.list_projects().await?;
    let list = s.ctx.store.list_secrets(None).await?;
    Ok(Json(list.into_iter().map(|i| SecretOut::of(i, &projects)).collect()))
}

#[utoipa::path(get, path = "/api/v1/projects/{name}/secrets", tag = "secrets",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = Vec<SecretOut>, description = "The project's secrets: names and update times, never values"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn list_secrets(
    State(s): State<AppState>,
    caller: Deployer,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<SecretOut>>> {
    let project = project_for(&s, &caller, &name).await?;
    let list = s.ctx.store.list_secrets(Some(&project.id)).await?;
    Ok(Json(list.into_iter().map(|i| SecretOut::of(i, std::slice::from_ref(&project))).collect()))
}

fn check_secret_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("secret name {name:?} must be 1-128 of [A-Za-z0-9-_.]"),
        ));
    }
    Ok(())
}

#[utoipa::path(put, path = "/api/v1/projects/{name}/secrets/{secret}", tag = "secrets", request_body = SetSecret,
    params(("name" = String, Path, description = "Project name or id"), ("secret" = String, Path, description = "Secret name")),
    responses((status = 204, description = "Stored (sealed)"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = ["deployer"])))]
pub async fn set_secret(
    State(s): State<AppState>,
    caller: Deployer,
    Path((name, secret)): Path<(String, String)>,
    Body(req): Body<SetSecret>,
) -> ApiResult<StatusCode> {
    check_secret_name(&secret)?;
    let project = project_for(&s, &caller, &name).await?;
    let keys = s.ctx.keys().map_err(ApiError::unavailable)?;
    let sealed = keys.secrets.seal(&req.value, &seal::secret_context(&project.id, &secret));
    s.ctx.store.set_secret(&project.id, &secret, &sealed).await?;
    tracing::info!(project = %project.name, secret = %secret, by = %caller.actor(), "secret set");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}/secrets/{secret}", tag = "secrets",
    params(("name" = String, Path, description = "Project name or id"), ("secret" = String, Path, description = "Secret name")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)), security(("token" = ["deployer"])))]
pub async fn delete_secret(
    State(s): State<AppState>,
    caller: Deployer,
    Path((name, secret)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let project = project_for(&s, &caller, &name).await?;
    s.ctx.store.delete_secret(&project.id, &secret).await?;
    tracing::info!(project = %project.name, secret = %secret, by = %caller.actor(), "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT`/`DELETE /api/v1/secrets/{name}` from before secrets belonged to
/// projects: a clear answer instead of a 404.
pub async fn global_secret_moved(_caller: Deployer, Path(name): Path<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "secrets_belong_to_projects",
        format!(
            "secrets belong to a project: use /api/v1/projects/{{project}}/secrets/{name} \
             (bifrost secrets set {name} --project PROJECT)"
        ),
    )
}

/// Checks a chaos request and makes it a fault (everything or nothing).
fn chaos_of(req: &ChaosIn, caller: &Caller) -> ApiResult<bifrost_core::domain::Chaos> {
    use bifrost_core::domain::{Chaos, Fault};
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m);
    let share = |name: &str, v: f64| {
        if v > 0.0 && v <= 1.0 {
            Ok(v)
        } else {
            Err(invalid(format!("{name} must be more than 0 and at most 1 (got {v})")))
        }
    };
    let fault = match (req.error_rate, req.delay_ms) {
        (Some(rate), None) => {
            if req.rate.is_some() {
                return Err(invalid("rate goes with delay_ms; an error's share is error_rate".into()));
            }
            let status = req.status.unwrap_or(500);
            if !(400..=599).contains(&status) {
                return Err(invalid(format!("status must be 400-599 (got {status})")));
            }
            Fault::Error { rate: share("error_rate", rate)?, status }
        }
        (None, Some(delay_ms)) => {
            if req.status.is_some() {
                return Err(invalid("status goes with error_rate".into()));
            }
            if !(1..=60_000).contains(&delay_ms) {
                return Err(invalid(format!("delay_ms must be 1-60000 (got {delay_ms})")));
            }
            Fault::Delay { rate: share("rate", req.rate.unwrap_or(1.0))?, delay_ms }
        }
        _ => return Err(invalid("give exactly one of error_rate and delay_ms".into())),
    };
    let for_s = req.for_s.unwrap_or(900);
    if !(1..=86_400).contains(&for_s) {
        return Err(invalid(format!("for_s must be 1-86400 seconds (got {for_s})")));
    }
    let at = bifrost_core::domain::now();
    Ok(Chaos {
        deployment: req.deployment.clone(),
        fault,
        until: at + chrono::Duration::seconds(for_s as i64),
        set_by: caller.actor(),
        at,
    })
}

#[utoipa::path(put, path = "/api/v1/projects/{name}/chaos", tag = "projects", request_body = ChaosIn,
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut, description = "The router injects the fault until it expires or is ended"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn set_chaos(
    State(s): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
    Body(req): Body<ChaosIn>,
) -> ApiResult<Json<ProjectOut>> {
    let project = s.ctx.store.get_project(&name).await?;
    if let Some(id) = &req.deployment {
        let d = s.ctx.store.get_deployment(id).await?;
        if d.project_id != project.id {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("deployment {id} belongs to project {}", d.project),
            ));
        }
    }
    let chaos = chaos_of(&req, &caller)?;
    let reason = format!("chaos on: {chaos}");
    let p =
        s.ctx.store.set_traffic(&project.id, TrafficChange::Chaos(Some(chaos)), &reason, caller.actor(), None).await?;
    tracing::warn!(project = %p.name, by = %caller.actor(), "{reason}");
    Ok(Json(ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false)))
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}/chaos", tag = "projects",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut, description = "No fault is injected any more"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn end_chaos(
    State(s): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectOut>> {
    let project = s.ctx.store.get_project(&name).await?;
    let p = s.ctx.store.set_traffic(&project.id, TrafficChange::Chaos(None), "chaos off", caller.actor(), None).await?;
    tracing::warn!(project = %p.name, by = %caller.actor(), "chaos off");
    Ok(Json(ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false)))
}

fn split_error(e: bifrost_functions::split::SplitError) -> ApiError {
    use bifrost_functions::split::SplitError;
    match e {
        SplitError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
        SplitError::Store(e) => e.into(),
        SplitError::Runtime(m) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "replicas_failed",
            format!("the second deployment's replicas did not start: {m}"),
        ),
    }
}

#[utoipa::path(put, path = "/api/v1/projects/{name}/split", tag = "projects", request_body = SplitIn,
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut, description = "The split is set; routers apply it within a second"),
              (status = 422, body = ErrorBody, description = "Not a deployment that can take traffic, or a bad weight"),
              (status = 502, body = ErrorBody, description = "Its replicas did not start"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn set_split(
    State(s): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
    Body(req): Body<SplitIn>,
) -> ApiResult<Json<ProjectOut>> {
    let project = s.ctx.store.get_project(&name).await?;
    let to = s.ctx.store.get_deployment(&req.to).await?;
    let p =
        bifrost_functions::split::set(&s.ctx, &project, &to, req.weight, caller.actor()).await.map_err(split_error)?;
    Ok(Json(ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false)))
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}/split", tag = "projects",
    params(("name" = String, Path, description = "Project name or id")),
    responses((status = 200, body = ProjectOut, description = "Every client is back on the live deployment"),
              (status = 422, body = ErrorBody, description = "No split is set"),
              (status = 404, body = ErrorBody)),
    security(("token" = ["admin"])))]
pub async fn reset_split(
    State(s): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectOut>> {
    let project = s.ctx.store.get_project(&name).await?;
    let p = bifrost_functions::split::reset(&s.ctx, &project, caller.actor()).await.map_err(split_error)?;
    Ok(Json(ProjectOut::from_project(p, &s.ctx.settings.public_url, &s.ctx.settings.app_domain, false)))
}
