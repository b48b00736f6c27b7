//! The policy gates (docs/policies.md): each gate's policy in force — its
//! Rego, the data thresholds, per-project values, the sha256s and every
//! version (who changed what, when), built as HTML on the server (every
//! value escaped). Admins also get an editor: change the Rego and data,
//! check and test them on an input (nothing stored), save a new version.

use leptos::prelude::*;

use super::report::ServerHtml;

/// The page's HTML (server only).
#[cfg(feature = "ssr")]
pub async fn policies_html(s: &crate::server::Session) -> Result<String, ServerFnError> {
    use crate::server::markdown::escape;
    let out: bifrost_api::PoliciesOut = s.get("/api/v1/policies").await?;
    let pretty = |v: &serde_json::Value| escape(&serde_json::to_string_pretty(v).unwrap_or_default());
    let mut html = String::new();
    for p in out.policies {
        let version = if p.shipped { "v0 (shipped)".to_string() } else { format!("v{}", p.version) };
        html.push_str(&format!(
            "<section class=\"card\" data-testid=\"policy-{name}\"><h2>{name} <span class=\"muted\">{version}</span></h2>\
             <p class=\"mono muted\">policy sha256 {psha} · data sha256 {dsha}</p>\
             <h3>Data</h3><pre class=\"code\" data-testid=\"policy-data\">{data}</pre>",
            name = escape(&p.name),
            psha = escape(p.policy_sha256.get(..16).unwrap_or_default()),
            dsha = escape(p.data_sha256.get(..16).unwrap_or_default()),
            data = pretty(&p.data),
        ));
        if p.projects.as_object().is_some_and(|o| !o.is_empty()) {
            html.push_str(&format!("<h3>Per project</h3><pre class=\"code\">{}</pre>", pretty(&p.projects)));
        }
        html.push_str(&format!("<h3>Rego</h3><pre class=\"code\">{}</pre>", escape(&p.rego)));
        if !p.history.is_empty() {
            html.push_str(
                "<h3>History</h3><table class=\"list\"><thead><tr><th>Version</th><th>When</th><th>Who</th>\
                 <th>Change</th></tr></thead><tbody>",
            );
            for v in &p.history {
                html.push_str(&format!(
                    "<tr><td>v{}</td><td class=\"nowrap\">{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
                    v.version,
                    escape(&v.at),
                    escape(&v.set_by),
                    escape(&v.reason)
                ));
            }
            html.push_str("</tbody></table>");
        }
        html.push_str("</section>");
    }
    Ok(html)
}

#[component]
pub fn PoliciesPage() -> impl IntoView {
    let role = use_context::<crate::app::Role>();
    let admin = move || role.is_some_and(|r| r.0.get().as_deref() == Some("admin"));
    view! {
        <div class="page-head"><h1>"Policies"</h1></div>
        <p class="muted">"Bifrost asks these Rego policies before it acts: deploy before a deployment starts, promote at \
            the end of each canary window. Admins change them here or with bifrost policies set / data (compile-checked; \
            every change a new version)."</p>
        <Show when=admin>
            <PolicyEditor/>
        </Show>
        <ServerHtml page="policies"/>
    }
}

/// What the editor starts from: the policy in force, its data and a
/// sample input, as text.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EditorStart {
    pub version: u64,
    pub rego: String,
    pub data: String,
    pub input: String,
}

/// The editor's starting point — `None` for anyone but an admin (only
/// admins change policies; the page above shows them to everyone).
#[server(prefix = "/ui/api", endpoint = "policy-draft")]
pub async fn policy_draft(name: String) -> Result<Option<EditorStart>, ServerFnError> {
    let s = crate::server::Session::current()?;
    if !s.me().await?.is_admin() {
        return Ok(None);
    }
    let p: bifrost_api::PolicyOut = s.get(format!("/api/v1/policies/{}", crate::server::seg(&name))).await?;
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    Ok(Some(EditorStart { version: p.version, rego: p.rego, data: pretty(&p.data), input: pretty(&p.sample_input) }))
}

#[cfg(feature = "ssr")]
fn json_field(what: &str, text: &str) -> Result<serde_json::Value, ServerFnError> {
    serde_json::from_str(text).map_err(|e| ServerFnError::new(format!("the {what} is not JSON: {e}")))
}

/// Compiles the draft and decides the input with it — nothing stored.
/// Seed 003's lines: `[PASS] …` or `[DENY] reason` … `[BLOCKED] …`.
#[server(prefix = "/ui/api", endpoint = "policy-try")]
pub async fn policy_try(name: String, rego: String, data: String, input: String) -> Result<Vec<String>, ServerFnError> {
    let s = crate::server::Session::current()?;
    s.require("admin", "trying a policy change").await?;
    let body = serde_json::json!({
        "rego": rego, "data": json_field("data", &data)?, "input": json_field("input", &input)?,
    });
    let path = format!("/api/v1/policies/{}/test", crate::server::seg(&name));
    let d: bifrost_api::DecisionOut = s.send(axum::http::Method::POST, &path, body).await?;
    let mut out = vec![format!("compiles; decided by the draft made on v{}", d.policy_version)];
    if d.allow {
        out.push(format!("[PASS] policy {} allowed the input", d.gate));
    } else {
        out.extend(d.deny.iter().map(|r| format!("[DENY] {r}")));
        out.push(format!("[BLOCKED] the input denied by policy {}", d.gate));
    }
    Ok(out)
}

