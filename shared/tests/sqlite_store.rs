//! The store contract, plus what only the SQLite store promises: the trigger
//! guard, the append-only audit table, durability across reopen.

use std::sync::Arc;

use bifrost_shared::domain::{Actor, NewDeployment, NewProject, Source};
use bifrost_shared::embedded::SqliteStore;
use bifrost_shared::events::Subscription;
use bifrost_shared::ports::{Store, Transition};
use bifrost_shared::{Status, StoreError, contract};

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("bifrost.db"), vec![Subscription::new("validate", Status::Queued)])
        .expect("opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn contract_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    contract::run_all(store, "c-").await.expect("contract holds");
}

async fn queued(store: &SqliteStore) -> String {
    store
        .create_project(NewProject { name: "app".into(), repo: None, branch: "main".into(), webhook_secret: None })
        .await
        .expect("project");
    store
        .create_deployment(NewDeployment {
            project: "app".into(),
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

#[tokio::test]
async fn trigger_stops_hand_written_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let id = queued(&store).await;
    let skip = store.execute_raw(&format!("UPDATE deployments SET status = 'healthy', version = 9 WHERE id = '{id}'"));
    let err = skip.expect_err("queued → healthy by hand must be refused");
    assert!(err.to_string().contains("not allowed by the state machine"), "{err}");
    let no_bump = store.execute_raw(&format!("UPDATE deployments SET status = 'validating' WHERE id = '{id}'"));
    assert!(no_bump.expect_err("status change without version bump").to_string().contains("bump the version"));
    // An allowed pair with a bumped version passes the guard.
    assert_eq!(
        store
            .execute_raw(&format!("UPDATE deployments SET status = 'validating', version = 2 WHERE id = '{id}'"))
            .expect("allowed pair"),
        1
    );
    let insert = store.execute_raw(
        "INSERT INTO deployments (id, project_id, project_name, status, version, attempt, source, created_by, created_at, updated_at)
         VALUES ('x', 'p', 'app', 'healthy', 1, 1, '{}', 'token:t', '', '')",
    );
    assert!(insert.expect_err("insert not queued").to_string().contains("created queued"));
    for sql in ["UPDATE audit SET reason = 'forged'", "DELETE FROM audit"] {
        let e = store.execute_raw(sql).expect_err("audit is append-only");
        assert!(e.to_string().contains("append-only"), "{e}");
    }
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let store = open(&dir);
        let id = queued(&store).await;
        store
            .transition(Transition::new(&id, Status::Queued, Status::Validating, "go", Actor::function("validate")))
            .await
            .expect("transition");
        id
    };
    let store = open(&dir);
    let d = store.get_deployment(&id).await.expect("still there");
    assert_eq!((d.status, d.version), (Status::Validating, 2));
    assert_eq!(store.history(&id).await.expect("history").len(), 2);
    // Reopening re-installs the guard table; it still refuses a skip.
    let skip =
        store.transition(Transition::new(&id, Status::Validating, Status::Healthy, "skip", Actor::function("x"))).await;
    assert!(matches!(skip, Err(StoreError::InvalidTransition { .. })));
}
