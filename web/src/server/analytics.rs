//! The dashboard's analytics pages, built as HTML and SVG on the server
//! (every value escaped; the bundle gains nothing): every project's four
//! keys as tiles with their band and trend (7 days against 30) and its
//! cost over 30 days, cost per hour of every project as a stacked area;
//! and a project's drill-down: the tiles over 7, 30 and 90 days, its cost
//! per hour with its anomalies as markers, cost per deployment, and the
//! anomalies found (docs/analytics.md).

use std::collections::BTreeMap;

use leptos::prelude::ServerFnError;
use serde_json::Value;

use super::Session;
use super::markdown::escape;

const DAYS: u32 = 30;
/// Area colors, one per project in order.
const COLORS: [&str; 8] = ["#7c5cff", "#35c2a1", "#f0a93b", "#e0607e", "#4aa3f0", "#b5d35a", "#c77dff", "#8d99ae"];

fn span(seconds: Option<f64>) -> String {
    match seconds {
        None => "–".into(),
        Some(s) if s < 60.0 => format!("{s:.0}s"),
        Some(s) if s < 3_600.0 => format!("{:.0}m", s / 60.0),
        Some(s) if s < 86_400.0 => format!("{:.1}h", s / 3_600.0),
        Some(s) => format!("{:.1}d", s / 86_400.0),
    }
}

fn money(v: Option<f64>, currency: &str) -> String {
    match v {
        None => "–".into(),
        Some(v) if v != 0.0 && v.abs() < 0.01 => format!("{v:.4} {}", escape(currency)),
        Some(v) => format!("{v:.2} {}", escape(currency)),
    }
}

fn band_class(band: &Value) -> &'static str {
    match band.as_str() {
        Some("elite") | Some("high") => "v-pass",
        Some("medium") => "v-paused",
        Some(_) => "v-deny",
        None => "muted",
    }
}

/// ▲ / ▼ / = of the last 7 days against 30, where higher is better or worse.
fn trend(week: Option<f64>, month: Option<f64>, higher_is_better: bool) -> &'static str {
    match (week, month) {
        (Some(w), Some(m)) if (w - m).abs() > 1e-9 * m.abs().max(1.0) => {
            if (w > m) == higher_is_better {
                "<span class=\"v-pass\" title=\"better over 7 days than 30\">▲</span>"
            } else {
                "<span class=\"v-deny\" title=\"worse over 7 days than 30\">▼</span>"
            }
        }
        _ => "<span class=\"muted\">=</span>",
    }
}

/// The four keys as tiles: each with its value, band and trend.
fn tiles(dora: &Value, week: &Value) -> String {
    let k = |d: &Value, key: &str| d[key].as_f64();
    let rate = |d: &Value| {
        d["change_failure_rate"]
            .as_f64()
            .map_or("–".into(), |r| format!("{:.0}% ({}/{})", r * 100.0, d["failed_changes"], d["judged_changes"]))
    };
    let tiles = [
        (
            "deploys / day",
            format!("{:.2}", k(dora, "deployment_frequency_per_day").unwrap_or(0.0)),
            &dora["bands"]["deployment_frequency"],
            trend(k(week, "deployment_frequency_per_day"), k(dora, "deployment_frequency_per_day"), true),
        ),
        (
            "lead time p50",
            format!("{} (p90 {})", span(k(dora, "lead_time_seconds_p50")), span(k(dora, "lead_time_seconds_p90"))),
            &dora["bands"]["lead_time"],
            trend(k(week, "lead_time_seconds_p50"), k(dora, "lead_time_seconds_p50"), false),
        ),
        (
            "change failures",
            rate(dora),
            &dora["bands"]["change_failure_rate"],
            trend(k(week, "change_failure_rate"), k(dora, "change_failure_rate"), false),
        ),
        (
            "time to restore p50",
            span(k(dora, "time_to_restore_seconds_p50")),
            &dora["bands"]["time_to_restore"],
            trend(k(week, "time_to_restore_seconds_p50"), k(dora, "time_to_restore_seconds_p50"), false),
        ),
    ];
    let mut html = String::from("<div class=\"tiles\">");
    for (name, value, band, arrow) in tiles {
        html.push_str(&format!(
            "<div class=\"tile\"><div class=\"muted\">{name}</div><div class=\"tile-value\">{value} {arrow}</div>\
             <div class=\"{}\">{}</div></div>",
            band_class(band),
            escape(band.as_str().unwrap_or("–")),
        ));
    }
    html.push_str(&format!(
        "<div class=\"tile\"><div class=\"muted\">performance</div><div class=\"tile-value {}\">{}</div></div></div>",
        band_class(&dora["performance"]),
        escape(dora["performance"].as_str().unwrap_or("–"))
    ));
    html
}

