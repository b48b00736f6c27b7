//! The schema: the file a new store starts from, the migrations an older
//! one goes through, and how every connection is opened.

use super::*;

pub(super) const SCHEMA: &str = include_str!("schema.sql");
pub(super) const SCHEMA_VERSION: i64 = 10;

/// Schema 4: a project's fault injection (JSON), `bifrost chaos`.
pub(super) const MIGRATION_4: &str = "ALTER TABLE projects ADD COLUMN chaos TEXT;";

/// Schema 5: a project's traffic split (JSON), `bifrost traffic split`.
pub(super) const MIGRATION_5: &str = "ALTER TABLE projects ADD COLUMN split TEXT;";

/// Schema 6: policy versions (`bifrost policies`), append-only like the
/// audit trail; each row is the whole version as JSON, hash-chained. Audit
/// records keep what a step was decided on (a policy decision) and the
/// global anchor (`bifrost_core::audit`).
pub(super) const MIGRATION_6: &str = "
ALTER TABLE audit ADD COLUMN evidence TEXT;
ALTER TABLE audit ADD COLUMN anchor TEXT;
ALTER TABLE projects ADD COLUMN rollout TEXT;
CREATE TABLE policies (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TRIGGER policies_no_update BEFORE UPDATE ON policies
BEGIN SELECT RAISE(ABORT, 'bifrost: policy versions are append-only'); END;
CREATE TRIGGER policies_no_delete BEFORE DELETE ON policies
BEGIN SELECT RAISE(ABORT, 'bifrost: policy versions are append-only'); END;
";

/// Schema 7: routers' cumulative counts per deployment (what a canary's
/// analysis reads when the routers run apart from the platform), the whole
/// tally as JSON beside the requests it is compared on.
pub(super) const MIGRATION_7: &str = "
CREATE TABLE tallies (
    router        TEXT NOT NULL,
    started_ms    INTEGER NOT NULL,
    deployment_id TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    doc           TEXT NOT NULL,
    PRIMARY KEY (deployment_id, router, started_ms)
) WITHOUT ROWID;
";

/// Schema 8: analytics. Per-minute traffic of serving deployments (the
/// gateway's sampler), one result per (project, window) — the key is what
/// makes a second run of a window keep nothing — and small settings (the
/// price table, the schedule's progress).
pub(super) const MIGRATION_8: &str = "
CREATE TABLE traffic_minutes (
    project_id    TEXT NOT NULL,
    minute_ms     INTEGER NOT NULL,
    deployment_id TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    errors        INTEGER NOT NULL,
    p99_ms        REAL,
    PRIMARY KEY (project_id, minute_ms, deployment_id)
) WITHOUT ROWID;
CREATE TABLE analytics (
    project_id TEXT NOT NULL,
    start_ms   INTEGER NOT NULL,
    end_ms     INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (project_id, start_ms, end_ms)
) WITHOUT ROWID;
CREATE TABLE analytics_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Schema 9: the time series are pruned by age (the retention), so each
/// is found by its time alone.
pub(super) const MIGRATION_9: &str = "
CREATE INDEX traffic_minutes_by_minute ON traffic_minutes(minute_ms);
CREATE INDEX analytics_by_start ON analytics(start_ms);
";
/// Schema 10: tallies are pruned by when they were last reported (the
/// retention), so each keeps that time beside its JSON; the tallies of
/// an older store take it from their JSON (`at`, RFC 3339).
pub(super) const MIGRATION_10: &str = "
ALTER TABLE tallies ADD COLUMN at_ms INTEGER NOT NULL DEFAULT 0;
UPDATE tallies SET at_ms =
    COALESCE(CAST(ROUND((julianday(json_extract(doc, '$.at')) - 2440587.5) * 86400000.0) AS INTEGER), 0);
CREATE INDEX tallies_by_at ON tallies(at_ms);
";
/// Schema 2: sidecar health reports.
pub(super) const MIGRATION_2: &str = "
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
pub(super) const MIGRATION_3: &str = "
CREATE TABLE project_secrets (
    project_id TEXT NOT NULL,       -- '' : kept from before secrets had projects; never resolved
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,       -- sealed:v1:... (the key is not in this database)
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
) WITHOUT ROWID;
ALTER TABLE tokens ADD COLUMN project_id TEXT;
";
pub(super) fn open_connection(path: &Path) -> StoreResult<Connection> {
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

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
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
    if version < 4 {
        tx.execute_batch(MIGRATION_4).map_err(backend)?;
    }
    if version < 5 {
        tx.execute_batch(MIGRATION_5).map_err(backend)?;
    }
    if version < 6 {
        tx.execute_batch(MIGRATION_6).map_err(backend)?;
    }
    if version < 7 {
        tx.execute_batch(MIGRATION_7).map_err(backend)?;
    }
    if version < 8 {
        tx.execute_batch(MIGRATION_8).map_err(backend)?;
    }
    if version < 9 {
        tx.execute_batch(MIGRATION_9).map_err(backend)?;
    }
    if version < 10 {
        tx.execute_batch(MIGRATION_10).map_err(backend)?;
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
pub(super) fn migrate_secrets(tx: &Connection) -> StoreResult<()> {
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
