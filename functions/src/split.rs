//! Traffic splits by hand (`bifrost traffic split`): a second deployment of
//! an app takes a sticky share of its clients — an A/B test between the live
//! build and an earlier (or a canary's) one. The second deployment must have
//! been healthy once (its build output is kept); if its replicas are not
//! running they are started (its status stays what it is) and the split is
//! set only once they listen. Ending the split stops them again unless the
//! deployment is live or in flight. Both are audited on the live deployment.

use bifrost_core::domain::{Actor, Deployment, Project, TrafficChange, TrafficSplit, now};
use bifrost_core::ports::RuntimeError;
use bifrost_core::{Status, StoreError};

use crate::Ctx;
use crate::deploy::{SpecError, spec_for};

/// Why a split cannot be set: the caller's mistake (422) or the runtime's
/// (502).
#[derive(Debug)]
pub enum SplitError {
    Invalid(String),
    Store(StoreError),
    Runtime(String),
}

impl From<StoreError> for SplitError {
    fn from(e: StoreError) -> Self {
        SplitError::Store(e)
    }
}

/// Sends `weight` % of `project`'s clients to `to`.
pub async fn set(
    ctx: &Ctx,
    project: &Project,
    to: &Deployment,
    weight: u8,
    actor: Actor,
) -> Result<Project, SplitError> {
    if weight > 100 {
        return Err(SplitError::Invalid(format!("weight must be 0–100, not {weight}")));
    }
    if to.project_id != project.id {
        return Err(SplitError::Invalid(format!("deployment {} belongs to project {}", to.id, to.project)));
    }
    let Some(live) = project.live_deployment_id.as_deref() else {
        return Err(SplitError::Invalid(format!("{} has no live deployment to split traffic with", project.name)));
    };
    if to.id == live {
        return Err(SplitError::Invalid(format!("{} is the live deployment; split with another one", to.id)));
    }
    let healthy_once = ctx.store.history(&to.id).await?.iter().any(|r| r.to == Status::Healthy);
    if !healthy_once && to.status != Status::Running {
        return Err(SplitError::Invalid(format!(
            "deployment {} is {} and was never healthy: only a deployment that passed its health checks (or a \
             running canary) can take traffic",
            to.id, to.status
        )));
    }
    let already = project.split.as_ref().is_some_and(|s| s.deployment == to.id);
    if to.status.is_terminal() && !already {
        // A deployment that just left service may still be draining toward
        // its stop: its replicas start afresh, the split's from now on.
        let _ = ctx.runtime.stop(&to.id, std::time::Duration::ZERO).await;
    }
    ensure_running(ctx, to, true).await?;
    let split = TrafficSplit { deployment: to.id.clone(), weight, set_by: actor.clone(), at: now() };
    let reason = format!("traffic split: {weight}% of clients to {}", to.id);
    let p = ctx.store.set_traffic(&project.id, TrafficChange::Split(Some(split)), &reason, actor, None).await?;
    tracing::warn!(project = %p.name, "{reason}");
    Ok(p)
}

/// Ends the project's split: every client back on the live deployment.
pub async fn reset(ctx: &Ctx, project: &Project, actor: Actor) -> Result<Project, SplitError> {
    let Some(split) = &project.split else {
        return Err(SplitError::Invalid(format!("{} has no traffic split", project.name)));
    };
    let p = ctx.store.set_traffic(&project.id, TrafficChange::Split(None), "traffic split reset", actor, None).await?;
    tracing::warn!(project = %p.name, "traffic split reset");
    if let Ok(d) = ctx.store.get_deployment(&split.deployment).await
        && d.status.is_terminal()
        && p.live_deployment_id.as_deref() != Some(d.id.as_str())
    {
        let _ = ctx.runtime.stop(&d.id, ctx.settings.drain).await;
    }
    Ok(p)
}

/// Starts `d`'s replicas unless they run, and (with `wait`) waits until
/// they listen.
async fn ensure_running(ctx: &Ctx, d: &Deployment, wait: bool) -> Result<(), SplitError> {
    if ctx.runtime.status(&d.id).await.iter().any(|r| r.listening) {
        return Ok(());
    }
    let spec = spec_for(ctx, d).await.map_err(|e| match e {
        SpecError::Fail(r) => SplitError::Invalid(format!("deployment {} cannot run: {r}", d.id)),
        SpecError::Retry(r) => SplitError::Runtime(r),
    })?;
    let runtime_error = |e: RuntimeError| match e {
        RuntimeError::Failed(r) | RuntimeError::Unavailable(r) => SplitError::Runtime(r),
    };
    ctx.runtime.apply(spec).await.map_err(runtime_error)?;
    if !wait {
        return Ok(());
    }
    if let Err(e) = ctx.runtime.wait_listening(&d.id, ctx.settings.start_timeout).await {
        let _ = ctx.runtime.stop(&d.id, std::time::Duration::ZERO).await;
        return Err(runtime_error(e));
    }
    Ok(())
}

/// After a restart: the replicas of every split's second deployment run
/// again (a superseded one is not among those the runtime restarts).
pub async fn restart_split_targets(ctx: &Ctx) {
    let Ok(projects) = ctx.store.list_projects().await else { return };
    for p in projects {
        let Some(split) = &p.split else { continue };
        let Ok(d) = ctx.store.get_deployment(&split.deployment).await else { continue };
        if !d.status.is_terminal() {
            continue;
        }
        // Not waited for: start-up does not wait for replicas either.
        match ensure_running(ctx, &d, false).await {
            Ok(()) => tracing::info!(project = %p.name, deployment = %d.id, "split's replicas restarted"),
            Err(e) => {
                tracing::warn!(project = %p.name, deployment = %d.id, error = ?e, "split's replicas did not restart")
            }
        }
    }
}

/// Whether `project_id`'s split sends clients to `deployment_id`.
pub async fn targets(ctx: &Ctx, project_id: &str, deployment_id: &str) -> bool {
    ctx.store.get_project(project_id).await.is_ok_and(|p| p.split.is_some_and(|s| s.deployment == deployment_id))
}

/// Starts a split's deployment again (its replicas were stopped while the
/// split was being set).
pub async fn restart(ctx: &Ctx, deployment_id: &str) {
    let Ok(d) = ctx.store.get_deployment(deployment_id).await else { return };
    if let Err(e) = ensure_running(ctx, &d, false).await {
        tracing::warn!(deployment = %d.id, error = ?e, "split's replicas did not restart");
    }
}
