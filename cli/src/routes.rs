//! The embedded routing table: which deployment is live for each app and
//! its `[traffic]` rules (kept in step with the store's feed), and which of
//! its replicas are healthy (asked of the process runtime on each request).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bifrost_core::domain::FeedKind;
use bifrost_core::ports::Store;
use bifrost_core::scripts::Scripts;
use bifrost_local::ProcessRuntime;
use bifrost_router::traffic::TrafficSpec;
use bifrost_router::{ChaosRule, Route, Routes, ScriptReports, Split, TrafficRules};
use bifrost_scripts::{Limits, Script, ScriptError};

/// The router's reports of failed script runs, kept for `bifrost scripts list`.
pub struct Reports(pub Arc<Scripts>);

impl ScriptReports for Reports {
    fn report(&self, app: &str, script: &Script, error: &ScriptError) {
        self.0.report_error(app, &script.sha256, &error.message, error.line);
    }
}

/// The live deployment of an app, its compiled traffic rules and its own
/// `[traffic] script`.
type Live = (Arc<str>, Arc<TrafficRules>, Option<Arc<Script>>);

pub struct EmbeddedRoutes {
    live: RwLock<HashMap<String, Live>>,
    /// Scripts pushed live (`bifrost scripts push`), which run instead of
    /// the deployment's own; re-read when the index moves (polled every second).
    pushed: RwLock<HashMap<String, Arc<Script>>>,
    scripts: Arc<Scripts>,
    /// Each app's fault injection, re-read every second (it changes by API
    /// call, not by a deployment's feed).
    chaos: RwLock<HashMap<String, ChaosRule>>,
    /// Each app's traffic split (second deployment, weight), re-read with
    /// the chaos.
    splits: RwLock<HashMap<String, (Arc<str>, u8)>>,
    runtime: ProcessRuntime,
    store: Arc<dyn Store>,
}

