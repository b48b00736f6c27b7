//! kubernetes: the pods matching `k8s_label_selector` in `k8s_namespace`,
//! listed then watched (resuming from the last resource version, listing
//! again when it expired), offered at `<pod IP>:<bind_port>` while they
//! are Running and Ready. The API is reached as kube-rs infers it: the
//! pod's service account in a cluster, else `KUBECONFIG`. The RBAC this
//! needs (pods get/list/watch in the namespace) is rendered with the
//! router's objects (`bifrost render --target gke-router`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

type Pods = Arc<Mutex<HashMap<String, SocketAddr>>>;

pub struct Kubernetes {
    pods: Pods,
    watch: tokio::task::JoinHandle<()>,
}

/// Where a pod gossips, if it is Running and Ready.
fn gossip_address(pod: &Pod, port: u16) -> Option<SocketAddr> {
    let status = pod.status.as_ref()?;
    let ready = status.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    if status.phase.as_deref() != Some("Running") || !ready || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

fn apply(pods: &Pods, pod: &Pod, port: u16) {
    let Some(name) = pod.metadata.name.clone() else { return };
    if let Ok(mut m) = pods.lock() {
        match gossip_address(pod, port) {
            Some(a) => m.insert(name, a),
            None => m.remove(&name),
        };
    }
}

/// Lists the pods afresh; the resource version to watch from.
async fn list(api: &Api<Pod>, selector: &str, pods: &Pods, port: u16) -> anyhow::Result<String> {
    let list = api.list(&ListParams::default().labels(selector)).await?;
    let mut fresh = HashMap::new();
    for pod in &list.items {
        if let (Some(name), Some(a)) = (pod.metadata.name.clone(), gossip_address(pod, port)) {
            fresh.insert(name, a);
        }
    }
    if let Ok(mut m) = pods.lock() {
        *m = fresh;
    }
    Ok(list.metadata.resource_version.unwrap_or_default())
}

async fn watch(api: Api<Pod>, selector: String, pods: Pods, port: u16, mut version: String) {
    loop {
        let params = WatchParams::default().labels(&selector).timeout(290);
        let events = match api.watch(&params, &version).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes discovery: watching pods failed; listing again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                version = list(&api, &selector, &pods, port).await.unwrap_or_default();
                continue;
            }
        };
        let mut events = events.boxed();
        loop {
            match events.try_next().await {
                Ok(Some(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                    version = p.metadata.resource_version.clone().unwrap_or(version);
                    apply(&pods, &p, port);
                }
                Ok(Some(WatchEvent::Deleted(p))) => {
                    version = p.metadata.resource_version.clone().unwrap_or(version);
                    if let (Some(name), Ok(mut m)) = (p.metadata.name.as_ref(), pods.lock()) {
                        m.remove(name);
                    }
                }
                Ok(Some(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                // 410 Gone: the version is too old to resume from.
                Ok(Some(WatchEvent::Error(e))) => {
                    tracing::info!(code = e.code, "kubernetes discovery: the watch expired; listing again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    version = list(&api, &selector, &pods, port).await.unwrap_or_default();
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes discovery: the pod watch broke");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

impl Kubernetes {
    pub async fn start(namespace: &str, selector: &str, port: u16, timeout: Duration) -> anyhow::Result<Kubernetes> {
        let mut config = kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no Kubernetes API (in-cluster service account or KUBECONFIG): {e}"))?;
        config.connect_timeout = Some(timeout);
        let client = kube::Client::try_from(config)?;
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let pods: Pods = Arc::default();
        let version = list(&api, selector, &pods, port)
            .await
            .map_err(|e| anyhow::anyhow!("listing pods {selector:?} in {namespace}: {e}"))?;
        let watch = tokio::spawn(watch(api, selector.to_string(), pods.clone(), port, version));
        Ok(Kubernetes { pods, watch })
    }
}

#[async_trait::async_trait]
impl super::Finder for Kubernetes {
    async fn find(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        let m = self.pods.lock().map_err(|_| anyhow::anyhow!("kubernetes discovery: state poisoned"))?;
        Ok(m.values().copied().collect())
    }

    fn every(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn leave(&mut self) {
        self.watch.abort();
    }
}

impl Drop for Kubernetes {
    fn drop(&mut self) {
        self.watch.abort();
    }
}
