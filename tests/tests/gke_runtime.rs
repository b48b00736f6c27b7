//! The GKE runtime against the Kubernetes API's wire format. No API server
//! can run on the build machine, so a fake serves the exact paths, query
//! strings and bodies a real one takes, keeps what was applied, and checks
//! every request: server-side apply of each rendered object (field manager
//! `bifrost`, forced, content type `application/apply-patch+yaml`), the
//! rollout watch by label, the Ingress moved only on promotion, and a
//! deployment's stop deleting its own objects only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use bifrost_core::auth::sidecar_token;
use bifrost_core::config;
use bifrost_core::ports::{HostFacts, ReplicaSpec, Runtime, RuntimeError};
use bifrost_gcp::cloud_build::TokenSource;
use bifrost_gcp::gke::{GkeTarget, render};
use bifrost_gcp::gke_runtime::{GkeRuntime, GkeSettings};
use serde_json::{Value, json};

const TOML: &str = r#"
[app]
name = "shop"
runtime = "node"

[scaling]
min_replicas = 2
max_replicas = 5

[health]
path = "/healthz"

[env]
LOG_LEVEL = "info"
STRIPE_KEY = { secret = "stripe-key" }
"#;

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    authorization: String,
    body: Value,
}

/// The fake cluster: every request seen, and the objects that exist (by path).
#[derive(Clone)]
struct Cluster {
    seen: Arc<Mutex<Vec<Seen>>>,
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    /// How many list calls until a Deployment is available.
    polls_until_ready: Arc<Mutex<u32>>,
    stalled: bool,
}

impl Cluster {
    fn exists(&self, path: &str) -> bool {
        self.objects.lock().expect("lock").contains_key(path)
    }

    fn object(&self, path: &str) -> Value {
        self.objects.lock().expect("lock").get(path).cloned().unwrap_or(Value::Null)
    }
}

async fn fake(
    axum::extract::State(c): axum::extract::State<Cluster>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/"))))
        .collect();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    c.seen.lock().expect("lock").push(Seen {
        method: method.clone(),
        path: uri.path().to_string(),
        query: query.clone(),
        content_type,
        authorization,
        body: body_json.clone(),
    });
    match method {
        Method::PATCH => {
            let mut obj = body_json;
            obj["metadata"]["generation"] = json!(1);
            c.objects.lock().expect("lock").insert(uri.path().to_string(), obj.clone());
            axum::Json(obj).into_response()
        }
        Method::GET if uri.path() == "/apis/apps/v1/namespaces/apps/deployments" => {
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let (key, value) = selector.split_once('=').unwrap_or_default();
            let objects = c.objects.lock().expect("lock").clone();
            let mut items = vec![];
            for (path, obj) in
                objects.iter().filter(|(p, _)| p.starts_with("/apis/apps/v1/namespaces/apps/deployments/"))
            {
                if obj["metadata"]["labels"][key].as_str() != Some(value) {
                    continue;
                }
                let mut left = c.polls_until_ready.lock().expect("lock");
                let available = if *left == 0 { 2 } else { 0 };
                *left = left.saturating_sub(1);
                let mut status = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                    "readyReplicas": available, "availableReplicas": available});
                if c.stalled {
                    status["conditions"] = json!([{"type": "Progressing", "status": "False",
                        "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"shop-7c\" has timed out progressing."}]);
                }
                let name = path.rsplit('/').next().unwrap_or_default();
                items.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": "apps", "generation": 1, "labels": obj["metadata"]["labels"]},
                    "spec": {"replicas": 2, "selector": {}, "template": {}},
                    "status": status}));
            }
            axum::Json(json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": items}))
                .into_response()
        }
        // Anything a test put in place (nodes, node metrics) reads back.
        Method::GET if c.exists(uri.path()) => axum::Json(c.object(uri.path())).into_response(),
        Method::DELETE => {
            if c.objects.lock().expect("lock").remove(uri.path()).is_none() {
                return (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})),
                )
                    .into_response();
            }
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}))
                .into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "NotFound", "code": 404, "message": "not served by the fake"})),
        )
            .into_response(),
    }
}

