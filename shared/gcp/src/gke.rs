//! The GKE runtime's manifests: from a validated deploy.toml, the typed
//! Kubernetes objects (k8s-openapi) that run one app — Deployment (app
//! container + health sidecar sharing the process namespace), Service,
//! HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy,
//! ServiceAccount and an Ingress giving it `<app>.<domain>`.
//!
//! *Invariant*: each deployment owns its objects — Deployment, Service,
//! HPA, PDB and env Secret named `<app>-<short id>`, pods selected by the
//! deployment's id — so stopping a failed or cancelled deployment deletes
//! only what it made. The ServiceAccount and NetworkPolicy are the app's
//! (shared, never deleted by a deployment); the Ingress is the app's too
//! and points at the live deployment's Service, moved only once the new one
//! is healthy.
//!
//! `bifrost render --target gke` prints exactly what the runtime applies
//! (server-side apply, field manager `bifrost`); golden tests pin the YAML
//! and checkov runs on it in CI.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use bifrost_core::config::{DeployConfig, EnvValue};

/// The uid every container runs as (non-root, above the host's range).
pub const RUN_AS_USER: i64 = 10001;
/// The server-side apply field manager.
pub const FIELD_MANAGER: &str = "bifrost";

/// Where and what to render, beyond deploy.toml.
#[derive(Clone, Debug)]
pub struct GkeTarget {
    /// The Bifrost project (the app's DNS label).
    pub project: String,
    pub namespace: String,
    /// The app's image, by digest (`…@sha256:…`) as Cloud Build pushed it.
    pub image: String,
    pub sidecar_image: String,
    /// Apps are served at `<project>.<domain>`.
    pub domain: String,
    /// The platform's sidecar ingest (gRPC).
    pub ingest_url: String,
    /// The deployment these objects run (a label and the sidecar's flag).
    pub deployment_id: String,
}

/// Every object, in apply order.
pub struct Manifests {
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
    pub hpa: HorizontalPodAutoscaler,
    pub pdb: PodDisruptionBudget,
    pub network_policy: NetworkPolicy,
    pub ingress: Ingress,
}

/// The label that ties a deployment's objects and pods to it.
pub const DEPLOYMENT_LABEL: &str = "bifrost.dev/deployment";

/// The name of a deployment's own objects: `<app>-<last 8 of its id>`
/// (a DNS label: at most 63 characters).
pub fn object_name(project: &str, deployment_id: &str) -> String {
    let id = deployment_id.to_ascii_lowercase();
    let short = &id[id.len().saturating_sub(8)..];
    let app = &project[..project.len().min(63 - 1 - short.len())];
    format!("{app}-{short}")
}

/// The name of the Kubernetes Secret holding one deployment's `[env]`
/// secrets and its sidecar token.
pub fn env_secret_name(object: &str) -> String {
    format!("{object}-env")
}

/// The project's env Secret for one deployment: each `[env]` secret's
/// resolved value under its secret name (what the app container's
/// `secretKeyRef`s read) and the health sidecar's report token. Never in
/// the printed manifests: its values are secrets.
pub fn env_secret(
    c: &DeployConfig,
    t: &GkeTarget,
    resolved: &BTreeMap<String, String>,
    sidecar_token: &str,
) -> k8s_openapi::api::core::v1::Secret {
    let mut data: BTreeMap<String, String> = c
        .env
        .iter()
        .filter_map(|(name, value)| match value {
            EnvValue::Secret { secret } => resolved.get(name).map(|v| (secret.clone(), v.clone())),
            EnvValue::Value(_) => None,
        })
        .collect();
    data.insert("bifrost-sidecar-token".into(), sidecar_token.to_string());
    let mut meta = meta(t, "config");
    meta.name = Some(env_secret_name(&t.object()));
    k8s_openapi::api::core::v1::Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        string_data: Some(data),
        ..Default::default()
    }
}

/// The Kubernetes recommended labels.
fn labels(t: &GkeTarget, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), t.project.clone()),
        ("app.kubernetes.io/instance".into(), t.project.clone()),
        ("app.kubernetes.io/version".into(), t.deployment_id.clone()),
        ("app.kubernetes.io/component".into(), component.into()),
        ("app.kubernetes.io/part-of".into(), "bifrost".into()),
        ("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into()),
    ])
}

/// What selects every pod of the app, whichever deployment runs it (the
/// NetworkPolicy).
fn app_selector(t: &GkeTarget) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), t.project.clone()),
        ("app.kubernetes.io/instance".into(), t.project.clone()),
    ])
}

/// What selects one deployment's pods (its Deployment, Service, PDB).
fn selector(t: &GkeTarget) -> BTreeMap<String, String> {
    let mut s = app_selector(t);
    s.insert(DEPLOYMENT_LABEL.into(), t.deployment_id.clone());
    s
}

