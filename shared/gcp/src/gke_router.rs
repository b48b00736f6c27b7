//! The router cluster's objects on GKE (`bifrost render --target
//! gke-router`): `bifrost-router` pods in front of every app — a wildcard
//! Ingress (`*.<domain>`) to the routers' Service; the routers follow the
//! gateway's routing table and send each request to the live deployment's
//! own Service. They find each other by the Kubernetes API (pods by label),
//! gossip on a headless Service, and take their key and router token from
//! a Secret the operator creates (`docs/router-cluster.md`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector, Service, ServiceAccount,
    ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::gke::{FIELD_MANAGER, RUN_AS_USER, container_security, quantities};

/// The routers' name: objects, labels, the discovery selector.
pub const NAME: &str = "bifrost-router";
/// The Secret the operator creates with `gossip-key` and `router-token`.
pub const SECRET: &str = "bifrost-router";
pub const GOSSIP_PORT: i32 = 10101;
const HTTP_PORT: i32 = 8080;

/// Where and what to render.
#[derive(Clone, Debug)]
pub struct RouterTarget {
    pub namespace: String,
    /// `bifrost-router`'s image, by digest as Cloud Build pushed it.
    pub image: String,
    /// Apps are `<app>.<domain>`: the wildcard Ingress's host.
    pub domain: String,
    /// The gateway the routers follow (the Cloud Run gateway's URL).
    pub gateway: String,
    /// Gossip is heard only from here (the cluster's pod range).
    pub allowed_address_space: Vec<String>,
    pub min_replicas: i32,
    pub max_replicas: i32,
}

/// Every object, in apply order.
pub struct RouterManifests {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub gossip_service: Service,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    pub hpa: HorizontalPodAutoscaler,
    pub network_policy: NetworkPolicy,
    pub ingress: Ingress,
}

fn selector() -> BTreeMap<String, String> {
    BTreeMap::from([("app".into(), NAME.into())])
}

