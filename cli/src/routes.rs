//! The embedded routing table: which deployment is live for each app (kept
//! in step with the store's feed) and which of its replicas are healthy
//! (asked of the process runtime on each request).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bifrost_core::domain::FeedKind;
use bifrost_core::ports::Store;
use bifrost_local::ProcessRuntime;
use bifrost_router::{Route, Routes};

pub struct EmbeddedRoutes {
    live: RwLock<HashMap<String, Arc<str>>>,
    runtime: ProcessRuntime,
}

impl EmbeddedRoutes {
    /// Loads the live deployments and keeps following the store.
    pub async fn start(store: Arc<dyn Store>, runtime: ProcessRuntime) -> anyhow::Result<Arc<EmbeddedRoutes>> {
        let mut feed = store.subscribe();
        let routes = Arc::new(EmbeddedRoutes { live: RwLock::new(HashMap::new()), runtime });
        for p in store.list_projects().await? {
            routes.set(&p.name, p.live_deployment_id.as_deref());
        }
        let r = routes.clone();
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(item) => {
                        // Any status change may have moved the project's live deployment.
                        if matches!(item.kind, FeedKind::Status { .. }) {
                            let live = store.get_project(&item.project).await.ok().and_then(|p| p.live_deployment_id);
                            r.set(&item.project, live.as_deref());
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(projects) = store.list_projects().await {
                            for p in projects {
                                r.set(&p.name, p.live_deployment_id.as_deref());
                            }
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(routes)
    }

    fn set(&self, app: &str, live: Option<&str>) {
        if let Ok(mut m) = self.live.write() {
            match live {
                Some(id) => {
                    m.insert(app.to_string(), Arc::from(id));
                }
                None => {
                    m.remove(app);
                }
            }
        }
    }
}

impl Routes for EmbeddedRoutes {
    fn route(&self, app: &str) -> Option<Route> {
        let deployment_id = self.live.read().ok()?.get(app)?.clone();
        let endpoints = self.runtime.endpoints(&deployment_id);
        Some(Route { deployment_id, endpoints })
    }
}
