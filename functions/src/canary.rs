//! Canary rollouts (`[rollout] strategy = "canary"`), driven from `verify`
//! once the new deployment's replicas are healthy and another deployment
//! is live. The canary stays `running` throughout; the router sends it a
//! sticky share of clients (`steps`, via the project's split). After each
//! `analysis_interval` the promote gate decides on that window's numbers,
//! read from the router's own counts:
//!
//! - allowed → the next step; past the last step below 100, the canary
//!   goes live (`running → healthy`, the old one drains);
//! - denied → weight 0 and `running → failed` with the policy's reasons
//!   (the live deployment is untouched);
//! - fewer than `min_requests` canary requests → *inconclusive* (never a
//!   pass): the window is extended; after three, `on_no_data` acts
//!   (`pause` waits for `bifrost rollout promote` / `abort`);
//! - the metrics unavailable → an error, not "no data": retried, and after
//!   three in a row the rollout pauses.
//!
//! Every step, decision and weight is a compare-and-set change of the
//! project's `RolloutState` in the store, recorded on the canary's own
//! audit trail (with the decision as the record's evidence): a restart
//! re-drives `running` deployments through `verify`, which resumes at the
//! stored step and window.

use std::time::Duration;

use bifrost_core::Status;
use bifrost_core::config::{OnNoData, Rollout};
use bifrost_core::domain::{Actor, Deployment, Project, RolloutState, TrafficChange, TrafficSplit, now};
use bifrost_core::events::Event;
use bifrost_core::ports::{Patch, TrafficCounts, TrafficWindow};
use bifrost_policy::Gate;

use crate::driver::Decision;
use crate::{Ctx, still_current};

/// Inconclusive windows (or metrics errors) in a row before acting.
pub const STRIKES: u32 = 3;

fn actor() -> Actor {
    Actor::function(crate::verify::NAME)
}

/// Whether `d` goes live through a canary: the strategy says so and
/// another deployment is live to compare it with.
pub fn applies(d: &Deployment, project: &Project) -> bool {
    let canary = d.config.as_ref().is_some_and(|c| c.config.rollout.strategy == bifrost_core::config::Strategy::Canary);
    canary && project.live_deployment_id.as_deref().is_some_and(|live| live != d.id)
}

/// The counts a window starts from, in memory (the router's counters are
/// cumulative since it started); after a restart the window goes on from a
/// fresh reading.
struct Baseline {
    generation: u64,
    canary: TrafficCounts,
    stable: TrafficCounts,
}

/// The step's weight (`steps` ends at 100).
fn weight_of(cfg: &Rollout, step: usize) -> u8 {
    cfg.steps.get(step).copied().unwrap_or(100).min(100) as u8
}

