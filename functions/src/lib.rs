//! Bifrost's functions. Each one is `(ctx, PushEnvelope) -> Outcome` and
//! moves a deployment one step through the state machine; the gateway is the
//! HTTP edge (REST API + GitHub webhook) that creates deployments.
//!
//! A function is given its world through [`Ctx`] (ports from `shared`), so
//! the same code runs in `bifrost up` (SQLite, in-process dispatcher) and on
//! Cloud Run (Firestore, Pub/Sub push).

pub mod analytics;
pub mod build;
pub mod canary;
pub mod deploy;
pub mod driver;
pub mod gates;
pub mod insights;
pub mod logs;
pub mod metrics;
pub mod push;
pub mod routes;
pub mod split;
pub mod traffic;
pub mod validate;
pub mod verify;

use std::sync::Arc;

use async_trait::async_trait;
use bifrost_core::domain::{Actor, Deployment};
use bifrost_core::events::{Event, Outcome, PushEnvelope, Subscription};
use bifrost_core::ports::{Builder, DeadLetters, LogSink, PushHandler, Runtime, Sources, Store, Transition};
use bifrost_core::{Status, StoreError};
use driver::Function;

/// Everything a function may touch.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub dead_letters: Arc<dyn DeadLetters>,
    pub sources: Arc<dyn Sources>,
    pub builder: Arc<dyn Builder>,
    pub runtime: Arc<dyn Runtime>,
    pub logs: Arc<dyn LogSink>,
    /// Sidecar reports as they arrive (SSE subscribers listen here).
    pub health: tokio::sync::broadcast::Sender<bifrost_core::domain::HealthSample>,
    /// Seal and open secrets. `None` in services that never touch one
    /// (validate, build, verify on Cloud Run); those that do refuse to run
    /// without it.
    pub keys: Option<bifrost_core::seal::Keys>,
    pub settings: Settings,
    /// The Prometheus registry and the platform's metrics in it.
    pub metrics: Arc<metrics::Metrics>,
    /// Routing scripts pushed live (`bifrost scripts`).
    pub scripts: Arc<bifrost_core::scripts::Scripts>,
    /// Recent traffic per deployment, where the router runs in this
    /// process (embedded); `None` on GCP.
    pub traffic: Option<Arc<traffic::TrafficRecorder>>,
    /// Where analytics results are copied (BigQuery on GCP, if configured).
    pub export: Option<Arc<dyn bifrost_core::ports::ResultsExport>>,
    /// The analytics schedule's points of the last week (see
    /// [`analytics::PointCache`]).
    pub points: Arc<analytics::PointCache>,
}

impl Ctx {
    /// The keys, or the error a caller can act on.
    pub fn keys(&self) -> Result<&bifrost_core::seal::Keys, String> {
        self.keys.as_ref().ok_or_else(|| {
            "this service has no secrets key (BIFROST_SECRETS_KEY / BIFROST_ENCRYPTION_KEY): it cannot seal or open \
             secrets"
                .to_string()
        })
    }
}

/// Limits and knobs shared by the functions.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Largest webhook body accepted (GitHub caps payloads at 25 MB; pushes
    /// are far smaller).
    pub max_webhook_bytes: usize,
    /// Largest uploaded source archive.
    pub max_upload_bytes: usize,
    /// Public base URL of the platform, for links in API answers.
    pub public_url: String,
    /// Apps are served at `<name>.<app_domain>` (embedded: `localhost:<port>`).
    pub app_domain: String,
    /// How long replicas get to start listening.
    pub start_timeout: std::time::Duration,
    /// How long a replaced deployment keeps serving in-flight requests.
    pub drain: std::time::Duration,
    /// What confines apps where this platform runs them (`/healthz`).
    pub isolation: Option<bifrost_core::ports::Isolation>,
    /// `GET /metrics` without a token (for a scraper on a trusted network).
    pub metrics_public: bool,
    /// The analytics schedule's window (`None`: no scheduled analytics).
    pub analytics_every: Option<chrono::Duration>,
    /// How long health, traffic minutes and analytics results are kept
    /// (`None`: for ever).
    pub retention: Option<chrono::Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_webhook_bytes: 5 << 20,
            max_upload_bytes: 100 << 20,
            public_url: "http://127.0.0.1:7070".into(),
            app_domain: "localhost:7070".into(),
            start_timeout: std::time::Duration::from_secs(60),
            drain: std::time::Duration::from_secs(2),
            isolation: None,
            metrics_public: false,
            analytics_every: Some(chrono::Duration::minutes(5)),
            retention: Some(chrono::Duration::days(30)),
        }
    }
}

