//! A project's delivery numbers read from the store on demand: every
//! deployment of the project, its audit trail (when it went live), its
//! health reports (its first failed probe while live) and its commit (time
//! and subject, from the source) become a [`Change`], and [`four_keys`]
//! computes DORA's keys over the periods asked for.

use bifrost_core::Status;
use bifrost_core::analytics::dora::{Change, FourKeys, four_keys, is_fix};
use bifrost_core::domain::{Deployment, Timestamp};

use crate::Ctx;

/// Deployments of a project read at most (newest first): 90 days of
/// several deploys a day.
const MAX_DEPLOYMENTS: usize = 5_000;

/// Health reports read per deployment to find its first failed probe.
const HEALTH_READ: usize = 20_000;

/// The periods every answer covers, in days.
pub const PERIODS: [i64; 3] = [7, 30, 90];

/// A deployment as a change, if it ever went live.
async fn change_of(ctx: &Ctx, d: &Deployment) -> Result<Option<Change>, String> {
    let history = ctx.store.history(&d.id).await.map_err(|e| format!("reading {}'s trail: {e}", d.id))?;
    let Some(live_at) = history.iter().find(|r| r.to == Status::Healthy).map(|r| r.at) else { return Ok(None) };
    // Its first failed health probe while live (the sidecars' reports).
    let health =
        ctx.store.health(&d.id, live_at, HEALTH_READ).await.map_err(|e| format!("reading {}'s health: {e}", d.id))?;
    let unhealthy_at = health.iter().find(|h| h.probe_ok < 1.0).map(|h| h.at);
    let commit = ctx.sources.commit_info(&d.source).await;
    let bake = d.config.as_ref().map_or(bifrost_core::config::Rollout::default().bake, |c| c.config.rollout.bake);
    Ok(Some(Change {
        deployment: d.id.clone(),
        created_at: d.created_at,
        live_at,
        committed_at: pushed_at(&d.source).or(commit.as_ref().map(|c| c.at)),
        rollback: d.rollback_of.is_some(),
        fix: commit.as_ref().is_some_and(|c| is_fix(&c.subject)),
        unhealthy_at,
        bake: chrono::Duration::milliseconds(bake.millis as i64),
    }))
}

/// The commit time the push carried (webhook deploys), which wins over
/// git's: it is what the developer's push said when it happened.
fn pushed_at(source: &bifrost_core::domain::Source) -> Option<Timestamp> {
    match source {
        bifrost_core::domain::Source::Git { committed_at, .. } => *committed_at,
        bifrost_core::domain::Source::Archive { .. } => None,
    }
}

/// Every change of `project` (name or id).
pub async fn changes(ctx: &Ctx, project: &str) -> Result<Vec<Change>, String> {
    let deployments = ctx
        .store
        .list_deployments(Some(project), MAX_DEPLOYMENTS)
        .await
        .map_err(|e| format!("listing deployments: {e}"))?;
    let mut out = Vec::with_capacity(deployments.len());
    for d in &deployments {
        if let Some(c) = change_of(ctx, d).await? {
            out.push(c);
        }
    }
    Ok(out)
}

/// The four keys of `changes` over the `days` before `now`.
pub fn over_days(changes: &[Change], now: Timestamp, days: i64) -> FourKeys {
    four_keys(changes, now - chrono::Duration::days(days), now)
}
