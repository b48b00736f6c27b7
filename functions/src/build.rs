//! The build function: `building → built` with the artifact recorded, or
//! `→ failed` with the build's last lines. A deployment that is cancelled or
//! superseded meanwhile stops the build at once (its process group is
//! killed when the build future is dropped).

use std::time::Instant;

use bifrost_core::Status;
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::{BuildError, BuildRequest, Patch};

use crate::{Ctx, current_deployment, decode, left_status, step};

pub const NAME: &str = "build";

pub async fn handle(ctx: &Ctx, envelope: PushEnvelope) -> Outcome {
    let event = match decode(&envelope) {
        Ok(e) => e,
        Err(o) => return o,
    };
    if event.status != Status::Building {
        return Outcome::Ack;
    }
    let d = match current_deployment(ctx, &event).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    if let (Some(of), Some(artifact)) = (&d.rollback_of, &d.artifact) {
        let patch = Patch { artifact: Some(artifact.clone()), ..Patch::default() };
        return step(ctx, &event, NAME, Status::Built, format!("reusing the build of {of}"), patch).await;
    }
    let Some(snapshot) = d.config.clone() else {
        return step(
            ctx,
            &event,
            NAME,
            Status::Failed,
            "no validated deploy.toml on the deployment".into(),
            Patch::default(),
        )
        .await;
    };
    let req = BuildRequest {
        deployment_id: d.id.clone(),
        project_id: d.project_id.clone(),
        project: d.project.clone(),
        source: d.source.clone(),
        config: snapshot.config,
    };
    let started = Instant::now();
    let result = tokio::select! {
        r = ctx.builder.build(req, ctx.logs.clone()) => r,
        _ = left_status(ctx, &event) => {
            ctx.builder.discard(&event.project_id, &event.deployment_id).await;
            ctx.logs.line(&d.id, &d.project, "build", "[bifrost] build stopped: the deployment was cancelled or superseded".into());
            return Outcome::Ack;
        }
    };
    match result {
        Ok(artifact) => {
            let reason = format!("built in {:.1}s", started.elapsed().as_secs_f64());
            step(ctx, &event, NAME, Status::Built, reason, Patch { artifact: Some(artifact), ..Patch::default() }).await
        }
        Err(BuildError::Failed(reason)) => step(ctx, &event, NAME, Status::Failed, reason, Patch::default()).await,
        Err(BuildError::Unavailable(e)) => Outcome::Retry(e),
    }
}
