//! A canary's rollout for its deployment page, built as HTML on the
//! server (every value escaped; the browser's bundle only refreshes it):
//! the steps with the current one highlighted, the weight, canary vs
//! stable requests, errors and p99, and every decision with its reasons.
//! From what the API already says: the project's rollout state while it
//! runs, the canary's own audit trail (every step and decision is recorded
//! there, the decision as the record's evidence) and both sides' router
//! intervals.

use bifrost_api::{DeploymentDetail, ProjectOut, TransitionOut};
use leptos::prelude::ServerFnError;
use serde_json::Value;

use super::markdown::escape;
use super::{Session, convert, seg};
use crate::components::chart::{Point, fmt_value, hms, lines};
use crate::model::{TrafficPoint, clock, short_id};

/// A canary rollout, seen from the canary's page.
pub struct RolloutView {
    /// Still rolling out (the project's rollout is this deployment's).
    pub active: bool,
    /// `[rollout] steps`, in %.
    pub steps: Vec<u32>,
    /// 1-based; the last one decided on once it ended.
    pub step: usize,
    pub weight: u8,
    /// The deployment it is compared with.
    pub stable: String,
    /// Why it waits for Promote / Abort.
    pub paused: Option<String>,
    /// Every step, decision, pause and the end, oldest first.
    pub events: Vec<RolloutEvent>,
    pub stable_traffic: Vec<TrafficPoint>,
    pub canary_traffic: Vec<TrafficPoint>,
}

/// One record of a rollout: a gate decision (`pass`/`deny`, with both
/// sides' numbers and the policy's reasons) or a step, window, pause or
/// the end.
pub struct RolloutEvent {
    pub at: String,
    pub verdict: &'static str,
    pub what: String,
    pub numbers: Option<String>,
    pub reasons: Vec<String>,
}

/// `canary 120 req · 0.8 % errors · p50 8 ms · p99 12 ms`.
fn side(name: &str, w: &Value) -> String {
    let ms = |k: &str| w[k].as_f64().map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "–".into());
    format!(
        "{name} {} req · {:.1} % errors · p50 {} · p99 {}",
        w["requests"].as_u64().unwrap_or(0),
        w["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        ms("p50_ms"),
        ms("p99_ms"),
    )
}

fn promote_evidence(t: &TransitionOut) -> Option<&Value> {
    t.evidence.as_ref().filter(|e| e["gate"] == "promote")
}

/// The rollout's records in a canary's trail: decisions, and the changes
/// that kept it `running` (steps, windows, pauses), then how it ended.
pub fn events(history: &[TransitionOut]) -> Vec<RolloutEvent> {
    let mut out: Vec<RolloutEvent> = vec![];
    for t in history {
        let kept = t.from.as_deref() == Some("running") && t.to == "running";
        let decision = promote_evidence(t);
        let ended = !out.is_empty() && matches!(t.to.as_str(), "healthy" | "failed" | "cancelled" | "superseded");
        if !(kept || decision.is_some() || ended) {
            continue;
        }
        let verdict = match decision.map(|e| e["allow"].as_bool() == Some(true)) {
            Some(true) => "pass",
            Some(false) => "deny",
            None if t.reason.starts_with("canary paused") => "paused",
            None if t.reason.contains("inconclusive") => "inconclusive",
            None => "info",
        };
        let input = decision.map(|e| &e["input"]);
        out.push(RolloutEvent {
            at: t.at.clone(),
            verdict,
            what: t.reason.clone(),
            numbers: input.map(|i| format!("{} | {}", side("canary", &i["canary"]), side("stable", &i["stable"]))),
            reasons: decision
                .and_then(|e| e["deny"].as_array())
                .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        });
    }
    out
}

/// The rollout view of `d`, when it is or was a canary.
pub async fn view(
    s: &Session,
    d: &DeploymentDetail,
    project: Option<&ProjectOut>,
) -> Result<Option<RolloutView>, ServerFnError> {
    let rollout_cfg = d.deployment.config.as_ref().map(|c| &c["rollout"]);
    let canary = rollout_cfg.is_some_and(|r| r["strategy"] == "canary");
    let running = project.and_then(|p| p.rollout.as_ref()).filter(|r| r.deployment == d.deployment.id);
    let events = events(&d.history);
    if running.is_none() && (!canary || events.is_empty()) {
        return Ok(None);
    }
    let steps = rollout_cfg
        .and_then(|r| r["steps"].as_array())
        .map(|a| a.iter().filter_map(|v| v.as_u64().map(|n| n as u32)).collect())
        .unwrap_or_default();
    let (step, weight, stable, paused) = match running {
        Some(r) => (r.step, r.weight, r.stable.clone(), r.paused.clone()),
        // Ended: where its last decision was taken.
        None => {
            let input = d.history.iter().rev().find_map(promote_evidence).map(|e| &e["input"]);
            let num = |k: &str| input.and_then(|i| i[k].as_u64()).unwrap_or(0);
            let stable = input.and_then(|i| i["stable_deployment"].as_str()).unwrap_or_default().to_string();
            (num("step") as usize, num("weight") as u8, stable, None)
        }
    };
    Ok(Some(RolloutView {
        active: running.is_some(),
        steps,
        step,
        weight,
        stable_traffic: traffic(s, &stable).await,
        canary_traffic: traffic(s, &d.deployment.id).await,
        stable,
        paused,
        events,
    }))
}

