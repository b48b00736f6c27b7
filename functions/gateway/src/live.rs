//! Live views over Server-Sent Events: a deployment's status changes and
//! log lines as they happen. Every event carries `id: <feed seq>`; a client
//! reconnecting with `Last-Event-ID` (or `?after=`) gets exactly what it
//! missed, then the live tail — nothing twice, nothing lost.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use bifrost_core::domain::{FeedItem, FeedKind, HealthSample};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::api::{EventParams, Query};
use super::auth::Viewer;
use super::error::ApiResult;

pub(super) fn sse_event(item: &FeedItem) -> SseEvent {
    let kind = match item.kind {
        FeedKind::Status { .. } => "status",
        FeedKind::Log { .. } => "log",
    };
    let data = serde_json::to_string(item).unwrap_or_default();
    SseEvent::default().id(item.seq.to_string()).event(kind).data(data)
}

/// A live health sample: no id (resuming replays status and logs; the
/// series itself is at /deployments/{id}/health).
pub(super) fn health_event(h: &HealthSample) -> SseEvent {
    let data = serde_json::to_string(h).unwrap_or_default();
    SseEvent::default().event("health").data(data)
}

/// Where to resume: `Last-Event-ID` wins over `?after=`.
pub fn resume_point(headers: &HeaderMap, after: Option<u64>) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(after)
        .unwrap_or(0)
}

/// Which items a stream carries: one deployment's, or every deployment's
/// (of one project, for a project-limited token).
#[derive(Clone, Debug)]
pub struct Scope {
    pub deployment: Option<String>,
    /// Project name, for a project-limited token's global stream.
    pub project: Option<String>,
}

impl Scope {
    fn item(&self, i: &FeedItem) -> bool {
        self.deployment.as_deref().is_none_or(|d| d == i.deployment_id)
            && self.project.as_deref().is_none_or(|p| p == i.project)
    }

    fn health(&self, h: &HealthSample) -> bool {
        // Samples name no project: a project's global stream goes without them.
        match (&self.deployment, &self.project) {
            (Some(d), _) => *d == h.deployment_id,
            (None, p) => p.is_none(),
        }
    }
}

/// The feed of one deployment (or all), from `after` on, then live.
pub fn feed_stream(state: AppState, scope: Scope, after: u64) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(state, scope, after)
}

fn async_stream(state: AppState, scope: Scope, last: u64) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    // Subscribe before replaying so nothing committed in between is missed;
    // the seq check drops what the replay already sent.
    let rx = state.ctx.store.subscribe();
    let hrx = state.ctx.health.subscribe();
    let open = state.ctx.metrics.sse_open();
    let init = (state, scope, (rx, hrx, open), Vec::<FeedItem>::new(), last);
    futures::stream::unfold(init, |(state, dep, (mut rx, mut hrx, open), mut backlog, mut last)| async move {
        loop {
            if let Some(item) = backlog.pop() {
                if item.seq > last {
                    // Out-of-scope items (another project's) are passed over, not re-read.
                    last = item.seq;
                    if dep.item(&item) {
                        return Some((Ok(sse_event(&item)), (state, dep, (rx, hrx, open), backlog, last)));
                    }
                }
                continue;
            }
            // Catch up from the store in pages (replay, and after a lag).
            let page = state.ctx.store.feed(dep.deployment.as_deref(), last, 500).await.unwrap_or_default();
            if !page.is_empty() {
                backlog = page.into_iter().rev().collect();
                continue;
            }
            let next = tokio::select! {
                item = rx.recv() => item,
                sample = hrx.recv() => {
                    if let Ok(h) = sample
                        && dep.health(&h)
                    {
                        return Some((Ok(health_event(&h)), (state, dep, (rx, hrx, open), backlog, last)));
                    }
                    continue;
                }
            };
            match next {
                // The store publishes in commit order, so a newer seq is next.
                Ok(item) => {
                    if item.seq > last && dep.item(&item) {
                        backlog.push(item);
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}/events", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), EventParams,
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream: `status` and `log` events, each with `id:`"),
              (status = 404, body = super::wire::ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn deployment_events(
    State(s): State<AppState>,
    caller: Viewer,
    Path(id): Path<String>,
    Query(p): Query<EventParams>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    caller.reach_deployment(s.ctx.store.get_deployment(&id).await?)?;
    let after = resume_point(&headers, p.after);
    let scope = Scope { deployment: Some(id), project: None };
    Ok(Sse::new(feed_stream(s, scope, after)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventParams, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of every deployment's status changes and logs, \
from `after` (or `Last-Event-ID`) on; without either, from now on")),
    security(("token" = ["viewer"])))]
pub async fn all_events(
    State(s): State<AppState>,
    caller: Viewer,
    Query(p): Query<EventParams>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let project = match caller.project_limit() {
        Some(id) => Some(s.ctx.store.get_project(id).await?.name),
        None => None,
    };
    // Without a resume point the global stream starts now: replaying every
    // deployment's every log line is never what a subscriber wants.
    let after = match (headers.contains_key("last-event-id"), p.after) {
        (false, None) => s.ctx.store.feed_head().await?,
        _ => resume_point(&headers, p.after),
    };
    let scope = Scope { deployment: None, project };
    Ok(Sse::new(feed_stream(s, scope, after)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
