//! The audit report (seed 003's audit report, `bifrost audit`): what
//! happened since a time, as GitHub-flavoured Markdown — a summary, policy
//! violations, mode changes (rollbacks, promotions, splits), chaos events,
//! policy changes, who did what, and the whole timeline. Built from the
//! audit records only, so it says what the hash chain vouches for; the CLI
//! writes it to a file and the dashboard renders the same text.

use std::collections::BTreeMap;

use bifrost_core::Status;
use bifrost_core::domain::{AuditRecord, Timestamp};
use bifrost_core::policies::PolicyVersion;

pub struct Input<'a> {
    pub generated: Timestamp,
    pub since: Timestamp,
    pub project: Option<&'a str>,
    /// Oldest first.
    pub records: &'a [&'a AuditRecord],
    /// Project id → name.
    pub projects: &'a BTreeMap<String, String>,
    pub policy_changes: &'a [&'a PolicyVersion],
    pub verified: bool,
    pub problems: usize,
    pub show_policies: bool,
}

/// What one record was, for the report's sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Created,
    Rollback,
    PolicyDenied,
    Live,
    Failed,
    Cancelled,
    Superseded,
    Chaos,
    Split,
    Step,
}

fn kind(r: &AuditRecord) -> Kind {
    let denied = r
        .evidence
        .as_deref()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .is_some_and(|v| v["allow"] == serde_json::Value::Bool(false));
    match (r.from, r.to) {
        (None, _) if r.reason.starts_with("rollback to ") => Kind::Rollback,
        (None, _) => Kind::Created,
        _ if denied => Kind::PolicyDenied,
        (Some(f), t) if f == t && r.reason.starts_with("chaos ") => Kind::Chaos,
        (Some(f), t) if f == t && r.reason.starts_with("traffic split") => Kind::Split,
        (_, Status::Healthy) => Kind::Live,
        (_, Status::Failed) => Kind::Failed,
        (_, Status::Cancelled) => Kind::Cancelled,
        (_, Status::Superseded) => Kind::Superseded,
        _ => Kind::Step,
    }
}

fn time(t: &Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A table cell: one line, pipes escaped, Markdown and HTML inert.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' | '*' | '_' | '[' | ']' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    out.push_str(&format!("| {} |\n", headers.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(headers.len())));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out.push('\n');
}

fn deny_reasons(r: &AuditRecord) -> (String, String) {
    let v: serde_json::Value = r.evidence.as_deref().and_then(|e| serde_json::from_str(e).ok()).unwrap_or_default();
    let gate = v["gate"].as_str().unwrap_or("?").to_string();
    let version = v["policy_version"].as_u64().map(|n| format!(" v{n}")).unwrap_or_default();
    let reasons: Vec<&str> =
        v["deny"].as_array().map(|a| a.iter().filter_map(|d| d.as_str()).collect()).unwrap_or_default();
    (format!("{gate}{version}"), reasons.join("; "))
}

