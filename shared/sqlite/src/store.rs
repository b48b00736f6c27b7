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

use bifrost_core::decide;
use bifrost_core::domain::*;
use bifrost_core::error::{StoreError, StoreResult};
use bifrost_core::events::{DeadLetter, Event, Subscription};
use bifrost_core::ports::{Created, DeadLetters, Store, Transition};
use bifrost_core::repo::repo_key;
use bifrost_core::status::{Status, TRANSITIONS};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: i64 = 3;

/// Schema 2: sidecar health reports.
const MIGRATION_2: &str = "
CREATE TABLE health (
    deployment_id TEXT NOT NULL,
    replica       INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    span_s        INTEGER NOT NULL,   -- 0: one report; 60: a one-minute bucket
    probe_ok      REAL NOT NULL,
    http_status   INTEGER,
    latency_ms    REAL,
    cpu_percent   REAL,
    rss_bytes     INTEGER,
    threads       INTEGER,
    open_fds      INTEGER,
    error         TEXT
);
CREATE INDEX health_by_deployment ON health(deployment_id, at_ms);
CREATE INDEX health_raw_by_time ON health(span_s, at_ms);
";
/// Schema 3: secrets belong to projects and are stored sealed; tokens may
/// be limited to a project. (The old global secrets are copied to every
/// project whose deployments referenced them — see `migrate_secrets`.)
const MIGRATION_3: &str = "
CREATE TABLE project_secrets (
    project_id TEXT NOT NULL,       -- '' : kept from before secrets had projects; never resolved
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,       -- sealed:v1:... (the key is not in this database)
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
) WITHOUT ROWID;
ALTER TABLE tokens ADD COLUMN project_id TEXT;
";
const READERS: usize = 4;
/// Token columns, in `token_row`'s order.
const TOKEN_COLS: &str = "id, name, role, created_at, last_used_at, project_id";

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

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn ts(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> rusqlite::Result<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn parse_col<T: std::str::FromStr>(s: &str) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.to_string().into()))
}

fn json_col<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// `execute` through the statement cache (parsing SQL is a large part of a
/// small transaction's cost).
fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

fn row<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