/// Hourly points of a cost's `hourly` list: (unix seconds, total).
fn hourly(cost: &Value) -> Vec<(i64, f64)> {
    cost["hourly"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|h| {
            let at = chrono::DateTime::parse_from_rfc3339(h["at"].as_str()?).ok()?.timestamp();
            Some((at, h["total"].as_f64()?))
        })
        .collect()
}

const W: f64 = 720.0;
const H: f64 = 160.0;

/// Cost per hour of each series, stacked, over their common hours; the
/// markers (unix seconds, label) on top.
fn stacked_area(series: &[(String, Vec<(i64, f64)>)], markers: &[(i64, String)], currency: &str) -> String {
    let hours: Vec<i64> = {
        let mut all: Vec<i64> = series.iter().flat_map(|(_, pts)| pts.iter().map(|(t, _)| *t)).collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    if hours.is_empty() {
        return "<p class=\"muted\" data-testid=\"no-cost\">No analysed windows yet: the schedule analyses the last \
                5 minutes every 5 minutes (<code>bifrost analytics run</code> does it now).</p>"
            .into();
    }
    let (first, last) = (hours[0], *hours.last().unwrap_or(&hours[0]));
    let x = |t: i64| if last == first { W / 2.0 } else { (t - first) as f64 / (last - first) as f64 * W };
    let mut base: BTreeMap<i64, f64> = hours.iter().map(|t| (*t, 0.0)).collect();
    let mut layers = vec![];
    for (name, pts) in series {
        let of: BTreeMap<i64, f64> = pts.iter().copied().collect();
        let lower: Vec<(i64, f64)> = base.iter().map(|(t, v)| (*t, *v)).collect();
        for (t, v) in base.iter_mut() {
            *v += of.get(t).copied().unwrap_or(0.0);
        }
        let upper: Vec<(i64, f64)> = base.iter().map(|(t, v)| (*t, *v)).collect();
        layers.push((name.clone(), lower, upper));
    }
    let top = base.values().copied().fold(0.0_f64, f64::max).max(1e-12);
    let y = |v: f64| H - v / top * (H - 10.0);
    let mut svg = format!(
        "<svg class=\"chart\" data-testid=\"cost-chart\" viewBox=\"0 0 {W} {}\" width=\"100%\" role=\"img\" \
         aria-label=\"cost per hour\">",
        H + 18.0
    );
    for (i, (name, lower, upper)) in layers.iter().enumerate() {
        let mut points: Vec<String> = upper.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        points.extend(lower.iter().rev().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))));
        svg.push_str(&format!(
            "<polygon points=\"{}\" fill=\"{}\" fill-opacity=\"0.75\"><title>{}</title></polygon>",
            points.join(" "),
            COLORS[i % COLORS.len()],
            escape(name)
        ));
    }
    for (t, label) in markers {
        let mx = x(align_hour(*t).clamp(first, last));
        svg.push_str(&format!(
            "<g class=\"marker\" data-testid=\"anomaly-marker\"><line x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"0\" y2=\"{H}\" \
             stroke=\"#ff5c5c\" stroke-dasharray=\"3 2\"/><circle cx=\"{mx:.1}\" cy=\"6\" r=\"4\" fill=\"#ff5c5c\">\
             <title>{}</title></circle></g>",
            escape(label)
        ));
    }
    let day =
        |t: i64| chrono::DateTime::from_timestamp(t, 0).map_or(String::new(), |d| d.format("%b %d %H:00").to_string());
    svg.push_str(&format!(
        "<text x=\"0\" y=\"{}\" class=\"axis\">{}</text><text x=\"{W}\" y=\"{}\" text-anchor=\"end\" class=\"axis\">{}</text>\
         <text x=\"4\" y=\"12\" class=\"axis\">{} / hour at most</text></svg>",
        H + 14.0,
        day(first),
        H + 14.0,
        day(last),
        money(Some(top), currency)
    ));
    let legend: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| format!("<span style=\"color:{}\">■</span> {}", COLORS[i % COLORS.len()], escape(n)))
        .collect();
    svg.push_str(&format!("<p class=\"legend\">{}</p>", legend.join(" &nbsp; ")));
    svg
}

fn align_hour(t: i64) -> i64 {
    t - t.rem_euclid(3600)
}

