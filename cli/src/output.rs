//! Human output: colored on a TTY (and unless NO_COLOR is set), plain
//! otherwise. `--json` output bypasses all of this.

use bifrost_api::{ConfigErrorOut, DeploymentDetail, SourceOut};
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

/// Text an app (or anything outside the platform) produced, made safe for
/// the operator's terminal: every control sequence is dropped — clipboard
/// writes (OSC 52), window titles (OSC 0), screen clears, cursor moves,
/// C1 controls — except SGR colours, which stay only when stdout is a
/// terminal showing colours. Tabs stay; other control characters go.
pub fn term_safe(text: &str) -> String {
    sanitize(text, console::colors_enabled() && std::io::IsTerminal::is_terminal(&std::io::stdout()))
}

/// [`term_safe`] with the colour decision made by the caller.
pub fn sanitize(text: &str, keep_sgr: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    let mut seq = String::from("\u{1b}[");
                    for n in chars.by_ref() {
                        seq.push(n);
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                    let params = &seq[2..seq.len() - 1];
                    let sgr = seq.ends_with('m') && params.chars().all(|p| p.is_ascii_digit() || p == ';' || p == ':');
                    if keep_sgr && sgr {
                        out.push_str(&seq);
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \\).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' || n == '\u{9c}' || (n == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // Two-character escapes (ESC c resets the terminal, ESC 7/8, charset switches).
                Some('(' | ')' | '*' | '+' | '#' | '%') => {
                    chars.next();
                }
                _ => {}
            },
            // The C1 CSI/OSC/DCS forms some terminals honour.
            '\u{9b}' | '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => {
                let osc_like = c != '\u{9b}';
                for n in chars.by_ref() {
                    if (!osc_like && ('@'..='~').contains(&n)) || (osc_like && (n == '\u{7}' || n == '\u{9c}')) {
                        break;
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-23T10:00:00.000Z` → `2026-11-23 10:00:00`.
pub fn when(ts: &str) -> String {
    ts.get(..19).map(|t| t.replace('T', " ")).unwrap_or_else(|| ts.to_string())
}

pub fn source_label(source: &SourceOut) -> String {
    match source {
        SourceOut::Git { git_ref, commit, .. } => format!("{git_ref}@{}", &commit[..commit.len().min(10)]),
        SourceOut::Archive { sha256 } => format!("upload:{}", &sha256[..sha256.len().min(10)]),
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
pub fn config_errors(errors: &[ConfigErrorOut]) {
    if errors.is_empty() {
        return;
    }
    eprintln!("{}", bold(&format!("deploy.toml has {} error(s):", errors.len())));
    for e in errors {
        eprintln!("  {} {}", style(format!("deploy.toml:{}:{}:", e.line, e.column)).red(), term_safe(&e.message));
    }
}

pub fn deployment_detail(detail: &DeploymentDetail) {
    let d = &detail.deployment;
    println!("{} {}", bold("deployment"), d.id);
    println!("  project   {}", d.project);
    println!("  status    {}", status(&d.status));
    println!("  source    {}", source_label(&d.source));
    println!("  attempt   {}", d.attempt);
    println!("  created   {} by {}", when(&d.created_at), d.created_by);
    if let Some(r) = &d.reason {
        println!("  reason    {}", term_safe(r));
    }
    if let Some(down) = &detail.degraded {
        println!(
            "  {}  live, but not all replicas are healthy (they keep being restarted):",
            style("degraded").red().bold()
        );
        for r in down {
            println!("            {}", term_safe(r));
        }
    }
    let h = &detail.history;
    if !h.is_empty() {
        println!();
        println!("{}", bold("history"));
        let mut rows = vec![];
        for (i, t) in h.iter().enumerate() {
            let took = h.get(i + 1).map(|n| elapsed(&t.at, &n.at)).unwrap_or_default();
            rows.push(vec![when(&t.at), status(&t.to), took, t.actor.clone(), term_safe(&t.reason)]);
        }
        table(&["at", "status", "took", "by", "reason"], rows);
    }
    config_errors(&d.config_errors);
}

/// A path segment for a URL (`/` and the like escaped).
pub fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_output_cannot_drive_the_terminal() {
        let hostile =
            "a\u{1b}]52;c;ZXZpbA==\u{7}b\u{1b}]0;pwned\u{1b}\\c\u{1b}[2J\u{1b}[Hd\u{9b}31me\u{1b}cf\u{7}g\u{8}h";
        assert_eq!(sanitize(hostile, true), "abcdefgh");
        assert_eq!(sanitize(hostile, false), "abcdefgh");
    }

    #[test]
    fn colours_stay_on_a_terminal_only() {
        let coloured = "\u{1b}[1;32mok\u{1b}[0m\tdone";
        assert_eq!(sanitize(coloured, true), coloured);
        assert_eq!(sanitize(coloured, false), "ok\tdone");
        // A CSI that is not SGR goes even on a terminal.
        assert_eq!(sanitize("\u{1b}[6nx\u{1b}[?1049h", true), "x");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("web"), "web");
        assert_eq!(seg("../a b"), "..%2Fa%20b");
    }
}
