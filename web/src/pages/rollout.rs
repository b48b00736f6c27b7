//! The rollout view on a canary's deployment page: built on the server
//! (`server::rollout`: steps, weight, canary vs stable charts, every
//! decision with its reasons) and asked again every 2 s while it runs,
//! with Promote / Abort for deployers.

use leptos::prelude::*;

use super::report::ServerHtml;
use crate::components::{ConfirmButton, error_text};

/// `promote` (the next step without asking the gate) or `abort` (the
/// canary is cancelled, weight 0).
#[server(prefix = "/ui/api", endpoint = "rollout")]
pub async fn rollout_action(project: String, action: String) -> Result<String, ServerFnError> {
    let s = crate::server::Session::current()?;
    if !matches!(action.as_str(), "promote" | "abort") {
        return Err(ServerFnError::new(format!("unknown rollout action {action:?}: promote or abort")));
    }
    s.require("deployer", &format!("the rollout's {action}")).await?;
    let path = format!("/api/v1/projects/{}/rollout/{action}", crate::server::seg(&project));
    let _: serde_json::Value = s.send(axum::http::Method::POST, &path, serde_json::json!({})).await?;
    Ok(action)
}

#[component]
pub fn RolloutPanel(id: String, project: String, active: bool, can_deploy: bool) -> impl IntoView {
    let action = ServerAction::<RolloutAction>::new();
    let button = move |label: &'static str, question: &'static str, danger: bool| {
        let project = project.clone();
        view! {
            <ConfirmButton label=label name=label.to_lowercase() question=question.to_string() danger
                pending=action.pending()
                on_confirm=Callback::new(move |_| {
                    action.dispatch(RolloutAction { project: project.clone(), action: label.to_lowercase() });
                })/>
        }
    };
    view! {
        <section class="rollout" data-testid="rollout">
            <ServerHtml page=format!("rollout:{id}") refresh_s=if active { 2 } else { 0 }/>
            {(can_deploy && active).then(|| view! {
                <div class="actions" data-testid="rollout-actions">
                    {button("Promote", "Take the next step now, without asking the promote gate?", false)}
                    {button("Abort", "Send every client back to the stable deployment and fail the canary?", true)}
                    {move || action.value().get().map(|r| match r {
                        Ok(a) => view! { <p class="muted" role="status">{format!("{a}: done")}</p> }.into_any(),
                        Err(e) => view! { <p class="form-error" role="alert">{error_text(&e)}</p> }.into_any(),
                    })}
                </div>
            })}
        </section>
    }
}
