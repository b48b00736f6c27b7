//! What a store transaction *means*, decided once for every store: which
//! deployments a new one supersedes, what making one live does to the one
//! before, what deleting a project cancels, and how health reports fold
//! into minute buckets. The stores read what these functions ask about and
//! write what they return, nothing more (the contract suite pins both).

use crate::domain::{Actor, HealthSample, Timestamp};
use crate::ports::Transition;
use crate::status::Status;

/// A deployment as these rules need to see it.
pub type Seen<'a> = (&'a str, Status);

/// Statuses a new deployment of the same project takes over from: anything
/// still on its way (the live one keeps serving until the new one is healthy).
pub fn superseded_by_new(status: Status) -> bool {
    status.is_in_flight()
}

/// A new deployment `new_id` supersedes the project's in-flight ones.
pub fn supersede_for_new<'a>(
    new_id: &str,
    others: impl IntoIterator<Item = Seen<'a>>,
    actor: &Actor,
) -> Vec<Transition> {
    others
        .into_iter()
        .filter(|(id, status)| *id != new_id && superseded_by_new(*status))
        .map(|(id, from)| {
            Transition::new(id, from, Status::Superseded, format!("superseded by {new_id}"), actor.clone())
        })
        .collect()
}

/// `next_id` became live: the one live before it (if any, and not already
/// ended) is superseded.
pub fn replace_live(next_id: &str, previous: Option<Seen<'_>>, actor: &Actor) -> Option<Transition> {
    let (id, status) = previous?;
    (id != next_id && !status.is_terminal()).then(|| {
        Transition::new(id, status, Status::Superseded, format!("replaced by {next_id} (now live)"), actor.clone())
    })
}

/// Statuses deleting a project cancels: everything not ended, the live
/// deployment included (its replicas stop with the project).
pub fn cancelled_by_project_delete(status: Status) -> bool {
    !status.is_terminal()
}

/// Deleting a project cancels its deployments that have not ended.
pub fn cancel_for_project_delete<'a>(
    deployments: impl IntoIterator<Item = Seen<'a>>,
    actor: &Actor,
) -> Vec<Transition> {
    deployments
        .into_iter()
        .filter(|(_, status)| cancelled_by_project_delete(*status))
        .map(|(id, from)| Transition::new(id, from, Status::Cancelled, "project deleted", actor.clone()))
        .collect()
}

/// Health reports older than this (whole minutes before `before`, so a
/// bucket is never split across two runs) fold into minute buckets.
pub fn health_cutoff_ms(before: Timestamp) -> i64 {
    minute_of(before.timestamp_millis())
}

/// The minute bucket (its first millisecond) a report at `at_ms` falls in.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(60_000) * 60_000
}

/// One minute of a replica's reports as one sample: the share of good
/// probes, average latency and CPU, the highest status, RSS, threads, open
/// files and (byte-wise) error text.
pub fn fold_health(deployment_id: &str, replica: u32, minute_ms: i64, reports: &[HealthSample]) -> HealthSample {
    let n = reports.len().max(1) as f64;
    let avg = |f: &dyn Fn(&HealthSample) -> Option<f64>| {
        let v: Vec<f64> = reports.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    HealthSample {
        deployment_id: deployment_id.to_string(),
        replica,
        at: chrono::DateTime::from_timestamp_millis(minute_ms).unwrap_or_default(),
        span_s: 60,
        probe_ok: reports.iter().map(|s| s.probe_ok).sum::<f64>() / n,
        http_status: reports.iter().filter_map(|s| s.http_status).max(),
        latency_ms: avg(&|s| s.latency_ms),
        cpu_percent: avg(&|s| s.cpu_percent),
        rss_bytes: reports.iter().filter_map(|s| s.rss_bytes).max(),
        threads: reports.iter().filter_map(|s| s.threads).max(),
        open_fds: reports.iter().filter_map(|s| s.open_fds).max(),
        error: reports.iter().filter_map(|s| s.error.clone()).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_deployment_supersedes_in_flight_ones_but_not_the_live_or_ended() {
        let others = [("a", Status::Building), ("b", Status::Healthy), ("c", Status::Failed), ("d", Status::Queued)];
        let t = supersede_for_new("new", others, &Actor::system("t"));
        let ids: Vec<_> = t.iter().map(|t| (t.deployment_id.as_str(), t.to, t.reason.as_str())).collect();
        assert_eq!(
            ids,
            [("a", Status::Superseded, "superseded by new"), ("d", Status::Superseded, "superseded by new")]
        );
    }

    #[test]
    fn making_live_supersedes_only_a_different_unended_previous() {
        let a = Actor::system("t");
        assert_eq!(
            replace_live("n", Some(("o", Status::Healthy)), &a).map(|t| t.reason),
            Some("replaced by n (now live)".into())
        );
        assert!(replace_live("n", Some(("n", Status::Healthy)), &a).is_none());
        assert!(replace_live("n", Some(("o", Status::Cancelled)), &a).is_none());
        assert!(replace_live("n", None, &a).is_none());
    }

    #[test]
    fn deleting_a_project_cancels_everything_not_ended() {
        let t = cancel_for_project_delete([("a", Status::Healthy), ("b", Status::Superseded)], &Actor::system("t"));
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].deployment_id.as_str(), t[0].to, t[0].reason.as_str()),
            ("a", Status::Cancelled, "project deleted")
        );
    }

    #[test]
    fn minutes_start_on_the_minute_also_before_1970() {
        assert_eq!(minute_of(119_999), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }
}