/// A deployment's router intervals; none when they cannot be read (the
/// view still shows, and the page's status is not this call's).
async fn traffic(s: &Session, id: &str) -> Vec<TrafficPoint> {
    if id.is_empty() {
        return vec![];
    }
    let path = format!("/api/v1/deployments/{}/traffic", seg(id));
    let t = s.backend.get::<Vec<bifrost_api::TrafficPointOut>>(&path, &s.token).await.unwrap_or_default();
    t.iter().filter_map(convert::traffic_point).collect()
}

/// The rollout of deployment `id` as HTML (empty when it never was a canary).
pub async fn html(s: &Session, id: &str) -> Result<String, ServerFnError> {
    let d: DeploymentDetail = s.get(format!("/api/v1/deployments/{}", seg(id))).await?;
    let project: Option<ProjectOut> = s.get(format!("/api/v1/projects/{}", seg(&d.deployment.project))).await.ok();
    Ok(view(s, &d, project.as_ref()).await?.map(|v| render(&v)).unwrap_or_default())
}

/// One chart of both sides as SVG, drawn as the page's own charts are
/// (`components::chart`): stable is series 0, canary series 1.
fn chart(title: &str, unit: &str, v: &RolloutView, pick: fn(&TrafficPoint) -> Option<f64>) -> String {
    let side = |r: u32, t: &[TrafficPoint]| {
        t.iter()
            .filter_map(move |p| pick(p).map(|value| Point { replica: r, at_ms: p.at_ms, value }))
            .collect::<Vec<_>>()
    };
    let mut points = side(0, &v.stable_traffic);
    points.extend(side(1, &v.canary_traffic));
    let id = format!("chart-rollout-{}", title.to_lowercase().replace(' ', "-"));
    if points.is_empty() {
        return format!(
            "<figure class=\"chart\" data-testid=\"{id}\"><figcaption>{title}</figcaption>\
             <div class=\"chart-empty\">No traffic counted yet.</div></figure>"
        );
    }
    let (series, max, t0, t1) = lines(&points);
    let polylines: String = series
        .iter()
        .map(|(r, pts)| format!("<polyline class=\"series r{r}\" points=\"{pts}\" data-replica=\"{r}\"/>"))
        .collect();
    format!(
        "<figure class=\"chart\" data-testid=\"{id}\"><figcaption>{title}</figcaption>\
         <svg viewBox=\"0 0 600 150\" role=\"img\"><text class=\"tick\" x=\"44\" y=\"16\" text-anchor=\"end\">{max} {unit}</text>\
         <text class=\"tick\" x=\"44\" y=\"130\" text-anchor=\"end\">0</text>\
         <line class=\"axis\" x1=\"48\" y1=\"8\" x2=\"48\" y2=\"130\"/><line class=\"axis\" x1=\"48\" y1=\"130\" x2=\"600\" y2=\"130\"/>\
         <text class=\"tick\" x=\"48\" y=\"146\">{}</text><text class=\"tick\" x=\"596\" y=\"146\" text-anchor=\"end\">{}</text>\
         {polylines}</svg></figure>",
        hms(t0),
        hms(t1),
        max = fmt_value(max),
    )
}

