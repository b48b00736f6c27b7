//! `bifrost analytics show`: DORA's four keys of a project over 7, 30
//! and 90 days (or of every project over `--days`), with their bands.

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{Api, CliResult};
use crate::output::{self, bold, dim, term_safe};

/// A duration in seconds as people read it: 45s, 12m, 3.5h, 2.1d.
fn span(seconds: Option<f64>) -> String {
    match seconds {
        None => dim("–"),
        Some(s) if s < 60.0 => format!("{s:.0}s"),
        Some(s) if s < 3_600.0 => format!("{:.0}m", s / 60.0),
        Some(s) if s < 86_400.0 => format!("{:.1}h", s / 3_600.0),
        Some(s) => format!("{:.1}d", s / 86_400.0),
    }
}

fn band(v: &Value) -> String {
    match v.as_str() {
        Some(b @ "elite") | Some(b @ "high") => console::style(b).green().to_string(),
        Some(b @ "medium") => console::style(b).yellow().to_string(),
        Some(b) => console::style(b).red().to_string(),
        None => dim("–"),
    }
}

/// One row: a period's (or a project's) keys.
fn row(first: String, d: &Value) -> Vec<String> {
    let rate = d["change_failure_rate"]
        .as_f64()
        .map_or_else(|| dim("–"), |r| format!("{:.0}% ({}/{})", r * 100.0, d["failed_changes"], d["judged_changes"]));
    vec![
        first,
        format!("{:.2}", d["deployment_frequency_per_day"].as_f64().unwrap_or(0.0)),
        span(d["lead_time_seconds_p50"].as_f64()),
        span(d["lead_time_seconds_p90"].as_f64()),
        rate,
        span(d["time_to_restore_seconds_p50"].as_f64()),
        band(&d["performance"]),
    ]
}

const HEADERS: [&str; 7] = ["", "deploys/day", "lead p50", "lead p90", "change failures", "restore p50", "performance"];

pub async fn show(api: &Api, json: bool, project: Option<&str>, days: u32) -> CliResult<ExitCode> {
    match project {
        Some(p) => {
            let out: Value = api.get(&format!("/api/v1/analytics/projects/{p}?days={days}")).await?;
            if json {
                output::print_json(&out);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{} — DORA's four keys (docs/analytics.md)", bold(&term_safe(output::s(&out, "project"))));
            let mut rows: Vec<Vec<String>> = out["periods"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|p| row(format!("{} days", p["days"]), &p["dora"]))
                .collect();
            if !matches!(days, 7 | 30 | 90) {
                rows.push(row(format!("{days} days"), &out["dora"]));
            }
            let mut headers = HEADERS;
            headers[0] = "period";
            output::table(&headers, rows);
        }
        None => {
            let out: Value = api.get(&format!("/api/v1/analytics/summary?days={days}")).await?;
            if json {
                output::print_json(&out);
                return Ok(ExitCode::SUCCESS);
            }
            println!("every project over {days} days — DORA's four keys (docs/analytics.md)");
            let rows = out["projects"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|p| row(bold(&term_safe(output::s(p, "project"))), &p["dora"]))
                .collect();
            let mut headers = HEADERS;
            headers[0] = "project";
            output::table(&headers, rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_fitting_unit() {
        assert_eq!(span(Some(45.0)), "45s");
        assert_eq!(span(Some(720.0)), "12m");
        assert_eq!(span(Some(3.5 * 3600.0)), "3.5h");
        assert_eq!(span(Some(2.0 * 86_400.0)), "2.0d");
    }
}
