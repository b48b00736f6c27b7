//! `bifrost analytics`: `show` — DORA's four keys of a project over 7, 30
//! and 90 days (or of every project over `--days`) with their bands, its
//! cost with an hourly sparkline, and its anomalies; `run` — one window
//! by hand; `prices` — the price table.

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
            print_cost(&out, days);
            print_anomalies(&out);
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

/// Eight levels of a bar, for a series on one line.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` as a sparkline scaled from 0 to their largest.
fn sparkline(values: &[f64]) -> String {
    let top = values.iter().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|v| if top <= 0.0 { BARS[0] } else { BARS[((v / top) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

fn money(v: Option<f64>, currency: &str) -> String {
    match v {
        None => dim("–"),
        Some(v) if v != 0.0 && v.abs() < 0.01 => format!("{v:.4} {currency}"),
        Some(v) => format!("{v:.2} {currency}"),
    }
}

fn print_cost(out: &Value, days: u32) {
    let c = &out["cost"];
    let currency = term_safe(output::s(c, "currency"));
    let windows = out["analysed"]["windows"].as_u64().unwrap_or(0);
    println!();
    if windows == 0 {
        println!("cost over {days} days: {} (no analysed windows yet: `bifrost analytics run`)", dim("–"));
        return;
    }
    let hourly: Vec<f64> = c["hourly"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| h["total"].as_f64().unwrap_or(0.0))
        .collect();
    println!(
        "cost over {days} days: {} (idle {}), {} per 1,000 requests — {windows} windows analysed",
        bold(&money(c["total"].as_f64(), &currency)),
        money(c["idle"].as_f64(), &currency),
        money(c["per_1000_requests"].as_f64(), &currency),
    );
    if console::Term::stdout().is_term() && !hourly.is_empty() {
        println!("  per hour {}", sparkline(&hourly[hourly.len().saturating_sub(72)..]));
    }
    let by: Vec<Vec<String>> = c["by_deployment"]
        .as_object()
        .map(|m| m.iter().map(|(d, v)| vec![term_safe(d), money(v.as_f64(), &currency)]).collect())
        .unwrap_or_default();
    if !by.is_empty() {
        output::table(&["deployment", "cost"], by);
    }
}

fn print_anomalies(out: &Value) {
    let list = out["anomalies"].as_array().map(Vec::as_slice).unwrap_or_default();
    println!();
    if list.is_empty() {
        println!("anomalies: none");
        return;
    }
    println!("anomalies: {}", list.len());
    let rows = list
        .iter()
        .rev()
        .take(20)
        .map(|a| {
            vec![
                term_safe(output::s(a, "at")),
                term_safe(output::s(a, "series")),
                format!("{:.4}", a["value"].as_f64().unwrap_or(0.0)),
                format!("{:.4}", a["baseline"].as_f64().unwrap_or(0.0)),
                format!("{:.1}", a["score"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    output::table(&["at", "series", "value", "baseline", "score"], rows);
}

pub async fn run(api: &Api, json: bool, window: Option<&str>) -> CliResult<ExitCode> {
    let out: Value = api.post("/api/v1/analytics/runs", &serde_json::json!({ "window": window })).await?;
    if json {
        output::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "analysed {}: {} projects now, {} already analysed (kept as they were), {} anomalies — run {}",
        term_safe(output::s(&out, "window")),
        out["stored"],
        out["already"],
        out["anomalies"],
        term_safe(output::s(&out, "run_id")),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn prices(api: &Api, json: bool, change: Option<Value>) -> CliResult<ExitCode> {
    let out: Value = match change {
        Some(c) => api.put("/api/v1/analytics/prices", &c).await?,
        None => api.get("/api/v1/analytics/prices").await?,
    };
    if json {
        output::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    let currency = term_safe(output::s(&out, "currency"));
    println!(
        "{} per vCPU-hour, {} per GiB-hour{}",
        money(out["cpu_core_hour"].as_f64(), &currency),
        money(out["memory_gib_hour"].as_f64(), &currency),
        if out["default"] == true { dim(" (the defaults: GKE Autopilot, us-central1)") } else { String::new() }
    );
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

    #[test]
    fn a_sparkline_scales_to_its_largest_value() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), "▁▃▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
    }
}
