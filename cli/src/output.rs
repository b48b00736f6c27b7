//! Human output: colored on a TTY (and unless NO_COLOR is set), plain
//! otherwise. `--json` output bypasses all of this.

use console::{Style, style};
use serde_json::Value;

pub fn status_style(status: &str) -> Style {
    match status {
        "healthy" => Style::new().green().bold(),
        "failed" => Style::new().red().bold(),
        "cancelled" | "superseded" => Style::new().dim(),
        "running" => Style::new().cyan(),
        _ => Style::new().yellow(),
    }
}

pub fn status(status: &str) -> String {
    status_style(status).apply_to(status).to_string()
}

pub fn dim(s: &str) -> String {
    style(s).dim().to_string()
}

pub fn bold(s: &str) -> String {
    style(s).bold().to_string()
}

pub fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// Left-aligned columns sized to their content (ANSI codes excluded).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(console::measure_text_width(c));
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - console::measure_text_width(c) + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| dim(&h.to_uppercase())).collect());
    for r in rows {
        line(r);
    }
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// `2026-11-23T10:00:00.000Z` → `2026-11-23 10:00:00`.
pub fn when(ts: &str) -> String {
    ts.get(..19).map(|t| t.replace('T', " ")).unwrap_or_else(|| ts.to_string())
}

pub fn source_label(source: &Value) -> String {
    match s(source, "kind") {
        "git" => {
            let commit = s(source, "commit");
            format!("{}@{}", s(source, "ref"), &commit[..commit.len().min(10)])
        }
        "archive" => {
            let sha = s(source, "sha256");
            format!("upload:{}", &sha[..sha.len().min(10)])
        }
        other => other.to_string(),
    }
}

/// Milliseconds between two RFC 3339 stamps, as `1.2s`.
pub fn elapsed(from: &str, to: &str) -> String {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (parse(from), parse(to)) {
        (Some(a), Some(b)) => {
            let ms = (b - a).num_milliseconds().max(0);
            if ms < 1000 { format!("{ms}ms") } else { format!("{:.1}s", ms as f64 / 1000.0) }
        }
        _ => String::new(),
    }
}

/// The deploy.toml errors stored on a failed deployment, like a compiler.
pub fn config_errors(d: &Value) {
    let errors = d["config_errors"].as_array().cloned().unwrap_or_default();
    if errors.is_empty() {
        return;
    }
    eprintln!("{}", bold(&format!("deploy.toml has {} error(s):", errors.len())));
    for e in errors {
        eprintln!("  {} {}", style(format!("deploy.toml:{}:{}:", e["line"], e["column"])).red(), s(&e, "message"));
    }
}

pub fn deployment_detail(d: &Value) {
    println!("{} {}", bold("deployment"), s(d, "id"));
    println!("  project   {}", s(d, "project"));
    println!("  status    {}", status(s(d, "status")));
    println!("  source    {}", source_label(&d["source"]));
    println!("  attempt   {}", d["attempt"]);
    println!("  created   {} by {}", when(s(d, "created_at")), s(d, "created_by"));
    if let Some(r) = d["reason"].as_str() {
        println!("  reason    {r}");
    }
    if let Some(h) = d["history"].as_array() {
        println!();
        println!("{}", bold("history"));
        let mut rows = vec![];
        for (i, t) in h.iter().enumerate() {
            let took = h.get(i + 1).map(|n| elapsed(s(t, "at"), s(n, "at"))).unwrap_or_default();
            rows.push(vec![
                when(s(t, "at")),
                status(s(t, "to")),
                took,
                s(t, "actor").to_string(),
                s(t, "reason").to_string(),
            ]);
        }
        table(&["at", "status", "took", "by", "reason"], rows);
    }
    config_errors(d);
}
