//! `bifrost audit`: the audit report (Markdown, to stdout or a file) and
//! `bifrost audit verify` (every hash chain and the global anchor).

use std::path::Path;
use std::process::ExitCode;

use bifrost_api::{AuditReportOut, AuditVerifyOut};

use crate::client::{Api, CliError, CliResult, Exit};
use crate::output::{self, bold, term_safe};

type Res = CliResult<ExitCode>;

/// `30m`, `24h`, `7d` → seconds.
fn since_secs(s: &str) -> CliResult<i64> {
    let bad = || CliError::new(Exit::Invalid, format!("--since {s:?}: expected a duration like 30m, 24h or 7d"));
    let (n, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

pub async fn report(api: &Api, json: bool, project: Option<&str>, since: &str, file: Option<&Path>) -> Res {
    let from = chrono::Utc::now() - chrono::Duration::seconds(since_secs(since)?);
    let since = from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut query = vec![("since", since.as_str())];
    if let Some(p) = project {
        query.push(("project", p));
    }
    let rb = api.request(reqwest::Method::GET, "/api/v1/audit/report").query(&query);
    let out: AuditReportOut = api.send(rb).await?;
    if json {
        output::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    match file {
        Some(f) => {
            std::fs::write(f, &out.markdown)
                .map_err(|e| CliError::new(Exit::Error, format!("writing {}: {e}", f.display())))?;
            eprintln!("{} wrote {} ({} audit records)", console::style("✓").green(), f.display(), out.records);
        }
        // What apps and users wrote is in it: each line terminal-safe (the
        // line breaks themselves kept).
        None => {
            for line in out.markdown.lines() {
                println!("{}", term_safe(line));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(api: &Api, json: bool, head: Option<&str>) -> Res {
    let rb = api.request(reqwest::Method::GET, "/api/v1/audit/verify").query(&[("head", head.unwrap_or(""))]);
    let out: AuditVerifyOut = api.send(rb).await?;
    if json {
        output::print_json(&out);
    } else if out.ok {
        println!(
            "{} {} audit records of {} deployments and {} policy versions verify",
            console::style("✓").green(),
            out.records,
            out.deployments,
            out.policy_versions
        );
        if let Some(h) = &out.head {
            println!("  head anchor {} (keep it elsewhere; `--head` checks it later)", bold(h));
        }
    } else {
        eprintln!("{} the audit trail does not verify:", console::style("✗").red().bold());
        for p in &out.problems {
            eprintln!("  - {}", term_safe(p));
        }
    }
    Ok(if out.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_minutes_hours_and_days() {
        assert_eq!(since_secs("30m").ok(), Some(1800));
        assert_eq!(since_secs("24h").ok(), Some(86_400));
        assert_eq!(since_secs("7d").ok(), Some(604_800));
        assert!(since_secs("7").is_err());
        assert!(since_secs("h").is_err());
        assert!(since_secs("3w").is_err());
    }
}
