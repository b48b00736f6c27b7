//! Pieces the pages share: states (loading, error, empty), status badges,
//! confirmation, the pipeline, the log view and the health charts.

pub mod ansi;
pub mod chart;
pub mod log;
pub mod pipeline;

use leptos::prelude::*;
use leptos_router::components::A;

/// The message of a server-function error, without the framework's prefix.
pub fn error_text(e: &ServerFnError) -> String {
    match e {
        ServerFnError::ServerError(m) => m.clone(),
        other => other.to_string(),
    }
}

#[component]
pub fn Loading(#[prop(into)] what: String) -> impl IntoView {
    view! {
        <div class="loading" aria-busy="true">
            <span class="spinner"></span>
            {format!("Loading {what}…")}
        </div>
    }
}

#[component]
pub fn ErrorState(error: ServerFnError) -> impl IntoView {
    let text = error_text(&error);
    let signed_out = text.contains("not signed in") || text.contains("invalid or revoked");
    view! {
        <div class="error-state" role="alert">
            <strong>{if signed_out { "Signed out" } else { "Something went wrong" }}</strong>
            <p>{text}</p>
            {signed_out.then(|| view! { <A href="/login">"Sign in"</A> })}
        </div>
    }
}

#[component]
pub fn Empty(#[prop(into)] title: String, children: Children) -> impl IntoView {
    view! {
        <div class="empty">
            <h3>{title}</h3>
            <div>{children()}</div>
        </div>
    }
}

#[component]
pub fn StatusBadge(#[prop(into)] status: Signal<String>) -> impl IntoView {
    view! {
        <span class=move || format!("badge s-{}", status.get()) data-status=move || status.get()>
            {move || status.get()}
        </span>
    }
}

/// A button that asks before it acts: the first click arms it, the second
/// (on "Confirm") runs `on_confirm`.
#[component]
pub fn ConfirmButton(
    #[prop(into)] label: String,
    #[prop(into)] question: Signal<String>,
    #[prop(into)] name: String,
    on_confirm: Callback<()>,
    #[prop(into, optional)] danger: bool,
    #[prop(into, optional)] pending: Signal<bool>,
) -> impl IntoView {
    let armed = RwSignal::new(false);
    let class = if danger { "btn danger" } else { "btn" };
    let label2 = label.clone();
    let action = name.clone();
    view! {
        <span class="confirm" data-action=action>
            <Show
                when=move || armed.get()
                fallback=move || {
                    let label = label.clone();
                    view! {
                        <button class=class data-testid=format!("{name}-button") disabled=move || pending.get()
                            on:click=move |_| armed.set(true)>
                            {label}
                        </button>
                    }
                }
            >
                <span class="ask">{move || question.get()}</span>
                <button class=format!("{class} primary") data-testid="confirm"
                    on:click=move |_| { armed.set(false); on_confirm.run(()); }>
                    {format!("Yes, {}", label2.to_lowercase())}
                </button>
                <button class="btn ghost" on:click=move |_| armed.set(false)>"Keep"</button>
            </Show>
        </span>
    }
}
