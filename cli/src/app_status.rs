//! `bifrost status APP`: seed 003's live status view of an app — the live
//! deployment and its uptime, a canary's step and weight, per side
//! throughput, error rate and p99 over the last minute, active chaos and
//! split, and each gate's last decision — refreshed every 2 s until Ctrl-C
//! (`--once` for one frame, `--json` for scripts). On a terminal it hides
//! the cursor while it draws and always shows it again on the way out.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use bifrost_api::{DeploymentDetail, ProjectOut, ProjectTrafficOut, ServingOut};
use serde_json::{Value, json};

use crate::client::{Api, CliResult};
use crate::output::{self, bold, dim, term_safe};

/// Everything one frame shows.
struct Frame {
    project: ProjectOut,
    traffic: Option<ProjectTrafficOut>,
    live: Option<DeploymentDetail>,
}

async fn load(api: &Api, app: &str) -> CliResult<Frame> {
    let project: ProjectOut = api.get(&format!("/api/v1/projects/{app}")).await?;
    let traffic = api.get::<ProjectTrafficOut>(&format!("/api/v1/projects/{app}/traffic")).await.ok();
    let live = match &project.live_deployment_id {
        Some(id) => api.get::<DeploymentDetail>(&format!("/api/v1/deployments/{id}")).await.ok(),
        None => None,
    };
    Ok(Frame { project, traffic, live })
}

/// The last policy decision recorded for `gate` in a deployment's history.
fn last_decision(d: &DeploymentDetail, gate: &str) -> Option<(bool, Vec<String>, Option<u64>)> {
    d.history.iter().rev().filter_map(|h| h.evidence.as_ref()).find(|e| e["gate"] == gate).map(|e| {
        let deny = e["deny"].as_array().map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_string)).collect());
        (e["allow"].as_bool().unwrap_or(false), deny.unwrap_or_default(), e["policy_version"].as_u64())
    })
}

fn uptime(d: &DeploymentDetail) -> Option<String> {
    let live_at = d.history.iter().rev().find(|h| h.to == "healthy")?;
    let t: chrono::DateTime<chrono::Utc> = live_at.at.parse().ok()?;
    let s = (chrono::Utc::now() - t).num_seconds().max(0);
    Some(match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        86_400.. => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    })
}

fn side_json(s: &ServingOut) -> Value {
    json!({
        "deployment": s.deployment_id,
        "role": s.role,
        "share": s.share,
        "requests_per_s": s.recent.as_ref().map(|r| r.requests_per_s),
        "error_rate": s.recent.as_ref().map(|r| r.error_rate),
        "p99_ms": s.recent.as_ref().and_then(|r| r.p99_ms),
    })
}

fn frame_json(f: &Frame) -> Value {
    let gate = |g: &str| {
        f.live
            .as_ref()
            .and_then(|d| last_decision(d, g))
            .map(|(allow, deny, v)| json!({"allow": allow, "deny": deny, "policy_version": v}))
    };
    json!({
        "project": f.project.name,
        "url": f.project.url,
        "live": f.live.as_ref().map(|d| json!({
            "deployment": d.deployment.id,
            "status": d.deployment.status,
            "uptime": uptime(d),
        })),
        "rollout": f.project.rollout,
        "chaos": f.project.chaos.as_ref().filter(|c| c.active),
        "split": f.project.split,
        "traffic": f.traffic.as_ref().map(|t| t.serving.iter().map(side_json).collect::<Vec<_>>()),
        "gates": {
            "deploy": gate("deploy"),
            "promote": f.project.rollout.as_ref().and_then(|r| r.last_decision.clone()).map(Value::from).or_else(|| gate("promote")),
        },
    })
}

