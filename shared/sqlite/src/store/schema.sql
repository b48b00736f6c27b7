-- Bifrost embedded store, schema version 1.
-- The status guard below is filled from shared::status::TRANSITIONS at every open.

CREATE TABLE projects (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    repo               TEXT,
    repo_key           TEXT,
    branch             TEXT NOT NULL,
    webhook_secret     TEXT,
    live_deployment_id TEXT,
    created_at         TEXT NOT NULL
);

CREATE TABLE deployments (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL,
    project_name  TEXT NOT NULL,
    status        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    source        TEXT NOT NULL,      -- JSON Source
    config        TEXT,               -- JSON ConfigSnapshot
    config_errors TEXT NOT NULL DEFAULT '[]',
    reason        TEXT,
    artifact      TEXT,               -- JSON
    rollback_of   TEXT,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    audit_head    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX deployments_by_project ON deployments(project_id, created_at DESC);
-- Superseding looks up a project's in-flight deployments on every push.
CREATE INDEX deployments_by_project_status ON deployments(project_id, status);

CREATE TABLE allowed_transitions (
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    PRIMARY KEY (from_status, to_status)
) WITHOUT ROWID;

-- Even hand-written SQL cannot move a deployment along a transition the
-- table does not list, nor change status without bumping the version.
CREATE TRIGGER deployments_status_guard
BEFORE UPDATE OF status ON deployments
FOR EACH ROW
WHEN NEW.status IS NOT OLD.status AND NOT EXISTS (
    SELECT 1 FROM allowed_transitions
    WHERE from_status = OLD.status AND to_status = NEW.status)
BEGIN
    SELECT RAISE(ABORT, 'bifrost: transition not allowed by the state machine');
END;

CREATE TRIGGER deployments_version_guard
BEFORE UPDATE OF status ON deployments
FOR EACH ROW
WHEN NEW.status IS NOT OLD.status AND NEW.version <= OLD.version
BEGIN
    SELECT RAISE(ABORT, 'bifrost: a status change must bump the version');
END;

CREATE TRIGGER deployments_insert_guard
BEFORE INSERT ON deployments
FOR EACH ROW
WHEN NEW.status IS NOT 'queued'
BEGIN
    SELECT RAISE(ABORT, 'bifrost: deployments are created queued');
END;

-- Append-only, hash-chained per deployment.
CREATE TABLE audit (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX audit_by_deployment ON audit(deployment_id, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'bifrost: the audit trail is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'bifrost: the audit trail is append-only'); END;

-- The outbox: every event, kept (it is also the SSE history).
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- also the message id
    type          TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    data          TEXT NOT NULL,      -- JSON Event
    at            TEXT NOT NULL
);
CREATE INDEX events_by_deployment ON events(deployment_id, seq);

-- What users watch: status changes and log lines in one sequence (SSE ids).
CREATE TABLE feed (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL,
    project       TEXT NOT NULL,
    at            TEXT NOT NULL,
    kind          TEXT NOT NULL,      -- status | log
    stream        TEXT,               -- for logs: build, replica-N, platform
    data          TEXT NOT NULL       -- the log line, or the status change as JSON
);
CREATE INDEX feed_by_deployment ON feed(deployment_id, seq);

-- One row per (event, subscription): the push delivery state.
CREATE TABLE deliveries (
    event_seq       INTEGER NOT NULL REFERENCES events(seq),
    subscription    TEXT NOT NULL,
    function        TEXT NOT NULL,
    state           TEXT NOT NULL,    -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL, -- unix ms
    last_error      TEXT,
    finished_at     TEXT,
    PRIMARY KEY (event_seq, subscription)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries(state, next_attempt_at);

-- Webhook deliveries (X-GitHub-Delivery) already turned into deployments.
CREATE TABLE dedupe (
    key           TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    at            TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

-- Values for [env] entries written { secret = "name" }.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