impl GkeTarget {
    /// This deployment's objects' name.
    pub fn object(&self) -> String {
        object_name(&self.project, &self.deployment_id)
    }
}

/// A deployment's own object.
fn meta(t: &GkeTarget, component: &str) -> ObjectMeta {
    let mut labels = labels(t, component);
    labels.insert(DEPLOYMENT_LABEL.into(), t.deployment_id.clone());
    ObjectMeta {
        name: Some(t.object()),
        namespace: Some(t.namespace.clone()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

/// An object of the app, shared by its deployments: no deployment's labels.
fn app_meta(project: &str, namespace: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(project.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".into(), project.to_string()),
            ("app.kubernetes.io/instance".into(), project.to_string()),
            ("app.kubernetes.io/component".into(), component.into()),
            ("app.kubernetes.io/part-of".into(), "bifrost".into()),
            ("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into()),
        ])),
        ..ObjectMeta::default()
    }
}

/// The app's Ingress: `<app>.<domain>` to the Service `service` (the live
/// deployment's).
pub fn ingress(project: &str, namespace: &str, domain: &str, service: &str) -> Ingress {
    let mut ingress_meta = app_meta(project, namespace, "app");
    ingress_meta.annotations = Some(BTreeMap::from([
        ("kubernetes.io/ingress.allow-http".into(), "false".into()),
        ("networking.gke.io/managed-certificates".into(), project.to_string()),
    ]));
    Ingress {
        metadata: ingress_meta,
        spec: Some(IngressSpec {
            ingress_class_name: Some("gce".into()),
            rules: Some(vec![IngressRule {
                host: Some(format!("{project}.{domain}")),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service.to_string(),
                                port: Some(ServiceBackendPort { name: Some("http".into()), number: None }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    }
}

pub(crate) fn quantities(pairs: &[(&str, String)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.clone()))).collect()
}

/// Locked down the same way for both containers.
pub(crate) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..SecurityContext::default()
    }
}

fn secs(d: &bifrost_core::config::values::Duration) -> i32 {
    d.as_std().as_secs().clamp(1, i32::MAX as u64) as i32
}

fn app_container(c: &DeployConfig, t: &GkeTarget) -> Container {
    let port = i32::from(c.run.port);
    let mut env = vec![EnvVar { name: "PORT".into(), value: Some(port.to_string()), value_from: None }];
    for (name, value) in &c.env {
        env.push(match value {
            EnvValue::Value(v) => EnvVar { name: name.clone(), value: Some(v.clone()), value_from: None },
            EnvValue::Secret { secret } => EnvVar {
                name: name.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: env_secret_name(&t.object()),
                        key: secret.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            },
        });
    }
    let probe = |success: i32, failure: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(c.health.path.clone()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(secs(&c.health.interval)),
        timeout_seconds: Some(secs(&c.health.timeout)),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        ..Probe::default()
    };
    let failure = c.health.failure_threshold.min(i32::MAX as u32) as i32;
    let resources = quantities(&[("cpu", c.resources.cpu.raw.clone()), ("memory", c.resources.memory.raw.clone())]);
    Container {
        name: "app".into(),
        image: Some(t.image.clone()),
        image_pull_policy: Some("Always".into()),
        command: c.run.command.as_ref().map(|cmd| vec!["/bin/sh".into(), "-c".into(), cmd.clone()]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        // Limits equal requests: GKE Autopilot bills requests and sets limits
        // to them anyway; an app that outgrows its memory is restarted, not
        // left to starve its neighbours.
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        // Readiness takes the app out of the Service after `failure_threshold`
        // failed probes and back after `success_threshold` good ones;
        // liveness (Kubernetes requires success 1) restarts it after twice as
        // many failures, so a slow moment is not a restart.
        readiness_probe: Some(probe(c.health.success_threshold.min(i32::MAX as u32) as i32, failure)),
        liveness_probe: Some(probe(1, failure.saturating_mul(2))),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

fn sidecar_container(c: &DeployConfig, t: &GkeTarget) -> Container {
    let env = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
    Container {
        name: "health-sidecar".into(),
        image: Some(t.sidecar_image.clone()),
        image_pull_policy: Some("Always".into()),
        args: Some(vec![
            format!("--target=127.0.0.1:{}", c.run.port),
            format!("--health-path={}", c.health.path),
            format!("--timeout={}", c.health.timeout),
            format!("--endpoint={}", t.ingest_url),
            format!("--deployment={}", t.deployment_id),
        ]),
        env: Some(vec![
            env("BIFROST_SIDECAR_INTERVAL", "1s".into()),
            EnvVar {
                name: "BIFROST_SIDECAR_TOKEN".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: env_secret_name(&t.object()),
                        key: "bifrost-sidecar-token".into(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            },
            EnvVar {
                name: "POD_NAME".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), api_version: None }),
                    ..EnvVarSource::default()
                }),
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m".into()), ("memory", "16Mi".into())])),
            limits: Some(quantities(&[("cpu", "10m".into()), ("memory", "16Mi".into())])),
            ..ResourceRequirements::default()
        }),
        // The sidecar's own liveness: it exits on a fatal error; its probes
        // of the app are what it reports.
        liveness_probe: None,
        security_context: Some(container_security()),
        ..Container::default()
    }
}

/// Renders every object for one deployment of one app.
pub fn render(c: &DeployConfig, t: &GkeTarget) -> Manifests {
    let min = c.scaling.min_replicas.max(1).min(i32::MAX as u32) as i32;
    let max = c.scaling.max_replicas.max(c.scaling.min_replicas).max(1).min(i32::MAX as u32) as i32;
    let mut pod_labels = labels(t, "app");
    pod_labels.insert(DEPLOYMENT_LABEL.into(), t.deployment_id.clone());
    let mut deployment_meta = meta(t, "app");
    // Env secrets arrive as variables: the app reads `[env]` from its
    // environment, the same embedded and on GKE. Checkov's file-mount
    // preference (CKV_K8S_35) is declined here, on purpose and said so.
    // The health sidecar serves nothing to probe: it probes the app and
    // exits on a fatal error (the kubelet restarts it), so CKV_K8S_8/9's
    // per-container probes are declined for it; the app container has both.
    deployment_meta.annotations = Some(BTreeMap::from([
        (
            "checkov.io/skip1".into(),
            "CKV_K8S_35=deploy.toml [env] secrets are environment variables by contract".into(),
        ),
        (
            "checkov.io/skip2".into(),
            "CKV_K8S_8=the health-sidecar container listens on nothing; the app container has a liveness probe".into(),
        ),
        (
            "checkov.io/skip3".into(),
            "CKV_K8S_9=the health-sidecar container listens on nothing; the app container has a readiness probe".into(),
        ),
    ]));
    let deployment = Deployment {
        metadata: deployment_meta,
        spec: Some(DeploymentSpec {
            // The HPA owns the count; this is the starting point.
            replicas: Some(min),
            revision_history_limit: Some(5),
            selector: LabelSelector { match_labels: Some(selector(t)), match_expressions: None },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(t.project.clone()),
                    automount_service_account_token: Some(false),
                    // The sidecar reads the app's /proc (CPU, RSS, threads, fds).
                    share_process_namespace: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![app_container(c, t), sidecar_container(c, t)],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: meta(t, "app"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(t)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let hpa = HorizontalPodAutoscaler {
        metadata: meta(t, "app"),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: t.project.clone(),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(c.scaling.cpu_target.min(100) as i32),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    };
    // One replica may always be drained; with more, keep all but one up.
    let (min_available, max_unavailable) =
        if min >= 2 { (Some(IntOrString::Int(min - 1)), None) } else { (None, Some(IntOrString::Int(1))) };
    let pdb = PodDisruptionBudget {
        metadata: meta(t, "app"),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector { match_labels: Some(selector(t)), match_expressions: None }),
            min_available,
            max_unavailable,
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    };
    // In: only the app's port (the load balancer and the router reach it
    // there). The sidecar listens on nothing.
    let network_policy = NetworkPolicy {
        metadata: app_meta(&t.project, &t.namespace, "app"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(app_selector(t)), match_expressions: None }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
                from: None,
            }]),
            egress: None,
        }),
    };
    // Once this deployment is live, the app's URL points at its Service.
    let ingress = ingress(&t.project, &t.namespace, &t.domain, &t.object());
    let service_account = ServiceAccount {
        metadata: app_meta(&t.project, &t.namespace, "app"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    Manifests { service_account, deployment, service, hpa, pdb, network_policy, ingress }
}

impl Manifests {
    /// The objects as JSON values, each with its `apiVersion` and `kind`.
    pub fn objects(&self) -> Vec<serde_json::Value> {
        fn v<T: serde::Serialize>(x: &T) -> serde_json::Value {
            serde_json::to_value(x).unwrap_or(serde_json::Value::Null)
        }
        vec![
            v(&self.service_account),
            v(&self.deployment),
            v(&self.service),
            v(&self.hpa),
            v(&self.pdb),
            v(&self.network_policy),
            v(&self.ingress),
        ]
    }

    /// A multi-document YAML stream, `---` between objects.
    pub fn to_yaml(&self) -> Result<String, String> {
        yaml_stream(&self.objects())
    }
}

/// Objects as one multi-document YAML stream, `---` before each.
pub fn yaml_stream(objects: &[serde_json::Value]) -> Result<String, String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(o).map_err(|e| format!("rendering YAML: {e}"))?);
    }
    Ok(out)
}
