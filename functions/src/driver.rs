//! The one function driver (kube-rs' `reconcile → Action` shape). A
//! function says what it consumes and decides, for one event and the
//! deployment as it is now, a [`Decision`]; the driver does everything
//! around that the same way for all of them: decode the push, skip events
//! it does not consume, read the deployment and drop a stale or redelivered
//! event, flush the logs, apply the transition at the event's version, and
//! map the result to the push answer.

use async_trait::async_trait;
use bifrost_core::Status;
use bifrost_core::domain::{Actor, Deployment};
use bifrost_core::events::{Event, Outcome, PushEnvelope, Subscription};
use bifrost_core::ports::{Patch, Transition};

use crate::{Ctx, is_current, outcome_of};

/// What a function decided for one event. (Short-lived, one per event:
/// the size of `Move` does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Move the deployment on, from the event's status and version.
    Move { to: Status, reason: String, patch: Patch },
    /// Transient trouble (a store or cluster unavailable): deliver again later.
    Retry(String),
    /// Nothing (more) to do.
    Done,
}

impl Decision {
    pub fn to(to: Status, reason: impl Into<String>) -> Decision {
        Decision::Move { to, reason: reason.into(), patch: Patch::default() }
    }

    pub fn fail(reason: impl Into<String>) -> Decision {
        Decision::to(Status::Failed, reason)
    }
}

/// An event a function consumes, and whether it still wants it once the
/// deployment has moved on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumes {
    /// Only while the deployment is still at this status and the event's
    /// version: a redelivered or overtaken event is acknowledged unseen.
    Current(Status),
    /// Always (clean-up after a deployment ended, even if it is gone since).
    Always(Status),
}

impl Consumes {
    pub fn status(self) -> Status {
        match self {
            Consumes::Current(s) | Consumes::Always(s) => s,
        }
    }
}

/// What a function's periodic run did, in one line (Cloud Scheduler's
/// answer, the embedded timer's log).
pub type RunResult = Result<String, String>;

#[async_trait]
pub trait Function: Send + Sync {
    /// The function's name: its Cloud Run service and subscriptions.
    fn name(&self) -> &'static str;
    /// The deployment events it consumes, in subscription order.
    fn consumes(&self) -> &'static [Consumes];
    /// Decides what `event` means for `deployment` (`None` only for
    /// [`Consumes::Always`] events of a deployment that no longer exists).
    async fn reconcile(&self, ctx: &Ctx, deployment: Option<&Deployment>, event: &Event) -> Decision;
    /// Takes the dead letters the bus pushes back ([`DEAD_LETTER_PUSH`]).
    fn takes_dead_letters(&self) -> bool {
        false
    }
    /// Has periodic work ([`Function::run`]): Cloud Scheduler calls it on GCP,
    /// a timer in `bifrost up`.
    fn scheduled(&self) -> bool {
        false
    }
    /// The periodic work.
    async fn run(&self, _ctx: &Ctx) -> RunResult {
        Ok(format!("{} has no periodic work", self.name()))
    }
}

/// The push "function" name the dead-letter topics' subscriptions use
/// (`POST /push/dead-letter`); it reaches the function that takes them.
pub const DEAD_LETTER_PUSH: &str = "dead-letter";

/// Handles one dead letter pushed back by the bus, for `f`.
pub async fn drive_dead_letter(f: &dyn Function, ctx: &Ctx, envelope: PushEnvelope) -> Outcome {
    if !f.takes_dead_letters() {
        return Outcome::Reject(format!("{} does not take dead letters", f.name()));
    }
    match ctx.dead_letters.record(&envelope).await {
        Ok(d) => {
            tracing::warn!(id = d.id, subscription = d.subscription, "dead letter recorded");
            Outcome::Ack
        }
        Err(bifrost_core::StoreError::Invalid(why)) => Outcome::Reject(why),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// The subscriptions the functions imply: one per (function, status).
pub fn subscriptions_of(functions: &[&dyn Function]) -> Vec<Subscription> {
    functions.iter().flat_map(|f| f.consumes().iter().map(|c| Subscription::new(f.name(), c.status()))).collect()
}

/// Handles one push for `f`.
pub async fn drive(f: &dyn Function, ctx: &Ctx, envelope: PushEnvelope) -> Outcome {
    let event = match envelope.event() {
        Ok(e) => e,
        Err(e) => return Outcome::Reject(e.to_string()),
    };
    let Some(consumes) = f.consumes().iter().find(|c| c.status() == event.status) else {
        return Outcome::Ack;
    };
    let deployment = match ctx.store.get_deployment(&event.deployment_id).await {
        Ok(d) => Some(d),
        Err(bifrost_core::StoreError::NotFound { .. }) => None,
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    if let Consumes::Current(_) = consumes {
        // Stale, overtaken or gone: someone already did (or undid) this step.
        if !deployment.as_ref().is_some_and(|d| is_current(d, &event)) {
            return Outcome::Ack;
        }
    }
    match f.reconcile(ctx, deployment.as_ref(), &event).await {
        Decision::Move { to, reason, patch } => {
            // Lines logged so far come before the status change in the feed.
            ctx.logs.flush().await;
            let t = Transition::new(&event.deployment_id, event.status, to, reason, Actor::function(f.name()))
                .at_version(event.version)
                .with_patch(patch);
            outcome_of(ctx.store.transition(t).await.map(|_| ()))
        }
        Decision::Retry(why) => Outcome::Retry(why),
        Decision::Done => Outcome::Ack,
    }
}
