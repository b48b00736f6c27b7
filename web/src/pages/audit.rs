//! The audit trail: every deployment's transitions, newest first, with
//! who did it and why; each record is hash-chained per deployment.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;

use crate::components::{Empty, ErrorState, Loading};
use crate::model::{AuditEntry, clock, short_id};

const PAGE: usize = 100;

#[server(prefix = "/ui/api", endpoint = "audit")]
pub async fn audit(before: Option<u64>) -> Result<Vec<AuditEntry>, ServerFnError> {
    use bifrost_api::{AuditOut, ProjectOut};
    let s = crate::server::Session::current()?;
    let path = match before {
        Some(b) => format!("/api/v1/audit?limit={PAGE}&before={b}"),
        None => format!("/api/v1/audit?limit={PAGE}"),
    };
    let (records, projects) =
        futures::try_join!(s.get::<Vec<AuditOut>>(&path), s.get::<Vec<ProjectOut>>("/api/v1/projects"))?;
    let names: std::collections::HashMap<String, String> = projects.into_iter().map(|p| (p.id, p.name)).collect();
    Ok(records
        .into_iter()
        .map(|r| {
            let t = r.transition;
            AuditEntry {
                seq: t.seq,
                at: t.at,
                actor: t.actor,
                deployment_id: r.deployment_id,
                // A deleted project keeps its trail; show its id.
                project: names.get(&r.project_id).cloned().unwrap_or(r.project_id),
                from: t.from,
                to: t.to,
                reason: t.reason,
                hash: t.hash,
            }
        })
        .collect())
}

#[component]
pub fn AuditPage() -> impl IntoView {
    let query = use_query_map();
    let before = move || query.read().get("before").and_then(|b| b.parse::<u64>().ok());
    let data = Resource::new(before, audit);
    view! {
        <div class="page-head"><h1>"Audit trail"</h1></div>
        <Transition fallback=|| view! { <Loading what="the audit trail"/> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(list) if list.is_empty() => view! {
                        <Empty title="Nothing recorded yet">
                            <p>"Every state change of every deployment is recorded here, with who made it and why."</p>
                        </Empty>
                    }.into_any(),
                    Ok(list) => {
                        let older = (list.len() == PAGE).then(|| list.last().map(|r| r.seq)).flatten();
                        view! {
                            <table class="list" data-testid="audit">
                                <thead><tr><th>"When"</th><th>"Project"</th><th>"Deployment"</th><th>"Change"</th><th>"Who"</th><th>"Why"</th><th>"Hash"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|r| view! {
                                        <tr>
                                            <td class="nowrap">{clock(&r.at)}</td>
                                            <td>{r.project.clone()}</td>
                                            <td><A href=format!("/deployments/{}", r.deployment_id)>{short_id(&r.deployment_id).to_string()}</A></td>
                                            <td class="mono">{r.from.clone().unwrap_or_else(|| "·".into())}" → "{r.to.clone()}</td>
                                            <td>{r.actor.clone()}</td>
                                            <td class="reason">{r.reason.clone()}</td>
                                            <td class="mono muted" title=r.hash.clone()>{r.hash.get(..10).unwrap_or_default().to_string()}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                            {older.map(|b| view! { <p><A href=format!("/audit?before={b}")>"Older →"</A></p> })}
                        }.into_any()
                    }
                    Err(e) => view! { <ErrorState error=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}
