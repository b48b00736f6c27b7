//! Every event delivered twice: the functions must acknowledge the second
//! delivery and change nothing (no extra transitions, audit records or events).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bifrost_core::domain::{Actor, Deployment, NewDeployment, NewProject, Source};
use bifrost_core::events::Subscription;
use bifrost_core::ports::{PushHandler, Store};
use bifrost_core::{Outcome, PushEnvelope, Status};
use bifrost_functions::logs::{LogLimits, LogWriter};
use bifrost_functions::{Ctx, Functions, Settings};
use bifrost_local::{LocalBuilder, ProcessRuntime};
use bifrost_sources::GitSources;
use bifrost_sqlite::{Dispatcher, DispatcherConfig, SqliteStore};

/// Passes pushes to the functions and records every outcome.
struct Recording {
    inner: Functions,
    outcomes: Mutex<Vec<(String, Outcome)>>,
}

#[async_trait]
impl PushHandler for Recording {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome {
        let kind = envelope.message.attributes.get("type").cloned().unwrap_or_default();
        let o = self.inner.push(function, envelope).await;
        self.outcomes.lock().expect("lock").push((kind, o.clone()));
        o
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .expect("git");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Run {
    history: Vec<Status>,
    events: usize,
    outcomes: Vec<(String, Outcome)>,
    deployment: Deployment,
}

/// Builds and replicas are not reached here (only validate is subscribed);
/// the sandbox is the real one all the same.
fn test_sandbox(data: &std::path::Path) -> bifrost_local::sandbox::Sandbox {
    use bifrost_local::sandbox::{DEFAULT_UID_BASE, Sandbox, SandboxConfig};
    std::fs::create_dir_all(data).expect("data dir");
    Sandbox::new(SandboxConfig {
        helper: "bifrost".into(),
        owner: "idempotency-test".into(),
        data_dir: data.to_path_buf(),
        apps_root: data.join("apps"),
        insecure: true,
        uid_base: DEFAULT_UID_BASE,
    })
    .expect("sandbox")
}

async fn run_twice(deploy_toml: &str) -> Run {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("deploy.toml"), deploy_toml).expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "x"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);

    let data = tmp.path().join("data");
    // Only validation is subscribed: the pipeline stops at `building`.
    let subs = vec![Subscription::new("validate", Status::Queued), Subscription::new("validate", Status::Validating)];
    let store = SqliteStore::open(&data.join("b.db"), subs).expect("store");
    let sources = Arc::new(GitSources::new(&data));
    let (logs, _task) = LogWriter::start(Arc::new(store.clone()), LogLimits::default());
    let sandbox = test_sandbox(&data);
    let (runtime, _events) = ProcessRuntime::new(logs.clone(), sandbox.clone(), None);
    let ctx = Ctx {
        health: tokio::sync::broadcast::channel(1024).0,
        store: Arc::new(store.clone()),
        dead_letters: Arc::new(store.clone()),
        sources: sources.clone(),
        builder: Arc::new(LocalBuilder::new(sandbox, sources, Duration::from_secs(60))),
        runtime: Arc::new(runtime),
        logs,
        keys: None,
        settings: Settings::default(),
    };
    let handler = Arc::new(Recording { inner: Functions { ctx: ctx.clone() }, outcomes: Mutex::new(vec![]) });
    let config = DispatcherConfig { duplicate_deliveries: true, ..DispatcherConfig::default() };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Dispatcher::new(store.clone(), handler.clone(), config).run(rx, Duration::from_secs(5)));

    let repo_s = repo.display().to_string();
    store
        .create_project(NewProject {
            name: "app".into(),
            repo: Some(repo_s.clone()),
            branch: "main".into(),
            webhook_secret: None,
        })
        .await
        .expect("project");
    let id = store
        .create_deployment(NewDeployment {
            project: "app".into(),
            source: Source::Git { repo: repo_s, git_ref: "main".into(), commit },
            actor: Actor::token("t"),
            dedupe_key: None,
            rollback_of: None,
            artifact: None,
        })
        .await
        .expect("deployment")
        .deployment
        .id;
    let mut settled = false;
    for _ in 0..500 {
        let d = store.get_deployment(&id).await.expect("get");
        // queued and validating each reach the functions twice.
        let n = handler.outcomes.lock().expect("lock").len();
        if matches!(d.status, Status::Building | Status::Failed) && n >= 4 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(settled, "pipeline did not settle");
    let _ = stop.send(true);
    task.await.expect("dispatcher");
    let outcomes = handler.outcomes.lock().expect("lock").clone();
    Run {
        history: store.history(&id).await.expect("history").iter().map(|h| h.to).collect(),
        events: store.events(Some(&id), 0, 100).await.expect("events").len(),
        outcomes,
        deployment: store.get_deployment(&id).await.expect("get"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_events_change_nothing_on_the_happy_path() {
    let r = run_twice("[app]\nname = \"app\"\nruntime = \"static\"\n").await;
    assert_eq!(r.history, [Status::Queued, Status::Validating, Status::Building]);
    assert_eq!(r.events, 3);
    assert_eq!(r.outcomes.len(), 4, "{:?}", r.outcomes);
    assert!(r.outcomes.iter().all(|(_, o)| *o == Outcome::Ack), "{:?}", r.outcomes);
    assert_eq!(r.deployment.version, 3);
    assert!(r.deployment.config.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_events_change_nothing_when_validation_fails() {
    let r = run_twice("[app]\nname = \"app\"\nruntime = \"cobol\"\n").await;
    assert_eq!(r.history, [Status::Queued, Status::Validating, Status::Failed]);
    assert_eq!(r.events, 3);
    assert!(r.outcomes.iter().all(|(_, o)| *o == Outcome::Ack), "{:?}", r.outcomes);
    assert_eq!(r.deployment.config_errors.len(), 1);
    assert_eq!(r.deployment.config_errors[0].path, "app.runtime");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_name_other_than_the_project_is_an_error_at_its_line() {
    let r = run_twice("# app\n[app]\nname = \"other\"\nruntime = \"static\"\n").await;
    assert_eq!(r.history.last(), Some(&Status::Failed));
    let e = &r.deployment.config_errors[0];
    assert_eq!((e.line, e.column, e.path.as_str()), (3, 8, "app.name"));
    assert!(e.message.contains("\"app\""), "{}", e.message);
}