/// Serves the fake cluster; returns its base URL.
async fn serve(stalled: bool, polls_until_ready: u32) -> (String, Cluster) {
    let cluster = Cluster {
        seen: Arc::default(),
        objects: Arc::default(),
        polls_until_ready: Arc::new(Mutex::new(polls_until_ready)),
        stalled,
    };
    let app = axum::Router::new().fallback(fake).with_state(cluster.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), cluster)
}

fn settings() -> GkeSettings {
    GkeSettings {
        namespace: "apps".into(),
        sidecar_image: "registry.example/sidecar@sha256:11".into(),
        domain: "apps.acme.dev".into(),
        ingest_url: "http://bifrost-ingest:7481".into(),
        sidecar_key: b"ingest-key".to_vec(),
        poll: Duration::from_millis(20),
        routed: false,
    }
}

async fn start(stalled: bool, polls_until_ready: u32) -> (GkeRuntime, Cluster) {
    start_with(stalled, polls_until_ready, settings()).await
}

async fn start_with(stalled: bool, polls_until_ready: u32, settings: GkeSettings) -> (GkeRuntime, Cluster) {
    let (url, cluster) = serve(stalled, polls_until_ready).await;
    let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    (GkeRuntime::new(client, settings), cluster)
}

/// Google credentials as the metadata server hands them out: a bearer
/// token that changes when it is refreshed.
struct Tokens(Mutex<String>);

#[async_trait::async_trait]
impl TokenSource for Tokens {
    async fn headers(&self) -> Result<reqwest::header::HeaderMap, String> {
        let mut h = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {}", self.0.lock().expect("lock"));
        h.insert("authorization", value.parse().map_err(|e| format!("{e}"))?);
        Ok(h)
    }
}

/// From Cloud Run, every call to the cluster carries the service account's
/// current token, also after it was refreshed.
#[tokio::test]
async fn on_cloud_run_every_request_carries_the_current_google_token() {
    let (url, cluster) = serve(false, 0).await;
    let tokens = Arc::new(Tokens(Mutex::new("ya29.first".into())));
    let rt = GkeRuntime::with_google_auth(&url, None, tokens.clone(), settings()).expect("runtime");
    rt.apply(spec("d-1")).await.expect("applies");
    let first = cluster.seen.lock().expect("lock").len();
    assert!(first >= 7, "every object applied: {first}");
    *tokens.0.lock().expect("lock") = "ya29.refreshed".into();
    rt.wait_listening("d-1", Duration::from_secs(5)).await.expect("rolls out");
    let seen = cluster.seen.lock().expect("lock").clone();
    assert!(seen.len() > first, "the rollout was watched");
    assert!(seen[..first].iter().all(|s| s.authorization == "Bearer ya29.first"), "{seen:?}");
    assert!(seen[first..].iter().all(|s| s.authorization == "Bearer ya29.refreshed"), "{seen:?}");

    // A CA bundle that is not PEM is refused up front, naming the problem.
    let err = GkeRuntime::with_google_auth("https://10.0.0.2", Some("not a certificate"), tokens, settings())
        .err()
        .expect("refused");
    assert!(err.contains("no certificate"), "{err}");
}

fn spec(id: &str) -> ReplicaSpec {
    ReplicaSpec {
        deployment_id: id.into(),
        project_id: "p_shop".into(),
        project: "shop".into(),
        artifact: json!({"image": "registry.example/shop@sha256:22"}),
        config: config::parse(TOML).expect("valid"),
        env: BTreeMap::from([("LOG_LEVEL".into(), "info".into()), ("STRIPE_KEY".into(), "sk_live_1".into())]),
        masked: vec!["sk_live_1".into()],
        replicas: 2,
    }
}

