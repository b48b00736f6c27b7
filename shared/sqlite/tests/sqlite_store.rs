//! The store contract, plus what only the SQLite store promises: the trigger
//! guard, the append-only audit table, durability across reopen.

use std::sync::Arc;

use bifrost_core::domain::{Actor, NewDeployment, NewProject, Source};
use bifrost_core::events::Subscription;
use bifrost_core::ports::{Store, Transition};
use bifrost_core::{Status, StoreError};
use bifrost_sqlite::SqliteStore;
use bifrost_testkit::contract;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("bifrost.db"), vec![Subscription::new("validate", Status::Queued)])
        .expect("opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn contract_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    contract::run_all(store.clone(), "c-").await.expect("contract holds");
    bifrost_testkit::history::analytics_run(&*store, "h-").await.expect("the analytics run holds");
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

/// A data dir from before tallies kept their time apart (schema 9): each
/// tally takes it from its JSON, so the retention prunes the stale one and
/// keeps the recent one.
#[tokio::test]
async fn tallies_of_an_older_data_dir_are_pruned_by_the_time_in_their_json() {
    use bifrost_core::ports::{RouterTally, TrafficCounts};
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().expect("time");
    let tally = |dep: &str, at| RouterTally {
        router: "r".into(),
        started_ms: 1,
        deployment_id: dep.into(),
        counts: TrafficCounts::default(),
        at,
    };
    {
        let store = open(&dir);
        let (old, new) = (tally("old", at("2003-01-01T10:00:00.123456789Z")), tally("new", at("2003-03-01T00:00:00Z")));
        store.record_tallies(vec![old, new]).await.expect("tallies");
        for sql in ["DROP INDEX tallies_by_at", "ALTER TABLE tallies DROP COLUMN at_ms", "PRAGMA user_version = 9"] {
            store.execute_raw(sql).expect(sql);
        }
    }
    let store = open(&dir);
    // Between the two: only the older goes.
    assert_eq!(store.prune_tallies(at("2003-01-01T10:00:01Z"), &[]).await.expect("prune"), 1);
    assert_eq!(store.tallies("new").await.expect("tallies").len(), 1);
    assert!(store.tallies("old").await.expect("tallies").is_empty());
}

/// A data dir from before secrets were sealed and belonged to projects
/// (schema 2: one global `secrets` table, plaintext, and a plaintext
/// webhook secret): opening it gives each secret to the projects whose
/// deployments used it, keeps an unused one unscoped, and sealing at start
/// leaves no plaintext behind — while every value still opens.
#[tokio::test]
async fn plaintext_secrets_of_an_older_data_dir_are_migrated_and_sealed_in_place() {
    use bifrost_core::domain::ConfigSnapshot;
    use bifrost_core::ports::Patch;
    use bifrost_core::seal::{self, Keys};
    let dir = tempfile::tempdir().expect("tempdir");
    let (project_id, used) = {
        let store = open(&dir);
        let id = queued(&store).await;
        let config = bifrost_core::config::parse(
            "[app]\nname = \"app\"\nruntime = \"python\"\n\n[env]\nDB = { secret = \"db-url\" }\n",
        )
        .expect("valid");
        let snapshot = ConfigSnapshot { source: String::new(), config, script: None };
        store
            .transition(Transition::new(&id, Status::Queued, Status::Validating, "go", Actor::function("validate")))
            .await
            .expect("validating");
        store
            .transition(
                Transition::new(&id, Status::Validating, Status::Building, "ok", Actor::function("validate"))
                    .with_patch(Patch { config: Some(snapshot), ..Patch::default() }),
            )
            .await
            .expect("building");
        let project_id = store.get_project("app").await.expect("project").id;
        // Back to schema 2, as an older Bifrost wrote it.
        for sql in [
            "CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL) WITHOUT ROWID",
            "INSERT INTO secrets VALUES ('db-url', 'postgres://plain', '2026-01-01T00:00:00Z')",
            "INSERT INTO secrets VALUES ('unused', 'nobody-uses-me', '2026-01-01T00:00:00Z')",
            "DROP TABLE project_secrets",
            "ALTER TABLE tokens DROP COLUMN project_id",
            "ALTER TABLE projects DROP COLUMN chaos",
            "ALTER TABLE projects DROP COLUMN split",
            "ALTER TABLE audit DROP COLUMN evidence",
            "ALTER TABLE audit DROP COLUMN anchor",
            "ALTER TABLE projects DROP COLUMN rollout",
            "DROP TABLE policies",
            "DROP TABLE tallies",
            "DROP TABLE traffic_minutes",
            "DROP TABLE analytics",
            "DROP TABLE analytics_settings",
            "UPDATE projects SET webhook_secret = 'plain-hook'",
            "PRAGMA user_version = 2",
        ] {
            store.execute_raw(sql).expect(sql);
        }
        (project_id, "db-url".to_string())
    };
    let store = open(&dir);
    let keys = Keys::from_master(&[3; 32]).expect("keys");
    let sealed = store.seal_plaintext(|context, plain| keys.seal_for(context, plain)).expect("seals");
    assert_eq!(sealed, 3, "two secrets and one webhook secret");
    assert_eq!(store.seal_plaintext(|_, p| p.to_string()).expect("again"), 0, "sealing is done once");
    let values = store.secret_values(&project_id, std::slice::from_ref(&used)).await.expect("given to its user");
    let value = &values[&used];
    assert!(seal::is_sealed(value));
    assert_eq!(keys.secrets.open(value, &seal::secret_context(&project_id, &used)).as_deref(), Ok("postgres://plain"));
    let listed = store.list_secrets(None).await.expect("list");
    assert!(listed.iter().any(|s| s.name == "unused" && s.project_id.is_none()), "{listed:?}");
    let project = store.get_project("app").await.expect("project");
    let hook = project.webhook_secret.expect("webhook secret");
    assert!(seal::is_sealed(&hook));
    assert_eq!(keys.open_webhook("app", &hook).as_deref(), Ok("plain-hook"));
    let raw = std::fs::read(dir.path().join("bifrost.db")).expect("db");
    for plain in ["postgres://plain", "nobody-uses-me", "plain-hook"] {
        assert!(!raw.windows(plain.len()).any(|w| w == plain.as_bytes()), "{plain} still in the file");
    }
}