fn render(f: &Frame) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "{}  {}    {}",
        bold(&f.project.name),
        f.project.url,
        dim(&chrono::Local::now().format("refreshed %H:%M:%S").to_string())
    ));
    match &f.live {
        Some(d) => line(format!(
            "  live     {}  {}  up {}",
            d.deployment.id,
            output::status(&d.deployment.status),
            uptime(d).unwrap_or_else(|| "-".into())
        )),
        None => line(format!("  live     {}", dim("none yet"))),
    }
    if let Some(r) = &f.project.rollout {
        let state = match &r.paused {
            Some(p) => console::style(format!("PAUSED: {}", term_safe(p))).yellow().to_string(),
            None => "analysing".into(),
        };
        line(format!(
            "  {}   {}  step {}  {}% of clients  {state}",
            console::style("canary").magenta().bold(),
            r.deployment,
            r.step,
            r.weight
        ));
    } else if let Some(s) = &f.project.split {
        line(format!("  {}    {}% of clients to {}", console::style("split").cyan().bold(), s.weight, s.deployment));
    }
    if let Some(c) = f.project.chaos.as_ref().filter(|c| c.active) {
        line(format!("  {}    {} (by {})", console::style("chaos").yellow().bold(), c.summary, c.set_by));
    }
    line(String::new());
    match &f.traffic {
        Some(t) if t.recorded => {
            line(format!(
                "  {:<8} {:<28} {:>6} {:>9} {:>8} {:>9}",
                "side", "deployment", "share", "req/s", "errors", "p99"
            ));
            for s in &t.serving {
                let side = match (s.role.as_str(), &f.project.rollout) {
                    ("live", Some(_)) => "stable",
                    ("split", Some(_)) => "canary",
                    (role, _) => role,
                };
                let (rps, err, p99) = match &s.recent {
                    Some(r) => (
                        format!("{:.1}", r.requests_per_s),
                        format!("{:.1}%", r.error_rate * 100.0),
                        r.p99_ms.map(|p| format!("{p:.0} ms")).unwrap_or_else(|| "-".into()),
                    ),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                line(format!("  {side:<8} {:<28} {:>5}% {rps:>9} {err:>8} {p99:>9}", s.deployment_id, s.share));
            }
        }
        Some(_) => line(format!("  {}", dim("traffic: the routers run apart from the platform here (no numbers)"))),
        None => line(format!("  {}", dim("traffic: not available"))),
    }
    line(String::new());
    line("  gates".into());
    let deploy = f.live.as_ref().and_then(|d| last_decision(d, "deploy"));
    match deploy {
        Some((true, _, v)) => line(format!(
            "    deploy   {} allowed the live deployment (policy v{})",
            console::style("[PASS]").green(),
            v.unwrap_or(0)
        )),
        Some((false, deny, _)) => {
            line(format!("    deploy   {} {}", console::style("[FAIL]").red(), term_safe(&deny.join("; "))))
        }
        None => line(format!("    deploy   {}", dim("no decision recorded"))),
    }
    match f.project.rollout.as_ref().and_then(|r| r.last_decision.clone()) {
        Some(d) if d.starts_with("[PASS]") => line(format!(
            "    promote  {} {}",
            console::style("[PASS]").green(),
            term_safe(d.trim_start_matches("[PASS] "))
        )),
        Some(d) => line(format!("    promote  {}", term_safe(&d))),
        None => match f.live.as_ref().and_then(|d| last_decision(d, "promote")) {
            Some((true, _, _)) => {
                line(format!("    promote  {} the live deployment's last step", console::style("[PASS]").green()))
            }
            Some((false, deny, _)) => {
                line(format!("    promote  {} {}", console::style("[FAIL]").red(), term_safe(&deny.join("; "))))
            }
            None => line(format!("    promote  {}", dim("no canary"))),
        },
    }
    out
}

/// Shows the cursor again however the view ends.
struct Cursor(bool);

impl Drop for Cursor {
    fn drop(&mut self) {
        if self.0 {
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
        }
    }
}

pub async fn run(api: &Api, json: bool, app: &str, once: bool) -> CliResult<ExitCode> {
    let tty = std::io::stdout().is_terminal() && !json;
    let _cursor = Cursor(tty && !once);
    if tty && !once {
        print!("\x1b[?25l");
    }
    loop {
        let f = load(api, app).await?;
        if json {
            output::print_json(&frame_json(&f));
        } else if tty && !once {
            // Home and clear, then the frame: no scrollback of old frames.
            print!("\x1b[H\x1b[2J{}", render(&f));
            print!("{}", dim("  Ctrl-C to stop\n"));
        } else {
            print!("{}", render(&f));
        }
        let _ = std::io::stdout().flush();
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => {
                if tty {
                    println!();
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// A deployment id (`d` + a lowercase ULID) rather than an app name.
pub fn is_deployment_id(s: &str) -> bool {
    s.len() == 27 && s.starts_with('d') && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ids_are_told_from_app_names() {
        assert!(is_deployment_id("d01m8nxk9qz42dzyhnk39n3wa5e"));
        assert!(!is_deployment_id("hello-python"));
        assert!(!is_deployment_id("d01m8nxk9qz42dzyhnk39n3wa5"));
    }
}
