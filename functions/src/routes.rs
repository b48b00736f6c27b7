//! The routing table the gateway serves to `bifrost-router` nodes: built
//! from the store (live deployments, their `[traffic]`, splits, chaos),
//! the pushed scripts and the runtime (healthy endpoints), and followed by
//! one poller per gateway process however many routers listen.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bifrost_core::StoreResult;
use bifrost_core::config::Traffic;
use bifrost_core::routes::{RouteChaos, RouteEntry, RouteScript, RouteSplit, RouteTable};
use tokio::sync::watch;

use crate::Ctx;

/// How often the poller re-reads the table while a router listens: a
/// deployment going live, a canary step or a chaos rule reaches the
/// routers within about this (plus their own network hop).
pub const POLL: Duration = Duration::from_millis(500);

/// Tables kept so a router reconnecting with an older version gets only
/// what changed since.
const KEPT: usize = 64;

/// A deployment's part of its route, read once: its config never changes.
#[derive(Clone)]
struct Snapshotted {
    traffic: Traffic,
    script: Option<RouteScript>,
}

/// The table now, built from scratch. `cache` keeps deployments' snapshots
/// between builds.
async fn build(ctx: &Ctx, cache: &Mutex<HashMap<String, Snapshotted>>) -> StoreResult<RouteTable> {
    let projects = ctx.store.list_projects().await?;
    let pushed = ctx.scripts.running().await?;
    let now = bifrost_core::domain::now();
    let mut routes = Vec::with_capacity(projects.len());
    // Only the live deployments' snapshots stay cached.
    if let Ok(mut c) = cache.lock() {
        c.retain(|id, _| projects.iter().any(|p| p.live_deployment_id.as_deref() == Some(id.as_str())));
    }
    for p in projects {
        let Some(live) = p.live_deployment_id.clone() else { continue };
        let cached = cache.lock().ok().and_then(|c| c.get(&live).cloned());
        let snap = match cached {
            Some(s) => s,
            None => {
                let d = ctx.store.get_deployment(&live).await?;
                let s = match d.config {
                    Some(c) => Snapshotted {
                        script: c.script.as_deref().map(|text| {
                            RouteScript::new(c.config.traffic.script.as_deref().unwrap_or("script.lua"), text)
                        }),
                        traffic: c.config.traffic,
                    },
                    None => Snapshotted { traffic: Traffic::default(), script: None },
                };
                if let Ok(mut c) = cache.lock() {
                    c.insert(live.clone(), s.clone());
                }
                s
            }
        };
        // A pushed script runs instead of the deployment's own.
        let script = match pushed.get(&p.name) {
            Some((r, text)) => Some(RouteScript::new(&format!("{}@v{}", p.name, r.version), text)),
            None => snap.script,
        };
        let split = match p.split.as_ref().filter(|s| s.deployment != live) {
            Some(s) => Some(RouteSplit {
                deployment: s.deployment.clone(),
                weight: s.weight,
                endpoints: ctx.runtime.endpoints(&s.deployment).await,
            }),
            None => None,
        };
        let chaos = p.chaos.as_ref().filter(|c| c.active(now)).map(|c| RouteChaos {
            deployment: c.deployment.clone(),
            fault: c.fault.clone(),
            until: c.until,
        });
        routes.push(RouteEntry {
            app: p.name,
            endpoints: ctx.runtime.endpoints(&live).await,
            deployment: live,
            traffic: snap.traffic,
            script,
            split,
            chaos,
        });
    }
    Ok(RouteTable::new(routes))
}

/// The table and its recent history, followed while anyone listens.
#[derive(Default)]
pub struct RouteFeed {
    /// `None` until the poller's first build.
    now: Mutex<Option<watch::Sender<Option<Arc<RouteTable>>>>>,
    recent: Mutex<VecDeque<Arc<RouteTable>>>,
    cache: Arc<Mutex<HashMap<String, Snapshotted>>>,
}

impl RouteFeed {
    /// The table now, read afresh (`GET /api/v1/routes`).
    pub async fn current(&self, ctx: &Ctx) -> StoreResult<Arc<RouteTable>> {
        let table = Arc::new(build(ctx, &self.cache).await?);
        self.remember(&table);
        Ok(table)
    }

    /// A table served in the last [`KEPT`] versions.
    pub fn recent(&self, version: &str) -> Option<Arc<RouteTable>> {
        self.recent.lock().ok()?.iter().rev().find(|t| t.version == version).cloned()
    }

    fn remember(&self, table: &Arc<RouteTable>) {
        if let Ok(mut r) = self.recent.lock()
            && r.back().is_none_or(|last| last.version != table.version)
        {
            r.push_back(table.clone());
            while r.len() > KEPT {
                r.pop_front();
            }
        }
    }

    /// Follows the table: the receiver sees each new version (the first
    /// once built). Starts the poller if none runs; it stops when the last
    /// receiver is gone.
    pub fn follow(self: &Arc<Self>, ctx: &Ctx) -> watch::Receiver<Option<Arc<RouteTable>>> {
        let mut now = match self.now.lock() {
            Ok(n) => n,
            Err(p) => p.into_inner(),
        };
        if let Some(tx) = now.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        *now = Some(tx.clone());
        let (feed, ctx) = (self.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !tx.is_closed() {
                tick.tick().await;
                match build(&ctx, &feed.cache).await {
                    Ok(table) => {
                        let table = Arc::new(table);
                        feed.remember(&table);
                        tx.send_if_modified(|cur| {
                            let moved = cur.as_ref().is_none_or(|c| c.version != table.version);
                            if moved {
                                *cur = Some(table);
                            }
                            moved
                        });
                    }
                    // The routers keep the last table they had.
                    Err(e) => tracing::warn!(error = %e, "building the routing table failed"),
                }
            }
        });
        rx
    }
}
