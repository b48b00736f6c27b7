//! Dead letters: events the functions gave up on, and redriving them.

use leptos::prelude::*;
use leptos_router::components::A;

use crate::components::{ConfirmButton, Empty, ErrorState, Loading, error_text};
use crate::model::{DeadLetter, Me, clock, short_id};

#[server(prefix = "/ui/api", endpoint = "dead-letters")]
pub async fn dead_letters() -> Result<(Me, Vec<DeadLetter>), ServerFnError> {
    let s = crate::server::Session::current()?;
    let (me, list) = futures::try_join!(s.me(), s.get::<Vec<bifrost_api::DeadLetterOut>>("/api/v1/events/dead"))?;
    let letters = list
        .into_iter()
        .map(|d| DeadLetter {
            id: d.id,
            subscription: d.subscription,
            attempts: d.attempts,
            last_error: d.last_error,
            dead_at: d.dead_at,
            deployment_id: d.event.deployment_id,
            project: d.event.project,
            event: d.event.kind,
        })
        .collect();
    Ok((me, letters))
}

/// Delivers one dead letter again, or all of them when `id` is empty.
#[server(prefix = "/ui/api", endpoint = "redrive")]
pub async fn redrive(id: Option<String>) -> Result<usize, ServerFnError> {
    let s = crate::server::Session::current()?;
    s.require("admin", "redriving dead letters").await?;
    let body = match id.filter(|i| !i.is_empty()) {
        Some(i) => serde_json::json!({ "ids": [i] }),
        None => serde_json::json!({}),
    };
    let out: bifrost_api::Redriven = s.send(axum::http::Method::POST, "/api/v1/events/dead/redrive", body).await?;
    Ok(out.redriven)
}

#[component]
pub fn DeadLettersPage() -> impl IntoView {
    let action = ServerAction::<Redrive>::new();
    // Reloaded after every redrive.
    let data = Resource::new(move || action.version().get(), |_| dead_letters());
    view! {
        <div class="page-head"><h1>"Dead letters"</h1></div>
        <p class="hint">"Events a function failed to handle after every delivery attempt. Fix the cause, then redrive."</p>
        {move || action.value().get().map(|r| match r {
            Ok(n) => view! { <p class="notice">{format!("Redrove {n} event(s).")}</p> }.into_any(),
            Err(e) => view! { <p class="form-error" role="alert">{error_text(&e)}</p> }.into_any(),
        })}
        <Transition fallback=|| view! { <Loading what="dead letters"/> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok((_, list)) if list.is_empty() => view! {
                        <Empty title="No dead letters">
                            <p>"Every event was handled."</p>
                        </Empty>
                    }.into_any(),
                    Ok((me, list)) => {
                        let admin = me.is_admin();
                        view! {
                            {admin.then(|| view! {
                                <ConfirmButton label="Redrive all" name="redrive-all" question="Deliver every dead letter again?"
                                    on_confirm=Callback::new(move |_| { action.dispatch(Redrive { id: None }); })/>
                            })}
                            <table class="list" data-testid="dead-letters">
                                <thead><tr><th>"Dead since"</th><th>"Event"</th><th>"Function"</th><th>"Deployment"</th><th>"Attempts"</th><th>"Last error"</th><th></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|d| {
                                        let id = d.id.clone();
                                        view! {
                                            <tr>
                                                <td class="nowrap">{clock(&d.dead_at)}</td>
                                                <td class="mono">{d.event.clone()}</td>
                                                <td>{d.subscription.clone()}</td>
                                                <td>{d.project.clone()}" "<A href=format!("/deployments/{}", d.deployment_id)>{short_id(&d.deployment_id).to_string()}</A></td>
                                                <td>{d.attempts}</td>
                                                <td class="reason">{d.last_error.clone()}</td>
                                                <td>{admin.then(|| view! {
                                                    <button class="btn small" on:click=move |_| { action.dispatch(Redrive { id: Some(id.clone()) }); }>"Redrive"</button>
                                                })}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any()
                    }
                    Err(e) => view! { <ErrorState error=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}
