//! The audit report (`bifrost audit`): the same Markdown the CLI writes,
//! rendered here — whether the trail verifies, policy violations, mode
//! changes, chaos events, policy changes, who did what, the timeline.
//! Rendered to HTML on the server (the browser gets no Markdown parser);
//! raw HTML in the Markdown is dropped, and the report escapes what apps
//! and users wrote, so nothing in it becomes markup.
//!
//! Read-only pages built on the server share one server function and one
//! component ([`ServerHtml`]): they cost the browser's bundle next to
//! nothing.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;

use crate::components::{ErrorState, Loading};

/// A read-only page's HTML, built on the server: `report` (the last
/// `hours`), `policies`, `cluster`, `analytics`, `analytics:<project>`, or
/// `rollout:<deployment id>`.
#[server(prefix = "/ui/api", endpoint = "server_html")]
pub async fn server_html(page: String, hours: u32) -> Result<String, ServerFnError> {
    let s = crate::server::Session::current()?;
    if let Some(id) = page.strip_prefix("rollout:") {
        return crate::server::rollout::html(&s, id).await;
    }
    if let Some(project) = page.strip_prefix("analytics:") {
        return crate::server::analytics::html(&s, Some(project)).await;
    }
    match page.as_str() {
        "policies" => super::policies::policies_html(&s).await,
        "cluster" => crate::server::cluster::html(&s).await,
        "analytics" => crate::server::analytics::html(&s, None).await,
        _ => {
            let since = std::time::SystemTime::now()
                - std::time::Duration::from_secs(u64::from(hours.clamp(1, 24 * 90)) * 3600);
            let since: chrono::DateTime<chrono::Utc> = since.into();
            let path = format!(
                "/api/v1/audit/report?since={}",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).replace('+', "%2B")
            );
            let out: bifrost_api::AuditReportOut = s.get(&path).await?;
            Ok(crate::server::markdown::to_html(&out.markdown))
        }
    }
}

/// `refresh_s`: asked again that often (0: never).
#[component]
pub fn ServerHtml(#[prop(into)] page: String, #[prop(optional)] refresh_s: u32) -> impl IntoView {
    let query = use_query_map();
    let hours = move || query.read().get("hours").and_then(|h| h.parse::<u32>().ok()).unwrap_or(24);
    // `?saved=N` (the policy editor's save) asks again.
    let key = move || (hours(), query.read().get("saved"));
    let p = page.clone();
    let data = Resource::new(key, move |(h, _)| server_html(p.clone(), h));
    #[cfg(feature = "hydrate")]
    if refresh_s > 0 {
        let every = std::time::Duration::from_secs(u64::from(refresh_s));
        if let Ok(handle) = set_interval_with_handle(move || data.refetch(), every) {
            on_cleanup(move || handle.clear());
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = refresh_s;
    let testid = page.split(':').next().unwrap_or_default().to_string();
    view! {
        <Transition fallback=|| view! { <Loading what="the page"/> }>
            {move || Suspend::new({
                let testid = testid.clone();
                async move {
                match data.await {
                    Ok(html) => view! { <article class="report" data-testid=testid inner_html=html></article> }.into_any(),
                    Err(e) => view! { <ErrorState error=e/> }.into_any(),
                }
            }})}
        </Transition>
    }
}

#[component]
pub fn ReportPage() -> impl IntoView {
    view! {
        <div class="page-head">
            <h1>"Audit report"</h1>
            <span class="muted">
                <A href="/audit/report?hours=24">"24 hours"</A>" · "<A href="/audit/report?hours=168">"7 days"</A>
                " · "<A href="/audit">"the raw trail"</A>
            </span>
        </div>
        <ServerHtml page="report"/>
    }
}

/// The router cluster, as the routers following this gateway report it.
#[component]
pub fn ClusterPage() -> impl IntoView {
    view! {
        <div class="page-head">
            <h1>"Router cluster"</h1>
            <span class="muted">"refreshed every 5 s"</span>
        </div>
        <ServerHtml page="cluster" refresh_s=5/>
    }
}

/// Every project's four keys, cost and anomalies (docs/analytics.md).
#[component]
pub fn AnalyticsPage() -> impl IntoView {
    view! {
        <div class="page-head">
            <h1>"Analytics"</h1>
            <span class="muted">"last 30 days · refreshed every minute"</span>
        </div>
        <ServerHtml page="analytics" refresh_s=60/>
    }
}

/// One project's drill-down.
#[component]
pub fn ProjectAnalyticsPage() -> impl IntoView {
    let params = leptos_router::hooks::use_params_map();
    let name = params.read_untracked().get("name").unwrap_or_default();
    view! {
        <div class="page-head">
            <h1>{name.clone()}" — analytics"</h1>
            <span class="muted"><A href="/analytics">"every project"</A>" · "<A href=format!("/projects/{name}")>"the project"</A></span>
        </div>
        <ServerHtml page=format!("analytics:{name}") refresh_s=60/>
    }
}
