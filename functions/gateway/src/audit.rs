//! The audit trail as a whole: `verify` checks every deployment's hash
//! chain, the global anchor over all of them and each policy's versions
//! (tampering behind the platform's back shows here).

use axum::Json;
use axum::extract::{Query, State};
use bifrost_core::StoreResult;
use bifrost_core::domain::AuditRecord;
use bifrost_core::ports::Store;
use bifrost_policy::Gate;
use serde::Deserialize;

use super::AppState;
use super::auth::Admin;
use super::error::ApiResult;
use super::wire::*;

/// Every audit record, oldest first (read newest first, a page at a time).
pub async fn all_records(store: &dyn Store) -> StoreResult<Vec<AuditRecord>> {
    let mut out = vec![];
    let mut before = None;
    loop {
        let page = store.audit(before, 1000).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        let n = page.len();
        out.extend(page);
        if n < 1000 {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VerifyParams {
    /// A head anchor kept from an earlier check: it must still be in the trail.
    pub head: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", params(VerifyParams),
    responses((status = 200, body = AuditVerifyOut, description = "The check; `ok: false` lists what broke")),
    security(("token" = ["admin"])))]
pub async fn verify(
    State(s): State<AppState>,
    _caller: Admin,
    Query(p): Query<VerifyParams>,
) -> ApiResult<Json<AuditVerifyOut>> {
    let records = all_records(&*s.ctx.store).await?;
    let mut policies = vec![];
    for g in Gate::ALL {
        policies.push(s.ctx.store.policy_versions(g.name()).await?);
    }
    let c = bifrost_core::audit::verify(&records, &policies, p.head.as_deref().filter(|h| !h.is_empty()));
    if !c.problems.is_empty() {
        tracing::error!(problems = c.problems.len(), first = %c.problems[0], "the audit trail does not verify");
    }
    Ok(Json(AuditVerifyOut {
        ok: c.problems.is_empty(),
        records: c.records,
        deployments: c.deployments,
        policy_versions: c.policy_versions,
        head: c.head,
        problems: c.problems,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReportParams {
    /// Only this project (name or id).
    pub project: Option<String>,
    /// Records since this time (RFC 3339); default: the last 24 hours.
    pub since: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit/report", tag = "audit", params(ReportParams),
    responses((status = 200, body = AuditReportOut, description = "The report as GitHub-flavoured Markdown"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("token" = ["viewer"])))]
pub async fn report(
    State(s): State<AppState>,
    caller: super::auth::Viewer,
    Query(p): Query<ReportParams>,
) -> ApiResult<Json<AuditReportOut>> {
    let since = match &p.since {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&chrono::Utc)).map_err(|e| {
            super::error::ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("since {t:?} is not an RFC 3339 time: {e}"),
            )
        })?,
        None => bifrost_core::domain::now() - chrono::Duration::hours(24),
    };
    let project = match &p.project {
        Some(name) => Some(super::api::project_for(&s, &caller, name).await?),
        None => None,
    };
    let projects: std::collections::BTreeMap<String, String> =
        s.ctx.store.list_projects().await?.into_iter().map(|p| (p.id, p.name)).collect();
    let all = all_records(&*s.ctx.store).await?;
    // The chain is checked on everything (a report says whether to trust it),
    // shown for what the caller may see.
    let mut policies = vec![];
    for g in Gate::ALL {
        policies.push(s.ctx.store.policy_versions(g.name()).await?);
    }
    let check = bifrost_core::audit::verify(&all, &policies, None);
    let records: Vec<&AuditRecord> = all
        .iter()
        .filter(|r| r.at >= since && caller.0.0.reaches(&r.project_id))
        .filter(|r| project.as_ref().is_none_or(|p| p.id == r.project_id))
        .collect();
    let policy_changes: Vec<_> = policies.iter().flatten().filter(|v| v.at >= since).collect();
    let scope = project.as_ref().map(|p| p.name.clone());
    let markdown = crate::report::markdown(&crate::report::Input {
        generated: bifrost_core::domain::now(),
        since,
        project: scope.as_deref(),
        records: &records,
        projects: &projects,
        policy_changes: &policy_changes,
        verified: check.problems.is_empty(),
        problems: check.problems.len(),
        // Policy changes are platform-wide: only an unlimited token sees them.
        show_policies: caller.0.0.project_id.is_none(),
    });
    Ok(Json(AuditReportOut { since: rfc3339(&since), project: scope, records: records.len(), markdown }))
}
