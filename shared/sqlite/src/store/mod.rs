//! The embedded store: SQLite (WAL) with one writer connection and a few
//! readers. Every transition is one `BEGIN IMMEDIATE` transaction; a trigger
//! guards the status column with the shared transition table.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, broadcast};

use bifrost_core::analytics::run::{AnalyticsResult, TrafficMinute, UsageMinute, UsageMinutes};
use bifrost_core::decide;
use bifrost_core::domain::*;
use bifrost_core::error::{StoreError, StoreResult};
use bifrost_core::events::{DeadLetter, Event, Subscription};
use bifrost_core::policies::{NewPolicyVersion, PolicyVersion};
use bifrost_core::ports::{Created, DeadLetters, RouterTally, Store, Transition};
use bifrost_core::repo::repo_key;
use bifrost_core::status::{Status, TRANSITIONS};

mod outbox;
mod rows;
mod schema;
mod tx;

pub use outbox::DueDelivery;
use rows::*;
use schema::*;
use tx::*;

const READERS: usize = 4;

/// Cheap to clone: all clones share the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Store calls in flight on blocking threads: one per connection. More
    /// would only wait on a connection's lock, each in a thread of its own
    /// (20,000 SSE subscribers authenticating at once spawned hundreds of
    /// threads, ~170 MiB of stacks and malloc arenas).
    in_flight: Arc<tokio::sync::Semaphore>,
}