impl EmbeddedRoutes {
    /// Loads the live deployments and keeps following the store.
    pub async fn start(
        store: Arc<dyn Store>,
        runtime: ProcessRuntime,
        scripts: Arc<Scripts>,
    ) -> anyhow::Result<Arc<EmbeddedRoutes>> {
        let mut feed = store.subscribe();
        let routes = Arc::new(EmbeddedRoutes {
            live: RwLock::new(HashMap::new()),
            pushed: RwLock::new(HashMap::new()),
            scripts,
            chaos: RwLock::new(HashMap::new()),
            splits: RwLock::new(HashMap::new()),
            runtime,
            store: store.clone(),
        });
        let projects = store.list_projects().await?;
        routes.set_chaos(&projects);
        let mut scripts_seen = routes.load_pushed(None).await;
        for p in projects {
            routes.set(&p.name, p.live_deployment_id.as_deref()).await;
        }
        let (r, s) = (routes.clone(), store.clone());
        tokio::spawn(async move {
            // 200 ms: a canary step or a split reaches the router within that.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                scripts_seen = r.load_pushed(scripts_seen).await;
                match s.list_projects().await {
                    Ok(projects) => r.set_chaos(&projects),
                    Err(e) => tracing::debug!(error = %e, "re-reading projects' chaos failed"),
                }
            }
        });
        let r = routes.clone();
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(item) => {
                        // Any status change may have moved the project's live deployment.
                        if matches!(item.kind, FeedKind::Status { .. }) {
                            let live = store.get_project(&item.project).await.ok().and_then(|p| p.live_deployment_id);
                            r.set(&item.project, live.as_deref()).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(projects) = store.list_projects().await {
                            for p in projects {
                                r.set(&p.name, p.live_deployment_id.as_deref()).await;
                            }
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(routes)
    }

    /// Re-reads the pushed scripts if their index moved since `seen`;
    /// returns the generation now loaded.
    async fn load_pushed(&self, seen: Option<i64>) -> Option<i64> {
        let generation = match self.scripts.generation().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "reading the routing scripts' index failed");
                return seen;
            }
        };
        if seen == Some(generation) {
            return seen;
        }
        let running = match self.scripts.running().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the pushed routing scripts failed");
                return seen;
            }
        };
        let current = self.pushed.read().map(|m| m.clone()).unwrap_or_default();
        let next: HashMap<String, Arc<Script>> = running
            .into_iter()
            .map(|(app, (r, text))| {
                // The same text keeps its compiled states on every thread.
                let kept = current.get(&app).filter(|s| s.sha256 == r.sha256).cloned();
                let script = kept.unwrap_or_else(|| {
                    Arc::new(Script::new(&format!("{app}@v{}", r.version), &text, Limits::default()))
                });
                (app, script)
            })
            .collect();
        if let Ok(mut m) = self.pushed.write() {
            *m = next;
        }
        Some(generation)
    }

    /// Each app's chaos and split, from the projects as read.
    fn set_chaos(&self, projects: &[bifrost_core::domain::Project]) {
        let now = bifrost_core::domain::now();
        let rules: HashMap<String, ChaosRule> = projects
            .iter()
            .filter_map(|p| {
                Some((
                    p.name.clone(),
                    p.chaos
                        .as_ref()
                        .filter(|c| c.active(now))
                        .map(|c| ChaosRule::new(c.deployment.as_deref(), &c.fault, &c.until))?,
                ))
            })
            .collect();
        if let Ok(mut m) = self.chaos.write() {
            *m = rules;
        }
        let splits: HashMap<String, (Arc<str>, u8)> = projects
            .iter()
            .filter_map(|p| {
                Some((p.name.clone(), p.split.as_ref().map(|s| (Arc::from(s.deployment.as_str()), s.weight))?))
            })
            .collect();
        if let Ok(mut m) = self.splits.write() {
            *m = splits;
        }
    }

    async fn set(&self, app: &str, live: Option<&str>) {
        let Some(id) = live else {
            if let Ok(mut m) = self.live.write() {
                m.remove(app);
            }
            return;
        };
        let current = self.live.read().ok().and_then(|m| m.get(app).cloned());
        if current.as_ref().is_some_and(|(d, _, _)| &**d == id) {
            return;
        }
        // The deployment's snapshotted config; one that cannot be read
        // routes without rules rather than not at all.
        let (spec, script) = match self.store.get_deployment(id).await {
            Ok(d) => match d.config {
                Some(c) => {
                    let script = c.script.as_deref().map(|text| {
                        let name = c.config.traffic.script.as_deref().unwrap_or("script.lua");
                        Arc::new(Script::new(name, text, Limits::default()))
                    });
                    (TrafficSpec::from_config(&c.config.traffic), script)
                }
                None => (TrafficSpec::default(), None),
            },
            Err(e) => {
                tracing::warn!(app, deployment = id, error = %e, "reading the live deployment's [traffic] failed");
                (TrafficSpec::default(), None)
            }
        };
        // The same rules keep the app's limiter and its counts.
        let rules = match current {
            Some((_, rules, _)) if *rules.spec() == spec => rules,
            _ => Arc::new(TrafficRules::new(spec)),
        };
        if let Ok(mut m) = self.live.write() {
            m.insert(app.to_string(), (Arc::from(id), rules, script));
        }
    }
}

impl Routes for EmbeddedRoutes {
    fn route(&self, app: &str) -> Option<Route> {
        let (deployment_id, traffic, own_script) = self.live.read().ok()?.get(app)?.clone();
        let endpoints = self.runtime.endpoints(&deployment_id).into();
        let chaos = self.chaos.read().ok().and_then(|m| m.get(app).cloned());
        let script = self.pushed.read().ok().and_then(|m| m.get(app).cloned()).or(own_script);
        // A split to the live deployment itself, or to one with no healthy
        // replica, sends everyone to the live one.
        let split = self
            .splits
            .read()
            .ok()
            .and_then(|m| m.get(app).cloned())
            .filter(|(d, _)| *d != deployment_id)
            .map(|(d, weight)| Split { endpoints: self.runtime.endpoints(&d).into(), deployment_id: d, weight })
            .filter(|s| !s.endpoints.is_empty());
        Some(Route { deployment_id, endpoints, traffic, split, chaos, script })
    }
}
