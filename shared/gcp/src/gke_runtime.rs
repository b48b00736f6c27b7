//! The GKE runtime: runs a deployment's replicas by server-side applying
//! the objects `gke::render` builds (field manager `bifrost`, forced: Bifrost
//! owns these fields), then watching the rollout until every replica is
//! available. Each deployment has objects of its own (`<app>-<short id>`);
//! the app's Ingress moves to a deployment only when it is promoted (live),
//! and stopping one deletes only its own objects — a failed or cancelled
//! deploy never touches what serves traffic. Stateless: a deployment's
//! objects are found by their label, so any function instance can stop or
//! inspect what another applied.
//!
//! No Kubernetes API server runs on the build machine: the tests serve the
//! API's wire format (paths, query, content type, bodies) from a fake and
//! check every request against the rendered objects.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cloud_build::TokenSource;
use super::gke::{DEPLOYMENT_LABEL, FIELD_MANAGER, GkeTarget, env_secret, env_secret_name, ingress, render};
use bifrost_core::ports::{HostFacts, ReplicaSpec, ReplicaStatus, Runtime, RuntimeError};

/// Where apps go on the cluster.
#[derive(Clone, Debug)]
pub struct GkeSettings {
    pub namespace: String,
    pub sidecar_image: String,
    pub domain: String,
    pub ingest_url: String,
    /// Signs the sidecars' report tokens (the ingest's key).
    pub sidecar_key: Vec<u8>,
    /// How often the rollout is polled.
    pub poll: Duration,
    /// Routers front every app (`bifrost render --target gke-router`): they
    /// follow the live deployment themselves, so promotion moves no
    /// per-app Ingress.
    pub routed: bool,
}

pub struct GkeRuntime {
    access: Access,
    settings: GkeSettings,
}

/// How the runtime reaches the cluster.
enum Access {
    /// A ready client (kubeconfig, in-cluster, tests).
    Fixed(kube::Client),
    /// GKE from Cloud Run: the control plane's endpoint and CA, and the
    /// service account's Google OAuth token as bearer. Tokens expire within
    /// the hour; the credentials library refreshes them, and a client is
    /// rebuilt whenever the token changes.
    Google {
        endpoint: hyper::http::Uri,
        ca: Option<Vec<Vec<u8>>>,
        auth: std::sync::Arc<dyn TokenSource>,
        cached: std::sync::Mutex<Option<(String, kube::Client)>>,
    },
}

/// The DER certificates of a PEM bundle (what terraform outputs as the
/// cluster's `cluster_ca_certificate`, base64-decoded).
pub fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine;
    let mut out = vec![];
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            body = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            let b64 = body.take().ok_or("END without BEGIN in the CA certificate")?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("the CA certificate is not valid base64: {e}"))?;
            out.push(der);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if out.is_empty() {
        return Err("no certificate found in the CA bundle".into());
    }
    Ok(out)
}

fn kube_error(what: &str, e: kube::Error) -> RuntimeError {
    match &e {
        // The cluster refused the object itself (invalid, forbidden): retrying
        // the same object will not help.
        kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 409 && status.code != 429 => {
            RuntimeError::Failed(format!("{what}: {} ({})", status.message, status.code))
        }
        _ => RuntimeError::Unavailable(format!("{what}: {e}")),
    }
}

impl GkeRuntime {
    pub fn new(client: kube::Client, settings: GkeSettings) -> Self {
        GkeRuntime { access: Access::Fixed(client), settings }
    }

    /// A GKE cluster reached with Google credentials: `endpoint` is the
    /// control plane (`https://IP`), `ca_pem` its CA (PEM; none for a plain
    /// `http://` endpoint in tests).
    pub fn with_google_auth(
        endpoint: &str,
        ca_pem: Option<&str>,
        auth: std::sync::Arc<dyn TokenSource>,
        settings: GkeSettings,
    ) -> Result<Self, String> {
        let endpoint = endpoint.parse().map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
        let ca = ca_pem.map(pem_to_der).transpose()?;
        Ok(GkeRuntime { access: Access::Google { endpoint, ca, auth, cached: Default::default() }, settings })
    }