/// The functions this build contains: the pipeline's four, and analytics
/// (dead letters, the outbox re-publisher, health folding).
pub fn functions() -> [&'static dyn Function; 5] {
    [&validate::Validate, &build::Build, &deploy::Deploy, &verify::Verify, &analytics::Analytics]
}

/// The function called `name`.
pub fn function(name: &str) -> Option<&'static dyn Function> {
    functions().into_iter().find(|f| f.name() == name)
}

/// Which function consumes which event, derived from what each function
/// says it consumes (terraform/main.tf's table is checked against it).
/// Each handler moves exactly one transition per delivery, so a crash
/// between steps resumes from the outbox.
pub fn subscriptions() -> Vec<Subscription> {
    driver::subscriptions_of(&functions())
}

/// All functions behind one push interface (what the dispatcher calls).
pub struct Functions {
    pub ctx: Ctx,
}

#[async_trait]
impl PushHandler for Functions {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome {
        if function == driver::DEAD_LETTER_PUSH {
            return match functions().into_iter().find(|f| f.takes_dead_letters()) {
                Some(f) => driver::drive_dead_letter(f, &self.ctx, envelope).await,
                None => Outcome::Reject("no function in this build takes dead letters".into()),
            };
        }
        match self::function(function) {
            Some(f) => driver::drive(f, &self.ctx, envelope).await,
            None => Outcome::Reject(format!("no function named {function:?} in this build")),
        }
    }
}