#[tokio::test]
async fn applies_every_object_then_watches_the_rollout_then_deletes() {
    let (rt, cluster) = start(false, 3).await;
    rt.apply(spec("d-1")).await.expect("applies");

    let want = render(&config::parse(TOML).expect("valid"), &target("d-1")).objects();
    let seen = cluster.seen.lock().expect("lock").clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    // The deployment's own objects are `shop-<short id>`; the app's shared
    // ServiceAccount and NetworkPolicy are `shop`. No Ingress until promoted.
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/apps/serviceaccounts/shop",
            "/api/v1/namespaces/apps/secrets/shop-d-1-env",
            "/apis/apps/v1/namespaces/apps/deployments/shop-d-1",
            "/api/v1/namespaces/apps/services/shop-d-1",
            "/apis/autoscaling/v2/namespaces/apps/horizontalpodautoscalers/shop-d-1",
            "/apis/policy/v1/namespaces/apps/poddisruptionbudgets/shop-d-1",
            "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/shop",
        ]
    );
    // The env Secret: the resolved secret under its secret name (what the
    // secretKeyRef reads), plain values not, and the sidecar's token.
    let secret = &seen[1].body;
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(
        secret["stringData"],
        json!({"stripe-key": "sk_live_1", "bifrost-sidecar-token": sidecar_token(b"ingest-key", "d-1", 0)})
    );
    let objects: Vec<&Seen> = seen.iter().filter(|s| !s.path.contains("/secrets/")).collect();
    // Everything rendered but the Ingress.
    assert_eq!(objects.len(), want.len() - 1);
    assert_eq!(seen[1].method, Method::PATCH);
    assert_eq!(seen[1].content_type, "application/apply-patch+yaml");
    for (s, obj) in objects.into_iter().zip(&want) {
        assert_eq!(s.method, Method::PATCH, "{}", s.path);
        assert_eq!(s.content_type, "application/apply-patch+yaml", "{}", s.path);
        assert_eq!(s.query.get("fieldManager").map(String::as_str), Some("bifrost"), "{}", s.path);
        assert_eq!(s.query.get("force").map(String::as_str), Some("true"), "{}", s.path);
        assert_eq!(&s.body, obj, "{}: the applied object is exactly the rendered one", s.path);
    }

    // Not available for three polls, then available: wait_listening returns.
    rt.wait_listening("d-1", Duration::from_secs(10)).await.expect("rolls out");
    let polls = cluster.seen.lock().expect("lock").iter().filter(|s| s.method == Method::GET).count();
    assert!(polls >= 4, "watched the rollout ({polls} polls)");
    let status = rt.status("d-1").await;
    assert_eq!(status.len(), 2);
    assert!(status.iter().all(|r| r.healthy && r.listening), "{status:?}");

    // Promoted: the app's Ingress points at this deployment's Service, as rendered.
    rt.promote("d-1").await.expect("promotes");
    let ingress = cluster.object("/apis/networking.k8s.io/v1/namespaces/apps/ingresses/shop");
    assert_eq!(
        &ingress,
        want.last()
            .map(|w| {
                let mut w = w.clone();
                w["metadata"]["generation"] = json!(1);
                w
            })
            .as_ref()
            .expect("rendered ingress")
    );

    // A deployment with no objects deletes nothing.
    let before = cluster.seen.lock().expect("lock").len();
    rt.stop("d-0", Duration::from_secs(5)).await.expect("stops");
    let deletes = cluster.seen.lock().expect("lock")[before..].iter().filter(|s| s.method == Method::DELETE).count();
    assert_eq!(deletes, 0, "an unknown deployment's stop must delete nothing");
    // The owner deletes its own objects, with its drain as the grace
    // period; the app's shared ones stay.
    rt.stop("d-1", Duration::from_secs(5)).await.expect("stops");
    let seen = cluster.seen.lock().expect("lock").clone();
    let deleted: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::DELETE).collect();
    assert_eq!(deleted.len(), 5, "Deployment, Service, HPA, PDB and the env Secret: {deleted:?}");
    assert!(deleted.iter().all(|d| d.path.ends_with("/shop-d-1") || d.path.ends_with("/shop-d-1-env")), "{deleted:?}");
    assert!(deleted.iter().all(|d| d.body["gracePeriodSeconds"] == 5), "{deleted:?}");
    assert!(cluster.exists("/api/v1/namespaces/apps/serviceaccounts/shop"));
    assert!(cluster.exists("/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/shop"));
}