/// Every project's tiles and cost (`GET /api/v1/analytics/summary`, 30 and 7 days).
pub fn render_summary(month: &Value, week: &Value) -> String {
    let projects = month["projects"].as_array().cloned().unwrap_or_default();
    if projects.is_empty() {
        return "<p class=\"muted\">No projects yet.</p>".into();
    }
    let weeks: BTreeMap<String, Value> = week["projects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| (p["project"].as_str().unwrap_or_default().to_string(), p["dora"].clone()))
        .collect();
    let currency = projects.iter().find_map(|p| p["cost"]["currency"].as_str()).unwrap_or("USD").to_string();
    let series: Vec<(String, Vec<(i64, f64)>)> =
        projects.iter().map(|p| (p["project"].as_str().unwrap_or("–").to_string(), hourly(&p["cost"]))).collect();
    let mut html =
        format!("<h2>Cost per hour, every project ({DAYS} days)</h2>{}", stacked_area(&series, &[], &currency));
    for p in &projects {
        let name = p["project"].as_str().unwrap_or("–");
        let empty = Value::Null;
        let anomalies = p["anomalies"].as_array().map_or(0, Vec::len);
        html.push_str(&format!(
            "<section class=\"analytics-project\" data-testid=\"analytics-project\"><h2><a href=\"/analytics/{}\">{}</a></h2>\
             <p>cost over {DAYS} days: <strong>{}</strong> (idle {}), {} per 1,000 requests · {anomalies} anomal{}</p>{}</section>",
            escape(name),
            escape(name),
            money(p["cost"]["total"].as_f64(), &currency),
            money(p["cost"]["idle"].as_f64(), &currency),
            money(p["cost"]["per_1000_requests"].as_f64(), &currency),
            if anomalies == 1 { "y" } else { "ies" },
            tiles(&p["dora"], weeks.get(name).unwrap_or(&empty)),
        ));
    }
    html
}

/// One project's drill-down (`GET /api/v1/analytics/projects/{name}?days=30`).
pub fn render_project(out: &Value) -> String {
    let name = out["project"].as_str().unwrap_or("–").to_string();
    let currency = out["cost"]["currency"].as_str().unwrap_or("USD").to_string();
    let period =
        |d: u64| out["periods"].as_array().and_then(|ps| ps.iter().find(|p| p["days"] == d)).map(|p| p["dora"].clone());
    let week = period(7).unwrap_or(Value::Null);
    let mut html = format!("<h2>DORA's four keys, {DAYS} days</h2>{}", tiles(&out["dora"], &week));
    html.push_str(
        "<table data-testid=\"periods\"><thead><tr><th>period</th><th>deploys/day</th><th>lead p50</th>\
                   <th>change failures</th><th>restore p50</th><th>performance</th></tr></thead><tbody>",
    );
    for d in [7, 30, 90] {
        let Some(k) = period(d) else { continue };
        html.push_str(&format!(
            "<tr><td>{d} days</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            k["deployment_frequency_per_day"].as_f64().unwrap_or(0.0),
            span(k["lead_time_seconds_p50"].as_f64()),
            k["change_failure_rate"].as_f64().map_or("–".into(), |r| format!("{:.0}%", r * 100.0)),
            span(k["time_to_restore_seconds_p50"].as_f64()),
            band_class(&k["performance"]),
            escape(k["performance"].as_str().unwrap_or("–")),
        ));
    }
    html.push_str("</tbody></table>");
    let anomalies = out["anomalies"].as_array().cloned().unwrap_or_default();
    let markers: Vec<(i64, String)> = anomalies
        .iter()
        .filter_map(|a| {
            let at = chrono::DateTime::parse_from_rfc3339(a["at"].as_str()?).ok()?.timestamp();
            Some((
                at,
                format!(
                    "{}: {:.4} (baseline {:.4})",
                    a["series"].as_str()?,
                    a["value"].as_f64()?,
                    a["baseline"].as_f64()?
                ),
            ))
        })
        .collect();
    html.push_str(&format!(
        "<h2>Cost per hour, {DAYS} days</h2><p>total <strong data-testid=\"cost-total\">{}</strong> (idle {}), {} per 1,000 \
         requests, {} windows analysed; red marks are anomalies</p>{}",
        money(out["cost"]["total"].as_f64(), &currency),
        money(out["cost"]["idle"].as_f64(), &currency),
        money(out["cost"]["per_1000_requests"].as_f64(), &currency),
        out["analysed"]["windows"].as_u64().unwrap_or(0),
        stacked_area(&[(name.clone(), hourly(&out["cost"]))], &markers, &currency),
    ));
    if let Some(by) = out["cost"]["by_deployment"].as_object().filter(|m| !m.is_empty()) {
        html.push_str(
            "<table data-testid=\"cost-by-deployment\"><thead><tr><th>deployment</th><th>cost</th></tr></thead><tbody>",
        );
        for (d, v) in by {
            html.push_str(&format!(
                "<tr><td><a href=\"/deployments/{0}\">{0}</a></td><td>{1}</td></tr>",
                escape(d),
                money(v.as_f64(), &currency)
            ));
        }
        html.push_str("</tbody></table>");
    }
    html.push_str(&format!("<h2>Anomalies ({})</h2>", anomalies.len()));
    if anomalies.is_empty() {
        html.push_str("<p class=\"muted\">None in this period.</p>");
    } else {
        html.push_str(
            "<table data-testid=\"anomalies\"><thead><tr><th>at</th><th>series</th><th>value</th><th>baseline</th>\
                       <th>score</th></tr></thead><tbody>",
        );
        for a in anomalies.iter().rev().take(100) {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.1}</td></tr>",
                escape(a["at"].as_str().unwrap_or("–")),
                escape(a["series"].as_str().unwrap_or("–")),
                a["value"].as_f64().unwrap_or(0.0),
                a["baseline"].as_f64().unwrap_or(0.0),
                a["score"].as_f64().unwrap_or(0.0),
            ));
        }
        html.push_str("</tbody></table>");
    }
    html
}

