//! The app: the HTML shell, the navigation bar and the routes.

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::hooks::use_location;
use leptos_router::path;

use crate::model::Me;
use crate::pages::{audit::AuditPage, dead::DeadLettersPage, deployment::DeploymentPage, login::LoginPage};
use crate::pages::{login::SignOut, project::ProjectPage, projects::ProjectsPage};
use crate::pages::{policies::PoliciesPage, report::ReportPage};

const STYLE: &str = include_str!("style.css");
const ICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Cpath d='M1 12 Q8 0 15 12' stroke='%237c5cff' stroke-width='3' fill='none'/%3E%3C/svg%3E";

/// The document around the app (server only).
pub fn shell(options: leptos::config::LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href=ICON/>
                <style>{STYLE}</style>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Who is signed in, for the navigation bar (`None`: nobody). Never an
/// error status: the login page renders it too.
#[server(prefix = "/ui/api", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<Me>, ServerFnError> {
    let state = crate::server::state()?;
    let Some(token) = crate::server::current_token() else { return Ok(None) };
    match state.backend.get::<bifrost_api::TokenOut>("/api/v1/whoami", &token).await {
        Ok(v) => Ok(Some(crate::server::convert::me(&v))),
        Err(_) => Ok(None),
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // The signed-in role, as the nav last read it: pages hide what the
    // role cannot use (every action checks again on the server).
    provide_context(Role(RwSignal::new(None)));
    view! {
        <Title text="Bifrost"/>
        <Router>
            <Nav/>
            <main>
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("/login") view=LoginPage/>
                    <Route path=path!("/") view=ProjectsPage/>
                    <Route path=path!("/projects/:name") view=ProjectPage/>
                    <Route path=path!("/deployments/:id") view=DeploymentPage/>
                    <Route path=path!("/audit") view=AuditPage/>
                    <Route path=path!("/audit/report") view=ReportPage/>
                    <Route path=path!("/policies") view=PoliciesPage/>
                    <Route path=path!("/dead-letters") view=DeadLettersPage/>
                    <Route path=path!("/cluster") view=crate::pages::report::ClusterPage/>
                    <Route path=path!("/analytics") view=crate::pages::report::AnalyticsPage/>
                    <Route path=path!("/analytics/:name") view=crate::pages::report::ProjectAnalyticsPage/>
                </Routes>
            </main>
        </Router>
    }
}

/// The signed-in token's role (`None` until known or when signed out).
#[derive(Clone, Copy)]
pub struct Role(pub RwSignal<Option<String>>);

#[component]
fn Nav() -> impl IntoView {
    let location = use_location();
    let role = use_context::<Role>().map(|r| r.0);
    // Asked again on every navigation: signing in or out changes it.
    let me = Resource::new(move || location.pathname.get(), |_| whoami());
    view! {
        <header class="nav">
            <A href="/" attr:class="brand">"Bifrost"</A>
            <nav>
                <A href="/">"Projects"</A>
                <A href="/audit">"Audit"</A>
                <A href="/audit/report">"Report"</A>
                <A href="/policies">"Policies"</A>
                <A href="/dead-letters">"Dead letters"</A>
                <A href="/cluster">"Cluster"</A>
                <A href="/analytics">"Analytics"</A>
            </nav>
            <div class="who">
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        let me = me.await;
                        if let Some(r) = role {
                            r.set(me.as_ref().ok().and_then(|m| m.as_ref().map(|m| m.role.clone())));
                        }
                        match me {
                            Ok(Some(me)) => view! {
                                <span class="me" data-role=me.role.clone()>
                                    {me.name.clone()}" · "<span class="role">{me.role.clone()}</span>
                                </span>
                                <SignOut/>
                            }
                                .into_any(),
                            _ => view! { <A href="/login">"Sign in"</A> }.into_any(),
                        }
                    })}
                </Transition>
            </div>
        </header>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
        r.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <section class="empty">
            <h1>"Nothing here"</h1>
            <p>"This page does not exist. "<A href="/">"Back to the projects"</A></p>
        </section>
    }
}
