//! Analytics: the platform's housekeeping, as a function like the others.
//! It consumes no deployment event; it takes the dead letters the bus
//! pushes back (GCP: each dead-letter topic's push subscription), and its
//! periodic run (Cloud Scheduler's call on GCP, a timer in `bifrost up`)
//! publishes again the outbox events the bus never confirmed and folds
//! health reports older than an hour into one-minute buckets.

use std::time::Duration;

use async_trait::async_trait;
use bifrost_core::domain::{Deployment, now};
use bifrost_core::events::Event;

use crate::Ctx;
use crate::driver::{Consumes, Decision, Function, RunResult};

/// Outbox events younger than this may still be in flight from another
/// instance: left alone.
pub const UNCONFIRMED_AFTER: Duration = Duration::from_secs(60);
/// Health reports older than this become one-minute buckets.
pub const FOLD_AFTER: chrono::Duration = chrono::Duration::hours(1);

pub struct Analytics;

#[async_trait]
impl Function for Analytics {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn consumes(&self) -> &'static [Consumes] {
        &[]
    }

    async fn reconcile(&self, _ctx: &Ctx, _deployment: Option<&Deployment>, _event: &Event) -> Decision {
        Decision::Done
    }

    fn takes_dead_letters(&self) -> bool {
        true
    }

    fn scheduled(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &Ctx) -> RunResult {
        let republished = ctx.dead_letters.republish_unconfirmed(UNCONFIRMED_AFTER).await.map_err(|e| e.to_string())?;
        let folded = ctx.store.downsample_health(now() - FOLD_AFTER).await.map_err(|e| e.to_string())?;
        tracing::info!(republished, folded, "analytics run");
        Ok(format!("republished {republished} events; folded {folded} health reports"))
    }
}