fn target(id: &str) -> GkeTarget {
    GkeTarget {
        project: "shop".into(),
        namespace: "apps".into(),
        image: "registry.example/shop@sha256:22".into(),
        sidecar_image: "registry.example/sidecar@sha256:11".into(),
        domain: "apps.acme.dev".into(),
        ingest_url: "http://bifrost-ingest:7481".into(),
        deployment_id: id.into(),
    }
}

/// v1 is live. v2 is applied, never becomes healthy, and is stopped (as a
/// failed or cancelled deployment is): every object of v1 is untouched and
/// the app's URL still points at v1. Then v3 goes live: the Ingress moves
/// to it, and stopping the superseded v1 leaves v3 serving.
#[tokio::test]
async fn a_failed_deploy_never_touches_what_is_live() {
    let (rt, cluster) = start(false, 0).await;
    rt.apply(spec("d-v1")).await.expect("v1 applies");
    rt.wait_listening("d-v1", Duration::from_secs(5)).await.expect("v1 rolls out");
    rt.promote("d-v1").await.expect("v1 promoted");
    let v1: BTreeMap<String, Value> = cluster.objects.lock().expect("lock").clone();
    let ingress_path = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/shop";
    let backend = |c: &Cluster| {
        c.object(ingress_path)["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"].clone()
    };
    assert_eq!(backend(&cluster), "shop-d-v1");

    rt.apply(spec("d-v2")).await.expect("v2 applies");
    rt.stop("d-v2", Duration::from_secs(1)).await.expect("v2 stops");
    let now = cluster.objects.lock().expect("lock").clone();
    for (path, obj) in &v1 {
        assert_eq!(now.get(path), Some(obj), "{path} changed or vanished when the failed v2 stopped");
    }
    assert!(now.keys().all(|p| !p.contains("d-v2")), "v2 left objects behind: {:?}", now.keys());
    assert_eq!(backend(&cluster), "shop-d-v1");

    rt.apply(spec("d-v3")).await.expect("v3 applies");
    rt.promote("d-v3").await.expect("v3 promoted");
    assert_eq!(backend(&cluster), "shop-d-v3");
    rt.stop("d-v1", Duration::from_secs(1)).await.expect("v1 stops");
    assert!(cluster.exists("/apis/apps/v1/namespaces/apps/deployments/shop-d-v3"));
    assert!(cluster.exists("/api/v1/namespaces/apps/services/shop-d-v3"));
    assert!(!cluster.exists("/api/v1/namespaces/apps/services/shop-d-v1"));
    assert_eq!(backend(&cluster), "shop-d-v3");
}

/// Behind the router cluster: promotion makes no per-app Ingress (the
/// routers follow the live deployment), and the routers are sent to the
/// deployment's own Service by its cluster DNS name.
#[tokio::test]
async fn behind_routers_promotion_moves_no_ingress_and_routes_go_to_the_deployments_service() {
    let (rt, cluster) = start_with(false, 0, GkeSettings { routed: true, ..settings() }).await;
    rt.apply(spec("d-1")).await.expect("applies");
    rt.wait_listening("d-1", Duration::from_secs(5)).await.expect("rolls out");
    rt.promote("d-1").await.expect("promotes");
    assert!(!cluster.exists("/apis/networking.k8s.io/v1/namespaces/apps/ingresses/shop"), "no per-app Ingress");
    assert_eq!(rt.endpoints("d-1").await, ["shop-d-1.apps.svc.cluster.local:80"]);
    assert!(rt.promote("d-none").await.is_err(), "a deployment with no objects cannot go live");
}

