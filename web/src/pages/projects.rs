//! The home page: every project with its live deployment, URL and what is
//! in flight, refreshed live as deployments move.

use leptos::prelude::*;
use leptos_router::components::A;

use crate::components::{Empty, ErrorState, Loading, StatusBadge};
use crate::live::{LiveBadge, use_feed};
use crate::model::{Project, short_id};

#[server(prefix = "/ui/api", endpoint = "projects")]
pub async fn projects() -> Result<Vec<Project>, ServerFnError> {
    use crate::server::{Session, convert, seg};
    use bifrost_api::{DeploymentOut, ProjectOut};
    let s = Session::current()?;
    let list: Vec<ProjectOut> = s.get("/api/v1/projects").await?;
    let cards = list.iter().map(|p| {
        let s = &s;
        async move {
            let newest: Vec<DeploymentOut> =
                s.get(&format!("/api/v1/projects/{}/deployments?limit=1", seg(&p.name))).await?;
            let latest = newest.first().map(convert::deployment);
            let live_id = p.live_deployment_id.clone();
            let live = match (&live_id, &latest) {
                (Some(id), Some(l)) if &l.id == id => Some(l.clone()),
                (Some(id), _) => {
                    let d: DeploymentOut = s.get(&format!("/api/v1/deployments/{}", seg(id))).await?;
                    Some(convert::deployment(&d))
                }
                (None, _) => None,
            };
            let latest = latest.filter(|l| Some(&l.id) != live_id.as_ref());
            Ok::<_, ServerFnError>(Project { live, latest, ..convert::project(p) })
        }
    });
    futures::future::try_join_all(cards).await
}

#[component]
pub fn ProjectsPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| projects());
    // Live from now: any status change (or a reconnect) refreshes the cards.
    let conn = use_feed(
        "/ui/events".into(),
        move |kind, _| {
            if kind == "status" {
                data.refetch();
            }
        },
        move || data.refetch(),
    );
    view! {
        <div class="page-head">
            <h1>"Projects"</h1>
            <LiveBadge conn/>
        </div>
        <Transition fallback=|| view! { <Loading what="projects"/> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(list) if list.is_empty() => view! {
                        <Empty title="No projects yet">
                            <p>"Create one from the CLI, then push or deploy:"</p>
                            <pre>"bifrost projects add hello-python --repo PATH_OR_GIT_URL\nbifrost deploy --ref main -p hello-python --wait"</pre>
                        </Empty>
                    }.into_any(),
                    Ok(list) => view! {
                        <div class="cards" data-testid="projects">
                            {list.into_iter().map(|p| view! { <ProjectCard p/> }).collect_view()}
                        </div>
                    }.into_any(),
                    Err(e) => view! { <ErrorState error=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn ProjectCard(p: Project) -> impl IntoView {
    let href = format!("/projects/{}", p.name);
    let name = p.name.clone();
    view! {
        <article class="card" data-project=name>
            <h2><A href=href>{p.name.clone()}</A></h2>
            {match p.live.clone() {
                Some(live) => view! {
                    <p class="live-line">
                        <StatusBadge status=live.status.clone()/>
                        <a class="url" href=p.url.clone() target="_blank" rel="noopener">{p.url.clone()}</a>
                    </p>
                    <p class="muted">{live.source.label.clone()}" · "
                        <A href=format!("/deployments/{}", live.id)>{short_id(&live.id).to_string()}</A>
                    </p>
                }.into_any(),
                None => view! { <p class="muted">"Not live yet"</p> }.into_any(),
            }}
            {p.latest.clone().map(|d| view! {
                <p class="latest" data-testid="latest">
                    <span class="muted">{if d.in_flight() { "In flight: " } else { "Latest: " }}</span>
                    <StatusBadge status=d.status.clone()/>" "
                    <A href=format!("/deployments/{}", d.id)>{d.source.label.clone()}</A>
                </p>
            })}
            <p class="muted small">{p.repo.clone().unwrap_or_else(|| "uploads only".into())}" · "{p.branch.clone()}</p>
        </article>
    }
}