/// Maps a store result to what Pub/Sub should do with the message.
pub(crate) fn outcome_of(result: Result<(), StoreError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ack,
        // Someone else moved it on, or it is gone: nothing left to do.
        Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Outcome::Ack,
        Err(e @ StoreError::InvalidTransition { .. }) => Outcome::Reject(e.to_string()),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// Is the deployment still where the event says it is? Functions check this
/// before doing work, so a redelivered event does nothing twice.
pub(crate) async fn still_current(ctx: &Ctx, event: &Event) -> Result<bool, Outcome> {
    match current_deployment(ctx, event).await {
        Ok(_) => Ok(true),
        Err(Outcome::Ack) => Ok(false),
        Err(o) => Err(o),
    }
}

/// The deployment is still where `event` found it: same status, same version.
pub(crate) fn is_current(d: &Deployment, event: &Event) -> bool {
    d.status == event.status && d.version == event.version
}

/// The deployment, if it is still at the event's status and version (one
/// read serves both the idempotency check and the handler's work);
/// `Err(outcome)` is what the handler returns as it is: `Ack` for a stale
/// or deleted deployment, `Retry` when the store is unavailable.
pub(crate) async fn current_deployment(ctx: &Ctx, event: &Event) -> Result<Deployment, Outcome> {
    match ctx.store.get_deployment(&event.deployment_id).await {
        Ok(d) if is_current(&d, event) => Ok(d),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(Outcome::Ack),
        Err(e) => Err(Outcome::Retry(e.to_string())),
    }
}

/// Resolves when the deployment is no longer at the event's status and
/// version (cancelled, superseded, deleted): long steps race against it.
pub(crate) async fn left_status(ctx: &Ctx, event: &Event) {
    let mut feed = ctx.store.subscribe();
    loop {
        tokio::select! {
            item = feed.recv() => match item {
                Ok(i) if i.deployment_id != event.deployment_id => continue,
                // A lagged receiver may have missed it: fall through and check.
                _ => {}
            },
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        if !matches!(still_current(ctx, event).await, Ok(true)) {
            return;
        }
    }
}

/// What a runtime reports on its own initiative.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeTrouble {
    /// A deployment's replicas keep crashing.
    CrashLoop { deployment_id: String, reason: String },
    /// A replica that was serving went down (exited, or restarted after
    /// failing its health checks); it is being restarted.
    ReplicaDown { deployment_id: String, reason: String },
}

/// Acts on what the runtime reports. A replica of a live deployment going
/// down within the deployment's `[rollout] bake` rolls it back (the
/// safety net: its health failed right after it went live). A crash loop
/// fails a deployment on its way up; the live one is never stopped for it
/// — past the bake its replicas keep being restarted (with capped backoff)
/// and it shows as degraded, with the exit reasons, until it recovers or
/// is replaced.
pub async fn watch_runtime(ctx: Ctx, mut reports: tokio::sync::mpsc::UnboundedReceiver<RuntimeTrouble>) {
    while let Some(report) = reports.recv().await {
        let (deployment_id, reason, crash_loop) = match report {
            RuntimeTrouble::CrashLoop { deployment_id, reason } => (deployment_id, reason, true),
            RuntimeTrouble::ReplicaDown { deployment_id, reason } => (deployment_id, reason, false),
        };
        match ctx.store.get_deployment(&deployment_id).await {
            Ok(d) if d.status == Status::Healthy => {
                match bake_rollback(&ctx, &d).await {
                    Ok(Some(to)) => {
                        tracing::warn!(deployment = %deployment_id, project = %d.project, %reason, rollback = %to, "failed within its bake: rolled back");
                        ctx.logs.line(
                            &deployment_id,
                            &d.project,
                            "platform",
                            format!("[bifrost] failed within its bake: {reason}\n[bifrost] rolling back to {to}"),
                        );
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(deployment = %deployment_id, error = %e, "could not roll back within the bake")
                    }
                }
                if crash_loop {
                    tracing::warn!(deployment = %deployment_id, project = %d.project, %reason, "live deployment degraded");
                    ctx.logs.line(
                        &deployment_id,
                        &d.project,
                        "platform",
                        format!("[bifrost] degraded: {reason}\n[bifrost] the live deployment keeps being restarted; roll back or deploy a fix"),
                    );
                }
            }
            // On its way up a lone restart is the runtime's to retry;
            // verify sees the replica's state.
            _ if crash_loop => fail(&ctx, &deployment_id, &reason, Actor::system("runtime")).await,
            _ => {}
        }
    }
}

/// The rolling safety net: a live deployment that fails within its
/// `[rollout] bake` after going live is rolled back to the newest earlier
/// deployment that was healthy (a rollback deployment, as `bifrost
/// rollback` makes; the failing one is superseded once it is healthy).
/// Returns the deployment rolled back to, or `None` past the bake or with
/// nothing to go back to.
pub async fn bake_rollback(ctx: &Ctx, d: &Deployment) -> Result<Option<String>, StoreError> {
    let Some(bake) = d.config.as_ref().map(|c| c.config.rollout.bake.as_std()) else { return Ok(None) };
    let history = ctx.store.history(&d.id).await?;
    let Some(live_at) = history.iter().rev().find(|h| h.to == Status::Healthy).map(|h| h.at) else { return Ok(None) };
    if (bifrost_core::domain::now() - live_at).to_std().unwrap_or_default() > bake {
        return Ok(None);
    }
    // Once: a rollback already queued for this project is enough.
    let recent = ctx.store.list_deployments(Some(&d.project_id), 50).await?;
    if recent.iter().any(|o| o.created_at > live_at && o.rollback_of.is_some() && !o.status.is_terminal()) {
        return Ok(None);
    }
    let mut target = None;
    for o in recent.into_iter().filter(|o| o.id != d.id && o.artifact.is_some() && o.created_at < d.created_at) {
        if ctx.store.history(&o.id).await?.iter().any(|h| h.to == Status::Healthy) {
            target = Some(o);
            break;
        }
    }
    let Some(target) = target else { return Ok(None) };
    ctx.store
        .create_deployment(bifrost_core::domain::NewDeployment {
            project: d.project.clone(),
            source: target.source.clone(),
            // The first record reads "rollback to <target>" by system:bake;
            // why is in both deployments' logs.
            actor: Actor::system("bake"),
            dedupe_key: Some(format!("bake:{}", d.id)),
            rollback_of: Some(target.id.clone()),
            artifact: target.artifact.clone(),
        })
        .await?;
    Ok(Some(target.id))
}

/// Moves a deployment to `failed` from wherever it is (if not finished).
pub async fn fail(ctx: &Ctx, deployment_id: &str, reason: &str, actor: Actor) {
    for _ in 0..5 {
        let Ok(d) = ctx.store.get_deployment(deployment_id).await else { return };
        if d.status.is_terminal() {
            return;
        }
        let t = Transition::new(deployment_id, d.status, Status::Failed, reason, actor.clone()).at_version(d.version);
        match ctx.store.transition(t).await {
            Ok(_) => return,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::error!(deployment = deployment_id, error = %e, "could not fail a deployment");
                return;
            }
        }
    }
}

/// After a start: runs again the replicas of deployments that were running
/// or live (a crash or restart stopped their processes).
pub async fn reconcile_runtime(ctx: &Ctx) {
    let Ok(deployments) = ctx.store.deployments_in(&[Status::Running, Status::Healthy]).await else { return };
    for d in deployments {
        let applied = match deploy::spec_for(ctx, &d).await {
            Ok(spec) => ctx.runtime.apply(spec).await.map_err(|e| e.to_string()),
            Err(deploy::SpecError::Fail(r) | deploy::SpecError::Retry(r)) => Err(r),
        };
        match applied {
            Ok(()) => tracing::info!(deployment = %d.id, project = %d.project, "replicas restarted after start-up"),
            Err(reason) => {
                fail(
                    ctx,
                    &d.id,
                    &format!("could not restart after a platform restart: {reason}"),
                    Actor::system("runtime"),
                )
                .await
            }
        }
    }
    split::restart_split_targets(ctx).await;
}
