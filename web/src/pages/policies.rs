//! The policy gates (docs/policies.md): each gate's policy in force — its
//! Rego, the data thresholds, per-project values, the sha256s and every
//! version (who changed what, when). Changing a policy is the CLI's and
//! the API's job (admins, compile-checked); this page shows what decides.
//! Built as HTML on the server (every value escaped): a read-only page
//! costs the browser's bundle nothing.

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
    view! {
        <div class="page-head"><h1>"Policies"</h1></div>
        <p class="muted">"Bifrost asks these Rego policies before it acts: deploy before a deployment starts, promote at \
            the end of each canary window. Admins change them with bifrost policies set / data (compile-checked; every \
            change a new version)."</p>
        <ServerHtml page="policies"/>
    }
}
