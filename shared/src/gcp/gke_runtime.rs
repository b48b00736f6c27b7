//! The GKE runtime: runs a deployment's replicas by server-side applying
//! the objects `gke::render` builds (field manager `bifrost`, forced: Bifrost
//! owns these fields), then watching the rollout until every replica is
//! available. Stateless: a deployment's objects are found by their
//! `app.kubernetes.io/version` label, so any function instance can stop or
//! inspect what another applied.
//!
//! No Kubernetes API server runs on the build machine: the tests serve the
//! API's wire format (paths, query, content type, bodies) from a fake and
//! check every request against the rendered objects.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::gke::{FIELD_MANAGER, GkeTarget, render};
use crate::ports::{ReplicaSpec, ReplicaStatus, Runtime, RuntimeError};

const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// Where apps go on the cluster.
#[derive(Clone, Debug)]
pub struct GkeSettings {
    pub namespace: String,
    pub sidecar_image: String,
    pub domain: String,
    pub ingest_url: String,
    /// How often the rollout is polled.
    pub poll: Duration,
}

pub struct GkeRuntime {
    client: kube::Client,
    settings: GkeSettings,
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
        GkeRuntime { client, settings }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
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
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
            .await
            .map(|_| ())
            .map_err(|e| kube_error(&format!("applying {kind} {name}"), e))
    }

    /// The project's Deployment, if this deployment is the one it runs.
    async fn current(&self, deployment_id: &str) -> Result<Option<Deployment>, RuntimeError> {
        let lp = ListParams::default().labels(&format!("{VERSION_LABEL}={deployment_id}"));
        let found = self.api::<Deployment>().list(&lp).await.map_err(|e| kube_error("listing deployments", e))?;
        Ok(found.items.into_iter().next())
    }
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
        // Apply order: identity first, the workload, then what points at it.
        self.apply_one::<ServiceAccount>(&m.service_account).await?;
        self.apply_one::<Deployment>(&m.deployment).await?;
        self.apply_one::<Service>(&m.service).await?;
        self.apply_one::<HorizontalPodAutoscaler>(&m.hpa).await?;
        self.apply_one::<PodDisruptionBudget>(&m.pdb).await?;
        self.apply_one::<NetworkPolicy>(&m.network_policy).await?;
        self.apply_one::<Ingress>(&m.ingress).await?;
        Ok(())
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
        // Replaced by a newer deployment: the rolling update already moved
        // the pods; the objects now belong to the new one.
        let Some(d) = self.current(deployment_id).await? else { return Ok(()) };
        let name = d.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(drain.as_secs().min(u32::MAX as u64) as u32),
            ..DeleteParams::default()
        };
        macro_rules! delete {
            ($k:ty) => {
                match self.api::<$k>().delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_error(&format!("deleting {} {name}", stringify!($k)), e)),
                }
            };
        }
        delete!(Ingress);
        delete!(NetworkPolicy);
        delete!(PodDisruptionBudget);
        delete!(HorizontalPodAutoscaler);
        delete!(Service);
        delete!(Deployment);
        delete!(ServiceAccount);
        Ok(())
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
            })
            .collect()
    }
}
