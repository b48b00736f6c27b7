//! The embedded bus: at-least-once push delivery of the outbox, in the exact
//! Pub/Sub envelope, with backoff, dead letters, redrive and restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bifrost_core::domain::{Actor, NewDeployment, NewProject, Source};
use bifrost_core::events::Subscription;
use bifrost_core::ports::PushHandler;
use bifrost_core::ports::{DeadLetters, Store};
use bifrost_core::{Outcome, PushEnvelope, Status};
use bifrost_sqlite::{Dispatcher, DispatcherConfig, SqliteStore};
use tokio::sync::watch;

/// Answers each push with the next scripted outcome (then Ack), recording it.
#[derive(Default)]
struct Recorder {
    script: Mutex<Vec<Outcome>>,
    seen: Mutex<Vec<(String, PushEnvelope)>>,
}

#[async_trait]
impl PushHandler for Recorder {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome {
        self.seen.lock().expect("lock").push((function.to_string(), envelope));
        let mut script = self.script.lock().expect("lock");
        if script.is_empty() { Outcome::Ack } else { script.remove(0) }
    }
}

fn config() -> DispatcherConfig {
    DispatcherConfig {
        max_attempts: 3,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..DispatcherConfig::default()
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(
        &dir.path().join("b.db"),
        vec![Subscription::new("validate", Status::Queued), Subscription::new("audit", Status::Queued)],
    )
    .expect("open")
}

async fn deployment(store: &SqliteStore, name: &str) -> String {
    store
        .create_project(NewProject { name: name.into(), repo: None, branch: "main".into(), webhook_secret: None })
        .await
        .expect("project");
    store
        .create_deployment(NewDeployment {
            project: name.into(),
            source: Source::Archive { uri: "file:///x".into(), sha256: "0".repeat(64) },
            actor: Actor::token("t"),
            dedupe_key: None,
            rollback_of: None,
            artifact: None,
        })
        .await
        .expect("deployment")
        .deployment
        .id
}

fn start(store: &SqliteStore, handler: Arc<Recorder>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let d = Dispatcher::new(store.clone(), handler, config());
    (tx, tokio::spawn(d.run(rx, Duration::from_secs(1))))
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5s");
}

#[tokio::test(flavor = "multi_thread")]
async fn delivers_the_pubsub_envelope_to_each_subscription() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(&dir);
    let rec = Arc::new(Recorder::default());
    let (stop, task) = start(&store, rec.clone());
    let id = deployment(&store, "app").await;
    wait_for(|| rec.seen.lock().expect("lock").len() == 2).await;
    let seen = rec.seen.lock().expect("lock").clone();
    let mut functions: Vec<_> = seen.iter().map(|(f, _)| f.as_str()).collect();
    functions.sort();
    assert_eq!(functions, ["audit", "validate"]);
    let (_, env) = seen.iter().find(|(f, _)| f == "validate").expect("validate push");
    assert_eq!(env.subscription, "projects/bifrost-local/subscriptions/validate-queued");
    assert_eq!(env.delivery_attempt, Some(1));
    assert_eq!(env.message.attributes["type"], "deployment.queued");
    assert_eq!(env.message.ordering_key.as_deref(), Some(id.as_str()));
    let event = env.event().expect("decodes");
    assert_eq!((event.deployment_id.as_str(), event.status, event.version), (id.as_str(), Status::Queued, 1));
    // Acked: nothing is redelivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rec.seen.lock().expect("lock").len(), 2);
    let _ = stop.send(true);
    task.await.expect("dispatcher stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_with_backoff_then_dead_letters_and_redrives() {
    let dir = tempfile::tempdir().expect("tmp");
    let store =
        SqliteStore::open(&dir.path().join("b.db"), vec![Subscription::new("validate", Status::Queued)]).expect("open");
    let rec = Arc::new(Recorder::default());
    *rec.script.lock().expect("lock") =
        vec![Outcome::Retry("down".into()), Outcome::Retry("still down".into()), Outcome::Retry("gone".into())];
    let (stop, task) = start(&store, rec.clone());
    let id = deployment(&store, "app").await;
    wait_for(|| rec.seen.lock().expect("lock").len() == 3).await;
    let attempts: Vec<_> = rec.seen.lock().expect("lock").iter().map(|(_, e)| e.delivery_attempt).collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3)]);
    let mut dead = vec![];
    for _ in 0..100 {
        dead = store.dead_letters().await.expect("dead letters");
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].last_error.as_str()), (3, "gone"));
    assert_eq!(dead[0].event.deployment_id, id);
    // Redrive: delivered again (the script is exhausted, so it is acked).
    let unknown = store.redrive(Some(vec!["999/validate-queued".into()])).await;
    assert!(unknown.is_err(), "redriving an unknown dead letter is an error");
    assert_eq!(store.redrive(Some(vec![dead[0].id.clone()])).await.expect("redrive"), 1);
    wait_for(|| rec.seen.lock().expect("lock").len() == 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(store.dead_letters().await.expect("dead").is_empty());
    let _ = stop.send(true);
    task.await.expect("stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_messages_are_dead_lettered_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let store =
        SqliteStore::open(&dir.path().join("b.db"), vec![Subscription::new("validate", Status::Queued)]).expect("open");
    let rec = Arc::new(Recorder::default());
    *rec.script.lock().expect("lock") = vec![Outcome::Reject("malformed".into())];
    let (stop, task) = start(&store, rec.clone());
    deployment(&store, "app").await;
    wait_for(|| rec.seen.lock().expect("lock").len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rec.seen.lock().expect("lock").len(), 1, "a rejected message is not retried");
    assert_eq!(store.dead_letters().await.expect("dead").len(), 1);
    let _ = stop.send(true);
    task.await.expect("stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn undelivered_events_are_delivered_after_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = {
        // Accepted while no dispatcher runs (as if the process died right after).
        let store = open(&dir);
        deployment(&store, "app").await
    };
    let store = open(&dir);
    let rec = Arc::new(Recorder::default());
    let (stop, task) = start(&store, rec.clone());
    wait_for(|| rec.seen.lock().expect("lock").len() == 2).await;
    assert!(rec.seen.lock().expect("lock").iter().all(|(_, e)| e.event().expect("event").deployment_id == id));
    let _ = stop.send(true);
    task.await.expect("stops");
}
