//! `bifrost cluster status --router URL`: a router's view of its cluster
//! (`GET /cluster/status`, docs/router-cluster.md) — members, health, each
//! node's state and what it serves. Exits 0 when the cluster is HEALTHY, 1
//! when not (usable in scripts and probes).

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{CliError, CliResult, Exit};
use crate::output::{self, bold, dim, term_safe};

pub async fn status(router: &str, json: bool) -> CliResult<ExitCode> {
    let url = format!("{}/cluster/status", router.trim_end_matches('/'));
    let fail = |what: String| CliError::new(Exit::Error, format!("{url}: {what}"));
    let resp = reqwest::get(&url).await.map_err(|e| fail(format!("no answer ({e})")))?;
    if !resp.status().is_success() {
        return Err(fail(format!("answered HTTP {}", resp.status().as_u16())));
    }
    let s: Value = resp.json().await.map_err(|e| fail(format!("not a cluster status ({e})")))?;
    let healthy = s["cluster_health"] == "HEALTHY";
    if json {
        output::print_json(&s);
    } else {
        let text = |v: &Value| term_safe(v.as_str().unwrap_or("-"));
        let health = if healthy {
            console::style("HEALTHY").green().to_string()
        } else {
            console::style("NOT HEALTHY").red().bold().to_string()
        };
        println!(
            "{}  {} members, {} healthy  {health}",
            bold(&format!("cluster of {}", text(&s["local_node"]))),
            s["members"],
            s["healthy_members"]
        );
        let rows = s["nodes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|n| {
                let state = n["state"].as_str().unwrap_or("-");
                let styled = match state {
                    "alive" => console::style(state).green(),
                    "suspect" => console::style(state).yellow(),
                    "dead" => console::style(state).red(),
                    _ => console::style(state).dim(),
                };
                let me = n["id"] == s["local_node"];
                vec![
                    format!("{}{}", text(&n["id"]), if me { " (this)" } else { "" }),
                    styled.to_string(),
                    text(&n["address"]),
                    n["routes_version"].as_str().map(term_safe).unwrap_or_else(|| dim("-")),
                    match (n["load"]["cpu_percent"].as_f64(), n["load"]["in_flight"].as_i64()) {
                        (Some(cpu), Some(busy)) => format!("cpu {cpu:.0}%, {busy} in flight"),
                        _ => dim("-"),
                    },
                    if me { dim("-") } else { format!("{} ms", n["last_seen_ms"]) },
                ]
            })
            .collect();
        output::table(&["node", "state", "gossip address", "routes", "load", "last seen"], rows);
        let d = &s["dropped"];
        let (unauth, outside) =
            (d["unauthenticated"].as_u64().unwrap_or(0), d["outside_address_space"].as_u64().unwrap_or(0));
        if unauth + outside > 0 {
            println!(
                "{}",
                console::style(format!(
                    "gossip dropped: {unauth} unauthenticated (another key?), {outside} from outside the allowed address space"
                ))
                .yellow()
            );
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