/// Drives the canary until it goes live, fails, or stops being current.
pub async fn run(ctx: &Ctx, d: &Deployment, event: &Event, cfg: &Rollout) -> Decision {
    let interval = cfg.analysis_interval.as_std().max(Duration::from_millis(100));
    let mut baseline: Option<Baseline> = None;
    loop {
        match still_current(ctx, event).await {
            Ok(true) => {}
            Ok(false) => return Decision::Done,
            Err(o) => return Decision::Retry(format!("reading the deployment: {o:?}")),
        }
        let project = match ctx.store.get_project(&d.project_id).await {
            Ok(p) => p,
            Err(e) => return Decision::Retry(format!("reading the project: {e}")),
        };
        let Some(stable) = project.live_deployment_id.clone().filter(|l| *l != d.id) else {
            return Decision::Move {
                to: Status::Healthy,
                reason: "no live deployment to compare with: live".into(),
                patch: Patch { make_live: true, ..Patch::default() },
            };
        };
        let state = match &project.rollout {
            Some(r) if r.deployment == d.id => r.clone(),
            Some(r) => {
                return Decision::Retry(format!("another canary ({}) is rolling out for this app", r.deployment));
            }
            None => {
                let w = weight_of(cfg, 0);
                let start = RolloutState {
                    deployment: d.id.clone(),
                    stable: stable.clone(),
                    step: 0,
                    weight: w,
                    window_started: now(),
                    inconclusive: 0,
                    errors: 0,
                    paused: None,
                    promote_requested: false,
                    last_decision: None,
                    generation: 1,
                };
                let reason = format!("canary {}: step 1 of {}, {w}% of clients", d.id, cfg.steps.len());
                if let Err(e) = change(ctx, &project, None, Some(start), &reason, None).await {
                    return Decision::Retry(e);
                }
                continue;
            }
        };
        if baseline.as_ref().is_none_or(|b| b.generation != state.generation) {
            baseline = match ctx.traffic.as_ref() {
                Some(t) => match (t.counts(&d.id).await, t.counts(&stable).await) {
                    (Ok(canary), Ok(stable)) => Some(Baseline { generation: state.generation, canary, stable }),
                    // Read again next time round; a window ending meanwhile is a metrics error.
                    _ => None,
                },
                None => None,
            };
        }
        if state.promote_requested {
            match advance(ctx, &project, d, cfg, &state, "promoted by hand (bifrost rollout promote)", None).await {
                Ok(Some(done)) => return done,
                Ok(None) => continue,
                Err(e) => return Decision::Retry(e),
            }
        }
        if state.paused.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let window_end = state.window_started + chrono::Duration::from_std(interval).unwrap_or_default();
        let left = (window_end - now()).to_std().unwrap_or_default();
        if !left.is_zero() {
            // Wake at the window's end, and at least every second to see
            // a promote, an abort or a supersede.
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            continue;
        }
        let step = format!("step {} of {} ({}%)", state.step + 1, cfg.steps.len(), state.weight);
        let outcome = match (ctx.traffic.as_ref(), baseline.as_ref()) {
            (Some(t), Some(b)) => match (t.counts(&d.id).await, t.counts(&stable).await) {
                (Ok(c), Ok(s)) => Ok((c.since(&b.canary), s.since(&b.stable))),
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
            (Some(_), None) => Err("the window's starting counts could not be read".to_string()),
            (None, _) => Err("no metrics source here".to_string()),
        };
        let result = match outcome {
            Err(e) => metrics_error(ctx, &project, &state, &step, &e).await,
            Ok((canary, _)) if canary.requests < u64::from(cfg.min_requests) => {
                inconclusive(ctx, &project, d, cfg, &state, &step, canary.requests).await
            }
            Ok((canary, stable_w)) => judge(ctx, &project, d, cfg, &state, &step, &canary, &stable_w).await,
        };
        match result {
            Ok(Some(done)) => return done,
            Ok(None) => {}
            Err(e) => return Decision::Retry(e),
        }
    }
}

/// One compare-and-set change of the rollout (and the split it implies).
async fn change(
    ctx: &Ctx,
    project: &Project,
    expected: Option<u64>,
    next: Option<RolloutState>,
    reason: &str,
    evidence: Option<String>,
) -> Result<(), String> {
    let split = next.as_ref().map(|r| TrafficSplit {
        deployment: r.deployment.clone(),
        weight: r.weight,
        set_by: actor(),
        at: now(),
    });
    let c = TrafficChange::Rollout { rollout: next, split, expected_generation: expected };
    ctx.store
        .set_traffic(&project.id, c, reason, actor(), evidence)
        .await
        .map(drop)
        .map_err(|e| format!("recording the rollout: {e}"))
}

fn window_json(w: &TrafficWindow) -> serde_json::Value {
    let errors = (w.error_rate * w.requests as f64).round() as u64;
    serde_json::json!({
        "requests": w.requests,
        "errors": errors,
        "error_rate": w.error_rate,
        "p50_ms": w.p50_ms,
        "p99_ms": w.p99_ms,
    })
}

#[allow(clippy::too_many_arguments)]
async fn judge(
    ctx: &Ctx,
    project: &Project,
    d: &Deployment,
    cfg: &Rollout,
    state: &RolloutState,
    step: &str,
    canary: &TrafficWindow,
    stable: &TrafficWindow,
) -> Result<Option<Decision>, String> {
    let policy = crate::gates::in_force(&*ctx.store, Gate::Promote).await.map_err(|e| e.to_string())?;
    let input = serde_json::json!({
        "action": "promote",
        "app": project.name,
        "deployment": d.id,
        "stable_deployment": state.stable,
        "step": state.step + 1,
        "weight": state.weight,
        "window_s": cfg.analysis_interval.as_std().as_secs_f64(),
        "overrides": {"max_error_rate": cfg.max_error_rate, "max_p99_ms": cfg.max_p99_ms},
        "canary": window_json(canary),
        "stable": window_json(stable),
    });
    let decision = crate::gates::decide(&policy, Some(&project.name), input);
    let evidence = crate::gates::evidence(&decision, policy.version);
    if decision.allow {
        let why =
            format!("[PASS] {step}: {} canary requests, policy promote v{} allowed", canary.requests, policy.version);
        advance(ctx, project, d, cfg, state, &why, Some(evidence)).await
    } else {
        let reasons = decision.deny.join("; ");
        let why = format!("canary rolled back at {step}: denied by policy promote v{}: {reasons}", policy.version);
        rollback(ctx, project, state, &why, Some(evidence)).await.map(Some)
    }
}

/// The next step, or live after the last one below 100.
async fn advance(
    ctx: &Ctx,
    project: &Project,
    d: &Deployment,
    cfg: &Rollout,
    state: &RolloutState,
    why: &str,
    evidence: Option<String>,
) -> Result<Option<Decision>, String> {
    let next = state.step + 1;
    let weight = weight_of(cfg, next);
    if next >= cfg.steps.len() || weight >= 100 {
        let path: Vec<String> = cfg.steps.iter().map(|s| format!("{s}%")).collect();
        return Ok(Some(Decision::Move {
            to: Status::Healthy,
            reason: format!("canary promoted through {}: {why}", path.join(" → ")),
            patch: Patch { make_live: true, evidence, ..Patch::default() },
        }));
    }
    let s = RolloutState {
        step: next,
        weight,
        window_started: now(),
        inconclusive: 0,
        errors: 0,
        paused: None,
        promote_requested: false,
        last_decision: Some(why.to_string()),
        generation: state.generation + 1,
        ..state.clone()
    };
    let reason = format!("canary {}: step {} of {}, {weight}% of clients — {why}", d.id, next + 1, cfg.steps.len());
    change(ctx, project, Some(state.generation), Some(s), &reason, evidence).await?;
    Ok(None)
}

/// Weight 0 and the canary fails with `why`; the live deployment is untouched.
async fn rollback(
    ctx: &Ctx,
    project: &Project,
    state: &RolloutState,
    why: &str,
    evidence: Option<String>,
) -> Result<Decision, String> {
    // The weight goes to 0 first (its own record); the failure that follows
    // carries the reasons and the decision.
    change(ctx, project, Some(state.generation), None, "canary weight 0: rolling back", None).await?;
    Ok(Decision::Move { to: Status::Failed, reason: why.to_string(), patch: Patch { evidence, ..Patch::default() } })
}

async fn inconclusive(
    ctx: &Ctx,
    project: &Project,
    d: &Deployment,
    cfg: &Rollout,
    state: &RolloutState,
    step: &str,
    requests: u64,
) -> Result<Option<Decision>, String> {
    let n = state.inconclusive + 1;
    let what = format!(
        "inconclusive at {step}: {requests} canary request(s) in the window, fewer than min_requests {} ({n} of {STRIKES})",
        cfg.min_requests
    );
    if n >= STRIKES {
        match cfg.on_no_data {
            OnNoData::Rollback => {
                return rollback(
                    ctx,
                    project,
                    state,
                    &format!("canary rolled back ({what}; on_no_data = rollback)"),
                    None,
                )
                .await
                .map(Some);
            }
            OnNoData::Promote => {
                return advance(ctx, project, d, cfg, state, &format!("{what}; on_no_data = promote"), None).await;
            }
            OnNoData::Pause => {
                let s = RolloutState {
                    inconclusive: n,
                    paused: Some(format!("{what}: waiting for `bifrost rollout promote` or `abort`")),
                    last_decision: Some(what.clone()),
                    generation: state.generation + 1,
                    ..state.clone()
                };
                change(ctx, project, Some(state.generation), Some(s), &format!("canary paused: {what}"), None).await?;
                return Ok(None);
            }
        }
    }
    let s = RolloutState {
        inconclusive: n,
        window_started: now(),
        last_decision: Some(what.clone()),
        generation: state.generation + 1,
        ..state.clone()
    };
    change(ctx, project, Some(state.generation), Some(s), &format!("canary window extended: {what}"), None).await?;
    Ok(None)
}

/// The metrics source failing is not "no data": retried with a new window,
/// and after three in a row the rollout pauses.
async fn metrics_error(
    ctx: &Ctx,
    project: &Project,
    state: &RolloutState,
    step: &str,
    error: &str,
) -> Result<Option<Decision>, String> {
    let n = state.errors + 1;
    let what = format!("metrics unavailable at {step} ({n} of {STRIKES}): {error}");
    let paused = (n >= STRIKES).then(|| format!("{what}: waiting for `bifrost rollout promote` or `abort`"));
    let reason =
        if paused.is_some() { format!("canary paused: {what}") } else { format!("canary window retried: {what}") };
    let s = RolloutState {
        errors: n,
        window_started: now(),
        paused,
        last_decision: Some(what),
        generation: state.generation + 1,
        ..state.clone()
    };
    change(ctx, project, Some(state.generation), Some(s), &reason, None).await?;
    Ok(None)
}

/// Ends the project's rollout of `deployment_id` if it has one (the canary
/// went live, or left service), keeping whatever else is set.
pub async fn finish(ctx: &Ctx, project_id: &str, deployment_id: &str, why: &str) -> Result<(), String> {
    let Ok(project) = ctx.store.get_project(project_id).await else { return Ok(()) };
    let Some(state) = project.rollout.as_ref().filter(|r| r.deployment == deployment_id) else { return Ok(()) };
    change(ctx, &project, Some(state.generation), None, why, None).await
}

/// `bifrost rollout promote`: a paused (or running) rollout takes its next
/// step without asking the gate. `bifrost rollout abort` is a cancel of
/// the canary deployment.
pub async fn request_promote(ctx: &Ctx, project: &Project, by: Actor) -> Result<RolloutState, RolloutError> {
    let Some(state) = project.rollout.clone() else {
        return Err(RolloutError::NoRollout(project.name.clone()));
    };
    let next =
        RolloutState { promote_requested: true, paused: None, generation: state.generation + 1, ..state.clone() };
    let c = TrafficChange::Rollout {
        rollout: Some(next.clone()),
        split: project.split.clone(),
        expected_generation: Some(state.generation),
    };
    let reason = format!("canary {}: promote requested at step {}", state.deployment, state.step + 1);
    ctx.store.set_traffic(&project.id, c, &reason, by, None).await.map_err(RolloutError::Store)?;
    Ok(next)
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{0} has no canary rolling out")]
    NoRollout(String),
    #[error(transparent)]
    Store(bifrost_core::StoreError),
}
