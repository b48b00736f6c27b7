//! What the Cloud Build builder sends, pinned (Cloud Build cannot run here):
//! for each example, the Dockerfile it generates and the exact `Build`
//! request body, in `tests/golden/cloud_build/` (`cargo xtask bless` rewrites
//! them after a deliberate change). CI runs checkov on the Dockerfiles.

use std::path::Path;
use std::time::Duration;

use bifrost_core::config::{self, DeployConfig};
use bifrost_core::domain::Source;
use bifrost_core::ports::{BuildError, BuildRequest};
use bifrost_gcp::cloud_build::{CloudBuildConfig, build_request, dockerfile};
use bifrost_testkit::golden::{self, root};

fn golden(name: &str, text: &str) {
    golden::check(&format!("shared/gcp/tests/golden/cloud_build/{name}"), text);
}

fn settings() -> CloudBuildConfig {
    CloudBuildConfig {
        service_account: Some("projects/acme/serviceAccounts/bifrost-builds@acme.iam.gserviceaccount.com".into()),
        timeout: Duration::from_secs(900),
        ..CloudBuildConfig::new("acme", "europe-west1")
    }
}

fn request(cfg: DeployConfig) -> BuildRequest {
    BuildRequest {
        deployment_id: "01JD6GOLDEN0000000000000000".into(),
        project_id: "p_golden".into(),
        project: cfg.app.name.clone(),
        source: Source::Git {
            repo: "https://git.example/acme/app".into(),
            git_ref: "main".into(),
            commit: "a".repeat(40),
            committed_at: None,
        },
        config: cfg,
    }
}

#[test]
fn examples_build_with_their_golden_dockerfile_and_request() {
    for example in ["hello-python", "hello-node", "hello-rust", "static-site"] {
        let dir = root().join("examples").join(example);
        let toml = std::fs::read_to_string(dir.join("deploy.toml")).expect("example");
        let cfg = config::parse(&toml).unwrap_or_else(|e| panic!("{example}: {e:?}"));
        let text = dockerfile(&cfg, &dir).expect("plans").expect("a generated Dockerfile");
        golden(&format!("{example}.Dockerfile"), &text);
        let body = build_request(
            &settings(),
            &request(cfg),
            "builds/01JD6GOLDEN0000000000000000.tar.gz",
            1_732_000_000_000_000,
        );
        golden(&format!("{example}.request.json"), &(serde_json::to_string_pretty(&body).expect("json") + "\n"));
    }
}

/// `runtime = "docker"` builds the repository's own Dockerfile (the one
/// `[build] dockerfile` names), generates none, and runs as Cloud Build's
/// default service account when none is configured.
#[test]
fn docker_runtime_uses_the_repos_dockerfile() {
    let cfg = config::parse(
        "[app]\nname = \"api\"\nruntime = \"docker\"\n[build]\ndockerfile = \"deploy/Dockerfile\"\n[run]\nport = 8080\n",
    )
    .expect("valid");
    assert_eq!(dockerfile(&cfg, Path::new("/nonexistent")).expect("plans"), None);
    let body = build_request(&CloudBuildConfig::new("acme", "us-central1"), &request(cfg), "builds/x.tar.gz", 7);
    golden("docker.request.json", &(serde_json::to_string_pretty(&body).expect("json") + "\n"));
}

/// A Python repository without an entry point gets the same clear error the
/// local builder gives, before anything is uploaded.
#[test]
fn no_start_command_is_a_build_failure() {
    let cfg = config::parse("[app]\nname = \"x\"\nruntime = \"python\"\n").expect("valid");
    let dir = tempfile::tempdir().expect("tmp");
    let err = dockerfile(&cfg, dir.path()).expect_err("no entry point");
    assert!(matches!(err, BuildError::Failed(ref m) if m.contains("set [run] command")), "{err:?}");
}
