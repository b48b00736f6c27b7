//! The deploy function: `built → deploying`, then starts the replicas and
//! moves `deploying → running` once every replica listens (or `→ failed`).
//! It also stops the replicas of deployments that leave service
//! (superseded, cancelled, failed), after a drain.

use std::time::Duration;

use async_trait::async_trait;
use bifrost_core::config::EnvValue;
use bifrost_core::domain::Deployment;
use bifrost_core::events::Event;
use bifrost_core::ports::{Patch, ReplicaSpec, RuntimeError};
use bifrost_core::{Status, StoreError};
use bifrost_policy::Gate;

use crate::driver::{Consumes, Decision, Function};
use crate::{Ctx, left_status};

pub const NAME: &str = "deploy";

pub struct Deploy;

#[async_trait]
impl Function for Deploy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumes(&self) -> &'static [Consumes] {
        &[
            Consumes::Current(Status::Built),
            Consumes::Current(Status::Deploying),
            // Live: the deploy function moves the app's traffic to it (GKE).
            Consumes::Current(Status::Healthy),
            // Leaving service: the deploy function stops the replicas.
            Consumes::Always(Status::Superseded),
            Consumes::Always(Status::Cancelled),
            Consumes::Always(Status::Failed),
        ]
    }

    async fn reconcile(&self, ctx: &Ctx, d: Option<&Deployment>, event: &Event) -> Decision {
        match (event.status, d) {
            (Status::Built, Some(d)) => deploy_gate(ctx, d).await,
            (Status::Deploying, Some(d)) => start(ctx, d, event).await,
            (Status::Healthy, Some(_)) => match ctx.runtime.promote(&event.deployment_id).await {
                Ok(()) => {
                    match crate::canary::finish(ctx, &event.project_id, &event.deployment_id, "canary complete: live")
                        .await
                    {
                        Ok(()) => Decision::Done,
                        Err(e) => Decision::Retry(e),
                    }
                }
                Err(e) => Decision::Retry(format!("sending traffic to {}: {e}", event.deployment_id)),
            },
            (Status::Superseded | Status::Cancelled | Status::Failed, _) => leave_service(ctx, event).await,
            _ => Decision::Done,
        }
    }
}

/// The deploy gate (`built → deploying`): the deploy policy decides on the
/// deployment, its config and the host's facts; denied, nothing starts and
/// the deployment fails with the policy's reasons. The decision goes into
/// the audit record either way.
async fn deploy_gate(ctx: &Ctx, d: &Deployment) -> Decision {
    let policy = match crate::gates::in_force(&*ctx.store, Gate::Deploy).await {
        Ok(p) => p,
        Err(e) => return Decision::Retry(format!("reading the deploy policy: {e}")),
    };
    let input = serde_json::json!({
        "action": "deploy",
        "app": d.project,
        "deployment": d.id,
        "actor": d.created_by.to_string(),
        "source": d.source.short(),
        "rollback_of": d.rollback_of,
        "config": d.config.as_ref().map(|c| &c.config),
        "host": ctx.runtime.host_facts().await,
    });
    let decision = crate::gates::decide(&policy, Some(&d.project), input);
    let evidence = Some(crate::gates::evidence(&decision, policy.version));
    let (to, reason) = if decision.allow {
        (Status::Deploying, format!("starting replicas (policy deploy v{}: allowed)", policy.version))
    } else {
        (
            Status::Failed,
            format!("deployment denied by policy deploy v{}: {}", policy.version, decision.deny.join("; ")),
        )
    };
    Decision::Move { to, reason, patch: Patch { evidence, ..Patch::default() } }
}

/// Starts the replicas and waits until they listen.
async fn start(ctx: &Ctx, d: &Deployment, event: &Event) -> Decision {
    let spec = match spec_for(ctx, d).await {
        Ok(s) => s,
        Err(SpecError::Fail(reason)) => return Decision::fail(reason),
        Err(SpecError::Retry(e)) => return Decision::Retry(e),
    };
    let replicas = spec.replicas;
    if let Err(e) = ctx.runtime.apply(spec).await {
        return match e {
            RuntimeError::Failed(reason) => Decision::fail(reason),
            RuntimeError::Unavailable(e) => Decision::Retry(e),
        };
    }
    let waited = tokio::select! {
        r = ctx.runtime.wait_listening(&d.id, ctx.settings.start_timeout) => Some(r),
        _ = left_status(ctx, event) => None,
    };
    match waited {
        None => Decision::Done,
        Some(Ok(())) => Decision::to(Status::Running, format!("{replicas} replica(s) listening")),
        Some(Err(RuntimeError::Failed(reason))) => {
            let _ = ctx.runtime.stop(&d.id, Duration::ZERO).await;
            Decision::fail(reason)
        }
        Some(Err(RuntimeError::Unavailable(e))) => Decision::Retry(e),
    }
}

/// A deployment ended: traffic goes (back) to the live one, its replicas
/// stop after draining, and build output nobody can roll back to is removed.
async fn leave_service(ctx: &Ctx, event: &Event) -> Decision {
    // A canary that ends takes its share of traffic with it.
    let why = format!("canary ended: {}", event.status);
    if let Err(e) = crate::canary::finish(ctx, &event.project_id, &event.deployment_id, &why).await {
        return Decision::Retry(e);
    }
    if let Ok(p) = ctx.store.get_project(&event.project_id).await
        && let Some(live) = p.live_deployment_id.filter(|l| *l != event.deployment_id)
        && let Err(e) = ctx.runtime.promote(&live).await
    {
        return Decision::Retry(format!("sending traffic to the live deployment {live}: {e}"));
    }
    // A split's second deployment keeps running (`bifrost traffic split`):
    // checked before the drain, and again after the stop in case the split
    // was set meanwhile.
    if crate::split::targets(ctx, &event.project_id, &event.deployment_id).await {
        return Decision::Done;
    }
    let _ = ctx.runtime.stop(&event.deployment_id, ctx.settings.drain).await;
    if crate::split::targets(ctx, &event.project_id, &event.deployment_id).await {
        crate::split::restart(ctx, &event.deployment_id).await;
        return Decision::Done;
    }
    match ctx.store.get_project(&event.project_id).await {
        Err(StoreError::NotFound { .. }) => ctx.builder.discard_project(&event.project_id).await,
        _ => {
            if !was_ever_healthy(ctx, &event.deployment_id).await {
                ctx.builder.discard(&event.project_id, &event.deployment_id).await;
            }
        }
    }
    Decision::Done
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
