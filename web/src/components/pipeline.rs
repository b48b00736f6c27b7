//! The pipeline view: queued → … → healthy, the time spent in each step,
//! and where and why it stopped.

use leptos::prelude::*;

use crate::model::{PIPELINE, Transition, duration, epoch_ms};

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: &'static str,
    /// done, current, failed or pending.
    pub state: &'static str,
    pub spent_ms: Option<i64>,
}

/// The steps of the current attempt (a retry starts again at `queued`).
pub fn steps(history: &[Transition], status: &str, now_ms: i64) -> Vec<Step> {
    let start = history.iter().rposition(|t| t.to == "queued").unwrap_or(0);
    let attempt = &history[start.min(history.len())..];
    let failed_at = attempt
        .iter()
        .find(|t| matches!(t.to.as_str(), "failed" | "cancelled" | "superseded"))
        .and_then(|t| t.from.clone());
    PIPELINE
        .iter()
        .map(|&name| {
            let entered = attempt.iter().position(|t| t.to == name);
            let Some(i) = entered else {
                return Step { name, state: "pending", spent_ms: None };
            };
            let at = epoch_ms(&attempt[i].at);
            // Records that keep the status (a canary's steps, chaos) are
            // not a step's end.
            let left = attempt[i + 1..].iter().find(|t| t.to != name).and_then(|t| epoch_ms(&t.at));
            let state = if status == name && name == "healthy" {
                "done"
            } else if status == name {
                "current"
            } else if failed_at.as_deref() == Some(name) {
                "failed"
            } else {
                "done"
            };
            let spent_ms = match (at, left) {
                (Some(a), Some(l)) => Some(l - a),
                (Some(a), None) if state == "current" && name != "healthy" => Some(now_ms - a),
                _ => None,
            };
            Step { name, state, spent_ms }
        })
        .collect()
}

#[component]
pub fn Pipeline(
    #[prop(into)] history: Signal<Vec<Transition>>,
    #[prop(into)] status: Signal<String>,
    #[prop(into)] now_ms: Signal<i64>,
) -> impl IntoView {
    let all = move || history.with(|h| steps(h, &status.get(), now_ms.get()));
    let ended = move || {
        let s = status.get();
        matches!(s.as_str(), "failed" | "cancelled" | "superseded").then(|| {
            let reason = history.with(|h| h.last().map(|t| t.reason.clone()).unwrap_or_default());
            (s, reason)
        })
    };
    view! {
        <ol class="pipeline" data-testid="pipeline">
            {move || all().into_iter().map(|step| view! {
                <li class=format!("step {}", step.state) data-step=step.name data-state=step.state>
                    <span class="dot"></span>
                    <span class="name">{step.name}</span>
                    <span class="spent">{step.spent_ms.map(duration).unwrap_or_default()}</span>
                </li>
            }).collect_view()}
        </ol>
        {move || ended().map(|(s, reason)| view! {
            <div class=format!("ended s-{s}") data-testid="ended">
                {s.clone()}
                ": "{reason}
            </div>
        })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: u64, at: &str, from: Option<&str>, to: &str) -> Transition {
        Transition {
            seq,
            at: format!("2026-11-23T10:00:{at}Z"),
            actor: "function:x".into(),
            from: from.map(str::to_string),
            to: to.into(),
            reason: format!("to {to}"),
        }
    }

    #[test]
    fn times_each_step_and_marks_where_it_failed() {
        let h = vec![
            t(1, "00.000", None, "queued"),
            t(2, "00.500", Some("queued"), "validating"),
            t(3, "01.000", Some("validating"), "building"),
            t(4, "04.000", Some("building"), "failed"),
        ];
        let s = steps(&h, "failed", 0);
        let got: Vec<(&str, &str, Option<i64>)> = s.iter().map(|s| (s.name, s.state, s.spent_ms)).collect();
        assert_eq!(got[0], ("queued", "done", Some(500)));
        assert_eq!(got[2], ("building", "failed", Some(3000)));
        assert_eq!(got[3], ("built", "pending", None));
    }

    #[test]
    fn records_that_keep_the_status_do_not_end_its_step() {
        let h = vec![
            t(1, "00.000", None, "queued"),
            t(2, "01.000", Some("queued"), "running"),
            t(3, "02.000", Some("running"), "running"),
            t(4, "05.000", Some("running"), "healthy"),
        ];
        let s = steps(&h, "healthy", 0);
        let running = s.iter().find(|s| s.name == "running").map(|s| s.spent_ms);
        assert_eq!(running, Some(Some(4000)));
    }

    #[test]
    fn the_current_step_counts_up_and_a_retry_starts_over() {
        let mut h = vec![t(1, "00.000", None, "queued"), t(2, "01.000", Some("queued"), "failed")];
        h.push(t(3, "02.000", Some("failed"), "queued"));
        h.push(t(4, "02.250", Some("queued"), "validating"));
        let now = epoch_ms("2026-11-23T10:00:03.250Z").unwrap_or_default();
        let s = steps(&h, "validating", now);
        assert_eq!((s[0].state, s[0].spent_ms), ("done", Some(250)));
        assert_eq!((s[1].state, s[1].spent_ms), ("current", Some(1000)));
    }
}