/// `analytics` (every project) or `analytics:<project>`.
pub async fn html(s: &Session, project: Option<&str>) -> Result<String, ServerFnError> {
    match project {
        Some(p) => {
            let path = format!("/api/v1/analytics/projects/{}?days={DAYS}", urlencode(p));
            Ok(render_project(&s.get::<Value>(&path).await?))
        }
        None => {
            let month: Value = s.get(format!("/api/v1/analytics/summary?days={DAYS}")).await?;
            let week: Value = s.get("/api/v1/analytics/summary?days=7").await?;
            Ok(render_summary(&month, &week))
        }
    }
}

/// A project name is a DNS label, but the page's path may hold anything.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn project(name: &str, hourly: Value, anomalies: Value) -> Value {
        json!({"project": name, "periods": [{"days": 7, "dora": {"deployment_frequency_per_day": 1.0}}],
            "dora": {"deployment_frequency_per_day": 0.5, "lead_time_seconds_p50": 7200.0, "change_failure_rate": 0.25,
                     "failed_changes": 1, "judged_changes": 4, "performance": "high",
                     "bands": {"deployment_frequency": "high", "lead_time": "elite", "change_failure_rate": "medium", "time_to_restore": null}},
            "cost": {"total": 1.5, "idle": 0.5, "currency": "EUR", "per_1000_requests": 0.002, "hourly": hourly,
                     "by_deployment": {"d<1>": 1.5}},
            "anomalies": anomalies, "analysed": {"windows": 3}})
    }

    #[test]
    fn a_projects_page_has_its_tiles_cost_chart_markers_and_escapes_names() {
        let out = project(
            "<shop>",
            json!([{"at": "2026-11-29T10:00:00+00:00", "total": 0.5}, {"at": "2026-11-29T11:00:00+00:00", "total": 1.0}]),
            json!([{"series": "requests_per_s", "at": "2026-11-29T10:05:00+00:00", "value": 100.0, "baseline": 10.0, "score": 1000.0}]),
        );
        let html = render_project(&out);
        assert!(html.contains("1.50 EUR") && html.contains("data-testid=\"cost-chart\""), "{html}");
        assert_eq!(html.matches("data-testid=\"anomaly-marker\"").count(), 1);
        assert!(html.contains("requests_per_s") && html.contains("▲"), "the week deploys more often: {html}");
        assert!(!html.contains("<shop>") && !html.contains("d<1>"), "names are escaped");
    }

    #[test]
    fn every_projects_cost_is_one_layer_of_the_stacked_area() {
        let h = |v: f64| json!([{"at": "2026-11-29T10:00:00+00:00", "total": v}, {"at": "2026-11-29T11:00:00+00:00", "total": v}]);
        let month = json!({"projects": [project("a", h(1.0), json!([])), project("b", h(2.0), json!([]))]});
        let html = render_summary(&month, &json!({"projects": []}));
        assert_eq!(html.matches("<polygon").count(), 2, "{html}");
        assert_eq!(html.matches("data-testid=\"analytics-project\"").count(), 2);
        let empty = render_summary(&json!({"projects": [project("a", json!([]), json!([]))]}), &json!({}));
        assert!(empty.contains("no-cost"), "{empty}");
    }
}
