//! The build function: `building → built` with the artifact recorded, or
//! `→ failed` with the build's last lines. A deployment that is cancelled or
//! superseded meanwhile stops the build at once (its process group is
//! killed when the build future is dropped).

use std::time::Instant;

use async_trait::async_trait;
use bifrost_core::Status;
use bifrost_core::domain::Deployment;
use bifrost_core::events::Event;
use bifrost_core::ports::{BuildError, BuildRequest, Patch};

use crate::driver::{Consumes, Decision, Function};
use crate::{Ctx, left_status};

pub const NAME: &str = "build";

pub struct Build;

#[async_trait]
impl Function for Build {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumes(&self) -> &'static [Consumes] {
        &[Consumes::Current(Status::Building)]
    }

    async fn reconcile(&self, ctx: &Ctx, d: Option<&Deployment>, event: &Event) -> Decision {
        let Some(d) = d else { return Decision::Done };
        if let (Some(of), Some(artifact)) = (&d.rollback_of, &d.artifact) {
            let patch = Patch { artifact: Some(artifact.clone()), ..Patch::default() };
            return Decision::Move { to: Status::Built, reason: format!("reusing the build of {of}"), patch };
        }
        let Some(snapshot) = d.config.clone() else {
            return Decision::fail("no validated deploy.toml on the deployment");
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
            _ = left_status(ctx, event) => {
                ctx.builder.discard(&event.project_id, &event.deployment_id).await;
                ctx.logs.line(&d.id, &d.project, "build", "[bifrost] build stopped: the deployment was cancelled or superseded".into());
                return Decision::Done;
            }
        };
        match result {
            Ok(artifact) => Decision::Move {
                to: Status::Built,
                reason: format!("built in {:.1}s", started.elapsed().as_secs_f64()),
                patch: Patch { artifact: Some(artifact), ..Patch::default() },
            },
            Err(BuildError::Failed(reason)) => Decision::fail(reason),
            Err(BuildError::Unavailable(e)) => Decision::Retry(e),
        }
    }
}
