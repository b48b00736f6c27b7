//! The Cloud Build builder end to end, with the real Cloud Storage adapter
//! on PyPI's storage emulator and a fake Cloud Build API (Cloud Build cannot
//! run here; the exact request bodies are pinned by the golden files in
//! shared/gcp/tests/golden/cloud_build/). The fake behaves as Cloud Build does:
//! an operation on submit, QUEUED → WORKING → a verdict on polls, and the
//! build log growing in the logs bucket as `log-<id>.txt`.

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use bifrost_core::config;
use bifrost_core::domain::Source;
use bifrost_core::ports::{BuildError, BuildRequest, Builder, LogSink};
use bifrost_e2e::cloud_build::{DIGEST, FakeCloudBuild, LOG, Verdict, create_bucket, serve};
use bifrost_gcp::cloud_build::{CloudBuildBuilder, CloudBuildConfig, NoCredentials, build_request};
use bifrost_gcp::storage::{Gcs, GcsSources};
use bifrost_testkit::emulator::{Emulator, Kind};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

#[async_trait]
impl LogSink for Lines {
    fn line(&self, _deployment_id: &str, _project: &str, stream: &str, line: String) {
        assert_eq!(stream, "build");
        self.0.lock().expect("lock").push(line);
    }
}

struct World {
    _emulator: Emulator,
    gcs: Gcs,
    scratch: tempfile::TempDir,
    repo: bifrost_e2e::GitRepo,
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emulator = Emulator::start(Kind::Storage).expect("the storage emulator starts");
    for bucket in ["acme-bifrost-sources", "acme-bifrost-build-logs"] {
        create_bucket(&emulator.host, bucket).await;
    }
    let gcs = Gcs::connect(Some(&format!("http://{}", emulator.host))).await.expect("connects");
    World {
        _emulator: emulator,
        gcs,
        scratch: tempfile::tempdir().expect("tmp"),
        repo: bifrost_e2e::GitRepo::from_example("hello-python"),
    }
}

impl World {
    async fn builder(&self, verdict: Verdict) -> (CloudBuildBuilder, Arc<FakeCloudBuild>, CloudBuildConfig) {
        let fake = Arc::new(FakeCloudBuild {
            gcs: self.gcs.clone(),
            logs_bucket: "acme-bifrost-build-logs".into(),
            verdict,
            polls: AtomicU32::new(0),
            seen: Mutex::new(vec![]),
        });
        let cfg = CloudBuildConfig {
            api: serve(fake.clone()).await,
            poll: Duration::from_millis(20),
            ..CloudBuildConfig::new("acme", "europe-west1")
        };
        let sources = Arc::new(GcsSources::new(self.scratch.path(), self.gcs.clone(), "acme-bifrost-sources"));
        let builder = CloudBuildBuilder::new(
            cfg.clone(),
            sources,
            self.gcs.clone(),
            Arc::new(NoCredentials),
            self.scratch.path(),
        )
        .expect("a client");
        (builder, fake, cfg)
    }

    fn request(&self, id: &str) -> BuildRequest {
        let toml = std::fs::read_to_string(self.repo.path().join("deploy.toml")).expect("deploy.toml");
        BuildRequest {
            deployment_id: id.into(),
            project_id: "p_hello".into(),
            project: "hello-python".into(),
            source: Source::Git {
                repo: self.repo.path_str(),
                git_ref: "main".into(),
                commit: self.repo.head(),
                committed_at: None,
            },
            config: config::parse(&toml).expect("valid"),
        }
    }
}

