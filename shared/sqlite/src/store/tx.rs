//! What one write transaction does: append events and audit records,
//! apply a transition, create a deployment (with what it supersedes), record
//! health. Callers hold the writer and commit.

use super::*;

/// Events committed by one write transaction, published after the commit.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) events: Vec<Event>,
    pub(super) deliveries: usize,
}

pub(super) fn insert_event(tx: &Connection, e: &Event) -> StoreResult<u64> {
    exec(
        tx,
        "INSERT INTO events (type, deployment_id, data, at) VALUES (?1, ?2, ?3, ?4)",
        params![e.kind, e.deployment_id, to_json(e)?, ts(&e.at)],
    )
    .map_err(backend)?;
    Ok(tx.last_insert_rowid() as u64)
}

pub(super) fn insert_feed_status(tx: &Connection, e: &Event) -> StoreResult<FeedItem> {
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

pub(super) fn get_project_tx(conn: &Connection, name_or_id: &str) -> StoreResult<Project> {
    row(conn, &format!("SELECT {PROJECT_COLS} FROM projects WHERE name = ?1 OR id = ?1"), [name_or_id], project_row)
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("project", name_or_id))
}

pub(super) fn get_deployment_tx(conn: &Connection, id: &str) -> StoreResult<Deployment> {
    row(conn, &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1"), [id], deployment_row)
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("deployment", id))
}

/// Appends an audit record chained to the deployment's previous one.
pub(super) fn append_audit(tx: &Connection, d: &Deployment, prev_hash: &str, e: AuditEntry<'_>) -> StoreResult<String> {
    let hash = e.hash(prev_hash, &d.id);
    let AuditEntry { at, actor, from, to, reason, evidence } = e;
    // The global anchor follows the newest record's (none before anchors existed).
    let prev_anchor: Option<String> = tx
        .query_row("SELECT anchor FROM audit ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
        .optional()
        .map_err(backend)?
        .flatten();
    let anchor = bifrost_core::audit::anchor(prev_anchor.as_deref().unwrap_or(""), &hash);
    exec(
        tx,
        "INSERT INTO audit (deployment_id, project_id, at, actor, from_status, to_status, reason, prev_hash, hash, evidence, anchor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            d.id,
            d.project_id,
            ts(at),
            actor.to_string(),
            from.map(Status::as_str),
            to.as_str(),
            reason,
            prev_hash,
            hash,
            evidence,
            anchor
        ],
    )
    .map_err(backend)?;
    Ok(hash)
}

pub(super) fn transition_tx(tx: &Connection, out: &mut Outbox, t: &Transition) -> StoreResult<Deployment> {
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
    let entry = t.audit_entry(cur.status, &at);
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

pub(super) fn create_deployment_tx(tx: &Connection, out: &mut Outbox, new: &NewDeployment) -> StoreResult<Created> {
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
    let entry =
        AuditEntry { at: &at, actor: &new.actor, from: None, to: Status::Queued, reason: &reason, evidence: None };
    let hash = append_audit(tx, &d, "", entry)?;
    exec(tx, "UPDATE deployments SET audit_head = ?1 WHERE id = ?2", params![hash, d.id]).map_err(backend)?;
    if let Some(key) = &new.dedupe_key {
        exec(tx, "INSERT INTO dedupe (key, deployment_id, at) VALUES (?1, ?2, ?3)", params![key, d.id, ts(&at)])
            .map_err(backend)?;
    }
    out.events.push(Event::of(&d, None, &reason, &new.actor, at));
    Ok(Created { deployment: d, duplicate: false, superseded })
}

pub(super) fn insert_health(tx: &Connection, h: &HealthSample) -> StoreResult<()> {
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
