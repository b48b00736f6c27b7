//! Guarded transitions per second on the embedded store, beside the same
//! number of bare SQLite status updates (no guard, audit or outbox) on the
//! same machine in the same run. Run with `bench/transitions.sh`.

use std::time::Instant;

use bifrost_core::Status;
use bifrost_core::domain::{Actor, NewDeployment, NewProject, Source};
use bifrost_core::events::Subscription;
use bifrost_core::ports::Transition;
use bifrost_sqlite::SqliteStore;

fn main() {
    let deployments: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let threads: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let subs = vec![Subscription::new("validate", Status::Queued), Subscription::new("validate", Status::Validating)];
    let store = SqliteStore::open(&dir.path().join("bench.db"), subs).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // One project per deployment: creating a deployment supersedes in-flight ones of its project.
    let ids: Vec<String> = (0..deployments)
        .map(|i| {
            rt.block_on(bifrost_core::ports::Store::create_project(
                &store,
                NewProject { name: format!("p{i}"), repo: None, branch: "main".into(), webhook_secret: None },
            ))
            .expect("project");
            store
                .create_deployment_blocking(NewDeployment {
                    project: format!("p{i}"),
                    source: Source::Archive { uri: "file:///x".into(), sha256: "0".repeat(64) },
                    actor: Actor::token("bench"),
                    dedupe_key: None,
                    rollback_of: None,
                    artifact: None,
                })
                .expect("create")
                .deployment
                .id
        })
        .collect();

    // Walk every deployment through the whole pipeline: 6 transitions each.
    let start = Instant::now();
    std::thread::scope(|s| {
        for chunk in ids.chunks(ids.len().div_ceil(threads)) {
            let store = store.clone();
            s.spawn(move || {
                for id in chunk {
                    for pair in Status::PIPELINE.windows(2) {
                        store
                            .transition_blocking(Transition::new(
                                id,
                                pair[0],
                                pair[1],
                                "bench",
                                Actor::function("bench"),
                            ))
                            .expect("transition");
                    }
                }
            });
        }
    });
    let guarded = start.elapsed();
    let n = ids.len() * 6;

    // Peer: the same number of single-row status updates, each its own
    // transaction, on a plain table with the same pragmas.
    let conn = rusqlite::Connection::open(dir.path().join("plain.db")).expect("open plain");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL").expect("sync");
    conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, status TEXT, version INTEGER)").expect("table");
    for id in &ids {
        conn.execute("INSERT INTO t VALUES (?1, 'queued', 1)", [id]).expect("insert");
    }
    let start = Instant::now();
    for id in &ids {
        for pair in Status::PIPELINE.windows(2) {
            conn.execute(
                "UPDATE t SET status = ?1, version = version + 1 WHERE id = ?2 AND status = ?3",
                rusqlite::params![pair[1].as_str(), id, pair[0].as_str()],
            )
            .expect("update");
        }
    }
    let plain = start.elapsed();

    let g = n as f64 / guarded.as_secs_f64();
    let p = n as f64 / plain.as_secs_f64();
    println!("| measure | transitions | seconds | per second |");
    println!("|---|---|---|---|");
    println!(
        "| guarded transition ({threads} threads: CAS + trigger + audit hash + outbox + deliveries) | {n} | {:.3} | {g:.0} |",
        guarded.as_secs_f64()
    );
    println!("| bare SQLite UPDATE (1 thread, no guard/audit/outbox) | {n} | {:.3} | {p:.0} |", plain.as_secs_f64());
    println!("| ratio guarded / bare | | | {:.2}× |", g / p);
}