/// Stores the draft as the next version (the API compile-checks it again
/// and refuses it if someone changed the policy since `base`).
#[server(prefix = "/ui/api", endpoint = "policy-save")]
pub async fn policy_save(name: String, rego: String, data: String, base: u64) -> Result<u64, ServerFnError> {
    let s = crate::server::Session::current()?;
    s.require("admin", "changing a policy").await?;
    let body = serde_json::json!({ "rego": rego, "data": json_field("data", &data)?, "base_version": base });
    let path = format!("/api/v1/policies/{}", crate::server::seg(&name));
    let p: bifrost_api::PolicyOut = s.send(axum::http::Method::PUT, &path, body).await?;
    Ok(p.version)
}

/// Admins: edit a gate's Rego and data, try them on an input, save. The
/// editor opens on demand (a button per gate; nothing loads before), and
/// its two actions share one result line: the browser bundle stays small.
#[component]
fn PolicyEditor() -> impl IntoView {
    use crate::components::error_text;
    // (gate, where it starts); None until opened.
    let open: RwSignal<Option<(String, EditorStart)>> = RwSignal::new(None);
    let result: RwSignal<Option<Result<Vec<String>, String>>> = RwSignal::new(None);
    let rego = RwSignal::new(String::new());
    let data = RwSignal::new(String::new());
    let input = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let load = move |gate: &'static str| {
        result.set(None);
        leptos::task::spawn_local(async move {
            match policy_draft(gate.to_string()).await {
                Ok(Some(d)) => {
                    rego.set(d.rego.clone());
                    data.set(d.data.clone());
                    input.set(d.input.clone());
                    open.set(Some((gate.to_string(), d)));
                }
                Ok(None) => result.set(Some(Err("only admins change policies".into()))),
                Err(e) => result.set(Some(Err(error_text(&e)))),
            }
        });
    };
    let navigate = leptos_router::hooks::use_navigate();
    let run = move |save: bool| {
        let Some((gate, start)) = open.get_untracked() else { return };
        busy.set(true);
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            let (r, d, i) = (rego.get_untracked(), data.get_untracked(), input.get_untracked());
            let out = if save {
                policy_save(gate, r, d, start.version).await.map(|v| {
                    // Saved: the page below shows the new version; the
                    // editor closes (it was made on the old one).
                    open.set(None);
                    navigate(&format!("/policies?saved={v}"), Default::default());
                    vec![format!("saved as v{v}")]
                })
            } else {
                policy_try(gate, r, d, i).await
            };
            result.set(Some(out.map_err(|e| error_text(&e))));
            busy.set(false);
        });
    };
    let run2 = run.clone();
    let area = |label: &'static str, rows: u32, value: RwSignal<String>| {
        view! {
            <label class="field">
                <span>{label}</span>
                <textarea class="mono" rows=rows spellcheck="false" data-testid=format!("editor-{}", label.to_lowercase())
                    prop:value=move || value.get() on:input=move |e| value.set(event_target_value(&e))></textarea>
            </label>
        }
    };
    view! {
        <section class="card editor" data-testid="policy-editor">
            <p>
                "Admins: "
                <button class="btn" data-testid="edit-deploy" on:click=move |_| load("deploy")>"Edit deploy"</button>" "
                <button class="btn" data-testid="edit-promote" on:click=move |_| load("promote")>"Edit promote"</button>
                {move || open.get().map(|(g, d)| format!(" — {g}: editing v{}; saving makes v{}", d.version, d.version + 1))}
            </p>
            <Show when=move || open.with(Option::is_some)>
                {area("Rego", 16, rego)}
                {area("Data", 6, data)}
                {area("Input", 8, input)}
                <div class="actions">
                    <button class="btn" data-testid="editor-try" disabled=move || busy.get() on:click={
                        let run = run.clone();
                        move |_| run(false)
                    }>"Check and test on the input"</button>
                    <button class="btn primary" data-testid="editor-save" disabled=move || busy.get() on:click={
                        let run = run2.clone();
                        move |_| run(true)
                    }>"Save as a new version"</button>
                </div>
            </Show>
            <div data-testid="editor-result">
                {move || result.get().map(|r| match r {
                    Ok(lines) => view! { <pre class="code">{lines.join("\n")}</pre> }.into_any(),
                    Err(e) => view! { <p class="form-error" role="alert">{e}</p> }.into_any(),
                })}
            </div>
        </section>
    }
}
