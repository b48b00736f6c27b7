//! `POST /api/v1/webhooks/github`: GitHub push and ping events.
//!
//! The signature (`X-Hub-Signature-256`, HMAC-SHA256 with the project's
//! secret) is checked in constant time before anything is acted on. An
//! unknown repository and a bad signature get the same 401, so the endpoint
//! does not reveal which repositories exist.
//!
//! Replays: GitHub signs the body only, not `X-GitHub-Delivery`, so a
//! captured push can be sent again under a fresh delivery id and its
//! signature still holds. The defence does not rely on the delivery id: a
//! push deploys only if its `after` is still the branch's head in the
//! repository (asked with `git ls-remote`, which fetches nothing). A replayed push of an older
//! commit, or one that arrives after a newer push, is acknowledged and
//! ignored with the reason. (The delivery id still dedupes GitHub's own
//! redeliveries of the current head.)
//!
//! Asking the repository costs a git process per push (about 5 ms here), so
//! a head seen a moment ago ([`HEAD_FRESH_FOR`]) answers a push naming that
//! same commit; a push naming any other commit always asks. The window
//! only lets through a commit that *was* the head within it, and the push
//! for the newer head follows it.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use bifrost_core::auth::verify_github_signature;
use bifrost_core::domain::{Actor, NewDeployment, Project, Source};
use bifrost_core::repo::{matches_full_name, repo_key};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{ApiError, ApiResult};
use super::wire::{ErrorBody, WebhookOut};
use super::{AppState, read_body};

/// How long a confirmed branch head answers pushes of the same commit.
pub const HEAD_FRESH_FOR: Duration = Duration::from_secs(2);

/// Branch heads confirmed by asking the repository: (repository, branch)
/// → (commit, when).
#[derive(Default)]
pub struct Heads(Mutex<HashMap<(String, String), (String, Instant)>>);

impl Heads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (String, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `commit` was the head of `branch` less than [`HEAD_FRESH_FOR`] ago.
    fn recently(&self, repo: &str, branch: &str, commit: &str) -> bool {
        let key = (repo_key(repo), branch.to_string());
        self.lock().get(&key).is_some_and(|(c, at)| c == commit && at.elapsed() < HEAD_FRESH_FOR)
    }

    fn saw(&self, repo: &str, branch: &str, commit: &str) {
        let mut heads = self.lock();
        // Bounded by the projects that push; drop what is no longer fresh.
        if heads.len() > 4096 {
            heads.retain(|_, (_, at)| at.elapsed() < HEAD_FRESH_FOR);
        }
        heads.insert((repo_key(repo), branch.to_string()), (commit.to_string(), Instant::now()));
    }
}

/// The parts of a GitHub webhook payload Bifrost reads.
#[derive(Deserialize, Debug, Default)]
pub struct Payload {
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub after: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    pub repository: Option<Repository>,
    pub pusher: Option<Named>,
    pub sender: Option<Login>,
    pub head_commit: Option<HeadCommit>,
}

/// The pushed head commit as the payload describes it.
#[derive(Deserialize, Debug, Default)]
pub struct HeadCommit {
    pub id: Option<String>,
    /// RFC 3339 with the committer's offset (`2026-11-29T10:00:00+01:00`).
    pub timestamp: Option<String>,
}

impl Payload {
    /// When the pushed commit `after` was made, if the payload says so (a
    /// timestamp that does not read, or a head commit that is not `after`,
    /// says nothing: the commit's time is then read from git).
    pub fn commit_time(&self, after: &str) -> Option<bifrost_core::domain::Timestamp> {
        let head = self.head_commit.as_ref()?;
        if !head.id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(after)) {
            return None;
        }
        let at = chrono::DateTime::parse_from_rfc3339(head.timestamp.as_deref()?).ok()?;
        Some(at.with_timezone(&chrono::Utc))
    }
}

