//! The validate function: `queued → validating`, then reads deploy.toml at
//! the deployment's exact commit and moves `validating → building` with the
//! config snapshotted, or `→ failed` with every error stored.

use bifrost_core::Status;
use bifrost_core::config::{self, ConfigError};
use bifrost_core::domain::ConfigSnapshot;
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::{Patch, SourceError};

use crate::{Ctx, decode, step, still_current};

pub const NAME: &str = "validate";
pub const CONFIG_FILE: &str = "deploy.toml";

pub async fn handle(ctx: &Ctx, envelope: PushEnvelope) -> Outcome {
    let event = match decode(&envelope) {
        Ok(e) => e,
        Err(o) => return o,
    };
    match event.status {
        Status::Queued => {
            step(ctx, &event, NAME, Status::Validating, format!("reading {CONFIG_FILE}"), Patch::default()).await
        }
        Status::Validating => {
            match still_current(ctx, &event).await {
                Ok(true) => {}
                Ok(false) => return Outcome::Ack,
                Err(o) => return o,
            }
            let (to, reason, patch) = match check(ctx, &event.deployment_id, &event.project).await {
                Ok(Verdict::Valid(snapshot)) => {
                    let reason = format!(
                        "{CONFIG_FILE} valid: app {} ({}), {} replica(s)",
                        snapshot.config.app.name, snapshot.config.app.runtime, snapshot.config.scaling.min_replicas
                    );
                    (Status::Building, reason, Patch { config: Some(*snapshot), ..Patch::default() })
                }
                Ok(Verdict::Invalid(errors)) => {
                    let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
                    let reason = match errors.len() {
                        1 => format!("{CONFIG_FILE} is invalid: {first}"),
                        n => format!("{CONFIG_FILE} has {n} errors; first: {first}"),
                    };
                    (Status::Failed, reason, Patch { config_errors: Some(errors), ..Patch::default() })
                }
                Ok(Verdict::Unusable(reason)) => (Status::Failed, reason, Patch::default()),
                Err(transient) => return Outcome::Retry(transient),
            };
            step(ctx, &event, NAME, to, reason, patch).await
        }
        // Not an event this function consumes.
        _ => Outcome::Ack,
    }
}

enum Verdict {
    Valid(Box<ConfigSnapshot>),
    Invalid(Vec<ConfigError>),
    /// No deploy.toml, or the source is gone: a failure, not a retry.
    Unusable(String),
}

/// `Err` is a transient problem worth retrying.
async fn check(ctx: &Ctx, deployment_id: &str, project: &str) -> Result<Verdict, String> {
    let d = ctx.store.get_deployment(deployment_id).await.map_err(|e| e.to_string())?;
    let text = match ctx.sources.read_file(&d.source, CONFIG_FILE).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Ok(Verdict::Unusable(format!(
                "no {CONFIG_FILE} at the root of {} (see docs/deploy-toml.md)",
                d.source.short()
            )));
        }
        Err(SourceError::Unavailable(e)) => return Err(e),
        Err(SourceError::NotFound(e) | SourceError::Invalid(e)) => return Ok(Verdict::Unusable(e)),
    };
    Ok(match config::parse(&text) {
        Ok(cfg) if cfg.app.name != project => {
            let mut errors = vec![config::error_at(
                &text,
                "app",
                "name",
                &format!("{project:?} (the project's name, which is also its URL)"),
                &format!("{:?}", cfg.app.name),
            )];
            config::attach_source_lines(&text, &mut errors);
            Verdict::Invalid(errors)
        }
        Ok(cfg) => Verdict::Valid(Box::new(ConfigSnapshot { source: text, config: cfg })),
        Err(mut errors) => {
            config::attach_source_lines(&text, &mut errors);
            Verdict::Invalid(errors)
        }
    })
}