/// A canary on GKE: the new deployment's own Deployment and Service are
/// applied beside the live one's, which stay untouched while the routers
/// split clients between the two Services; when the canary goes live, the
/// old deployment's stop deletes only its own objects.
#[tokio::test]
async fn behind_routers_a_canary_is_a_second_deployment_beside_the_live_one() {
    let (rt, cluster) = start_with(false, 0, GkeSettings { routed: true, ..settings() }).await;
    rt.apply(spec("d-1")).await.expect("stable applies");
    rt.wait_listening("d-1", Duration::from_secs(5)).await.expect("stable rolls out");
    rt.promote("d-1").await.expect("stable promoted");
    let stable: BTreeMap<String, Value> = cluster.objects.lock().expect("lock").clone();

    rt.apply(spec("d-2")).await.expect("canary applies");
    rt.wait_listening("d-2", Duration::from_secs(5)).await.expect("canary rolls out");
    let both = cluster.objects.lock().expect("lock").clone();
    for (path, obj) in &stable {
        assert_eq!(both.get(path), Some(obj), "{path} changed when the canary was applied");
    }
    for kind in ["/apis/apps/v1/namespaces/apps/deployments/shop-", "/api/v1/namespaces/apps/services/shop-"] {
        for id in ["d-1", "d-2"] {
            assert!(cluster.exists(&format!("{kind}{id}")), "no {kind}{id} while the canary runs");
        }
    }
    // The two sides of the routers' split: each deployment's own Service.
    assert_eq!(rt.endpoints("d-1").await, ["shop-d-1.apps.svc.cluster.local:80"]);
    assert_eq!(rt.endpoints("d-2").await, ["shop-d-2.apps.svc.cluster.local:80"]);

    rt.promote("d-2").await.expect("the canary goes live");
    rt.stop("d-1", Duration::from_secs(1)).await.expect("the old one drains");
    assert!(!cluster.exists("/apis/apps/v1/namespaces/apps/deployments/shop-d-1"));
    assert!(cluster.exists("/apis/apps/v1/namespaces/apps/deployments/shop-d-2"));
    assert!(cluster.exists("/api/v1/namespaces/apps/services/shop-d-2"));
    assert!(!cluster.exists("/apis/networking.k8s.io/v1/namespaces/apps/ingresses/shop"), "no per-app Ingress");
}

/// The deploy gate's host facts on GKE, from the cluster API: memory the
/// Ready nodes have left and CPU in use per allocatable core (a NotReady
/// node and one without metrics do not count); free disk is not told. A
/// cluster without the metrics API tells nothing, and nothing breaks.
#[tokio::test]
async fn host_facts_come_from_the_ready_nodes_and_their_metrics() {
    let (rt, cluster) = start(false, 0).await;
    assert_eq!(rt.host_facts().await, HostFacts::default(), "no nodes listed: no facts");
    let node = |name: &str, ready: &str, cpu: &str, memory: &str| {
        json!({"metadata": {"name": name}, "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "ephemeral-storage": "100Gi"},
            "conditions": [{"type": "Ready", "status": ready}]}})
    };
    let nodes = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [
        node("n1", "True", "3920m", "16Gi"), node("n2", "True", "4", "16Gi"),
        node("n3", "False", "4", "16Gi"), node("n4", "True", "2", "8Gi")]});
    cluster.objects.lock().expect("lock").insert("/api/v1/nodes".into(), nodes);
    assert_eq!(rt.host_facts().await, HostFacts::default(), "no metrics API: no facts");
    let usage = |name: &str, cpu: &str, memory: &str| json!({"metadata": {"name": name}, "usage": {"cpu": cpu, "memory": memory}});
    let metrics = json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": [
        usage("n1", "1960000000n", "4Gi"), usage("n2", "2", "8192Mi"), usage("n3", "4", "16Gi")]});
    cluster.objects.lock().expect("lock").insert("/apis/metrics.k8s.io/v1beta1/nodes".into(), metrics);
    let facts = rt.host_facts().await;
    // n1 and n2: 3.96 of 7.92 cores busy; 32 GiB less 12 GiB used.
    assert_eq!(facts.disk_free_gb, None);
    assert!(facts.cpu_load.is_some_and(|l| (l - 0.5).abs() < 1e-9), "{facts:?}");
    assert_eq!(facts.memory_available_mb, Some(20.0 * 1024.0));
    let reads = cluster.seen.lock().expect("lock").iter().filter(|s| s.path == "/api/v1/nodes").count();
    assert_eq!(reads, 3);
}

