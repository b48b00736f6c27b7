//! `bifrost policies`: the gates' Rego policies and their thresholds —
//! list, show, replace (compile-checked by the server), change data values
//! (for everyone or one project), and test one on an input without acting.

use std::path::Path;
use std::process::ExitCode;

use bifrost_api::{DecisionOut, PoliciesOut, PolicyDataIn, PolicyIn, PolicyOut, PolicyTestIn};
use reqwest::Method;
use serde_json::Value;

use crate::client::{Api, CliError, CliResult, Exit};
use crate::output::{self, bold, dim, term_safe};

type Res = CliResult<ExitCode>;

fn read(file: &Path) -> CliResult<String> {
    std::fs::read_to_string(file).map_err(|e| CliError::new(Exit::Error, format!("reading {}: {e}", file.display())))
}

fn read_json(file: &Path) -> CliResult<Value> {
    serde_json::from_str(&read(file)?)
        .map_err(|e| CliError::new(Exit::Invalid, format!("{} is not JSON: {e}", file.display())))
}

fn version_label(p: &PolicyOut) -> String {
    if p.shipped { "v0 (shipped)".into() } else { format!("v{}", p.version) }
}

pub async fn list(api: &Api, json: bool) -> Res {
    let out: PoliciesOut = api.get("/api/v1/policies").await?;
    if json {
        output::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = out
        .policies
        .iter()
        .map(|p| {
            vec![
                bold(&p.name),
                version_label(p),
                p.set_by.as_deref().map(term_safe).unwrap_or_else(|| dim("bifrost")),
                p.at.as_deref().map(output::when).unwrap_or_default(),
                p.policy_sha256[..12.min(p.policy_sha256.len())].to_string(),
                term_safe(&p.data.to_string()),
            ]
        })
        .collect();
    output::table(&["policy", "version", "by", "when", "sha256", "data"], rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn show(api: &Api, json: bool, name: &str) -> Res {
    let p: PolicyOut = api.get(&format!("/api/v1/policies/{name}")).await?;
    if json {
        output::print_json(&p);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {}  policy sha256 {}  data sha256 {}",
        bold(&p.name),
        version_label(&p),
        p.policy_sha256,
        p.data_sha256
    );
    println!("\n{}", dim("data:"));
    println!("{}", serde_json::to_string_pretty(&p.data).unwrap_or_default());
    if p.projects.as_object().is_some_and(|o| !o.is_empty()) {
        println!("\n{}", dim("per project:"));
        println!("{}", serde_json::to_string_pretty(&p.projects).unwrap_or_default());
    }
    println!("\n{}", dim("rego:"));
    println!("{}", term_safe(&p.rego));
    if !p.history.is_empty() {
        println!("\n{}", dim("history:"));
        let rows = p
            .history
            .iter()
            .map(|v| vec![format!("v{}", v.version), term_safe(&v.set_by), output::when(&v.at), term_safe(&v.reason)])
            .collect();
        output::table(&["version", "by", "when", "change"], rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn set(api: &Api, json: bool, name: &str, file: &Path, data: Option<&Path>) -> Res {
    let body = PolicyIn { rego: Some(read(file)?), data: data.map(read_json).transpose()?, base_version: None };
    let p: PolicyOut = api.put(&format!("/api/v1/policies/{name}"), &body).await?;
    done(json, &p)
}

/// `key=value`: the value is JSON when it parses (`10`, `0.5`, `true`),
/// else a string.
fn parse_assignment(a: &str) -> CliResult<(String, Value)> {
    let (k, v) = a.split_once('=').filter(|(k, _)| !k.trim().is_empty()).ok_or_else(|| {
        CliError::new(Exit::Invalid, format!("--set {a:?}: expected key=value (e.g. --set min_disk_gb=20)"))
    })?;
    let value = serde_json::from_str(v.trim()).unwrap_or_else(|_| Value::String(v.trim().to_string()));
    Ok((k.trim().to_string(), value))
}

pub async fn data(api: &Api, json: bool, name: &str, set: &[String], unset: &[String], project: Option<&str>) -> Res {
    if set.is_empty() && unset.is_empty() {
        return Err(CliError::new(Exit::Invalid, "nothing to change: give --set key=value and/or --unset key"));
    }
    let body = PolicyDataIn {
        set: set.iter().map(|a| parse_assignment(a)).collect::<CliResult<_>>()?,
        unset: unset.to_vec(),
        project: project.map(str::to_string),
    };
    let rb = api.request(Method::PATCH, &format!("/api/v1/policies/{name}/data")).json(&body);
    let p: PolicyOut = api.send(rb).await?;
    done(json, &p)
}

fn done(json: bool, p: &PolicyOut) -> Res {
    if json {
        output::print_json(p);
    } else {
        let why = p.history.last().map(|v| term_safe(&v.reason)).unwrap_or_default();
        println!("{} policy {} is now v{} ({why})", console::style("✓").green(), bold(&p.name), p.version);
    }
    Ok(ExitCode::SUCCESS)
}

/// Seed 003's lines: `[PASS] …`, or `[DENY] reason` … `[BLOCKED] …`.
pub fn decision_lines(gate: &str, allow: bool, deny: &[String], what: &str) -> Vec<String> {
    if allow {
        return vec![format!("{} policy {gate} allowed {what}", console::style("[PASS]").green())];
    }
    let mut out: Vec<String> =
        deny.iter().map(|d| format!("{} {}", console::style("[DENY]").red(), term_safe(d))).collect();
    out.push(format!("{} {what} denied by policy {gate}", console::style("[BLOCKED]").red().bold()));
    out
}

/// A change to try before making it (`test --rego` / `--data`).
pub struct Draft<'a> {
    pub rego: Option<&'a Path>,
    pub data: Option<&'a Path>,
}

pub async fn test(api: &Api, json: bool, name: &str, input: &Path, project: Option<&str>, draft: Draft<'_>) -> Res {
    let body = PolicyTestIn {
        input: read_json(input)?,
        project: project.map(str::to_string),
        rego: draft.rego.map(read).transpose()?,
        data: draft.data.map(read_json).transpose()?,
    };
    let d: DecisionOut = api.post(&format!("/api/v1/policies/{name}/test"), &body).await?;
    if json {
        output::print_json(&d);
    } else {
        let on = if d.draft { format!("draft on v{}", d.policy_version) } else { format!("v{}", d.policy_version) };
        println!("policy {} {on}  allow={}", bold(&d.gate), d.allow);
        for l in decision_lines(&d.gate, d.allow, &d.deny, "the input") {
            println!("  {l}");
        }
    }
    // Like `grep`: 0 allowed, 1 denied — usable in scripts.
    Ok(if d.allow { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_take_json_values_and_fall_back_to_strings() {
        assert_eq!(
            parse_assignment("min_disk_gb=100000").ok(),
            Some(("min_disk_gb".into(), serde_json::json!(100000)))
        );
        assert_eq!(parse_assignment("max_cpu_load = 0.5").ok(), Some(("max_cpu_load".into(), serde_json::json!(0.5))));
        assert_eq!(parse_assignment("zone=eu-west").ok(), Some(("zone".into(), serde_json::json!("eu-west"))));
        assert!(parse_assignment("=3").is_err());
        assert!(parse_assignment("novalue").is_err());
    }
}