    async fn client(&self) -> Result<kube::Client, RuntimeError> {
        let (endpoint, ca, auth, cached) = match &self.access {
            Access::Fixed(c) => return Ok(c.clone()),
            Access::Google { endpoint, ca, auth, cached } => (endpoint, ca, auth, cached),
        };
        let headers = auth.headers().await.map_err(RuntimeError::Unavailable)?;
        let token = headers
            .get(hyper::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| RuntimeError::Unavailable("the credentials gave no bearer token for GKE".into()))?
            .to_string();
        let mut cached = cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, c)) = cached.as_ref()
            && *t == token
        {
            return Ok(c.clone());
        }
        let mut config = kube::Config::new(endpoint.clone());
        config.root_cert = ca.clone();
        config.auth_info.token = Some(secrecy::SecretString::from(token.clone()));
        let client = kube::Client::try_from(config)
            .map_err(|e| RuntimeError::Unavailable(format!("creating the GKE client: {e}")))?;
        *cached = Some((token, client.clone()));
        Ok(client)
    }

    async fn api<K>(&self) -> Result<Api<K>, RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Ok(Api::namespaced(self.client().await?, &self.settings.namespace))
    }

    async fn apply_one<K>(&self, obj: &K) -> Result<(), RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Serialize
            + DeserializeOwned
            + Clone
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&Default::default()).to_string();
        self.api::<K>()
            .await?
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
            .await
            .map(|_| ())
            .map_err(|e| kube_error(&format!("applying {kind} {name}"), e))
    }

    /// This deployment's own Deployment object, if it exists.
    async fn current(&self, deployment_id: &str) -> Result<Option<Deployment>, RuntimeError> {
        let lp = ListParams::default().labels(&format!("{DEPLOYMENT_LABEL}={deployment_id}"));
        let found =
            self.api::<Deployment>().await?.list(&lp).await.map_err(|e| kube_error("listing deployments", e))?;
        Ok(found.items.into_iter().next())
    }
}

impl GkeRuntime {
    async fn cluster_facts(&self) -> Result<HostFacts, String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing nodes: {e}"))?;
        let mut ready: std::collections::HashMap<String, (f64, f64)> = Default::default();
        for n in &nodes.items {
            let status = n.status.clone().unwrap_or_default();
            let is_ready =
                status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
            let allocatable = status.allocatable.unwrap_or_default();
            let quantity = |k: &str| allocatable.get(k).and_then(|q| parse_quantity(&q.0));
            if let (true, Some(name), Some(cpu), Some(memory)) =
                (is_ready, n.metadata.name.clone(), quantity("cpu"), quantity("memory"))
            {
                ready.insert(name, (cpu, memory));
            }
        }
        if ready.is_empty() {
            return Err("no Ready node with allocatable CPU and memory".into());
        }
        let request = hyper::http::Request::get("/apis/metrics.k8s.io/v1beta1/nodes")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let usage: serde_json::Value = match client.request(request).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("the deploy gate's host facts: node metrics (metrics.k8s.io): {e}");
                return Ok(HostFacts::default());
            }
        };
        let (mut cores, mut used_cores, mut free_bytes) = (0.0, 0.0, 0.0);
        for item in usage["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some((cpu, memory)) = item["metadata"]["name"].as_str().and_then(|n| ready.get(n)) else { continue };
            let used = |k: &str| item["usage"][k].as_str().and_then(parse_quantity);
            let (Some(used_cpu), Some(used_memory)) = (used("cpu"), used("memory")) else { continue };
            cores += cpu;
            used_cores += used_cpu;
            free_bytes += (memory - used_memory).max(0.0);
        }
        if cores == 0.0 {
            return Ok(HostFacts::default());
        }
        Ok(HostFacts {
            disk_free_gb: None,
            cpu_load: Some(used_cores / cores),
            memory_available_mb: Some(free_bytes / (1024.0 * 1024.0)),
        })
    }
}

