//! One project: its deployment history, deploying a ref, rolling back.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};

use crate::components::{ConfirmButton, Empty, ErrorState, Loading, StatusBadge, error_text};
use crate::live::{LiveBadge, use_feed};
use crate::model::{ProjectPage as Page, clock, short_id};

#[server(prefix = "/ui/api", endpoint = "project")]
pub async fn project_page(name: String, limit: Option<usize>) -> Result<Page, ServerFnError> {
    use crate::server::{Session, convert, seg};
    use bifrost_api::{DeploymentOut, ProjectOut};
    let s = Session::current()?;
    let n = seg(&name);
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    let (me, p, list) = futures::try_join!(
        s.me(),
        s.get::<ProjectOut>(format!("/api/v1/projects/{n}")),
        s.get::<Vec<DeploymentOut>>(format!("/api/v1/projects/{n}/deployments?limit={limit}")),
    )?;
    let deployments: Vec<_> = list.iter().map(convert::deployment).collect();
    let live = deployments.iter().find(|d| Some(&d.id) == p.live_deployment_id.as_ref()).cloned();
    Ok(Page {
        me,
        project: crate::model::Project { live, ..convert::project(&p) },
        deployments,
        webhook_url: p.webhook_url.clone(),
    })
}

/// The traffic panel: what serves the app and its last minute, the split,
/// chaos, and the routing scripts with their errors.
#[server(prefix = "/ui/api", endpoint = "project-traffic")]
pub async fn project_traffic(name: String) -> Result<crate::model::ProjectTraffic, ServerFnError> {
    use crate::model::{ProjectTraffic, ScriptRow, Serving};
    use crate::server::{Session, convert, seg};
    use bifrost_api::{ProjectTrafficOut, ScriptsOut};
    let s = Session::current()?;
    let n = seg(&name);
    let (t, scripts) = futures::try_join!(
        s.get::<ProjectTrafficOut>(format!("/api/v1/projects/{n}/traffic")),
        s.get::<ScriptsOut>(format!("/api/v1/projects/{n}/scripts")),
    )?;
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    let mut rows: Vec<ScriptRow> = scripts
        .deployment_script
        .iter()
        .map(|d| ScriptRow {
            name: d.path.clone(),
            state: d.state.clone(),
            sha256: short(&d.sha256),
            by: format!("deployment {}", crate::model::short_id(&d.deployment_id)),
            errors: d.health.errors,
            last_error: d.health.last_error.clone(),
        })
        .collect();
    rows.extend(scripts.versions.iter().rev().map(|v| ScriptRow {
        name: format!("v{}", v.version),
        state: v.state.clone(),
        sha256: short(&v.sha256),
        by: v.pushed_by.clone(),
        errors: v.health.errors,
        last_error: v.health.last_error.clone(),
    }));
    Ok(ProjectTraffic {
        recorded: t.recorded,
        serving: t
            .serving
            .iter()
            .map(|sv| Serving {
                deployment_id: sv.deployment_id.clone(),
                role: sv.role.clone(),
                share: sv.share,
                recent: sv.recent.as_ref().and_then(convert::traffic_point),
            })
            .collect(),
        chaos: t.chaos.map(|c| c.summary),
        split: t.split.map(|sp| format!("{}% of clients to {} (by {})", sp.weight, sp.deployment, sp.set_by)),
        scripts: rows,
    })
}

/// Deploys a branch, tag or commit; answers the new deployment's id.
#[server(prefix = "/ui/api", endpoint = "deploy")]
pub async fn deploy_ref(project: String, git_ref: String) -> Result<String, ServerFnError> {
    use crate::server::{Session, seg};
    let s = Session::current()?;
    s.require("deployer", "deploying").await?;
    let body = match git_ref.trim() {
        "" => serde_json::json!({}),
        r => serde_json::json!({ "ref": r }),
    };
    let created: bifrost_api::CreatedDeployment =
        s.send(axum::http::Method::POST, &format!("/api/v1/projects/{}/deployments", seg(&project)), body).await?;
    Ok(created.deployment.id)
}

