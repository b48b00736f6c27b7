//! Bifrost's functions. Each one is `(ctx, PushEnvelope) -> Outcome` and
//! moves a deployment one step through the state machine; the gateway is the
//! HTTP edge (REST API + GitHub webhook) that creates deployments.
//!
//! A function is given its world through [`Ctx`] (ports from `shared`), so
//! the same code runs in `bifrost up` (SQLite, in-process dispatcher) and on
//! Cloud Run (Firestore, Pub/Sub push).

pub mod gateway;
pub mod validate;

use std::sync::Arc;

use async_trait::async_trait;
use bifrost_shared::domain::Actor;
use bifrost_shared::events::{Event, Outcome, PushEnvelope, Subscription};
use bifrost_shared::ports::{DeadLetters, PushHandler, Sources, Store, Transition};
use bifrost_shared::{Status, StoreError};

/// Everything a function may touch.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub dead_letters: Arc<dyn DeadLetters>,
    pub sources: Arc<dyn Sources>,
    pub settings: Settings,
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_webhook_bytes: 5 << 20,
            max_upload_bytes: 100 << 20,
            public_url: "http://127.0.0.1:7070".into(),
        }
    }
}

/// The subscriptions of the functions this build contains: which function
/// consumes which event. Each handler moves exactly one transition per
/// delivery, so a crash between steps resumes from the outbox.
pub fn subscriptions() -> Vec<Subscription> {
    vec![
        Subscription::new("validate", Status::Queued),
        Subscription::new("validate", Status::Validating),
    ]
}

/// All functions behind one push interface (what the dispatcher calls).
pub struct Functions {
    pub ctx: Ctx,
}

#[async_trait]
impl PushHandler for Functions {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome {
        match function {
            "validate" => validate::handle(&self.ctx, envelope).await,
            other => Outcome::Reject(format!("no function named {other:?} in this build")),
        }
    }
}

/// Decodes a push, or says why it can never be handled.
pub(crate) fn decode(envelope: &PushEnvelope) -> Result<Event, Outcome> {
    envelope.event().map_err(|e| Outcome::Reject(e.to_string()))
}

/// Applies one transition on behalf of `function`, for the event that asked
/// for it. A transition that already happened (or was overtaken: cancelled,
/// superseded, deleted) is acknowledged and changes nothing.
pub(crate) async fn step(
    ctx: &Ctx,
    event: &Event,
    function: &str,
    to: Status,
    reason: String,
    patch: bifrost_shared::ports::Patch,
) -> Outcome {
    let t = Transition::new(
        &event.deployment_id,
        event.status,
        to,
        reason,
        Actor::function(function),
    )
    .at_version(event.version)
    .with_patch(patch);
    outcome_of(ctx.store.transition(t).await.map(|_| ()))
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
    match ctx.store.get_deployment(&event.deployment_id).await {
        Ok(d) => Ok(d.status == event.status && d.version == event.version),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(Outcome::Retry(e.to_string())),
    }
}
