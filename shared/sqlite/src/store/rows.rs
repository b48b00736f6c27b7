//! Rows to domain values and back: column lists, row readers and the small
//! conversions (timestamps, JSON columns) every query uses.

use super::*;

/// Token columns, in `token_row`'s order.
pub(super) const TOKEN_COLS: &str = "id, name, role, created_at, last_used_at, project_id";

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn ts(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(super) fn parse_ts(s: &str) -> rusqlite::Result<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

pub(super) fn parse_col<T: std::str::FromStr>(s: &str) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.to_string().into()))
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// `execute` through the statement cache (parsing SQL is a large part of a
/// small transaction's cost).
pub(super) fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

pub(super) fn row<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

/// `'queued', 'validating', ...`: the statuses matching `pred`, for an
/// index-friendly `IN (...)` (a `NOT IN` would scan every row of a project).
pub(super) fn sql_list(pred: impl Fn(Status) -> bool) -> String {
    let names: Vec<String> =
        Status::ALL.into_iter().filter(|s| pred(*s)).map(|s| format!("'{}'", s.as_str())).collect();
    names.join(", ")
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(backend)
}

pub(super) const DEPLOYMENT_COLS: &str = "id, project_id, project_name, status, version, attempt, source, config, \
     config_errors, reason, artifact, rollback_of, created_by, created_at, updated_at";

pub(super) fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
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

pub(super) const PROJECT_COLS: &str =
    "id, name, repo, branch, webhook_secret, live_deployment_id, created_at, chaos, split, rollout";

pub(super) fn project_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        repo: r.get(2)?,
        branch: r.get(3)?,
        webhook_secret: r.get(4)?,
        live_deployment_id: r.get(5)?,
        created_at: parse_ts(&r.get::<_, String>(6)?)?,
        chaos: r.get::<_, Option<String>>(7)?.map(|c| json_col(&c)).transpose()?,
        split: r.get::<_, Option<String>>(8)?.map(|c| json_col(&c)).transpose()?,
        rollout: r.get::<_, Option<String>>(9)?.map(|c| json_col(&c)).transpose()?,
    })
}

pub(super) fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
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

pub(super) fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
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
        evidence: r.get(10)?,
        anchor: r.get(11)?,
    })
}

pub(super) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let mut e: Event = json_col(&r.get::<_, String>(1)?)?;
    e.seq = r.get::<_, i64>(0)? as u64;
    e.id = e.seq.to_string();
    Ok(e)
}

pub(super) fn feed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FeedItem> {
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

pub(super) const HEALTH_COLS: &str =
    "deployment_id, replica, at_ms, span_s, probe_ok, http_status, latency_ms, cpu_percent,
    rss_bytes, threads, open_fds, error";

pub(super) fn health_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HealthSample> {
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