pub fn markdown(i: &Input<'_>) -> String {
    let app = |r: &AuditRecord| cell(i.projects.get(&r.project_id).map(String::as_str).unwrap_or(&r.project_id));
    let kinds: Vec<(Kind, &AuditRecord)> = i.records.iter().map(|r| (kind(r), *r)).collect();
    let count = |k: Kind| kinds.iter().filter(|(x, _)| *x == k).count();
    let mut out = String::new();
    out.push_str("# Bifrost audit report\n\n");
    out.push_str(&format!(
        "Generated {} · since {} · {} · {} audit records\n\n",
        time(&i.generated),
        time(&i.since),
        i.project.map(|p| format!("project **{}**", cell(p))).unwrap_or_else(|| "all projects".into()),
        i.records.len()
    ));
    if i.verified {
        out.push_str("> [!NOTE]\n> Every hash chain and the global anchor verify (`bifrost audit verify`).\n\n");
    } else {
        out.push_str(&format!(
            "> [!CAUTION]\n> The audit trail does **not** verify: {} problem(s). Run `bifrost audit verify` to see \
             what broke; this report may be incomplete or altered.\n\n",
            i.problems
        ));
    }

    out.push_str("## Summary\n\n");
    let mut summary = vec![
        vec!["deployments created".into(), count(Kind::Created).to_string()],
        vec!["rollbacks".into(), count(Kind::Rollback).to_string()],
        vec!["went live".into(), count(Kind::Live).to_string()],
        vec!["failed".into(), count(Kind::Failed).to_string()],
        vec!["policy violations (blocked)".into(), count(Kind::PolicyDenied).to_string()],
        vec!["chaos events".into(), count(Kind::Chaos).to_string()],
        vec!["traffic split changes".into(), count(Kind::Split).to_string()],
    ];
    if i.show_policies {
        summary.push(vec!["policy changes".into(), i.policy_changes.len().to_string()]);
    }
    table(&mut out, &["what", "count"], &summary);

    out.push_str("## Policy violations\n\n");
    let violations: Vec<Vec<String>> = kinds
        .iter()
        .filter(|(k, _)| *k == Kind::PolicyDenied)
        .map(|(_, r)| {
            let (policy, reasons) = deny_reasons(r);
            vec![time(&r.at), app(r), format!("`{}`", r.deployment_id), cell(&policy), cell(&reasons)]
        })
        .collect();
    if violations.is_empty() {
        out.push_str("None.\n\n");
    } else {
        table(&mut out, &["time", "app", "deployment", "policy", "reasons"], &violations);
    }

    out.push_str("## Mode changes\n\nRollbacks, deployments going live and being replaced, traffic splits.\n\n");
    let modes: Vec<Vec<String>> = kinds
        .iter()
        .filter(|(k, _)| matches!(k, Kind::Rollback | Kind::Live | Kind::Superseded | Kind::Split))
        .map(|(k, r)| {
            let what = match k {
                Kind::Rollback => "rollback",
                Kind::Live => "live",
                Kind::Superseded => "replaced",
                _ => "split",
            };
            vec![
                time(&r.at),
                app(r),
                format!("`{}`", r.deployment_id),
                what.into(),
                cell(&r.reason),
                cell(&r.actor.to_string()),
            ]
        })
        .collect();
    if modes.is_empty() {
        out.push_str("None.\n\n");
    } else {
        table(&mut out, &["time", "app", "deployment", "change", "detail", "by"], &modes);
    }

    out.push_str("## Chaos events\n\n");
    let chaos: Vec<Vec<String>> = kinds
        .iter()
        .filter(|(k, _)| *k == Kind::Chaos)
        .map(|(_, r)| vec![time(&r.at), app(r), cell(&r.reason), cell(&r.actor.to_string())])
        .collect();
    if chaos.is_empty() {
        out.push_str("None.\n\n");
    } else {
        table(&mut out, &["time", "app", "what", "by"], &chaos);
    }

    if i.show_policies {
        out.push_str("## Policy changes\n\n");
        let changes: Vec<Vec<String>> = i
            .policy_changes
            .iter()
            .map(|v| {
                vec![
                    time(&v.at),
                    cell(&v.name),
                    format!("v{}", v.version),
                    cell(&v.reason),
                    cell(&v.set_by.to_string()),
                ]
            })
            .collect();
        if changes.is_empty() {
            out.push_str("None.\n\n");
        } else {
            table(&mut out, &["time", "policy", "version", "change", "by"], &changes);
        }
    }

    out.push_str("## Who did what\n\n");
    let mut by: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    for (k, r) in &kinds {
        let what = match k {
            Kind::Created => "deployed",
            Kind::Rollback => "rolled back",
            Kind::PolicyDenied => "blocked by policy",
            Kind::Live => "made live",
            Kind::Failed => "failed",
            Kind::Cancelled => "cancelled",
            Kind::Superseded => "superseded",
            Kind::Chaos => "chaos",
            Kind::Split => "split traffic",
            Kind::Step => "pipeline steps",
        };
        *by.entry(r.actor.to_string()).or_default().entry(what).or_default() += 1;
    }
    if i.show_policies {
        for v in i.policy_changes {
            *by.entry(v.set_by.to_string()).or_default().entry("changed a policy").or_default() += 1;
        }
    }
    let who: Vec<Vec<String>> = by
        .iter()
        .map(|(actor, whats)| {
            let list: Vec<String> = whats.iter().map(|(w, n)| format!("{w} ×{n}")).collect();
            vec![cell(actor), cell(&list.join(", "))]
        })
        .collect();
    if who.is_empty() {
        out.push_str("Nobody did anything.\n\n");
    } else {
        table(&mut out, &["actor", "actions"], &who);
    }

    out.push_str("## Timeline\n\n");
    let timeline: Vec<Vec<String>> = i
        .records
        .iter()
        .map(|r| {
            let step = match r.from {
                None => r.to.to_string(),
                Some(f) if f == r.to => format!("{f} (traffic)"),
                Some(f) => format!("{f} → {}", r.to),
            };
            vec![
                time(&r.at),
                app(r),
                format!("`{}`", r.deployment_id),
                step,
                cell(&r.actor.to_string()),
                cell(&r.reason),
            ]
        })
        .collect();
    if timeline.is_empty() {
        out.push_str("Nothing happened in this period.\n");
    } else {
        table(&mut out, &["time", "app", "deployment", "step", "by", "reason"], &timeline);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_cannot_break_the_table_or_inject_markup() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(cell("<script>x</script>"), "&lt;script&gt;x&lt;/script&gt;");
        assert_eq!(cell("[click](http://evil)"), "\\[click\\](http://evil)");
        assert_eq!(cell("\u{1b}[2Jcleared"), "\\[2Jcleared");
    }
}