/// `'queued', 'validating', ...`: the statuses matching `pred`, for an
/// index-friendly `IN (...)` (a `NOT IN` would scan every row of a project).
fn sql_list(pred: impl Fn(Status) -> bool) -> String {
    let names: Vec<String> =
        Status::ALL.into_iter().filter(|s| pred(*s)).map(|s| format!("'{}'", s.as_str())).collect();
    names.join(", ")
}

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(backend)
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(|e| backend(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(backend)?;
    // Small pages: a transition touches ~9 pages (row, audit, outbox,
    // deliveries and their indexes); 1 KiB pages write a quarter of the WAL
    // bytes of 4 KiB ones (+20% transitions/s measured). Only applies when the
    // file is created.
    conn.pragma_update(None, "page_size", 1024).map_err(backend)?;
    // WAL + synchronous=NORMAL: durable across process crashes (kill -9); an
    // OS crash may lose the last few commits.
    conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(backend)?;
    // Deleted and overwritten content (an old plaintext secret) is zeroed
    // where that costs no extra I/O.
    conn.pragma_update(None, "secure_delete", "FAST").map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

const DEPLOYMENT_COLS: &str = "id, project_id, project_name, status, version, attempt, source, config, \
     config_errors, reason, artifact, rollback_of, created_by, created_at, updated_at";

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
    let config: Option<String> = r.get(7)?;
    let artifact: Option<String> = r.get(10)?;
    Ok(Deployment {
        id: r.get(0)?,
        project_id: r.get(1)?,
        project: r.get(2)?,
        status: parse_col(&r.get::<_, String>(3)?)?,
        version: r.get::<_, i64>(4)? as u64,
        attempt: r.get::<_, i64>(5)? as u32,
        source: json_col(&r.get::<_, String>(6)?)?,
        config: config.as_deref().map(json_col).transpose()?,
        config_errors: json_col(&r.get::<_, String>(8)?)?,
        reason: r.get(9)?,
        artifact: artifact.as_deref().map(json_col).transpose()?,
        rollback_of: r.get(11)?,
        created_by: parse_col(&r.get::<_, String>(12)?)?,
        created_at: parse_ts(&r.get::<_, String>(13)?)?,
        updated_at: parse_ts(&r.get::<_, String>(14)?)?,
    })
}

const PROJECT_COLS: &str = "id, name, repo, branch, webhook_secret, live_deployment_id, created_at";

fn project_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        repo: r.get(2)?,
        branch: r.get(3)?,
        webhook_secret: r.get(4)?,
        live_deployment_id: r.get(5)?,
        created_at: parse_ts(&r.get::<_, String>(6)?)?,
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    let last: Option<String> = r.get(4)?;
    Ok(ApiToken {
        id: r.get(0)?,
        name: r.get(1)?,
        role: parse_col(&r.get::<_, String>(2)?)?,
        created_at: parse_ts(&r.get::<_, String>(3)?)?,
        last_used_at: last.as_deref().map(parse_ts).transpose()?,
        project_id: r.get(5)?,
    })
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let from: Option<String> = r.get(5)?;
    Ok(AuditRecord {
        seq: r.get::<_, i64>(0)? as u64,
        deployment_id: r.get(1)?,
        project_id: r.get(2)?,
        at: parse_ts(&r.get::<_, String>(3)?)?,
        actor: parse_col(&r.get::<_, String>(4)?)?,
        from: from.as_deref().map(parse_col).transpose()?,
        to: parse_col(&r.get::<_, String>(6)?)?,
        reason: r.get(7)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let mut e: Event = json_col(&r.get::<_, String>(1)?)?;
    e.seq = r.get::<_, i64>(0)? as u64;
    e.id = e.seq.to_string();
    Ok(e)
}

/// Events committed by one write transaction, published after the commit.
#[derive(Default)]
struct Outbox {
    events: Vec<Event>,
    deliveries: usize,
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

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(backend)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
    if version == 0 {
        tx.execute_batch(SCHEMA).map_err(backend)?;
    }
    if version < 2 {
        tx.execute_batch(MIGRATION_2).map_err(backend)?;
    }
    if version < 3 {
        tx.execute_batch(MIGRATION_3).map_err(backend)?;
        migrate_secrets(&tx)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(backend)?;
    } else if version > SCHEMA_VERSION {
        return Err(backend(format!(
            "the data dir was written by a newer Bifrost (schema {version}, this build knows {SCHEMA_VERSION})"
        )));
    }
    // The guard's table always mirrors the code's table.
    exec(&tx, "DELETE FROM allowed_transitions", []).map_err(backend)?;
    for (from, to, _) in TRANSITIONS {
        exec(
            &tx,
            "INSERT INTO allowed_transitions (from_status, to_status) VALUES (?1, ?2)",
            params![from.as_str(), to.as_str()],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    Ok(())
}

/// Schema 3's data step: each old (global) secret goes to every project
/// whose deployments referenced it, so running apps keep their values;
/// one nobody referenced is kept unscoped (listed, never resolved). The
/// values are still plaintext here; [`SqliteStore::seal_plaintext`] seals
/// them once the platform has its key.
fn migrate_secrets(tx: &Connection) -> StoreResult<()> {
    let old: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare("SELECT name, value, updated_at FROM secrets").map_err(backend)?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?
    };
    let mut users: std::collections::BTreeSet<(String, String)> = Default::default();
    {
        let mut stmt =
            tx.prepare("SELECT project_id, config FROM deployments WHERE config IS NOT NULL").map_err(backend)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(backend)?;
        for row in rows {
            let (project_id, config) = row.map_err(backend)?;
            let Ok(snapshot) = serde_json::from_str::<bifrost_core::domain::ConfigSnapshot>(&config) else { continue };
            for v in snapshot.config.env.values() {
                if let bifrost_core::config::EnvValue::Secret { secret } = v {
                    users.insert((project_id.clone(), secret.clone()));
                }
            }
        }
    }
    for (name, value, at) in old {
        let owners: Vec<&String> = users.iter().filter(|(_, n)| *n == name).map(|(p, _)| p).collect();
        let owners: Vec<String> =
            if owners.is_empty() { vec![String::new()] } else { owners.into_iter().cloned().collect() };
        for project_id in owners {
            exec(
                tx,
                "INSERT OR REPLACE INTO project_secrets (project_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![project_id, name, value, at],
            )
            .map_err(backend)?;
        }
    }
    tx.execute_batch("DROP TABLE secrets").map_err(backend)?;
    Ok(())
}

fn insert_event(tx: &Connection, e: &Event) -> StoreResult<u64> {
    exec(
        tx,
        "INSERT INTO events (type, deployment_id, data, at) VALUES (?1, ?2, ?3, ?4)",
        params![e.kind, e.deployment_id, to_json(e)?, ts(&e.at)],
    )
    .map_err(backend)?;
    Ok(tx.last_insert_rowid() as u64)
}

fn insert_feed_status(tx: &Connection, e: &Event) -> StoreResult<FeedItem> {
    let kind = FeedKind::of_event(e);
    exec(
        tx,
        "INSERT INTO feed (deployment_id, project, at, kind, stream, data) VALUES (?1, ?2, ?3, 'status', NULL, ?4)",
        params![e.deployment_id, e.project, ts(&e.at), to_json(&kind)?],
    )
    .map_err(backend)?;
    Ok(FeedItem {
        seq: tx.last_insert_rowid() as u64,
        deployment_id: e.deployment_id.clone(),
        project: e.project.clone(),
        at: e.at,
        kind,
    })
}

fn feed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FeedItem> {
    let kind: String = r.get(4)?;
    let data: String = r.get(6)?;
    let kind = if kind == "log" {
        FeedKind::Log { stream: r.get::<_, Option<String>>(5)?.unwrap_or_default(), line: data }
    } else {
        json_col(&data)?
    };
    Ok(FeedItem {
        seq: r.get::<_, i64>(0)? as u64,
        deployment_id: r.get(1)?,
        project: r.get(2)?,
        at: parse_ts(&r.get::<_, String>(3)?)?,
        kind,
    })
}

fn get_project_tx(conn: &Connection, name_or_id: &str) -> StoreResult<Project> {
    row(conn, &format!("SELECT {PROJECT_COLS} FROM projects WHERE name = ?1 OR id = ?1"), [name_or_id], project_row)
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("project", name_or_id))
}

fn get_deployment_tx(conn: &Connection, id: &str) -> StoreResult<Deployment> {
    row(conn, &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1"), [id], deployment_row)
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("deployment", id))
}

/// Appends an audit record chained to the deployment's previous one.
fn append_audit(tx: &Connection, d: &Deployment, prev_hash: &str, e: AuditEntry<'_>) -> StoreResult<String> {
    let hash = e.hash(prev_hash, &d.id);
    let AuditEntry { at, actor, from, to, reason } = e;
    exec(
        tx,
        "INSERT INTO audit (deployment_id, project_id, at, actor, from_status, to_status, reason, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            d.id,
            d.project_id,
            ts(at),
            actor.to_string(),
            from.map(Status::as_str),
            to.as_str(),
            reason,
            prev_hash,
            hash
        ],
    )
    .map_err(backend)?;
    Ok(hash)
}

fn transition_tx(tx: &Connection, out: &mut Outbox, t: &Transition) -> StoreResult<Deployment> {
    t.check()?;
    let (cur, audit_head) = row(
        tx,
        &format!("SELECT {DEPLOYMENT_COLS}, audit_head FROM deployments WHERE id = ?1"),
        [&t.deployment_id],
        |r| Ok((deployment_row(r)?, r.get::<_, String>(15)?)),
    )
    .optional()
    .map_err(backend)?
    .ok_or_else(|| StoreError::not_found("deployment", &t.deployment_id))?;
    let at = now();
    let next = t.apply_to(&cur, at)?;
    let retry = next.attempt != cur.attempt;
    let entry = AuditEntry { at: &at, actor: &t.actor, from: Some(cur.status), to: next.status, reason: &t.reason };
    let hash = append_audit(tx, &next, &audit_head, entry)?;
    // The compare-and-set. Patch columns are written only when present, so a
    // plain step does not rewrite the (large) config snapshot.
    let changed = exec(
        tx,
        "UPDATE deployments SET status = ?1, version = ?2, attempt = ?3, reason = ?4, updated_at = ?5,
             audit_head = ?6, config_errors = CASE WHEN ?7 THEN '[]' ELSE config_errors END
         WHERE id = ?8 AND status = ?9 AND version = ?10",
        params![
            next.status.as_str(),
            next.version as i64,
            next.attempt,
            next.reason,
            ts(&at),
            hash,
            retry,
            next.id,
            cur.status.as_str(),
            cur.version as i64
        ],
    )
    .map_err(backend)?;
    if changed != 1 {
        return Err(t.conflict(&cur));
    }
    if let Some(c) = &t.patch.config {
        exec(tx, "UPDATE deployments SET config = ?1 WHERE id = ?2", params![to_json(c)?, next.id]).map_err(backend)?;
    }
    if let Some(e) = &t.patch.config_errors {
        exec(tx, "UPDATE deployments SET config_errors = ?1 WHERE id = ?2", params![to_json(e)?, next.id])
            .map_err(backend)?;
    }
    if let Some(a) = &t.patch.artifact {
        exec(tx, "UPDATE deployments SET artifact = ?1 WHERE id = ?2", params![to_json(a)?, next.id])
            .map_err(backend)?;
    }
    out.events.push(Event::of(&next, Some(cur.status), &t.reason, &t.actor, at));

    if t.patch.make_live {
        let previous: Option<String> = tx
            .prepare_cached("SELECT live_deployment_id FROM projects WHERE id = ?1")
            .map_err(backend)?
            .query_row([&next.project_id], |r| r.get(0))
            .optional()
            .map_err(backend)?
            .flatten();
        exec(tx, "UPDATE projects SET live_deployment_id = ?1 WHERE id = ?2", params![next.id, next.project_id])
            .map_err(backend)?;
        // A previous live deployment that cannot be read fails the
        // transaction (as in every store): it is retried, not half-applied.
        let old = match previous.filter(|p| *p != next.id) {
            Some(prev) => match get_deployment_tx(tx, &prev) {
                Ok(old) => Some(old),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        if let Some(sup) = decide::replace_live(&next.id, old.as_ref().map(|o| (o.id.as_str(), o.status)), &t.actor) {
            transition_tx(tx, out, &sup)?;
        }
    }
    Ok(next)
}

fn create_deployment_tx(tx: &Connection, out: &mut Outbox, new: &NewDeployment) -> StoreResult<Created> {
    let project = get_project_tx(tx, &new.project)?;
    if let Some(key) = &new.dedupe_key {
        let existing: Option<String> = tx
            .query_row("SELECT deployment_id FROM dedupe WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        if let Some(id) = existing {
            return Ok(Created { deployment: get_deployment_tx(tx, &id)?, duplicate: true, superseded: vec![] });
        }
    }
    let at = now();
    let d = Deployment::queued(new, &project, at);
    let reason = d.reason.clone().unwrap_or_default();

    // Older in-flight deployments of the project give way to this one.
    let in_flight: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT id, status FROM deployments WHERE project_id = ?1 AND status IN ({})",
                sql_list(decide::superseded_by_new)
            ))
            .map_err(backend)?;
        stmt.query_map([&project.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?
    };
    let seen = in_flight
        .iter()
        .map(|(id, status)| Ok((id.as_str(), status.parse::<Status>().map_err(backend)?)))
        .collect::<StoreResult<Vec<_>>>()?;
    let mut superseded = vec![];
    for t in decide::supersede_for_new(&d.id, seen, &new.actor) {
        transition_tx(tx, out, &t)?;
        superseded.push(t.deployment_id);
    }

    exec(
        tx,
        &format!(
            "INSERT INTO deployments ({DEPLOYMENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, '[]', ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            d.id,
            d.project_id,
            d.project,
            d.status.as_str(),
            d.version as i64,
            d.attempt,
            to_json(&d.source)?,
            reason,
            d.artifact.as_ref().map(to_json).transpose()?,
            d.rollback_of,
            d.created_by.to_string(),
            ts(&at),
            ts(&at)
        ],
    ).map_err(backend)?;
    let entry = AuditEntry { at: &at, actor: &new.actor, from: None, to: Status::Queued, reason: &reason };
    let hash = append_audit(tx, &d, "", entry)?;
    exec(tx, "UPDATE deployments SET audit_head = ?1 WHERE id = ?2", params![hash, d.id]).map_err(backend)?;
    if let Some(key) = &new.dedupe_key {
        exec(tx, "INSERT INTO dedupe (key, deployment_id, at) VALUES (?1, ?2, ?3)", params![key, d.id, ts(&at)])
            .map_err(backend)?;
    }
    out.events.push(Event::of(&d, None, &reason, &new.actor, at));
    Ok(Created { deployment: d, duplicate: false, superseded })
}

const HEALTH_COLS: &str = "deployment_id, replica, at_ms, span_s, probe_ok, http_status, latency_ms, cpu_percent,
    rss_bytes, threads, open_fds, error";

fn health_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HealthSample> {
    Ok(HealthSample {
        deployment_id: r.get(0)?,
        replica: r.get(1)?,
        at: chrono::DateTime::from_timestamp_millis(r.get(2)?).unwrap_or_default(),
        span_s: r.get(3)?,
        probe_ok: r.get(4)?,
        http_status: r.get(5)?,
        latency_ms: r.get(6)?,
        cpu_percent: r.get(7)?,
        rss_bytes: r.get::<_, Option<i64>>(8)?.map(|b| b as u64),
        threads: r.get(9)?,
        open_fds: r.get(10)?,
        error: r.get(11)?,
    })
}

fn insert_health(tx: &Connection, h: &HealthSample) -> StoreResult<()> {
    exec(
        tx,
        &format!("INSERT INTO health ({HEALTH_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            h.deployment_id,
            h.replica,
            h.at.timestamp_millis(),
            h.span_s,
            h.probe_ok,
            h.http_status,
            h.latency_ms,
            h.cpu_percent,
            h.rss_bytes.map(|b| b as i64),
            h.threads,
            h.open_fds,
            h.error
        ],
    )
    .map(|_| ())
    .map_err(backend)
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
                    "SELECT seq, deployment_id, project_id, at, actor, from_status, to_status, reason, prev_hash, hash
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
                    "SELECT seq, deployment_id, project_id, at, actor, from_status, to_status, reason, prev_hash, hash
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

/// A delivery the dispatcher should attempt now.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub event: Event,
    pub subscription: String,
    pub function: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

impl SqliteStore {
    /// Pending deliveries due at `now_ms`, oldest event first.
    pub fn due_deliveries(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<DueDelivery>> {
        self.inner.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT e.seq, e.data, d.subscription, d.function, d.attempts
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ?1
                 ORDER BY d.event_seq LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![now_ms, limit as i64], |r| {
                    Ok(DueDelivery {
                        event: event_row(r)?,
                        subscription: r.get(2)?,
                        function: r.get(3)?,
                        attempts: r.get::<_, i64>(4)? as u32,
                    })
                })
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            Ok(rows)
        })
    }

    /// When the next pending delivery falls due (unix ms), if any.
    pub fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        self.inner.read(|c| {
            row(c, "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'", [], |r| r.get(0))
                .map_err(backend)
        })
    }

    pub fn mark_delivered(&self, event_seq: u64, subscription: &str) -> StoreResult<()> {
        let subscription = subscription.to_string();
        self.inner.write(move |tx, _| {
            exec(
                tx,
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, finished_at = ?3
                 WHERE event_seq = ?1 AND subscription = ?2",
                params![event_seq as i64, subscription, ts(&now())],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    /// Records a failed attempt: retry at `next_ms`, or dead-letter when `dead`.
    pub fn mark_failed(
        &self,
        event_seq: u64,
        subscription: &str,
        error: &str,
        next_ms: i64,
        dead: bool,
    ) -> StoreResult<()> {
        let (subscription, error) = (subscription.to_string(), error.to_string());
        self.inner.write(move |tx, _| {
            exec(
                tx,
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4,
                     state = CASE WHEN ?5 THEN 'dead' ELSE 'pending' END,
                     finished_at = CASE WHEN ?5 THEN ?6 ELSE NULL END
                 WHERE event_seq = ?1 AND subscription = ?2",
                params![event_seq as i64, subscription, error, next_ms, dead, ts(&now())],
            )
            .map_err(backend)?;
            Ok(())
        })
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        self.run(|inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT e.seq, e.data, d.subscription, d.attempts, d.last_error, d.finished_at
                     FROM deliveries d JOIN events e ON e.seq = d.event_seq
                     WHERE d.state = 'dead' ORDER BY d.event_seq",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map([], |r| {
                        let event = event_row(r)?;
                        let subscription: String = r.get(2)?;
                        Ok(DeadLetter {
                            id: format!("{}/{}", event.seq, subscription),
                            subscription,
                            event,
                            attempts: r.get::<_, i64>(3)? as u32,
                            last_error: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            dead_at: parse_ts(&r.get::<_, Option<String>>(5)?.unwrap_or_default())?,
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

    async fn redrive(&self, ids: Option<Vec<String>>) -> StoreResult<usize> {
        self.run(move |inner| {
            let n = inner.write(move |tx, _| {
                let now_ms = now().timestamp_millis();
                match ids {
                    None => Ok(exec(tx,
                        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, finished_at = NULL
                         WHERE state = 'dead'",
                        [now_ms],
                    ).map_err(backend)?),
                    Some(ids) => {
                        let mut n = 0;
                        for id in ids {
                            let (seq, sub) = id
                                .split_once('/')
                                .and_then(|(s, sub)| Some((s.parse::<i64>().ok()?, sub.to_string())))
                                .ok_or_else(|| StoreError::Invalid(format!("dead letter id {id:?} must look like <seq>/<subscription>")))?;
                            let changed = exec(tx,
                                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, finished_at = NULL
                                 WHERE event_seq = ?2 AND subscription = ?3 AND state = 'dead'",
                                params![now_ms, seq, sub],
                            ).map_err(backend)?;
                            if changed == 0 {
                                return Err(StoreError::not_found("dead letter", id));
                            }
                            n += changed;
                        }
                        Ok(n)
                    }
                }
            })?;
            if n > 0 {
                inner.deliveries_ready.notify_one();
            }
            Ok(n)
        })
        .await
    }
}