/// A Kubernetes quantity (`3920m`, `15Gi`, `2`, `1e3`, `250n`) as a plain
/// number: cores for CPU, bytes for memory.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    // Fractions divide (exact for the usual values: 250n is 2.5e-7).
    let fraction = match suffix {
        "n" => Some(1e9),
        "u" => Some(1e6),
        "m" => Some(1e3),
        _ => None,
    };
    if let Some(d) = fraction {
        return Some(n / d);
    }
    let scale = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * scale)
}

/// Available, updated and wanted replicas once the controller has seen the
/// newest spec; `None` while it has not.
fn rollout(d: &Deployment) -> Option<(i32, i32, i32)> {
    let status = d.status.as_ref()?;
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return None;
    }
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    Some((status.available_replicas.unwrap_or(0), status.updated_replicas.unwrap_or(0), wanted))
}

/// The Progressing condition's verdict, when the rollout gave up.
fn stalled(d: &Deployment) -> Option<String> {
    let conditions = d.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == "Progressing" && c.status == "False")
        .map(|c| c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default()))
}

#[async_trait]
impl Runtime for GkeRuntime {
    async fn apply(&self, spec: ReplicaSpec) -> Result<(), RuntimeError> {
        let image = spec
            .artifact
            .get("image")
            .and_then(|v| v.as_str())
            .ok_or_else(|| RuntimeError::Failed("the build recorded no image to run".into()))?;
        let mut config = spec.config.clone();
        config.scaling.min_replicas = spec.replicas.max(1);
        config.scaling.max_replicas = config.scaling.max_replicas.max(config.scaling.min_replicas);
        let target = GkeTarget {
            project: spec.project.clone(),
            namespace: self.settings.namespace.clone(),
            image: image.to_string(),
            sidecar_image: self.settings.sidecar_image.clone(),
            domain: self.settings.domain.clone(),
            ingest_url: self.settings.ingest_url.clone(),
            deployment_id: spec.deployment_id.clone(),
        };
        let m = render(&config, &target);
        // Every replica reports as replica 0 on GKE (pods have names, not
        // indexes): one token per deployment.
        let token = bifrost_core::auth::sidecar_token(&self.settings.sidecar_key, &spec.deployment_id, 0);
        let secret = env_secret(&config, &target, &spec.env, &token);
        // Apply order: identity and configuration first, the workload, then
        // what points at it. The Ingress waits for `promote`: traffic moves
        // only to a healthy deployment.
        self.apply_one::<ServiceAccount>(&m.service_account).await?;
        self.apply_one::<Secret>(&secret).await?;
        self.apply_one::<Deployment>(&m.deployment).await?;
        self.apply_one::<Service>(&m.service).await?;
        self.apply_one::<HorizontalPodAutoscaler>(&m.hpa).await?;
        self.apply_one::<PodDisruptionBudget>(&m.pdb).await?;
        self.apply_one::<NetworkPolicy>(&m.network_policy).await?;
        Ok(())
    }

    async fn promote(&self, deployment_id: &str) -> Result<(), RuntimeError> {
        let Some(d) = self.current(deployment_id).await? else {
            return Err(RuntimeError::Failed(format!(
                "no Deployment runs {deployment_id}: nothing to send traffic to"
            )));
        };
        if self.settings.routed {
            // The routers read the live pointer from the gateway's feed.
            return Ok(());
        }
        let name = d.metadata.name.clone().unwrap_or_default();
        let project = d
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name").cloned())
            .ok_or_else(|| RuntimeError::Failed(format!("Deployment {name} has no app label")))?;
        let ing = ingress(&project, &self.settings.namespace, &self.settings.domain, &name);
        self.apply_one::<Ingress>(&ing).await
    }

