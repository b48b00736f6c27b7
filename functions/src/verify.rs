//! The verify function: `running → healthy` once every replica passed
//! `success_threshold` health probes in a row (and the deployment becomes
//! the project's live one), or `→ failed` once a replica failed
//! `failure_threshold` in a row — with what the probe saw.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bifrost_core::Status;
use bifrost_core::domain::Deployment;
use bifrost_core::events::Event;
use bifrost_core::ports::{Patch, ReplicaStatus};

use crate::driver::{Consumes, Decision, Function};
use crate::{Ctx, still_current};

pub const NAME: &str = "verify";

pub struct Verify;

#[async_trait]
impl Function for Verify {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumes(&self) -> &'static [Consumes] {
        &[Consumes::Current(Status::Running)]
    }

    async fn reconcile(&self, ctx: &Ctx, d: Option<&Deployment>, event: &Event) -> Decision {
        match d {
            Some(d) => verify(ctx, d, event).await,
            None => Decision::Done,
        }
    }
}

async fn verify(ctx: &Ctx, d: &Deployment, event: &Event) -> Decision {
    let Some(snapshot) = &d.config else {
        return Decision::fail("no validated deploy.toml");
    };
    let health = &snapshot.config.health;
    let budget =
        health.interval.as_std() * (health.success_threshold + health.failure_threshold + 3) + Duration::from_secs(30);
    let started = Instant::now();
    let failure_threshold = health.failure_threshold;
    let verdict = move |r: &[ReplicaStatus]| {
        r.is_empty() || r.iter().all(|r| r.healthy) || r.iter().any(|r| r.consecutive_failures >= failure_threshold)
    };
    let mut first = true;
    loop {
        // Woken by every probe result; at least once a second to notice a
        // cancel or supersede.
        let wait = if first { Duration::ZERO } else { Duration::from_secs(1) };
        first = false;
        let replicas = ctx.runtime.watch_status(&d.id, wait, &verdict).await;
        if replicas.is_empty() {
            return Decision::fail("no replicas are running");
        }
        if let Some(bad) = replicas.iter().find(|r| r.consecutive_failures >= health.failure_threshold) {
            let reason = format!(
                "replica {} failed {} health check(s) in a row: {}",
                bad.index,
                bad.consecutive_failures,
                bad.last_probe.as_deref().unwrap_or("no answer")
            );
            return Decision::fail(reason);
        }
        if replicas.iter().all(|r| r.healthy) {
            // A canary goes live through its steps instead.
            match ctx.store.get_project(&d.project_id).await {
                Ok(p) if crate::canary::applies(d, &p) => {
                    return crate::canary::run(ctx, d, event, &snapshot.config.rollout).await;
                }
                Ok(_) => {}
                Err(e) => return Decision::Retry(format!("reading the project: {e}")),
            }
            let probe = replicas[0].last_probe.clone().unwrap_or_default();
            let reason = format!("{}/{} replicas healthy ({probe})", replicas.len(), replicas.len());
            return Decision::Move {
                to: Status::Healthy,
                reason,
                patch: Patch { make_live: true, ..Patch::default() },
            };
        }
        if started.elapsed() > budget {
            let r = replicas.iter().find(|r| !r.healthy).unwrap_or(&replicas[0]);
            // Blame what failed: a health sidecar that never reported is the
            // platform's problem, not the app's.
            let saw = match (&r.sidecar, &r.last_probe, r.listening) {
                (Some(sidecar), _, _) => format!("no health reports: {sidecar}"),
                (None, Some(probe), _) => format!("last saw {probe}"),
                (None, None, true) => "listens, but no health report arrived".to_string(),
                (None, None, false) => "last saw nothing (not listening)".to_string(),
            };
            let reason = format!("no health verdict within {}s: replica {} {saw}", budget.as_secs(), r.index);
            return Decision::fail(reason);
        }
        if !matches!(still_current(ctx, event).await, Ok(true)) {
            return Decision::Done;
        }
    }
}