pub(crate) struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    subscriptions: Vec<Subscription>,
    /// Woken after every commit that enqueued deliveries.
    pub(crate) deliveries_ready: Notify,
    /// Every committed event, for live views (SSE).
    changes: broadcast::Sender<FeedItem>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. `subscriptions` says
    /// which function receives which event type.
    pub fn open(path: &Path, subscriptions: Vec<Subscription>) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| backend(format!("creating {}: {e}", dir.display())))?;
        }
        let mut writer = open_connection(path)?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let c = open_connection(path)?;
                c.pragma_update(None, "query_only", "ON").map_err(backend)?;
                Ok(Mutex::new(c))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Sized for log bursts; a lagging subscriber re-reads from the table.
        let (changes, _) = broadcast::channel(16384);
        Ok(SqliteStore {
            in_flight: Arc::new(tokio::sync::Semaphore::new(READERS + 1)),
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                subscriptions,
                deliveries_ready: Notify::new(),
                changes,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Runs `f` on a blocking thread with access to the connections.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self.in_flight.clone().acquire_owned().await.map_err(|e| backend(e.to_string()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&inner)
        })
        .await
        .map_err(|e| backend(format!("store task failed: {e}")))?
    }

    /// The synchronous transition, for callers on their own threads (tests,
    /// benchmarks). The async trait method wraps it.
    pub fn transition_blocking(&self, t: Transition) -> StoreResult<Deployment> {
        self.inner.write(move |tx, out| transition_tx(tx, out, &t))
    }

    /// Creates a deployment from a blocking context.
    pub fn create_deployment_blocking(&self, new: NewDeployment) -> StoreResult<Created> {
        self.inner.write(move |tx, out| create_deployment_tx(tx, out, &new))
    }

    /// Seals what an older version stored in plaintext (secrets, webhook
    /// secrets), in place, in one transaction. `seal(context, plaintext)`
    /// returns the sealed value. Returns how many values it sealed.
    pub fn seal_plaintext(&self, seal: impl Fn(&str, &str) -> String) -> StoreResult<usize> {
        let sealed = self.seal_plaintext_tx(seal)?;
        if sealed > 0 {
            // The old plaintext pages leave the WAL too.
            let conn = self.inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(backend)?;
        }
        Ok(sealed)
    }

    fn seal_plaintext_tx(&self, seal: impl Fn(&str, &str) -> String) -> StoreResult<usize> {
        self.inner.write(|tx, _| {
            let mut n = 0;
            let secrets: Vec<(String, String, String)> = {
                let mut stmt = tx.prepare("SELECT project_id, name, value FROM project_secrets").map_err(backend)?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?
            };
            for (project_id, name, value) in secrets.into_iter().filter(|(_, _, v)| !bifrost_core::seal::is_sealed(v)) {
                let sealed = seal(&bifrost_core::seal::secret_context(&project_id, &name), &value);
                exec(
                    tx,
                    "UPDATE project_secrets SET value = ?1 WHERE project_id = ?2 AND name = ?3",
                    params![sealed, project_id, name],
                )
                .map_err(backend)?;
                n += 1;
            }
            let hooks: Vec<(String, String)> = {
                let mut stmt = tx
                    .prepare("SELECT name, webhook_secret FROM projects WHERE webhook_secret IS NOT NULL")
                    .map_err(backend)?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?
            };
            for (name, value) in hooks.into_iter().filter(|(_, v)| !bifrost_core::seal::is_sealed(v)) {
                let sealed = seal(&bifrost_core::seal::webhook_context(&name), &value);
                exec(tx, "UPDATE projects SET webhook_secret = ?1 WHERE name = ?2", params![sealed, name])
                    .map_err(backend)?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Runs raw SQL on the writer connection. For tests that prove the
    /// trigger guard holds against hand-written SQL.
    pub fn execute_raw(&self, sql: &str) -> StoreResult<usize> {
        let conn = self.inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
        conn.execute(sql, []).map_err(backend)
    }
}

impl Inner {
    /// One write transaction; events it enqueued are announced after commit.
    /// Writes serialize on the writer connection, as SQLite's do anyway.
    /// (Group commit was tried: with two cores, batches rarely formed and
    /// throughput did not change; see BENCHMARKS.md.)
    fn write<T>(&self, f: impl FnOnce(&Connection, &mut Outbox) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
        let mut out = Outbox::default();
        let value = f(&tx, &mut out)?;
        // Deliveries are created here so every write path gets them.
        for e in &mut out.events {
            let seq = insert_event(&tx, e)?;
            e.seq = seq;
            e.id = seq.to_string();
            for sub in self.subscriptions.iter().filter(|s| s.topic == e.kind) {
                exec(
                    &tx,
                    "INSERT INTO deliveries (event_seq, subscription, function, state, attempts, next_attempt_at)
                     VALUES (?1, ?2, ?3, 'pending', 0, ?4)",
                    params![seq as i64, sub.name, sub.function, e.at.timestamp_millis()],
                )
                .map_err(backend)?;
                out.deliveries += 1;
            }
        }
        let mut feed = Vec::with_capacity(out.events.len());
        for e in &out.events {
            feed.push(insert_feed_status(&tx, e)?);
        }
        tx.commit().map_err(backend)?;
        // Published before the writer is released: subscribers see items
        // in commit (= seq) order.
        for item in feed {
            let _ = self.changes.send(item);
        }
        drop(conn);
        if out.deliveries > 0 {
            self.deliveries_ready.notify_one();
        }
        Ok(value)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(conn) = self.readers[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        let conn = self.readers[start % n].lock().map_err(|_| backend("reader lock poisoned"))?;
        f(&conn)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_project(&self, p: NewProject) -> StoreResult<Project> {
        let project = Project::create(p)?;
        self.run(move |inner| {
            inner.write(move |tx, _| {
                let exists: bool =
                    row(tx, "SELECT EXISTS(SELECT 1 FROM projects WHERE name = ?1)", [&project.name], |r| r.get(0))
                        .map_err(backend)?;
                if exists {
                    return Err(StoreError::AlreadyExists { kind: "project", id: project.name.clone() });
                }
                exec(
                    tx,
                    "INSERT INTO projects (id, name, repo, repo_key, branch, webhook_secret, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        project.id,
                        project.name,
                        project.repo,
                        project.repo.as_deref().map(repo_key),
                        project.branch,
                        project.webhook_secret,
                        ts(&project.created_at)
                    ],
                )
                .map_err(backend)?;
                Ok(project)
            })
        })
        .await
    }

    async fn get_project(&self, name_or_id: &str) -> StoreResult<Project> {
        let key = name_or_id.to_string();
        self.run(move |inner| inner.read(|c| get_project_tx(c, &key))).await
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        self.run(|inner| {
            inner.read(|c| {
                let mut stmt =
                    c.prepare_cached(&format!("SELECT {PROJECT_COLS} FROM projects ORDER BY name")).map_err(backend)?;
                let rows =
                    stmt.query_map([], project_row).map_err(backend)?.collect::<Result<_, _>>().map_err(backend)?;
                Ok(rows)
            })
        })
        .await
    }

    async fn delete_project(&self, name_or_id: &str, actor: Actor) -> StoreResult<Project> {
        let key = name_or_id.to_string();
        self.run(move |inner| {
            inner.write(move |tx, out| {
                let project = get_project_tx(tx, &key)?;
                let live: Vec<(String, String)> = {
                    let mut stmt = tx
                        .prepare_cached(&format!(
                            "SELECT id, status FROM deployments WHERE project_id = ?1 AND status IN ({})",
                            sql_list(decide::cancelled_by_project_delete)
                        ))
                        .map_err(backend)?;
                    stmt.query_map([&project.id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(backend)?
                        .collect::<Result<_, _>>()
                        .map_err(backend)?
                };
                let seen = live
                    .iter()
                    .map(|(id, status)| Ok((id.as_str(), status.parse::<Status>().map_err(backend)?)))
                    .collect::<StoreResult<Vec<_>>>()?;
                for t in decide::cancel_for_project_delete(seen, &actor) {
                    transition_tx(tx, out, &t)?;
                }
                exec(tx, "DELETE FROM projects WHERE id = ?1", [&project.id]).map_err(backend)?;
                // Its secrets go with it; tokens limited to it stop working.
                exec(tx, "DELETE FROM project_secrets WHERE project_id = ?1", [&project.id]).map_err(backend)?;
                exec(
                    tx,
                    "UPDATE tokens SET revoked_at = ?1 WHERE project_id = ?2 AND revoked_at IS NULL",
                    params![ts(&now()), project.id],
                )
                .map_err(backend)?;
                Ok(project)
            })
        })
        .await
    }

    async fn set_traffic(
        &self,
        name_or_id: &str,
        change: TrafficChange,
        reason: &str,
        actor: Actor,
        evidence: Option<String>,
    ) -> StoreResult<Project> {
        let (key, reason) = (name_or_id.to_string(), reason.to_string());
        self.run(move |inner| {
            inner.write(move |tx, _| {
                let mut project = get_project_tx(tx, &key)?;
                let trail = change.apply(&mut project)?;
                let json = |v: Option<String>| v;
                exec(
                    tx,
                    "UPDATE projects SET chaos = ?1, split = ?2, rollout = ?3 WHERE id = ?4",
                    params![
                        json(project.chaos.as_ref().map(to_json).transpose()?),
                        json(project.split.as_ref().map(to_json).transpose()?),
                        json(project.rollout.as_ref().map(to_json).transpose()?),
                        project.id
                    ],
                )
                .map_err(backend)?;
                if let Some(trail) = &trail {
                    let (d, head): (Deployment, String) = row(
                        tx,
                        &format!("SELECT {DEPLOYMENT_COLS}, audit_head FROM deployments WHERE id = ?1"),
                        [trail],
                        |r| Ok((deployment_row(r)?, r.get(15)?)),
                    )
                    .map_err(backend)?;
                    let entry = AuditEntry {
                        at: &now(),
                        actor: &actor,
                        from: Some(d.status),
                        to: d.status,
                        reason: &reason,
                        evidence: evidence.as_deref(),
                    };
                    let hash = append_audit(tx, &d, &head, entry)?;
                    exec(tx, "UPDATE deployments SET audit_head = ?1 WHERE id = ?2", params![hash, d.id])
                        .map_err(backend)?;
                }
                Ok(project)
            })
        })
        .await
    }

    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Created> {
        let store = self.clone();
        self.run(move |_| store.create_deployment_blocking(new)).await
    }

    async fn get_deployment(&self, id: &str) -> StoreResult<Deployment> {
        let id = id.to_string();
        self.run(move |inner| inner.read(|c| get_deployment_tx(c, &id))).await
    }

    async fn list_deployments(&self, project: Option<&str>, limit: usize) -> StoreResult<Vec<Deployment>> {
        let project = project.map(str::to_string);
        self.run(move |inner| {
            inner.read(|c| {
                let limit = limit.min(10_000) as i64;
                let rows =
                    match project {
                        Some(p) => {
                            let project = get_project_tx(c, &p)?;
                            let mut stmt = c
                                .prepare_cached(&format!(
                                    "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE project_id = ?1
                             ORDER BY created_at DESC, id DESC LIMIT ?2"
                                ))
                                .map_err(backend)?;
                            stmt.query_map(params![project.id, limit], deployment_row)
                                .map_err(backend)?
                                .collect::<Result<_, _>>()
                                .map_err(backend)?
                        }
                        None => {
                            let mut stmt = c.prepare_cached(&format!(
                            "SELECT {DEPLOYMENT_COLS} FROM deployments ORDER BY created_at DESC, id DESC LIMIT ?1"
                        )).map_err(backend)?;
                            stmt.query_map(params![limit], deployment_row)
                                .map_err(backend)?
                                .collect::<Result<_, _>>()
                                .map_err(backend)?
                        }
                    };
                Ok(rows)
            })
        })
        .await
    }

    async fn transition(&self, t: Transition) -> StoreResult<Deployment> {
        let store = self.clone();
        self.run(move |_| store.transition_blocking(t)).await
    }

    async fn history(&self, deployment_id: &str) -> StoreResult<Vec<AuditRecord>> {
        let id = deployment_id.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, deployment_id, project_id, at, actor, from_status, to_status, reason, prev_hash, hash, evidence, anchor
                     FROM audit WHERE deployment_id = ?1 ORDER BY seq",
                ).map_err(backend)?;
                let rows: Vec<AuditRecord> =
                    stmt.query_map([&id], audit_row).map_err(backend)?.collect::<Result<_, _>>().map_err(backend)?;
                if rows.is_empty() {
                    get_deployment_tx(c, &id)?;
                }
                Ok(rows)
            })
        })
        .await
    }

    async fn audit(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, deployment_id, project_id, at, actor, from_status, to_status, reason, prev_hash, hash, evidence, anchor
                     FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
                ).map_err(backend)?;
                let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
                let limit = limit.min(100_000) as i64;
                stmt.query_map(params![before, limit], audit_row)
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)
            })
        })
        .await
    }

    async fn events(&self, deployment_id: Option<&str>, after_seq: u64, limit: usize) -> StoreResult<Vec<Event>> {
        let id = deployment_id.map(str::to_string);
        self.run(move |inner| {
            inner.read(|c| {
                let limit = limit.min(100_000) as i64;
                let rows = match id {
                    Some(id) => {
                        let mut stmt = c.prepare_cached(
                            "SELECT seq, data FROM events WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                        ).map_err(backend)?;
                        stmt.query_map(params![id, after_seq as i64, limit], event_row)
                            .map_err(backend)?
                            .collect::<Result<_, _>>()
                            .map_err(backend)?
                    }
                    None => {
                        let mut stmt = c
                            .prepare_cached("SELECT seq, data FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                            .map_err(backend)?;
                        stmt.query_map(params![after_seq as i64, limit], event_row)
                            .map_err(backend)?
                            .collect::<Result<_, _>>()
                            .map_err(backend)?
                    }
                };
                Ok(rows)
            })
        })
        .await
    }

    async fn deployments_in(&self, statuses: &[Status]) -> StoreResult<Vec<Deployment>> {
        let wanted: Vec<Status> = statuses.to_vec();
        self.run(move |inner| {
            inner.read(|c| {
                let sql = format!(
                    "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE status IN ({}) ORDER BY created_at",
                    sql_list(|s| wanted.contains(&s))
                );
                let mut stmt = c.prepare_cached(&sql).map_err(backend)?;
                let rows =
                    stmt.query_map([], deployment_row).map_err(backend)?.collect::<Result<_, _>>().map_err(backend)?;
                Ok(rows)
            })
        })
        .await
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.run(move |inner| {
            {
                let mut conn = inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
                let mut items = Vec::with_capacity(lines.len());
                for l in lines {
                    exec(
                        &tx,
                        "INSERT INTO feed (deployment_id, project, at, kind, stream, data) VALUES (?1, ?2, ?3, 'log', ?4, ?5)",
                        params![l.deployment_id, l.project, ts(&l.at), l.stream, l.line],
                    ).map_err(backend)?;
                    items.push(FeedItem {
                        seq: tx.last_insert_rowid() as u64,
                        deployment_id: l.deployment_id,
                        project: l.project,
                        at: l.at,
                        kind: FeedKind::Log { stream: l.stream, line: l.line },
                    });
                }
                tx.commit().map_err(backend)?;
                // Under the writer lock: subscribers see commit order.
                for item in items {
                    let _ = inner.changes.send(item);
                }
            };
            Ok(())
        })
        .await
    }

    async fn trim_logs(&self, deployment_id: &str, build: bool, keep_bytes: usize) -> StoreResult<usize> {
        let id = deployment_id.to_string();
        self.run(move |inner| {
            inner.write(move |tx, _| {
                // The newest seq whose line, with every newer one, passes the budget.
                let cut: Option<i64> = tx
                    .query_row(
                        "SELECT seq FROM (
                            SELECT seq, SUM(LENGTH(CAST(data AS BLOB)) + 1) OVER (ORDER BY seq DESC) AS newer
                            FROM feed WHERE deployment_id = ?1 AND kind = 'log' AND (stream = 'build') = ?2
                         ) WHERE newer > ?3 ORDER BY seq DESC LIMIT 1",
                        params![id, build, keep_bytes as i64],
                        |r| r.get(0),
                    )
                    .optional().map_err(backend)?;
                let Some(cut) = cut else { return Ok(0) };
                exec(
                    tx,
                    "DELETE FROM feed WHERE deployment_id = ?1 AND kind = 'log' AND (stream = 'build') = ?2 AND seq <= ?3",
                    params![id, build, cut],
                ).map_err(backend)
            })
        })
        .await
    }

    async fn feed(&self, deployment_id: Option<&str>, after_seq: u64, limit: usize) -> StoreResult<Vec<FeedItem>> {
        let id = deployment_id.map(str::to_string);
        self.run(move |inner| {
            inner.read(|c| {
                let limit = limit.min(100_000) as i64;
                let cols = "seq, deployment_id, project, at, kind, stream, data";
                let rows = match id {
                    Some(id) => {
                        let mut stmt = c
                            .prepare_cached(&format!(
                                "SELECT {cols} FROM feed WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                            ))
                            .map_err(backend)?;
                        stmt.query_map(params![id, after_seq as i64, limit], feed_row)
                            .map_err(backend)?
                            .collect::<Result<_, _>>()
                            .map_err(backend)?
                    }
                    None => {
                        let mut stmt = c
                            .prepare_cached(&format!("SELECT {cols} FROM feed WHERE seq > ?1 ORDER BY seq LIMIT ?2"))
                            .map_err(backend)?;
                        stmt.query_map(params![after_seq as i64, limit], feed_row)
                            .map_err(backend)?
                            .collect::<Result<_, _>>()
                            .map_err(backend)?
                    }
                };
                Ok(rows)
            })
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.inner.changes.subscribe()
    }

    async fn feed_head(&self) -> StoreResult<u64> {
        self.run(|inner| {
            inner.read(|c| {
                let head: i64 =
                    c.query_row("SELECT COALESCE(MAX(seq), 0) FROM feed", [], |r| r.get(0)).map_err(backend)?;
                Ok(head as u64)
            })
        })
        .await
    }

    async fn set_secret(&self, project_id: &str, name: &str, sealed: &str) -> StoreResult<()> {
        let (project_id, name, value) = (project_id.to_string(), name.to_string(), sealed.to_string());
        self.run(move |inner| {
            inner.write(move |tx, _| {
                exec(
                    tx,
                    "INSERT INTO project_secrets (project_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(project_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![project_id, name, value, ts(&now())],
                ).map_err(backend)?;
                Ok(())
            })
        })
        .await
    }

    async fn delete_secret(&self, project_id: &str, name: &str) -> StoreResult<()> {
        let (project_id, name) = (project_id.to_string(), name.to_string());
        self.run(move |inner| {
            inner.write(move |tx, _| {
                if exec(tx, "DELETE FROM project_secrets WHERE project_id = ?1 AND name = ?2", [&project_id, &name])
                    .map_err(backend)?
                    == 0
                {
                    return Err(StoreError::not_found("secret", &name));
                }
                Ok(())
            })
        })
        .await
    }

    async fn list_secrets(&self, project_id: Option<&str>) -> StoreResult<Vec<SecretInfo>> {
        let project_id = project_id.map(str::to_string);
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT project_id, name, updated_at FROM project_secrets
                     WHERE ?1 IS NULL OR project_id = ?1 ORDER BY project_id, name",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map([&project_id], |r| {
                        let p: String = r.get(0)?;
                        Ok(SecretInfo {
                            project_id: Some(p).filter(|p| !p.is_empty()),
                            name: r.get(1)?,
                            updated_at: parse_ts(&r.get::<_, String>(2)?)?,
                        })
                    })
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                Ok(rows)
            })
        })
        .await
    }

    async fn record_health(&self, samples: Vec<HealthSample>) -> StoreResult<()> {
        if samples.is_empty() {
            return Ok(());
        }
        self.run(move |inner| {
            let mut conn = inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            for h in &samples {
                insert_health(&tx, h)?;
            }
            tx.commit().map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn health(&self, deployment_id: &str, since: Timestamp, limit: usize) -> StoreResult<Vec<HealthSample>> {
        let id = deployment_id.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {HEALTH_COLS} FROM health WHERE deployment_id = ?1 AND at_ms >= ?2
                         ORDER BY at_ms, replica LIMIT ?3"
                    ))
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![id, since.timestamp_millis(), limit as i64], health_row)
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                Ok(rows)
            })
        })
        .await
    }

    async fn downsample_health(&self, before: Timestamp) -> StoreResult<usize> {
        self.run(move |inner| {
            let mut conn = inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let cutoff = decide::health_cutoff_ms(before);
            // Read the reports, fold them as the domain says, write the buckets.
            let mut buckets: std::collections::BTreeMap<(String, u32, i64), Vec<HealthSample>> = Default::default();
            {
                let mut stmt = tx
                    .prepare_cached(&format!("SELECT {HEALTH_COLS} FROM health WHERE span_s = 0 AND at_ms < ?1"))
                    .map_err(backend)?;
                let rows = stmt.query_map([cutoff], health_row).map_err(backend)?;
                for r in rows {
                    let s = r.map_err(backend)?;
                    let minute = decide::minute_of(s.at.timestamp_millis());
                    buckets.entry((s.deployment_id.clone(), s.replica, minute)).or_default().push(s);
                }
            }
            for ((deployment_id, replica, minute), reports) in &buckets {
                insert_health(&tx, &decide::fold_health(deployment_id, *replica, *minute, reports))?;
            }
            let folded = tx.execute("DELETE FROM health WHERE span_s = 0 AND at_ms < ?1", [cutoff]).map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(folded)
        })
        .await
    }

    async fn prune_series(&self, before: Timestamp) -> StoreResult<usize> {
        let cutoff = before.timestamp_millis();
        self.run(move |inner| {
            inner.write(move |tx, _| {
                // Each by an index on its time (health: span_s is 0 or 60).
                let mut pruned = 0;
                for sql in [
                    "DELETE FROM health WHERE span_s IN (0, 60) AND at_ms < ?1",
                    "DELETE FROM traffic_minutes WHERE minute_ms < ?1",
                    "DELETE FROM analytics WHERE start_ms < ?1",
                ] {
                    pruned += exec(tx, sql, [cutoff]).map_err(backend)?;
                }
                Ok(pruned)
            })
        })
        .await
    }

    async fn secret_values(
        &self,
        project_id: &str,
        names: &[String],
    ) -> StoreResult<std::collections::BTreeMap<String, String>> {
        let (project_id, names) = (project_id.to_string(), names.to_vec());
        self.run(move |inner| {
            inner.read(|c| {
                let mut out = std::collections::BTreeMap::new();
                for n in names {
                    let v: Option<String> = row(
                        c,
                        "SELECT value FROM project_secrets WHERE project_id = ?1 AND name = ?2",
                        [&project_id, &n],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                    out.insert(n.clone(), v.ok_or_else(|| StoreError::not_found("secret", &n))?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        project_id: Option<&str>,
    ) -> StoreResult<ApiToken> {
        let token = ApiToken::create(name, role, project_id)?;
        let (name, hash) = (name.to_string(), token_hash.to_string());
        self.run(move |inner| {
            inner.write(move |tx, _| {
                let exists: bool =
                    row(tx, "SELECT EXISTS(SELECT 1 FROM tokens WHERE name = ?1)", [&name], |r| r.get(0))
                        .map_err(backend)?;
                if exists {
                    return Err(StoreError::AlreadyExists { kind: "token", id: name.clone() });
                }
                exec(
                    tx,
                    "INSERT INTO tokens (id, name, role, hash, created_at, project_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![token.id, token.name, role.as_str(), hash, ts(&token.created_at), token.project_id],
                )
                .map_err(backend)?;
                Ok(token)
            })
        })
        .await
    }

    async fn authenticate(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        let hash = token_hash.to_string();
        self.run(move |inner| {
            let token = inner.read(|c| {
                row(
                    c,
                    &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"),
                    [&hash],
                    token_row,
                )
                .optional()
                .map_err(backend)
            })?;
            // Record use at most once a minute: reads stay reads.
            if let Some(t) = token.clone() {
                let stale = t.last_used_at.is_none_or(|l| now() - l > chrono::Duration::seconds(60));
                if stale {
                    inner.write(move |tx, _| {
                        exec(tx, "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2", params![ts(&now()), t.id])
                            .map_err(backend)?;
                        Ok(())
                    })?;
                }
            }
            Ok(token)
        })
        .await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.run(|inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE revoked_at IS NULL ORDER BY name"))
                    .map_err(backend)?;
                let rows =
                    stmt.query_map([], token_row).map_err(backend)?.collect::<Result<_, _>>().map_err(backend)?;
                Ok(rows)
            })
        })
        .await
    }

    async fn put_policy(&self, new: NewPolicyVersion) -> StoreResult<PolicyVersion> {
        self.run(move |inner| {
            inner.write(move |tx, _| {
                let newest: Option<String> = tx
                    .query_row(
                        "SELECT doc FROM policies WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                        [&new.name],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                let prev: Option<PolicyVersion> =
                    newest.map(|d| serde_json::from_str(&d)).transpose().map_err(backend)?;
                let at = prev.as_ref().map_or(0, |p| p.version);
                if at != new.base_version {
                    return Err(StoreError::AlreadyExists {
                        kind: "policy version",
                        id: format!("{} v{} (changed meanwhile; reload and try again)", new.name, at),
                    });
                }
                let v = new.seal(prev.as_ref(), now());
                let doc = serde_json::to_string(&v).map_err(backend)?;
                exec(
                    tx,
                    "INSERT INTO policies (name, version, doc) VALUES (?1, ?2, ?3)",
                    params![v.name, v.version as i64, doc],
                )
                .map_err(backend)?;
                Ok(v)
            })
        })
        .await
    }

    async fn policy_versions(&self, name: &str) -> StoreResult<Vec<PolicyVersion>> {
        let name = name.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt =
                    c.prepare_cached("SELECT doc FROM policies WHERE name = ?1 ORDER BY version").map_err(backend)?;
                let docs: Vec<String> = stmt
                    .query_map([&name], |r| r.get(0))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                docs.iter().map(|d| serde_json::from_str(d).map_err(backend)).collect()
            })
        })
        .await
    }

    async fn record_tallies(&self, tallies: Vec<RouterTally>) -> StoreResult<()> {
        if tallies.is_empty() {
            return Ok(());
        }
        self.run(move |inner| {
            let mut conn = inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            for t in &tallies {
                let doc = serde_json::to_string(t).map_err(backend)?;
                // A late report (fewer requests) never replaces a newer one.
                exec(
                    &tx,
                    "INSERT INTO tallies (router, started_ms, deployment_id, requests, doc, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (deployment_id, router, started_ms) DO UPDATE
                     SET requests = excluded.requests, doc = excluded.doc, at_ms = excluded.at_ms
                     WHERE excluded.requests >= tallies.requests",
                    params![
                        t.router,
                        t.started_ms,
                        t.deployment_id,
                        t.counts.requests as i64,
                        doc,
                        t.at.timestamp_millis()
                    ],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn tallies(&self, deployment_id: &str) -> StoreResult<Vec<RouterTally>> {
        let id = deployment_id.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached("SELECT doc FROM tallies WHERE deployment_id = ?1 ORDER BY router, started_ms")
                    .map_err(backend)?;
                let docs: Vec<String> =
                    stmt.query_map([&id], |r| r.get(0)).map_err(backend)?.collect::<Result<_, _>>().map_err(backend)?;
                docs.iter().map(|d| serde_json::from_str(d).map_err(backend)).collect()
            })
        })
        .await
    }

    async fn prune_tallies(&self, before: Timestamp, serving: &[String]) -> StoreResult<usize> {
        let cutoff = before.timestamp_millis();
        let serving = serde_json::to_string(serving).map_err(backend)?;
        self.run(move |inner| {
            inner.write(move |tx, _| {
                // Found by the index on `at_ms`; the serving ones kept.
                exec(
                    tx,
                    "DELETE FROM tallies WHERE at_ms < ?1 AND deployment_id NOT IN (SELECT value FROM json_each(?2))",
                    params![cutoff, serving],
                )
                .map_err(backend)
            })
        })
        .await
    }

    async fn record_traffic_minutes(&self, minutes: Vec<TrafficMinute>) -> StoreResult<()> {
        if minutes.is_empty() {
            return Ok(());
        }
        self.run(move |inner| {
            let mut conn = inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            for m in &minutes {
                exec(
                    &tx,
                    "INSERT OR REPLACE INTO traffic_minutes
                     (project_id, minute_ms, deployment_id, requests, errors, p99_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        m.project_id,
                        m.minute.timestamp_millis(),
                        m.deployment_id,
                        m.requests as i64,
                        m.errors as i64,
                        m.p99_ms
                    ],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn usage_minutes(
        &self,
        deployment_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UsageMinute>> {
        let id = deployment_id.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                // In the index's order (no sort), grouped per minute as the
                // rows pass: SQLite's GROUP BY would sort them in a temporary
                // B-tree, 6× the cost of the scan (BENCHMARKS.md).
                let mut stmt = c
                    .prepare_cached(
                        "SELECT replica, at_ms, cpu_percent, rss_bytes FROM health
                         WHERE deployment_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 ORDER BY at_ms",
                    )
                    .map_err(backend)?;
                let mut rows =
                    stmt.query(params![id, from.timestamp_millis(), to.timestamp_millis()]).map_err(backend)?;
                let mut minutes = UsageMinutes::default();
                while let Some(r) = rows.next().map_err(backend)? {
                    let at_ms: i64 = r.get(1).map_err(backend)?;
                    let rss: Option<i64> = r.get(3).map_err(backend)?;
                    minutes.add(r.get(0).map_err(backend)?, at_ms, r.get(2).map_err(backend)?, rss.map(|b| b as f64));
                }
                Ok(minutes.finish())
            })
        })
        .await
    }

    async fn traffic_minutes(
        &self,
        project_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<TrafficMinute>> {
        let id = project_id.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT deployment_id, minute_ms, requests, errors, p99_ms FROM traffic_minutes
                         WHERE project_id = ?1 AND minute_ms >= ?2 AND minute_ms < ?3 ORDER BY minute_ms, deployment_id",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![id, from.timestamp_millis(), to.timestamp_millis()], |r| {
                        Ok(TrafficMinute {
                            deployment_id: r.get(0)?,
                            project_id: id.clone(),
                            minute: chrono::DateTime::from_timestamp_millis(r.get(1)?).unwrap_or_default(),
                            requests: r.get::<_, i64>(2)? as u64,
                            errors: r.get::<_, i64>(3)? as u64,
                            p99_ms: r.get(4)?,
                        })
                    })
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                Ok(rows)
            })
        })
        .await
    }

    async fn put_analytics(&self, result: AnalyticsResult) -> StoreResult<(AnalyticsResult, bool)> {
        self.run(move |inner| {
            let mut conn = inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let key = (
                result.project_id.clone(),
                result.window.start.timestamp_millis(),
                result.window.end.timestamp_millis(),
            );
            let kept: Option<String> = tx
                .query_row(
                    "SELECT doc FROM analytics WHERE project_id = ?1 AND start_ms = ?2 AND end_ms = ?3",
                    params![key.0, key.1, key.2],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let out = match kept {
                Some(doc) => (serde_json::from_str(&doc).map_err(backend)?, false),
                None => {
                    let doc = serde_json::to_string(&result).map_err(backend)?;
                    exec(
                        &tx,
                        "INSERT INTO analytics (project_id, start_ms, end_ms, doc) VALUES (?1, ?2, ?3, ?4)",
                        params![key.0, key.1, key.2, doc],
                    )
                    .map_err(backend)?;
                    (result, true)
                }
            };
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn analytics(&self, project_id: &str, from: Timestamp, to: Timestamp) -> StoreResult<Vec<AnalyticsResult>> {
        let id = project_id.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT doc FROM analytics WHERE project_id = ?1 AND start_ms >= ?2 AND start_ms < ?3
                         ORDER BY start_ms, end_ms",
                    )
                    .map_err(backend)?;
                let docs: Vec<String> = stmt
                    .query_map(params![id, from.timestamp_millis(), to.timestamp_millis()], |r| r.get(0))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                docs.iter().map(|d| serde_json::from_str(d).map_err(backend)).collect()
            })
        })
        .await
    }

    async fn analytics_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let key = key.to_string();
        self.run(move |inner| {
            inner.read(|c| {
                c.query_row("SELECT value FROM analytics_settings WHERE key = ?1", [&key], |r| r.get(0))
                    .optional()
                    .map_err(backend)
            })
        })
        .await
    }

    async fn set_analytics_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(move |inner| {
            let conn = inner.writer.lock().map_err(|_| backend("writer lock poisoned"))?;
            exec(&conn, "INSERT OR REPLACE INTO analytics_settings (key, value) VALUES (?1, ?2)", params![key, value])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(&self, id_or_name: &str) -> StoreResult<ApiToken> {
        let key = id_or_name.to_string();
        self.run(move |inner| {
            inner.write(move |tx, _| {
                let token = tx
                    .query_row(
                        &format!("SELECT {TOKEN_COLS} FROM tokens WHERE (id = ?1 OR name = ?1) AND revoked_at IS NULL"),
                        [&key],
                        token_row,
                    )
                    .optional()
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::not_found("token", &key))?;
                exec(tx, "UPDATE tokens SET revoked_at = ?1 WHERE id = ?2", params![ts(&now()), token.id])
                    .map_err(backend)?;
                Ok(token)
            })
        })
        .await
    }
}