    async fn wait_listening(&self, deployment_id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.current(deployment_id).await? {
                None => format!("no Deployment runs {deployment_id} (replaced or deleted)"),
                Some(d) => {
                    if let Some(reason) = stalled(&d) {
                        return Err(RuntimeError::Failed(format!("rollout stalled: {reason}")));
                    }
                    match rollout(&d) {
                        Some((available, updated, wanted)) if available >= wanted && updated >= wanted => return Ok(()),
                        Some((available, _, wanted)) => format!("{available} of {wanted} replicas available"),
                        None => "the controller has not seen the new spec yet".into(),
                    }
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "rollout did not finish within {}s: {last}",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    async fn stop(&self, deployment_id: &str, drain: Duration) -> Result<(), RuntimeError> {
        // Only this deployment's own objects: the app's ServiceAccount,
        // NetworkPolicy and Ingress stay (another deployment is, or will be,
        // live behind them).
        let Some(d) = self.current(deployment_id).await? else { return Ok(()) };
        let name = d.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(drain.as_secs().min(u32::MAX as u64) as u32),
            ..DeleteParams::default()
        };
        macro_rules! delete {
            ($k:ty) => {
                match self.api::<$k>().await?.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_error(&format!("deleting {} {name}", stringify!($k)), e)),
                }
            };
        }
        delete!(PodDisruptionBudget);
        delete!(HorizontalPodAutoscaler);
        delete!(Service);
        delete!(Deployment);
        match self.api::<Secret>().await?.delete(&env_secret_name(&name), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_error(&format!("deleting Secret {}", env_secret_name(&name)), e)),
        }
        Ok(())
    }

    /// The deployment's own Service (its cluster DNS name), once a pod is
    /// available: kube-proxy spreads a router's requests over its ready pods.
    async fn endpoints(&self, deployment_id: &str) -> Vec<String> {
        let Ok(Some(d)) = self.current(deployment_id).await else { return vec![] };
        let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        match d.metadata.name {
            Some(name) if available > 0 => vec![format!("{name}.{}.svc.cluster.local:80", self.settings.namespace)],
            _ => vec![],
        }
    }

    /// What the cluster API tells: over its Ready nodes, allocatable memory
    /// less what the nodes use, and CPU in use per allocatable core (the
    /// metrics API, `metrics.k8s.io`, as `kubectl top nodes` reads it). Free
    /// disk is not in the API (the kubelet's own summary is): absent, so no
    /// rule about it fires. A fact the cluster will not tell is absent too.
    async fn host_facts(&self) -> HostFacts {
        match self.cluster_facts().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("the deploy gate's host facts: {e}");
                HostFacts::default()
            }
        }
    }

    async fn status(&self, deployment_id: &str) -> Vec<ReplicaStatus> {
        let Ok(Some(d)) = self.current(deployment_id).await else { return vec![] };
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
        let status = d.status.clone().unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0).max(0) as u32;
        let available = status.available_replicas.unwrap_or(0).max(0) as u32;
        (0..wanted)
            .map(|index| ReplicaStatus {
                index,
                address: None,
                pid: None,
                listening: index < ready,
                healthy: index < available,
                consecutive_successes: 0,
                consecutive_failures: 0,
                last_probe: Some(format!("{ready} of {wanted} pods ready (Kubernetes readiness probe)")),
                restarts: 0,
                last_exit: None,
                cpu_percent: None,
                rss_bytes: None,
                threads: None,
                open_fds: None,
                sidecar: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::pem_to_der;

    #[test]
    fn pem_bundles_decode_to_der() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\n/w==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_to_der(pem), Ok(vec![vec![0, 1, 2, 3], vec![255]]));
        assert!(pem_to_der("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err());
        assert!(pem_to_der("").is_err());
    }
}
