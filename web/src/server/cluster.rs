//! The dashboard's cluster page, built as HTML on the server (every value
//! escaped): what the routers following this gateway last reported of
//! their cluster — its health, and each node's state, address, the routing
//! table version it serves (against the gateway's), its load and when it
//! was last heard.

use leptos::prelude::ServerFnError;
use serde_json::Value;

use super::Session;
use super::markdown::escape;

fn text(v: &Value) -> String {
    escape(v.as_str().unwrap_or("–"))
}

/// The page for `GET /api/v1/routers`'s answer.
pub fn render(out: &Value) -> String {
    let routers = out["routers"].as_array().cloned().unwrap_or_default();
    let Some(newest) = routers.first() else {
        return "<p class=\"muted\" data-testid=\"no-routers\">No router has reported here. Routers that follow \
                this gateway (<code>bifrost-router --gateway …</code>) report their cluster every 5 s; \
                <code>bifrost up</code> routes apps by itself.</p>"
            .into();
    };
    let current = out["routes_version"].as_str().unwrap_or_default();
    let s = &newest["status"];
    let health = s["cluster_health"].as_str().unwrap_or("–");
    let class = if health == "HEALTHY" { "v-pass" } else { "v-deny" };
    let mut html = format!(
        "<p data-testid=\"cluster-health\"><strong class=\"{class}\">{}</strong> — {} members, {} alive \
         (as {} saw it {} s ago; {} router{} reporting)</p>",
        escape(health),
        s["members"].as_u64().unwrap_or(0),
        s["healthy_members"].as_u64().unwrap_or(0),
        text(&s["local_node"]),
        newest["reported_s_ago"].as_u64().unwrap_or(0),
        routers.len(),
        if routers.len() == 1 { "" } else { "s" },
    );
    html.push_str(
        "<table data-testid=\"cluster-nodes\"><thead><tr><th>node</th><th>state</th><th>gossip address</th>\
         <th>routes</th><th>load</th><th>last seen</th></tr></thead><tbody>",
    );
    for n in s["nodes"].as_array().cloned().unwrap_or_default() {
        let version = n["routes_version"].as_str();
        let routes = match version {
            Some(v) if v == current => format!("{} <span class=\"v-pass\">current</span>", escape(v)),
            Some(v) if !current.is_empty() => format!("{} <span class=\"v-deny\">behind</span>", escape(v)),
            Some(v) => escape(v),
            None => "–".into(),
        };
        let load = match (n["load"]["cpu_percent"].as_f64(), n["load"]["in_flight"].as_i64()) {
            (Some(cpu), Some(busy)) => format!("cpu {cpu:.0} %, {busy} in flight"),
            _ => "–".into(),
        };
        let state = n["state"].as_str().unwrap_or("–");
        let state_class = match state {
            "alive" => "v-pass",
            "suspect" => "v-paused",
            "dead" => "v-deny",
            _ => "muted",
        };
        html.push_str(&format!(
            "<tr><td>{}</td><td><span class=\"{state_class}\">{}</span></td><td>{}</td><td>{routes}</td><td>{load}</td>\
             <td>{} ms</td></tr>",
            text(&n["id"]),
            escape(state),
            text(&n["address"]),
            n["last_seen_ms"].as_u64().unwrap_or(0),
        ));
    }
    html.push_str("</tbody></table>");
    let d = &s["dropped"];
    let (unauth, outside) =
        (d["unauthenticated"].as_u64().unwrap_or(0), d["outside_address_space"].as_u64().unwrap_or(0));
    if unauth + outside > 0 {
        html.push_str(&format!(
            "<p class=\"v-paused\">Gossip dropped: {unauth} unauthenticated (another key?), {outside} from outside the \
             allowed address space.</p>"
        ));
    }
    html
}

pub async fn html(s: &Session) -> Result<String, ServerFnError> {
    let out: Value = s.get("/api/v1/routers").await?;
    Ok(render(&out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lagging_node_is_marked_and_names_are_escaped() {
        let out = serde_json::json!({"routes_version": "v2", "routers": [{"node": "a", "reported_s_ago": 1, "status": {
            "local_node": "a", "members": 2, "healthy_members": 1, "cluster_health": "NOT HEALTHY",
            "nodes": [{"id": "a", "address": "10.0.0.1:10101", "state": "alive", "routes_version": "v2",
                       "load": {"cpu_percent": 3.0, "in_flight": 1}, "last_seen_ms": 0},
                      {"id": "<b>", "address": "10.0.0.2:10101", "state": "dead", "routes_version": "v1", "load": null, "last_seen_ms": 9000}],
            "dropped": {"unauthenticated": 2, "outside_address_space": 0}}}]});
        let html = super::render(&out);
        assert!(html.contains("NOT HEALTHY") && html.contains("2 members, 1 alive"), "{html}");
        assert!(
            html.contains("v2 <span class=\"v-pass\">current</span>")
                && html.contains("v1 <span class=\"v-deny\">behind</span>")
        );
        assert!(html.contains("&lt;b&gt;") && !html.contains("<b>"), "{html}");
        assert!(html.contains("2 unauthenticated"));
        assert!(super::render(&serde_json::json!({"routers": []})).contains("No router has reported here"));
    }
}
