//! The verify function: `running → healthy` once every replica passed
//! `success_threshold` health probes in a row (and the deployment becomes
//! the project's live one), or `→ failed` once a replica failed
//! `failure_threshold` in a row — with what the probe saw.

use std::time::{Duration, Instant};

use bifrost_core::Status;
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::{Patch, ReplicaStatus};

use crate::{Ctx, current_deployment, decode, step, still_current};

pub const NAME: &str = "verify";

pub async fn handle(ctx: &Ctx, envelope: PushEnvelope) -> Outcome {
    let event = match decode(&envelope) {
        Ok(e) => e,
        Err(o) => return o,
    };
    if event.status != Status::Running {
        return Outcome::Ack;
    }
    let d = match current_deployment(ctx, &event).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let Some(snapshot) = &d.config else {
        return step(ctx, &event, NAME, Status::Failed, "no validated deploy.toml".into(), Patch::default()).await;
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
            return step(ctx, &event, NAME, Status::Failed, "no replicas are running".into(), Patch::default()).await;
        }
        if let Some(bad) = replicas.iter().find(|r| r.consecutive_failures >= health.failure_threshold) {
            let reason = format!(
                "replica {} failed {} health check(s) in a row: {}",
                bad.index,
                bad.consecutive_failures,
                bad.last_probe.as_deref().unwrap_or("no answer")
            );
            return step(ctx, &event, NAME, Status::Failed, reason, Patch::default()).await;
        }
        if replicas.iter().all(|r| r.healthy) {
            let probe = replicas[0].last_probe.clone().unwrap_or_default();
            let reason = format!("{}/{} replicas healthy ({probe})", replicas.len(), replicas.len());
            return step(ctx, &event, NAME, Status::Healthy, reason, Patch { make_live: true, ..Patch::default() })
                .await;
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
            return step(ctx, &event, NAME, Status::Failed, reason, Patch::default()).await;
        }
        if !matches!(still_current(ctx, &event).await, Ok(true)) {
            return Outcome::Ack;
        }
    }
}