/// The rollout's HTML; every value from the API escaped.
pub fn render(v: &RolloutView) -> String {
    let (label, class) = match (&v.paused, v.active) {
        (Some(_), _) => ("paused", "paused"),
        (None, true) => ("analysing", "analysing"),
        (None, false) if v.events.last().is_some_and(|e| e.verdict == "deny") => ("rolled back", "failed"),
        (None, false) => ("ended", "ended"),
    };
    let mut h = format!(
        "<h2>Canary rollout <span class=\"badge s-{class}\" data-testid=\"rollout-state\">{label}</span></h2>\
         <ol class=\"steps\" data-testid=\"rollout-steps\">"
    );
    for (i, w) in v.steps.iter().enumerate() {
        let n = i + 1;
        let state = match (n.cmp(&v.step), v.active) {
            (std::cmp::Ordering::Equal, true) => "current",
            (std::cmp::Ordering::Less, _) | (std::cmp::Ordering::Equal, false) => "done",
            _ => "pending",
        };
        h.push_str(&format!("<li class=\"{state}\">{w}%</li>"));
    }
    h.push_str(&format!(
        "</ol><p data-testid=\"rollout-weight\">{}% of clients on the canary · compared with \
         <a href=\"/deployments/{}\" class=\"mono\">{}</a></p>",
        v.weight,
        escape(&seg(&v.stable)),
        escape(short_id(&v.stable))
    ));
    if let Some(p) = &v.paused {
        h.push_str(&format!(
            "<p class=\"degraded\" role=\"status\" data-testid=\"rollout-paused\"><strong>Paused</strong> — {}</p>",
            escape(p)
        ));
    }
    h.push_str(
        "<p class=\"legend small\"><span class=\"key r0\"></span> stable <span class=\"key r1\"></span> canary</p>\
         <div class=\"charts\">",
    );
    h.push_str(&chart("Requests", "req/s", v, |p| Some(p.requests_per_s)));
    h.push_str(&chart("Errors", "%", v, |p| Some(p.error_pct)));
    h.push_str(&chart("p99 latency", "ms", v, |p| p.p99_ms));
    h.push_str("</div><h3>Decisions</h3><ol class=\"trail decisions\" data-testid=\"rollout-decisions\">");
    for e in v.events.iter().rev() {
        h.push_str(&format!(
            "<li data-verdict=\"{verdict}\"><span class=\"nowrap muted\">{at}</span> \
             <span class=\"verdict v-{verdict}\">{upper}</span> <span class=\"reason\">{what}</span>",
            verdict = e.verdict,
            at = escape(&clock(&e.at)),
            upper = e.verdict.to_uppercase(),
            what = escape(&e.what),
        ));
        if let Some(n) = &e.numbers {
            h.push_str(&format!("<div class=\"mono small muted\">{}</div>", escape(n)));
        }
        if !e.reasons.is_empty() {
            h.push_str("<ul>");
            for r in &e.reasons {
                h.push_str(&format!("<li>{}</li>", escape(r)));
            }
            h.push_str("</ul>");
        }
        h.push_str("</li>");
    }
    h.push_str("</ol>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(from: &str, to: &str, reason: &str, evidence: Option<Value>) -> TransitionOut {
        serde_json::from_value(serde_json::json!({
            "seq": 1, "at": "2026-11-30T10:00:00Z", "actor": "function:verify", "from": from, "to": to,
            "reason": reason, "hash": "h", "prev_hash": "p", "evidence": evidence,
        }))
        .expect("a transition")
    }

    #[test]
    fn a_trail_becomes_the_rollouts_steps_and_decisions() {
        let window = |req: u64, rate: f64| serde_json::json!({"requests": req, "error_rate": rate, "p50_ms": 8.0, "p99_ms": 12.4});
        let deny = serde_json::json!({"gate": "promote", "allow": false, "deny": ["Error rate 50% exceeds maximum 1%"],
            "input": {"canary": window(120, 0.5), "stable": window(400, 0.0)}});
        let history = vec![
            t("deploying", "running", "replicas up", None),
            t("running", "running", "canary d2: step 1 of 3, 25% of clients", None),
            t("running", "running", "canary window extended: inconclusive at step 1", None),
            t("running", "running", "canary weight 0: rolling back", None),
            t("running", "failed", "canary rolled back at step 1", Some(deny)),
        ];
        let e = events(&history);
        let verdicts: Vec<&str> = e.iter().map(|e| e.verdict).collect();
        assert_eq!(verdicts, ["info", "inconclusive", "info", "deny"]);
        let last = e.last().expect("the decision");
        assert_eq!(last.reasons, ["Error rate 50% exceeds maximum 1%"]);
        assert_eq!(
            last.numbers.as_deref(),
            Some(
                "canary 120 req · 50.0 % errors · p50 8 ms · p99 12 ms | stable 400 req · 0.0 % errors · p50 8 ms · p99 12 ms"
            )
        );
    }

    #[test]
    fn the_view_marks_the_current_step_and_escapes_what_apps_wrote() {
        let v = RolloutView {
            active: true,
            steps: vec![10, 50, 100],
            step: 2,
            weight: 50,
            stable: "d1".into(),
            paused: Some("<script>alert(1)</script>".into()),
            events: vec![],
            stable_traffic: vec![],
            canary_traffic: vec![],
        };
        let h = render(&v);
        assert!(
            h.contains("<li class=\"done\">10%</li><li class=\"current\">50%</li><li class=\"pending\">100%</li>"),
            "{h}"
        );
        assert!(h.contains("&lt;script&gt;") && !h.contains("<script>"), "{h}");
    }

    #[test]
    fn a_deployment_that_never_rolled_out_has_no_events() {
        let history = vec![t("deploying", "running", "up", None), t("running", "healthy", "healthy", None)];
        assert!(events(&history).is_empty());
    }
}
