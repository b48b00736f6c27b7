//! The GKE manifests, pinned: each example's deploy.toml renders to exactly
//! the YAML in `tests/golden/gke/` (`cargo xtask bless` rewrites them after a
//! deliberate change). CI also runs checkov on these files.

use bifrost_core::config;
use bifrost_gcp::gke::{GkeTarget, render};
use bifrost_testkit::golden::{self, root};

fn target(project: &str) -> GkeTarget {
    GkeTarget {
        project: project.into(),
        namespace: "apps".into(),
        image: format!("europe-docker.pkg.dev/acme/bifrost-apps/{project}@sha256:{}", "0123456789abcdef".repeat(4)),
        sidecar_image: format!("europe-docker.pkg.dev/acme/bifrost/sidecar@sha256:{}", "fedcba9876543210".repeat(4)),
        domain: "apps.acme.dev".into(),
        ingest_url: "http://bifrost-ingest.bifrost.svc:7481".into(),
        deployment_id: "d-01jd6golden".into(),
    }
}

fn check(name: &str, toml: &str) {
    let cfg = config::parse(toml).unwrap_or_else(|e| panic!("{name}: invalid deploy.toml: {e:?}"));
    let yaml = render(&cfg, &target(&cfg.app.name)).to_yaml().expect("renders");
    golden::check(&format!("shared/gcp/tests/golden/gke/{name}.yaml"), &yaml);
}

#[test]
fn examples_render_to_their_golden_yaml() {
    for example in ["hello-python", "hello-node", "hello-rust", "static-site"] {
        let toml = std::fs::read_to_string(root().join("examples").join(example).join("deploy.toml")).expect("example");
        check(example, &toml);
    }
}

/// One replica, a secret and a custom start command: the PDB allows one
/// disruption (not zero, which would block node upgrades), the secret is a
/// secretKeyRef, never a value.
#[test]
fn secrets_and_single_replica() {
    let toml = r#"
[app]
name = "billing"
runtime = "node"

[run]
command = "node server.js"
port = 3000

[scaling]
min_replicas = 1
max_replicas = 10
cpu_target = 60

[health]
path = "/ready"

[env]
DATABASE_URL = { secret = "billing-db-url" }
LOG_LEVEL = "info"
"#;
    check("billing", toml);
    let cfg = config::parse(toml).expect("valid");
    let m = render(&cfg, &target("billing"));
    let pdb = m.pdb.spec.expect("pdb spec");
    assert!(pdb.min_available.is_none() && pdb.max_unavailable.is_some(), "single replica PDB {pdb:?}");
    let hpa = m.hpa.spec.expect("hpa spec");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(1), 10));
    let pod = m.deployment.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(pod.share_process_namespace, Some(true));
    let app = &pod.containers[0];
    let db = app.env.as_ref().expect("env").iter().find(|e| e.name == "DATABASE_URL").expect("DATABASE_URL");
    assert!(db.value.is_none(), "a secret must not be inlined");
    assert_eq!(
        db.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).map(|r| r.key.as_str()),
        Some("billing-db-url")
    );
    for c in &pod.containers {
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]), "{}", c.name);
    }
}

/// The router cluster's objects (`bifrost render --target gke-router`),
/// pinned; the configuration they mount is one `bifrost-router` accepts.
#[test]
fn the_router_cluster_renders_to_its_golden_yaml_with_a_valid_configuration() {
    use bifrost_gcp::gke_router::{RouterTarget, config_json, render};
    let t = RouterTarget {
        namespace: "bifrost".into(),
        image: format!("europe-docker.pkg.dev/acme/bifrost/router@sha256:{}", "0a1b2c3d4e5f6a7b".repeat(4)),
        domain: "apps.acme.dev".into(),
        gateway: "https://bifrost-gateway-3kq7x2-ew.a.run.app".into(),
        allowed_address_space: vec!["10.0.0.0/8".into()],
        min_replicas: 3,
        max_replicas: 10,
    };
    let m = render(&t);
    golden::check("shared/gcp/tests/golden/gke/router-cluster.yaml", &m.to_yaml().expect("renders"));
    let (raw, other) = bifrost_cluster::config::parse(&config_json(&t).to_string()).expect("the seeds' shape");
    assert!(other.is_empty());
    let mut raw = raw;
    raw.override_from(|k| (k == "BIFROST_GOSSIP_KEY").then(|| "a-gossip-key-of-32-bytes-........".to_string()))
        .expect("overrides");
    let settings = raw.check("bifrost-router-7d9f-abcde").expect("a configuration bifrost-router starts with");
    assert!(settings.enabled && settings.discovery.is_some());
    let pod = m.deployment.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(pod.termination_grace_period_seconds, Some(90));
    assert_eq!(
        m.pdb.spec.and_then(|s| s.min_available),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2))
    );
    let rules = m.role.rules.expect("rules");
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    assert_eq!(rules[0].resources.as_deref(), Some(&["pods".to_string()][..]));
}