#[derive(Deserialize, Debug, Default)]
pub struct Repository {
    pub full_name: Option<String>,
    pub clone_url: Option<String>,
    pub html_url: Option<String>,
    pub ssh_url: Option<String>,
    pub git_url: Option<String>,
    pub url: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Named {
    pub name: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Login {
    pub login: Option<String>,
}

impl Repository {
    /// Keys a project's repo may match.
    fn url_keys(&self) -> Vec<String> {
        [&self.clone_url, &self.html_url, &self.ssh_url, &self.git_url, &self.url]
            .into_iter()
            .flatten()
            .map(|u| repo_key(u))
            .collect()
    }

    fn matches(&self, project: &Project) -> bool {
        let Some(repo) = &project.repo else {
            return false;
        };
        let key = repo_key(repo);
        self.url_keys().contains(&key) || self.full_name.as_deref().is_some_and(|f| matches_full_name(&key, f))
    }
}

/// Parses a webhook body. Public for the fuzz target.
pub fn parse_payload(body: &[u8]) -> Result<Payload, serde_json::Error> {
    serde_json::from_slice(body)
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn is_zero_commit(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'0')
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn rejected() -> ApiError {
    // Same answer for "no such repository" and "wrong signature".
    ApiError::unauthorized("signature does not match any project for this repository")
}

fn ignored(project: &Project, reason: String) -> (StatusCode, Json<WebhookOut>) {
    tracing::info!(project = %project.name, %reason, "webhook ignored");
    (
        StatusCode::ACCEPTED,
        Json(WebhookOut {
            status: "ignored".into(),
            project: Some(project.name.clone()),
            deployment: None,
            reason: Some(reason),
        }),
    )
}

#[utoipa::path(post, path = "/api/v1/webhooks/github", tag = "webhooks",
    request_body(content = Object, description = "A GitHub webhook payload (push or ping)", content_type = "application/json"),
    params(
        ("X-GitHub-Event" = String, Header, description = "push or ping"),
        ("X-GitHub-Delivery" = String, Header, description = "Delivery id; a repeated id never deploys twice"),
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<HMAC-SHA256 of the body with the project's secret>"),
    ),
    responses(
        (status = 200, body = WebhookOut, description = "ping answered, or a duplicate delivery"),
        (status = 201, body = WebhookOut, description = "push deployed: a queued deployment"),
        (status = 202, body = WebhookOut, description = "ignored, with the reason"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
    ))]
pub async fn github(State(s): State<AppState>, req: Request) -> ApiResult<(StatusCode, Json<WebhookOut>)> {
    let headers = req.headers().clone();
    let body = read_body(req, s.ctx.settings.max_webhook_bytes).await?;
    let event = header(&headers, "x-github-event").unwrap_or("").to_string();
    let delivery = header(&headers, "x-github-delivery").map(str::to_string);
    let signature = header(&headers, "x-hub-signature-256").ok_or_else(rejected)?.to_string();

    let payload =
        parse_payload(&body).map_err(|e| ApiError::bad_request(format!("webhook body is not a JSON payload: {e}")))?;
    let repository = payload.repository.as_ref().ok_or_else(rejected)?;
    // Verify against every project of this repository; any match authenticates.
    let keys = s.ctx.keys().map_err(ApiError::unavailable)?;
    let project = s
        .ctx
        .store
        .list_projects()
        .await?
        .into_iter()
        .filter(|p| repository.matches(p))
        .find(|p| {
            p.webhook_secret.as_deref().and_then(|stored| keys.open_webhook(&p.name, stored).ok()).is_some_and(
                |secret| verify_github_signature(secret.as_bytes(), &body, &signature),
            )
        })
        .ok_or_else(|| {
            tracing::warn!(repo = ?repository.full_name, delivery = ?delivery, "webhook rejected: unknown repository or bad signature");
            rejected()
        })?;

    match event.as_str() {
        "ping" => {
            return Ok((
                StatusCode::OK,
                Json(WebhookOut { status: "pong".into(), project: Some(project.name), deployment: None, reason: None }),
            ));
        }
        "push" => {}
        other => {
            return Ok(ignored(&project, format!("event {other:?} does not deploy (only push does)")));
        }
    }

    let git_ref = payload.git_ref.clone().unwrap_or_default();
    let after = payload.after.clone().unwrap_or_default();
    if git_ref.starts_with("refs/tags/") {
        return Ok(ignored(&project, format!("tag push ({git_ref}) does not deploy")));
    }
    if payload.deleted || is_zero_commit(&after) {
        return Ok(ignored(&project, format!("branch deletion ({git_ref}) does not deploy")));
    }
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(ignored(&project, format!("ref {git_ref:?} is not a branch")));
    };
    if branch != project.branch {
        return Ok(ignored(&project, format!("push to {branch}; project {} deploys {}", project.name, project.branch)));
    }
    if after.len() != 40 || !after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!("push payload `after` is not a commit id: {after:?}")));
    }
    let committed_at = payload.commit_time(&after);
    let pusher = payload
        .sender
        .and_then(|s| s.login)
        .or(payload.pusher.and_then(|p| p.name))
        .unwrap_or_else(|| "unknown".into());
    let repo = project.repo.clone().unwrap_or_default();
    // Only the branch's current head deploys (see the module's note on replays).
    let after = after.to_lowercase();
    let head = if s.heads.recently(&repo, branch, &after) {
        after.clone()
    } else {
        let head = s.ctx.sources.branch_head(&repo, branch).await?;
        s.heads.saw(&repo, branch, &head);
        head
    };
    if head != after {
        return Ok(ignored(
            &project,
            format!("stale push: {branch} is now at {} (this push names {})", short(&head), short(&after)),
        ));
    }
    let created = s
        .ctx
        .store
        .create_deployment(NewDeployment {
            project: project.name.clone(),
            source: Source::Git { repo, git_ref: branch.to_string(), commit: after, committed_at },
            actor: Actor::github(&pusher),
            dedupe_key: delivery.map(|d| format!("github:{d}")),
            rollback_of: None,
            artifact: None,
        })
        .await?;
    let (status, code) =
        if created.duplicate { (StatusCode::OK, "duplicate") } else { (StatusCode::CREATED, "queued") };
    tracing::info!(project = %project.name, deployment = %created.deployment.id, status = code, "webhook push");
    Ok((
        status,
        Json(WebhookOut {
            status: code.into(),
            project: Some(project.name),
            deployment: Some(created.deployment.into()),
            reason: None,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(head: serde_json::Value) -> Payload {
        serde_json::from_value(serde_json::json!({"ref": "refs/heads/main", "head_commit": head})).expect("reads")
    }

    #[test]
    fn the_head_commits_timestamp_is_the_commit_time_in_utc() {
        let sha = "ab".repeat(20);
        let p = payload(serde_json::json!({"id": sha.to_uppercase(), "timestamp": "2026-11-29T10:00:00+01:00"}));
        assert_eq!(p.commit_time(&sha).map(|t| t.to_rfc3339()), Some("2026-11-29T09:00:00+00:00".to_string()));
    }

    #[test]
    fn a_timestamp_of_another_commit_or_unreadable_says_nothing() {
        let sha = "ab".repeat(20);
        let other = payload(serde_json::json!({"id": "cd".repeat(20), "timestamp": "2026-11-29T10:00:00Z"}));
        assert_eq!(other.commit_time(&sha), None);
        let garbled = payload(serde_json::json!({"id": sha, "timestamp": "yesterday"}));
        assert_eq!(garbled.commit_time(&sha), None);
        assert_eq!(Payload::default().commit_time(&sha), None);
    }
}
