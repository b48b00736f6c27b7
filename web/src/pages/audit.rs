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
    use serde_json::Value;
    let s = crate::server::Session::current()?;
    let path = match before {
        Some(b) => format!("/api/v1/audit?limit={PAGE}&before={b}"),
        None => format!("/api/v1/audit?limit={PAGE}"),
    };
    let (records, projects) = futures::try_join!(s.get::<Value>(&path), s.get::<Value>("/api/v1/projects"))?;
    let names: std::collections::HashMap<String, String> = projects
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.get("id")?.as_str()?.to_string(), p.get("name")?.as_str()?.to_string())))
        .collect();
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(records
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let project_id = text(r, "project_id");
            AuditEntry {
                seq: r.get("seq").and_then(Value::as_u64).unwrap_or_default(),
                at: text(r, "at"),
                actor: text(r, "actor"),
                deployment_id: text(r, "deployment_id"),
                // A deleted project keeps its trail; show its id.
                project: names.get(&project_id).cloned().unwrap_or(project_id),
                from: r.get("from").and_then(Value::as_str).map(str::to_string),
                to: text(r, "to"),
                reason: text(r, "reason"),
                hash: text(r, "hash"),
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
