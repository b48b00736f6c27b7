//! `bifrost scripts`: push an app's routing script live, list its versions
//! (who, when, sha256, state, errors in the router), roll back.

use std::path::Path;
use std::process::ExitCode;

use bifrost_api::{ScriptHealthOut, ScriptIn, ScriptRollbackIn, ScriptsOut};

use crate::client::{Api, CliError, CliResult, Exit};
use crate::output::{self, bold, dim, term_safe};

type Res = CliResult<ExitCode>;

pub async fn push(api: &Api, json: bool, project: &str, file: &Path) -> Res {
    let source = std::fs::read_to_string(file)
        .map_err(|e| CliError::new(Exit::Error, format!("reading {}: {e}", file.display())))?;
    let out: ScriptsOut = api.post(&format!("/api/v1/projects/{project}/scripts"), &ScriptIn { source }).await?;
    if json {
        output::print_json(&out);
    } else {
        let v = out.versions.last().map_or(0, |v| v.version);
        println!(
            "{} {} v{v} is running for {} (routers pick it up within 2 s)",
            console::style("✓").green(),
            file.display(),
            bold(&out.project)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(api: &Api, json: bool, project: &str, to: Option<u32>) -> Res {
    let out: ScriptsOut =
        api.post(&format!("/api/v1/projects/{project}/scripts/rollback"), &ScriptRollbackIn { to }).await?;
    if json {
        output::print_json(&out);
    } else {
        let what = match (out.running, &out.deployment_script) {
            (Some(v), _) => format!("v{v}"),
            (None, Some(d)) => format!("the deployment's own {}", d.path),
            (None, None) => "no script".into(),
        };
        println!("{} {} now runs {what}", console::style("✓").green(), bold(&out.project));
    }
    Ok(ExitCode::SUCCESS)
}

fn errors(h: &ScriptHealthOut) -> String {
    match (&h.last_error, h.errors) {
        (_, 0) => "0".into(),
        (Some(e), n) => format!("{n}, last: {}", term_safe(e)),
        (None, n) => n.to_string(),
    }
}

pub async fn list(api: &Api, json: bool, project: &str) -> Res {
    let out: ScriptsOut = api.get(&format!("/api/v1/projects/{project}/scripts")).await?;
    if json {
        output::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows: Vec<Vec<String>> = out
        .versions
        .iter()
        .map(|v| {
            vec![
                format!("v{}", v.version),
                if v.state == "running" { console::style(&v.state).green().to_string() } else { dim(&v.state) },
                term_safe(&v.pushed_by),
                output::when(&v.at),
                v.sha256[..12.min(v.sha256.len())].to_string(),
                errors(&v.health),
            ]
        })
        .collect();
    if let Some(d) = &out.deployment_script {
        rows.insert(
            0,
            vec![
                term_safe(&d.path),
                if d.state == "running" { console::style(&d.state).green().to_string() } else { dim(&d.state) },
                format!("deployment {}", d.deployment_id),
                String::new(),
                d.sha256[..12.min(d.sha256.len())].to_string(),
                errors(&d.health),
            ],
        );
    }
    if rows.is_empty() {
        println!("{} has no routing script (set [traffic] script, or `bifrost scripts push`)", bold(&out.project));
    } else {
        output::table(&["version", "state", "by", "when", "sha256", "errors"], rows);
    }
    Ok(ExitCode::SUCCESS)
}
