//! The validate function: `queued → validating`, then reads deploy.toml at
//! the deployment's exact commit and moves `validating → building` with the
//! config snapshotted, or `→ failed` with every error stored.

use bifrost_core::Status;
use bifrost_core::config::{self, ConfigError};
use bifrost_core::domain::ConfigSnapshot;
use bifrost_core::domain::Deployment;
use bifrost_core::events::Event;
use bifrost_core::ports::{Patch, SourceError};

use crate::Ctx;
use crate::driver::{Consumes, Decision, Function};
use async_trait::async_trait;

pub const NAME: &str = "validate";
pub const CONFIG_FILE: &str = "deploy.toml";

pub struct Validate;

#[async_trait]
impl Function for Validate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumes(&self) -> &'static [Consumes] {
        &[Consumes::Current(Status::Queued), Consumes::Current(Status::Validating)]
    }

    async fn reconcile(&self, ctx: &Ctx, d: Option<&Deployment>, event: &Event) -> Decision {
        let Some(d) = d else { return Decision::Done };
        if event.status == Status::Queued {
            return Decision::to(Status::Validating, format!("reading {CONFIG_FILE}"));
        }
        match check(ctx, d, &event.project).await {
            Ok(Verdict::Valid(snapshot)) => {
                let reason = format!(
                    "{CONFIG_FILE} valid: app {} ({}), {} replica(s)",
                    snapshot.config.app.name, snapshot.config.app.runtime, snapshot.config.scaling.min_replicas
                );
                Decision::Move {
                    to: Status::Building,
                    reason,
                    patch: Patch { config: Some(*snapshot), ..Patch::default() },
                }
            }
            Ok(Verdict::Invalid(errors)) => {
                let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
                let reason = match errors.len() {
                    1 => format!("{CONFIG_FILE} is invalid: {first}"),
                    n => format!("{CONFIG_FILE} has {n} errors; first: {first}"),
                };
                Decision::Move {
                    to: Status::Failed,
                    reason,
                    patch: Patch { config_errors: Some(errors), ..Patch::default() },
                }
            }
            Ok(Verdict::Unusable(reason)) => Decision::fail(reason),
            Err(transient) => Decision::Retry(transient),
        }
    }
}

enum Verdict {
    Valid(Box<ConfigSnapshot>),
    Invalid(Vec<ConfigError>),
    /// No deploy.toml, or the source is gone: a failure, not a retry.
    Unusable(String),
}

/// `Err` is a transient problem worth retrying.
async fn check(ctx: &Ctx, d: &Deployment, project: &str) -> Result<Verdict, String> {
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
        Ok(cfg) => match read_script(ctx, d, &cfg, &text).await? {
            Ok(script) => Verdict::Valid(Box::new(ConfigSnapshot { source: text, config: cfg, script })),
            Err(error) => {
                let mut errors = vec![error];
                config::attach_source_lines(&text, &mut errors);
                Verdict::Invalid(errors)
            }
        },
        Err(mut errors) => {
            config::attach_source_lines(&text, &mut errors);
            Verdict::Invalid(errors)
        }
    })
}

/// `[traffic] script`'s text at the deployment's commit, compiled: a
/// missing file or a Lua syntax error is a deploy.toml error at the
/// `script` line (with the Lua line in the message). `Err` outside is a
/// transient problem worth retrying.
async fn read_script(
    ctx: &Ctx,
    d: &Deployment,
    cfg: &config::DeployConfig,
    toml: &str,
) -> Result<Result<Option<String>, ConfigError>, String> {
    let Some(path) = cfg.traffic.script.as_deref() else { return Ok(Ok(None)) };
    let at = |expected: &str, found: &str| config::error_at(toml, "traffic", "script", expected, found);
    let text = match ctx.sources.read_file(&d.source, path).await {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(Err(at("a Lua file in the repository", &format!("no file {path:?} at this commit")))),
        Err(SourceError::Unavailable(e)) => return Err(e),
        Err(SourceError::NotFound(e) | SourceError::Invalid(e)) => return Ok(Err(at("a readable Lua file", &e))),
    };
    if text.len() > bifrost_core::scripts::MAX_SCRIPT_BYTES {
        return Ok(Err(at(
            &format!("a script of at most {} bytes", bifrost_core::scripts::MAX_SCRIPT_BYTES),
            &format!("{} bytes", text.len()),
        )));
    }
    Ok(match bifrost_scripts::compile(path, &text) {
        Ok(()) => Ok(Some(text)),
        Err(e) => Err(at("a Lua script that compiles", &e.message)),
    })
}