#[test]
fn kubernetes_quantities_read_as_cores_and_bytes() {
    use bifrost_gcp::gke_runtime::parse_quantity;
    for (q, want) in
        [("3920m", 3.92), ("2", 2.0), ("250n", 2.5e-7), ("16Gi", 17_179_869_184.0), ("1.5k", 1500.0), ("1e3", 1000.0)]
    {
        assert_eq!(parse_quantity(q), Some(want), "{q}");
    }
    assert_eq!(parse_quantity("12 parsecs"), None);
    assert_eq!(parse_quantity("Gi"), None);
}

#[tokio::test]
async fn a_stalled_rollout_fails_with_the_clusters_reason() {
    let (rt, _cluster) = start(true, 1000).await;
    rt.apply(spec("d-2")).await.expect("applies");
    let err = rt.wait_listening("d-2", Duration::from_secs(10)).await.expect_err("stalls");
    assert!(matches!(&err, RuntimeError::Failed(m) if m.contains("timed out progressing")), "{err:?}");
}

#[tokio::test]
async fn a_build_without_an_image_is_refused_before_any_request() {
    let (rt, cluster) = start(false, 0).await;
    let mut s = spec("d-3");
    s.artifact = json!({"dir": "/tmp/x"});
    let err = rt.apply(s).await.expect_err("no image");
    assert!(matches!(&err, RuntimeError::Failed(m) if m.contains("no image")), "{err:?}");
    assert!(cluster.seen.lock().expect("lock").is_empty(), "nothing was sent");
}

/// The health sidecar accepts the exact arguments and environment the GKE
/// manifest gives it (`--flag=value`, the token from the env Secret): it
/// starts, probes, and keeps retrying an ingest it cannot reach instead of
/// exiting (which would crash-loop the container and keep the pod unready).
#[tokio::test]
async fn the_sidecar_accepts_the_manifests_arguments() {
    let cfg = config::parse(TOML).expect("valid");
    let target = GkeTarget { ingest_url: "http://127.0.0.1:9".into(), ..target("d-1") };
    let deployment = render(&cfg, &target).deployment;
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("a pod spec");
    let sidecar = pod.containers.iter().find(|c| c.name == "health-sidecar").expect("the sidecar container");
    let mut cmd = std::process::Command::new(bifrost_e2e::sidecar_bin());
    cmd.args(sidecar.args.clone().unwrap_or_default());
    for e in sidecar.env.clone().unwrap_or_default() {
        // Values from the env Secret are the token; the rest are literal.
        cmd.env(&e.name, e.value.unwrap_or_else(|| sidecar_token(b"k", "d-1", 0)));
    }
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("starts the sidecar");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let exited = child.try_wait().expect("waits");
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited.is_none(), "the sidecar exited ({exited:?}) on the manifest's arguments: {stderr}");
    assert!(stderr.contains("cannot reach http://127.0.0.1:9"), "it runs and tries its ingest: {stderr}");
}