/// Makes an earlier healthy build live again (the newest one when `to` is empty).
#[server(prefix = "/ui/api", endpoint = "rollback")]
pub async fn rollback(project: String, to: Option<String>) -> Result<String, ServerFnError> {
    use crate::server::{Session, seg};
    let s = Session::current()?;
    s.require("deployer", "rolling back").await?;
    let body = match to.filter(|t| !t.is_empty()) {
        Some(t) => serde_json::json!({ "to": t }),
        None => serde_json::json!({}),
    };
    let created: bifrost_api::CreatedDeployment =
        s.send(axum::http::Method::POST, &format!("/api/v1/projects/{}/rollback", seg(&project)), body).await?;
    Ok(created.deployment.id)
}

#[component]
pub fn ProjectPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let data = Resource::new(name, |n| project_page(n, None));
    let conn = use_feed(
        "/ui/events".into(),
        move |kind, ev| {
            if kind == "status" && ev.project == name() {
                data.refetch();
            }
        },
        move || data.refetch(),
    );
    view! {
        <Transition fallback=|| view! { <Loading what="the project"/> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(page) => view! { <ProjectView page conn/> }.into_any(),
                    Err(e) => view! { <ErrorState error=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn ProjectView(page: Page, conn: ReadSignal<crate::live::Conn>) -> impl IntoView {
    let p = page.project.clone();
    let can_deploy = page.me.can_deploy();
    let has_healthy = page.deployments.iter().any(|d| d.status == "healthy" || d.status == "superseded");
    view! {
        <div class="page-head">
            <h1>{p.name.clone()}</h1>
            <LiveBadge conn/>
        </div>
        <dl class="facts">
            <dt>"URL"</dt><dd><a href=p.url.clone() target="_blank" rel="noopener">{p.url.clone()}</a></dd>
            <dt>"Live"</dt>
            <dd>{match p.live.clone() {
                Some(d) => view! { <A href=format!("/deployments/{}", d.id)>{d.source.label.clone()}</A> }.into_any(),
                None => view! { <span class="muted">"nothing live yet"</span> }.into_any(),
            }}</dd>
            <dt>"Repository"</dt><dd>{p.repo.clone().unwrap_or_else(|| "uploads only".into())}" · branch "{p.branch.clone()}</dd>
            <dt>"Webhook"</dt><dd><code>{page.webhook_url.clone()}</code></dd>
        </dl>
        {can_deploy.then(|| view! { <Actions project=p.name.clone() branch=p.branch.clone() has_healthy/> })}
        <TrafficPanel project=p.name.clone()/>
        <h2>"Deployments"</h2>
        {if page.deployments.is_empty() {
            view! {
                <Empty title="No deployments yet">
                    <p>"Push to "<code>{p.branch.clone()}</code>", or deploy a ref above."</p>
                </Empty>
            }.into_any()
        } else {
            view! {
                <table class="list" data-testid="deployments">
                    <thead><tr><th>"Deployment"</th><th>"Status"</th><th>"Source"</th><th>"Created"</th><th>"By"</th><th>"Why"</th></tr></thead>
                    <tbody>
                        {page.deployments.clone().into_iter().map(|d| {
                            let (row_id, short) = (d.id.clone(), short_id(&d.id).to_string());
                            view! {
                            <tr data-id=row_id>
                                <td><A href=format!("/deployments/{}", d.id)>{short}</A></td>
                                <td><StatusBadge status=d.status.clone()/></td>
                                <td>{d.source.label.clone()}</td>
                                <td class="nowrap">{clock(&d.created_at)}</td>
                                <td>{d.created_by.clone()}</td>
                                <td class="reason">{d.reason.clone().unwrap_or_default()}</td>
                            </tr>
                        }}).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
    }
}

#[component]
fn Actions(project: String, branch: String, has_healthy: bool) -> impl IntoView {
    let deploy = ServerAction::<DeployRef>::new();
    let back = ServerAction::<Rollback>::new();
    let git_ref = RwSignal::new(String::new());
    let navigate = use_navigate();
    let nav2 = navigate.clone();
    Effect::new(move |_| {
        if let Some(Ok(id)) = deploy.value().get() {
            navigate(&format!("/deployments/{id}"), Default::default());
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(id)) = back.value().get() {
            nav2(&format!("/deployments/{id}"), Default::default());
        }
    });
    let (p1, p2) = (project.clone(), project.clone());
    let error = move || deploy.value().get().and_then(Result::err).or_else(|| back.value().get().and_then(Result::err));
    view! {
        <div class="actions" data-testid="actions">
            <input type="text" placeholder=format!("ref (default: {branch})") aria-label="Ref to deploy"
                data-testid="deploy-ref" prop:value=move || git_ref.get()
                on:input=move |ev| git_ref.set(event_target_value(&ev))/>
            <ConfirmButton label="Deploy" name="deploy"
                question=Signal::derive(move || {
                    let r = git_ref.get();
                    format!("Deploy {} of {}?", if r.is_empty() { "the branch head".to_string() } else { r }, p1)
                })
                pending=deploy.pending()
                on_confirm=Callback::new(move |_| {
                    deploy.dispatch(DeployRef { project: p2.clone(), git_ref: git_ref.get_untracked() });
                })/>
            {has_healthy.then(|| view! {
                <ConfirmButton label="Roll back" name="rollback" danger=true
                    question="Make the previous healthy build live again?"
                    pending=back.pending()
                    on_confirm=Callback::new(move |_| {
                        back.dispatch(Rollback { project: project.clone(), to: None });
                    })/>
            })}
            {move || error().map(|e| view! { <p class="form-error" role="alert">{error_text(&e)}</p> })}
        </div>
    }
}

/// Rate, errors and p99 per serving deployment, the split, chaos and the
/// routing scripts; read again every 5 seconds.
#[component]
fn TrafficPanel(project: String) -> impl IntoView {
    let name = project.clone();
    let data = Resource::new(move || name.clone(), project_traffic);
    #[cfg(feature = "hydrate")]
    {
        if let Ok(handle) = set_interval_with_handle(move || data.refetch(), std::time::Duration::from_secs(5)) {
            on_cleanup(move || handle.clear());
        }
    }
    let fmt = |v: Option<f64>, unit: &str| v.map_or_else(|| "–".to_string(), |v| format!("{v:.1} {unit}"));
    view! {
        <section data-testid="traffic">
            <h2>"Traffic"</h2>
            <Transition fallback=|| view! { <Loading what="traffic"/> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Err(e) => view! { <p class="error">{error_text(&e)}</p> }.into_any(),
                        Ok(t) => view! {
                            {t.chaos.clone().map(|c| view! { <p class="warn" data-testid="chaos">"Chaos: "{c}</p> })}
                            {t.split.clone().map(|sp| view! { <p data-testid="split">"Split: "{sp}</p> })}
                            {(!t.recorded).then(|| view! { <p class="muted">"No traffic counts are configured here (see /metrics on the routers)."</p> })}
                            <table class="list" data-testid="serving">
                                <thead><tr><th>"Deployment"</th><th>"Role"</th><th>"Share"</th><th>"Requests"</th><th>"Errors"</th><th>"p99"</th></tr></thead>
                                <tbody>
                                    {t.serving.clone().into_iter().map(|sv| {
                                        let r = sv.recent.clone();
                                        let (href, short) = (format!("/deployments/{}", sv.deployment_id), short_id(&sv.deployment_id).to_string());
                                        view! {
                                            <tr data-id=sv.deployment_id.clone()>
                                                <td><A href=href>{short}</A></td>
                                                <td>{sv.role.clone()}</td>
                                                <td>{format!("{}%", sv.share)}</td>
                                                <td>{fmt(r.as_ref().map(|r| r.requests_per_s), "req/s")}</td>
                                                <td>{fmt(r.as_ref().map(|r| r.error_pct), "%")}</td>
                                                <td>{fmt(r.as_ref().and_then(|r| r.p99_ms), "ms")}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                            {(!t.scripts.is_empty()).then(|| view! {
                                <h3>"Routing scripts"</h3>
                                <table class="list" data-testid="scripts">
                                    <thead><tr><th>"Script"</th><th>"State"</th><th>"sha256"</th><th>"By"</th><th>"Errors"</th><th>"Last error"</th></tr></thead>
                                    <tbody>
                                        {t.scripts.clone().into_iter().map(|sc| view! {
                                            <tr>
                                                <td>{sc.name.clone()}</td>
                                                <td>{sc.state.clone()}</td>
                                                <td><code>{sc.sha256.clone()}</code></td>
                                                <td>{sc.by.clone()}</td>
                                                <td>{sc.errors}</td>
                                                <td class="reason">{sc.last_error.clone().unwrap_or_default()}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            })}
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}
