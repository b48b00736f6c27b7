//! The embedded bus: reads due deliveries from the outbox and pushes each to
//! its function as the exact Pub/Sub push envelope. At least once, in order
//! per deployment, exponential backoff, dead-letter after `max_attempts`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};

use super::store::{DueDelivery, SqliteStore};
use bifrost_core::domain::now;
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::PushHandler;

#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// Deliveries attempted before an event is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Shown in the envelope's `subscription` (`projects/<this>/subscriptions/...`).
    pub gcp_project: String,
    /// Deliver every event twice, as Pub/Sub may (proves handler
    /// idempotency in tests).
    pub duplicate_deliveries: Duplicates,
}

/// How the dispatcher imitates Pub/Sub's at-least-once delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Duplicates {
    /// Each event once (until acknowledged).
    #[default]
    Off,
    /// Each event again after its first delivery was acknowledged.
    Sequential,
    /// Each event twice at the same time: two functions race on one step.
    Concurrent,
}

impl std::str::FromStr for Duplicates {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "" | "0" | "false" => Ok(Duplicates::Off),
            "sequential" | "1" | "true" => Ok(Duplicates::Sequential),
            "concurrent" => Ok(Duplicates::Concurrent),
            other => Err(format!("expected off, sequential or concurrent, found {other:?}")),
        }
    }
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            concurrency: 32,
            gcp_project: "bifrost-local".into(),
            duplicate_deliveries: Duplicates::Off,
        }
    }
}

impl DispatcherConfig {
    /// Delay before attempt `attempts + 1`, with ±20% jitter so retries of
    /// many events do not land together.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self.backoff_base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let capped = exp.min(self.backoff_max);
        let jitter = rand::rng().random_range(0.8..1.2);
        capped.mul_f64(jitter)
    }
}

/// Told of each acknowledged delivery: the function, and the time from the
/// event's commit to the acknowledgement.
pub type DeliveryObserver = Arc<dyn Fn(&str, Duration) + Send + Sync>;

pub struct Dispatcher {
    store: SqliteStore,
    handler: Arc<dyn PushHandler>,
    config: DispatcherConfig,
    observer: Option<DeliveryObserver>,
}

struct Done {
    delivery: DueDelivery,
    outcome: Outcome,
}

impl Dispatcher {
    pub fn new(store: SqliteStore, handler: Arc<dyn PushHandler>, config: DispatcherConfig) -> Self {
        Dispatcher { store, handler, config, observer: None }
    }