fn labels() -> BTreeMap<String, String> {
    let mut l = selector();
    l.extend([
        ("app.kubernetes.io/name".to_string(), NAME.to_string()),
        ("app.kubernetes.io/component".to_string(), "router".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "bifrost".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
    ]);
    l
}

fn meta(t: &RouterTarget, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(t.namespace.clone()),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

/// The configuration file the routers read (`BIFROST_CONFIG`), in the
/// seeds' shape: kubernetes discovery of the routers' own pods.
pub fn config_json(t: &RouterTarget) -> serde_json::Value {
    serde_json::json!({"cluster_config": {
        "enabled": true,
        "discovery": {
            "enabled": true,
            "type": "kubernetes",
            "service_name": NAME,
            "k8s_namespace": t.namespace,
            "k8s_label_selector": format!("app={NAME}"),
            "dial_timeout": "10s",
            "allowed_address_space": t.allowed_address_space,
        },
        "gossip": {"port": GOSSIP_PORT, "config": {"timeout_seconds": 10, "success_threshold": 3, "failure_threshold": 3}},
    }})
}

fn secret_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: SECRET.into(), key: key.into(), optional: Some(false) }),
            ..EnvVarSource::default()
        }),
        value: None,
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn router_container(t: &RouterTarget) -> Container {
    Container {
        name: "router".into(),
        image: Some(t.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["--domain".into(), t.domain.clone()]),
        env: Some(vec![
            value_env("PORT", &HTTP_PORT.to_string()),
            value_env("BIFROST_CONFIG", "/etc/bifrost/router.json"),
            value_env("BIFROST_GATEWAY", &t.gateway),
            EnvVar {
                name: "POD_IP".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector { field_path: "status.podIP".into(), api_version: None }),
                    ..EnvVarSource::default()
                }),
                value: None,
            },
            EnvVar {
                name: "BIFROST_NODE_ID".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), api_version: None }),
                    ..EnvVarSource::default()
                }),
                value: None,
            },
            secret_env("BIFROST_GOSSIP_KEY", "gossip-key"),
            secret_env("BIFROST_ROUTER_TOKEN", "router-token"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("gossip".into()),
                container_port: GOSSIP_PORT,
                protocol: Some("UDP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/ready", 5, 2)),
        liveness_probe: Some(http_probe("/health", 10, 3)),
        // Endpoints take a moment to drop a terminating pod: keep serving
        // for 20 s (the seeds' preStop) before SIGTERM starts the drain.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 20 }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "250m".into()), ("memory", "128Mi".into())])),
            limits: Some(quantities(&[("cpu", "1".into()), ("memory", "256Mi".into())])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: "/etc/bifrost".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

pub fn render(t: &RouterTarget) -> RouterManifests {
    let service_account = ServiceAccount {
        metadata: meta(t, NAME),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    };
    // Discovery reads the routers' own pods, nothing else.
    let role = Role {
        metadata: meta(t, NAME),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    };
    let role_binding = RoleBinding {
        metadata: meta(t, NAME),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: NAME.into() },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(t.namespace.clone()),
            ..Subject::default()
        }]),
    };
    let config_map = ConfigMap {
        metadata: meta(t, NAME),
        data: Some(BTreeMap::from([(
            "router.json".into(),
            serde_json::to_string_pretty(&config_json(t)).unwrap_or_default(),
        )])),
        ..ConfigMap::default()
    };
    let mut deployment_meta = meta(t, NAME);
    deployment_meta.annotations = Some(BTreeMap::from([
        (
            "checkov.io/skip1".into(),
            "CKV_K8S_35=the gossip key and router token are read from the environment, as the seeds' BIFROST_* variables"
                .into(),
        ),
        (
            "checkov.io/skip2".into(),
            "CKV_K8S_38=kubernetes discovery lists and watches the routers' pods with the service account's token".into(),
        ),
    ]));
    let deployment = Deployment {
        metadata: deployment_meta,
        spec: Some(DeploymentSpec {
            replicas: Some(t.min_replicas),
            revision_history_limit: Some(5),
            selector: LabelSelector { match_labels: Some(selector()), match_expressions: None },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels()), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    // The seeds': in-flight requests and streams drain.
                    termination_grace_period_seconds: Some(90),
                    // Routers on different nodes where the cluster allows.
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                                weight: 100,
                                pod_affinity_term: PodAffinityTerm {
                                    label_selector: Some(LabelSelector {
                                        match_labels: Some(selector()),
                                        match_expressions: None,
                                    }),
                                    topology_key: "kubernetes.io/hostname".into(),
                                    ..PodAffinityTerm::default()
                                },
                            }]),
                            ..PodAntiAffinity::default()
                        }),
                        ..Affinity::default()
                    }),
                    containers: vec![router_container(t)],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: NAME.into(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    // Gossip's names: every router pod, ready or not (a starting node must
    // be reachable to join).
    let gossip_service = Service {
        metadata: meta(t, &format!("{NAME}-gossip")),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector()),
            ports: Some(vec![ServicePort {
                name: Some("gossip".into()),
                port: GOSSIP_PORT,
                target_port: Some(IntOrString::String("gossip".into())),
                protocol: Some("UDP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: meta(t, NAME),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector()),
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
    // A majority stays up through voluntary disruptions.
    let pdb = PodDisruptionBudget {
        metadata: meta(t, NAME),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(2)),
            selector: Some(LabelSelector { match_labels: Some(selector()), match_expressions: None }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    };
    // The seeds' autoscaling: CPU 70%, scale down one pod per 2 minutes
    // after 5 minutes of calm, up after 30 s.
    let hpa = HorizontalPodAutoscaler {
        metadata: meta(t, NAME),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: NAME.into(),
            },
            min_replicas: Some(t.min_replicas),
            max_replicas: t.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(70),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(300),
                    policies: Some(vec![HPAScalingPolicy { type_: "Pods".into(), value: 1, period_seconds: 120 }]),
                    ..HPAScalingRules::default()
                }),
                scale_up: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(30),
                    ..HPAScalingRules::default()
                }),
            }),
        }),
        status: None,
    };
    // In: HTTP from anywhere (the load balancer); gossip only from routers.
    let from_routers = vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector { match_labels: Some(selector()), match_expressions: None }),
        ..NetworkPolicyPeer::default()
    }];
    let port = |name: &str, protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.into())),
        protocol: Some(protocol.into()),
        end_port: None,
    };
    let network_policy = NetworkPolicy {
        metadata: meta(t, NAME),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(selector()), match_expressions: None }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule { ports: Some(vec![port("http", "TCP")]), from: None },
                NetworkPolicyIngressRule { ports: Some(vec![port("gossip", "UDP")]), from: Some(from_routers) },
            ]),
            egress: None,
        }),
    };
    let mut ingress_meta = meta(t, NAME);
    ingress_meta.annotations = Some(BTreeMap::from([
        ("kubernetes.io/ingress.allow-http".into(), "false".into()),
        ("kubernetes.io/ingress.global-static-ip-name".into(), NAME.into()),
        ("networking.gke.io/pre-shared-cert".into(), format!("{NAME}-wildcard")),
    ]));
    let ingress = Ingress {
        metadata: ingress_meta,
        spec: Some(IngressSpec {
            ingress_class_name: Some("gce".into()),
            rules: Some(vec![IngressRule {
                host: Some(format!("*.{}", t.domain)),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: NAME.into(),
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
    };
    RouterManifests {
        service_account,
        role,
        role_binding,
        config_map,
        deployment,
        gossip_service,
        service,
        pdb,
        hpa,
        network_policy,
        ingress,
    }
}

impl RouterManifests {
    /// The objects as JSON values, each with its `apiVersion` and `kind`.
    pub fn objects(&self) -> Vec<serde_json::Value> {
        fn v<T: serde::Serialize>(x: &T) -> serde_json::Value {
            serde_json::to_value(x).unwrap_or(serde_json::Value::Null)
        }
        vec![
            v(&self.service_account),
            v(&self.role),
            v(&self.role_binding),
            v(&self.config_map),
            v(&self.deployment),
            v(&self.gossip_service),
            v(&self.service),
            v(&self.pdb),
            v(&self.hpa),
            v(&self.network_policy),
            v(&self.ingress),
        ]
    }

    /// A multi-document YAML stream, `---` between objects.
    pub fn to_yaml(&self) -> Result<String, String> {
        crate::gke::yaml_stream(&self.objects())
    }
}
