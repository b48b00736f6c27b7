//! The deploy function: `built → deploying`, then starts the replicas and
//! moves `deploying → running` once every replica listens (or `→ failed`).
//! It also stops the replicas of deployments that leave service
//! (superseded, cancelled, failed), after a drain.

use std::time::Duration;

use bifrost_core::config::EnvValue;
use bifrost_core::domain::Deployment;
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::{Patch, ReplicaSpec, RuntimeError};
use bifrost_core::{Status, StoreError};

use crate::{Ctx, current_deployment, decode, left_status, step};

pub const NAME: &str = "deploy";

pub async fn handle(ctx: &Ctx, envelope: PushEnvelope) -> Outcome {
    let event = match decode(&envelope) {
        Ok(e) => e,
        Err(o) => return o,
    };
    match event.status {
        Status::Built => step(ctx, &event, NAME, Status::Deploying, "starting replicas".into(), Patch::default()).await,
        Status::Deploying => {
            let d = match current_deployment(ctx, &event).await {
                Ok(d) => d,
                Err(o) => return o,
            };
            let spec = match spec_for(ctx, &d).await {
                Ok(s) => s,
                Err(SpecError::Fail(reason)) => {
                    return step(ctx, &event, NAME, Status::Failed, reason, Patch::default()).await;
                }
                Err(SpecError::Retry(e)) => return Outcome::Retry(e),
            };
            let replicas = spec.replicas;
            if let Err(e) = ctx.runtime.apply(spec).await {
                return match e {
                    RuntimeError::Failed(reason) => {
                        step(ctx, &event, NAME, Status::Failed, reason, Patch::default()).await
                    }
                    RuntimeError::Unavailable(e) => Outcome::Retry(e),
                };
            }
            let waited = tokio::select! {
                r = ctx.runtime.wait_listening(&d.id, ctx.settings.start_timeout) => Some(r),
                _ = left_status(ctx, &event) => None,
            };
            match waited {
                // Cancelled or superseded meanwhile: the cleanup stops it.
                None => Outcome::Ack,
                Some(Ok(())) => {
                    let reason = format!("{replicas} replica(s) listening");
                    step(ctx, &event, NAME, Status::Running, reason, Patch::default()).await
                }
                Some(Err(RuntimeError::Failed(reason))) => {
                    let _ = ctx.runtime.stop(&d.id, Duration::ZERO).await;
                    step(ctx, &event, NAME, Status::Failed, reason, Patch::default()).await
                }
                Some(Err(RuntimeError::Unavailable(e))) => Outcome::Retry(e),
            }
        }
        Status::Healthy => match current_deployment(ctx, &event).await {
            // Live: the app's traffic goes to it (idempotent; retried until done).
            Ok(_) => match ctx.runtime.promote(&event.deployment_id).await {
                Ok(()) => Outcome::Ack,
                Err(e) => Outcome::Retry(format!("sending traffic to {}: {e}", event.deployment_id)),
            },
            Err(o) => o,
        },
        Status::Superseded | Status::Cancelled | Status::Failed => {
            // Traffic first goes to whatever is live now (the healthy event
            // of the replacement may not have been handled yet), so stopping
            // this one never leaves the app's URL pointing at nothing.
            if let Ok(p) = ctx.store.get_project(&event.project_id).await
                && let Some(live) = p.live_deployment_id.filter(|l| *l != event.deployment_id)
                && let Err(e) = ctx.runtime.promote(&live).await
            {
                return Outcome::Retry(format!("sending traffic to the live deployment {live}: {e}"));
            }
            // Out of service: drain (the router already stopped sending
            // new requests), stop, and drop build output nobody can roll
            // back to.
            let _ = ctx.runtime.stop(&event.deployment_id, ctx.settings.drain).await;
            match ctx.store.get_project(&event.project_id).await {
                // The project was deleted: everything of it goes.
                Err(StoreError::NotFound { .. }) => ctx.builder.discard_project(&event.project_id).await,
                _ => {
                    if !was_ever_healthy(ctx, &event.deployment_id).await {
                        ctx.builder.discard(&event.project_id, &event.deployment_id).await;
                    }
                }
            }
            Outcome::Ack
        }
        _ => Outcome::Ack,
    }
}

async fn was_ever_healthy(ctx: &Ctx, deployment_id: &str) -> bool {
    ctx.store
        .history(deployment_id)
        .await
        .map(|h| h.iter().any(|r| r.to == Status::Healthy))
        // Unknown: keep the artifact (cheap) rather than lose a rollback target.
        .unwrap_or(true)
}

pub(crate) enum SpecError {
    Fail(String),
    Retry(String),
}

/// The replica spec of a deployment: its artifact, config and resolved env.
pub(crate) async fn spec_for(ctx: &Ctx, d: &Deployment) -> Result<ReplicaSpec, SpecError> {
    let Some(snapshot) = &d.config else { return Err(SpecError::Fail("no validated deploy.toml".into())) };
    let Some(artifact) = &d.artifact else { return Err(SpecError::Fail("no build output to run".into())) };
    let config = &snapshot.config;
    let secret_names: Vec<String> = config
        .env
        .values()
        .filter_map(|v| match v {
            EnvValue::Secret { secret } => Some(secret.clone()),
            EnvValue::Value(_) => None,
        })
        .collect();
    let secrets = if secret_names.is_empty() {
        Default::default()
    } else {
        let sealed = match ctx.store.secret_values(&d.project_id, &secret_names).await {
            Ok(v) => v,
            Err(StoreError::NotFound { id, .. }) => {
                // Another project's secret of that name is no different from none.
                return Err(SpecError::Fail(format!(
                    "secret {id:?} does not exist in project {p} (bifrost secrets set {id} --project {p}), and \
                     [env] needs it",
                    p = d.project
                )));
            }
            Err(e) => return Err(SpecError::Retry(e.to_string())),
        };
        let keys = ctx.keys().map_err(SpecError::Retry)?;
        let mut open = std::collections::BTreeMap::new();
        for (name, value) in sealed {
            let plain = keys
                .secrets
                .open(&value, &bifrost_core::seal::secret_context(&d.project_id, &name))
                .map_err(|e| SpecError::Fail(format!("secret {name:?} of project {}: {e}", d.project)))?;
            open.insert(name, plain);
        }
        open
    };
    let masked = secrets.values().cloned().collect();
    let env = config
        .env
        .iter()
        .map(|(k, v)| {
            let value = match v {
                EnvValue::Value(s) => s.clone(),
                EnvValue::Secret { secret } => secrets.get(secret).cloned().unwrap_or_default(),
            };
            (k.clone(), value)
        })
        .collect();
    Ok(ReplicaSpec {
        deployment_id: d.id.clone(),
        project_id: d.project_id.clone(),
        project: d.project.clone(),
        artifact: artifact.clone(),
        config: config.clone(),
        env,
        masked,
        replicas: config.scaling.min_replicas,
    })
}