    /// Reports each acknowledged delivery to `observer` (metrics).
    pub fn observe(mut self, observer: DeliveryObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs until `shutdown` turns true, then waits for in-flight deliveries
    /// up to `drain`. Whatever is not acknowledged stays pending in the
    /// outbox and is delivered after the next start.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        // (subscription, deployment): one delivery at a time per ordering key.
        // Value: the event seq in flight, so a still-pending row of the same
        // delivery is not mistaken for a blocked one.
        let mut in_flight: HashMap<(String, String), u64> = HashMap::new();
        let inner = self.store.inner().clone();
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Start whatever is due and not blocked by its ordering key.
            let free = self.config.concurrency.saturating_sub(in_flight.len());
            let mut blocked = false;
            if free > 0 {
                match self.store.due_deliveries(now().timestamp_millis(), free + in_flight.len()) {
                    Ok(due) => {
                        for d in due {
                            let key = (d.subscription.clone(), d.event.deployment_id.clone());
                            match in_flight.get(&key) {
                                Some(seq) if *seq == d.event.seq => continue,
                                Some(_) => {
                                    blocked = true;
                                    continue;
                                }
                                None if in_flight.len() >= self.config.concurrency => {
                                    blocked = true;
                                    continue;
                                }
                                None => {}
                            }
                            in_flight.insert(key, d.event.seq);
                            self.start(d, done_tx.clone());
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "dispatcher could not read the outbox"),
                }
            }
            // Due work waiting on an ordering key is woken by `done_rx`.
            let wait = match self.store.next_due_ms() {
                _ if blocked || free == 0 => Duration::from_secs(1),
                Ok(Some(ms)) => {
                    let delta = ms - now().timestamp_millis();
                    Duration::from_millis(delta.clamp(10, 1000) as u64)
                }
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = inner.deliveries_ready.notified() => {}
                Some(done) = done_rx.recv() => {
                    in_flight.remove(&(done.delivery.subscription.clone(), done.delivery.event.deployment_id.clone()));
                    self.finish(done);
                    while let Ok(more) = done_rx.try_recv() {
                        in_flight.remove(&(more.delivery.subscription.clone(), more.delivery.event.deployment_id.clone()));
                        self.finish(more);
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Drain: let in-flight handlers finish (and record their outcome).
        let deadline = tokio::time::Instant::now() + drain;
        while !in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(done)) => {
                    in_flight.remove(&(done.delivery.subscription.clone(), done.delivery.event.deployment_id.clone()));
                    self.finish(done);
                }
                _ => break,
            }
        }
        if !in_flight.is_empty() {
            tracing::warn!(count = in_flight.len(), "deliveries still running at shutdown; they will be redelivered");
        }
    }

    fn start(&self, delivery: DueDelivery, done: mpsc::UnboundedSender<Done>) {
        let handler = self.handler.clone();
        let config = self.config.clone();
        tokio::spawn(async move {
            let envelope = PushEnvelope::wrap(
                &delivery.event,
                &config.gcp_project,
                &delivery.subscription,
                Some(delivery.attempts + 1),
            );
            tracing::debug!(
                event = %delivery.event.kind, deployment = %delivery.event.deployment_id,
                subscription = %delivery.subscription, attempt = delivery.attempts + 1, "push"
            );
            let outcome = match config.duplicate_deliveries {
                Duplicates::Off => deliver(&handler, &delivery.function, envelope).await,
                Duplicates::Sequential => {
                    let outcome = deliver(&handler, &delivery.function, envelope.clone()).await;
                    if outcome == Outcome::Ack {
                        let again = deliver(&handler, &delivery.function, envelope).await;
                        twice(&delivery, &outcome, &again);
                    }
                    outcome
                }
                Duplicates::Concurrent => {
                    let (a, b) = tokio::join!(
                        deliver(&handler, &delivery.function, envelope.clone()),
                        deliver(&handler, &delivery.function, envelope)
                    );
                    twice(&delivery, &a, &b);
                    // As on Pub/Sub, the message is done once either copy is acknowledged.
                    if a == Outcome::Ack { a } else { b }
                }
            };
            let _ = done.send(Done { delivery, outcome });
        });
    }

    fn finish(&self, done: Done) {
        let d = &done.delivery;
        let result = match &done.outcome {
            Outcome::Ack => {
                if let Some(observe) = &self.observer {
                    observe(&d.function, (now() - d.event.at).to_std().unwrap_or_default());
                }
                self.store.mark_delivered(d.event.seq, &d.subscription)
            }
            Outcome::Retry(err) | Outcome::Reject(err) => {
                let attempts = d.attempts + 1;
                let dead = matches!(done.outcome, Outcome::Reject(_)) || attempts >= self.config.max_attempts;
                let next = now().timestamp_millis() + self.config.backoff(attempts).as_millis() as i64;
                if dead {
                    tracing::error!(
                        event = %d.event.kind, deployment = %d.event.deployment_id, subscription = %d.subscription,
                        attempts, error = %err, "event dead-lettered"
                    );
                } else {
                    tracing::warn!(
                        event = %d.event.kind, deployment = %d.event.deployment_id, subscription = %d.subscription,
                        attempts, error = %err, "delivery failed; will retry"
                    );
                }
                self.store.mark_failed(d.event.seq, &d.subscription, err, next, dead)
            }
        };
        if let Err(e) = result {
            // The delivery stays pending and is attempted again: at least once.
            tracing::error!(error = %e, "could not record a delivery outcome");
        }
    }
}

/// Calls the handler; a panic is a failed delivery, not a lost one.
/// Reports a doubled delivery; a copy that was refused outright means a
/// function is not idempotent (a Retry is fine: it is delivered again).
fn twice(delivery: &DueDelivery, first: &Outcome, second: &Outcome) {
    let refused = matches!(first, Outcome::Reject(_)) || matches!(second, Outcome::Reject(_));
    if refused || (*first != Outcome::Ack && *second != Outcome::Ack) {
        tracing::error!(?first, ?second, subscription = %delivery.subscription, event = %delivery.event.kind,
            "a doubled delivery was not acknowledged");
    } else {
        tracing::debug!(subscription = %delivery.subscription, event = %delivery.event.kind, "delivered twice");
    }
}

async fn deliver(handler: &Arc<dyn PushHandler>, function: &str, envelope: PushEnvelope) -> Outcome {
    let handler = handler.clone();
    let function = function.to_string();
    match tokio::spawn(async move { handler.push(&function, envelope).await }).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Retry(format!("handler crashed: {e}")),
    }
}