/// The files of a gzipped tarball.
fn files(tgz: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(tgz))
        .entries()
        .expect("a tarball")
        .filter_map(|e| e.ok())
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| e.path().expect("path").display().to_string().trim_start_matches("./").to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_build_builder() {
    let w = world().await;

    // Success: the exact request, the tree at the commit plus the generated
    // Dockerfile in the bucket, the log in order and once, the image by digest.
    let (builder, fake, cfg) = w.builder(Verdict::Success).await;
    let lines = Arc::new(Lines::default());
    let req = w.request("01JD6E2E00000000000000000A");
    let artifact = builder.build(req.clone(), lines.clone()).await.expect("builds");
    assert_eq!(
        artifact["image"],
        format!("europe-west1-docker.pkg.dev/acme/apps/hello-python@{DIGEST}"),
        "the artifact pins the pushed image by digest"
    );
    let seen = fake.seen.lock().expect("lock").clone();
    let (method, path, body) = &seen[0];
    assert_eq!((method, path.as_str()), (&Method::POST, "/v1/projects/acme/locations/europe-west1/builds"));
    let object = "builds/01JD6E2E00000000000000000A.tar.gz";
    let generation: i64 =
        body["source"]["storageSource"]["generation"].as_str().expect("pinned").parse().expect("a number");
    assert_eq!(body, &build_request(&cfg, &req, object, generation), "the submitted body is the pinned request");
    let uploaded = w.gcs.get("acme-bifrost-sources", object).await.expect("reads").expect("the source was uploaded");
    assert_eq!(
        files(&uploaded),
        [".bifrost/Dockerfile", "app.py", "deploy.toml"],
        "the tree at the commit, plus the Dockerfile"
    );
    let got = lines.0.lock().expect("lock").clone();
    let from_cloud_build: Vec<&str> = got.iter().filter(|l| !l.starts_with("==>")).map(String::as_str).collect();
    assert_eq!(from_cloud_build, LOG, "every log line once, in order, the unterminated last one too");
    assert!(got[0].contains("generated .bifrost/Dockerfile"), "{got:?}");
    assert!(got.iter().any(|l| l.contains("Cloud Build 7f0c1b2a-build submitted")), "{got:?}");
    assert!(got.last().is_some_and(|l| l.contains(DIGEST)), "{got:?}");
    assert!(!seen.iter().any(|(_, p, _)| p.ends_with(":cancel")), "a finished build is not cancelled");

    // Failure: the deployment fails with Cloud Build's reason, log included.
    let (builder, _fake, _) = w.builder(Verdict::Failure).await;
    let lines = Arc::new(Lines::default());
    let err = builder.build(w.request("01JD6E2E00000000000000000B"), lines.clone()).await.expect_err("fails");
    assert!(matches!(err, BuildError::Failed(ref m) if m.contains("step exited with non-zero status: 1")), "{err:?}");
    assert!(lines.0.lock().expect("lock").iter().any(|l| l == "DONE"), "the log is complete before the verdict");

    // Refused (permissions): a failure, not a retry loop.
    let (builder, _fake, _) = w.builder(Verdict::Forbidden).await;
    let err =
        builder.build(w.request("01JD6E2E00000000000000000C"), Arc::new(Lines::default())).await.expect_err("fails");
    assert!(
        matches!(err, BuildError::Failed(ref m) if m.contains("403") && m.contains("does not have permission")),
        "{err:?}"
    );

    // Dropping the build (deployment cancelled) cancels it in Cloud Build.
    let (builder, fake, _) = w.builder(Verdict::Hang).await;
    let running = builder.build(w.request("01JD6E2E00000000000000000D"), Arc::new(Lines::default()));
    assert!(
        tokio::time::timeout(Duration::from_millis(400), running).await.is_err(),
        "a hanging build does not finish"
    );
    let cancelled = async {
        loop {
            if fake
                .seen
                .lock()
                .expect("lock")
                .iter()
                .any(|(m, p, _)| m == Method::POST && p.ends_with("/7f0c1b2a-build:cancel"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), cancelled)
        .await
        .expect("the dropped build is cancelled in Cloud Build");

    // A runtime = "docker" repo without its Dockerfile fails before uploading.
    let (builder, fake, _) = w.builder(Verdict::Success).await;
    let mut req = w.request("01JD6E2E00000000000000000E");
    req.config.app.runtime = config::Runtime::Docker;
    let err = builder.build(req, Arc::new(Lines::default())).await.expect_err("fails");
    assert!(matches!(err, BuildError::Failed(ref m) if m.contains("needs Dockerfile")), "{err:?}");
    assert!(fake.seen.lock().expect("lock").is_empty(), "nothing was submitted");
    assert_eq!(
        w.gcs.get("acme-bifrost-sources", "builds/01JD6E2E00000000000000000E.tar.gz").await.expect("reads"),
        None
    );
}
