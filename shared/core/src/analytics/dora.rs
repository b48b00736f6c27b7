//! DORA's four keys of one project over a period, from the deployments
//! that went live. Bifrost made every one of them, so "failure" needs no
//! incident tool; the rules (docs/analytics.md says the same):
//!
//! - **A change** is a deployment that went live (its first `→ healthy`)
//!   in the period. Rollback deployments are changes too (they are what
//!   production ran), but they have no lead time and are never *failed
//!   changes* themselves.
//! - **Deployment frequency**: changes per day of the period.
//! - **Lead time for changes**: commit time → live, over the period's
//!   changes that are not rollbacks and whose commit time is known; p50
//!   and p90 by nearest rank.
//! - **A failed change**: a change (not a rollback) whose next change in
//!   the project is a rollback (by hand or by the bake's automatic one),
//!   or a fix (a commit whose subject starts `fix`/`hotfix`/`revert`)
//!   that went live within the failed change's `[rollout] bake` of it.
//! - **Change failure rate**: failed changes ÷ changes that are not
//!   rollbacks (0 with none).
//! - **Time to restore**: per failed change, from the failure's detection
//!   — its first failed health probe while live, or the moment the
//!   rollback or fix was created if that came first — to its replacement
//!   going live; p50.
//!
//! Bands are DORA's (the 2021 report's thresholds, as Four Keys shows
//! them); the overall `performance` is the lowest of the four bands that
//! could be computed (a team is as fast as its slowest key).

use chrono::Duration;
use serde::Serialize;

use super::nearest_rank;
use crate::domain::Timestamp;

/// One deployment that went live.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub deployment: String,
    pub created_at: Timestamp,
    /// Its first `→ healthy`.
    pub live_at: Timestamp,
    /// When its commit was made (webhook `head_commit.timestamp`, or the
    /// local repository's commit).
    pub committed_at: Option<Timestamp>,
    /// A rollback deployment (`rollback_of` set).
    pub rollback: bool,
    /// Its commit is marked as a fix.
    pub fix: bool,
    /// Its first failed health probe while live.
    pub unhealthy_at: Option<Timestamp>,
    /// Its `[rollout] bake`: how long after it went live a fix still
    /// counts against it.
    pub bake: Duration,
}

/// Whether a commit message marks a fix: its first word (Conventional
/// Commits' type, case-insensitive) is `fix`, `hotfix` or `revert`.
pub fn is_fix(message: &str) -> bool {
    let first = message.trim_start().split([':', '(', '!', ' ']).next().unwrap_or("");
    ["fix", "hotfix", "revert"].iter().any(|w| first.eq_ignore_ascii_case(w))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Low,
    Medium,
    High,
    Elite,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FourKeys {
    pub days: f64,
    pub changes: usize,
    /// Changes that are not rollbacks: what the failure rate is out of.
    pub judged_changes: usize,
    pub deployment_frequency_per_day: f64,
    pub lead_time_seconds_p50: Option<f64>,
    pub lead_time_seconds_p90: Option<f64>,
    pub failed_changes: usize,
    pub change_failure_rate: Option<f64>,
    pub time_to_restore_seconds_p50: Option<f64>,
    pub bands: Bands,
    pub performance: Option<Band>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bands {
    pub deployment_frequency: Band,
    pub lead_time: Option<Band>,
    pub change_failure_rate: Option<Band>,
    pub time_to_restore: Option<Band>,
}

/// The four keys over `[from, to)`. `changes` is the project's history
/// (any order; changes before the period are read to judge what followed
/// them, after it to see whether the period's last change failed);
/// each change's `bake` is how long after it went live a fix still counts
/// against it.
pub fn four_keys(changes: &[Change], from: Timestamp, to: Timestamp) -> FourKeys {
    let mut all: Vec<&Change> = changes.iter().collect();
    all.sort_by_key(|c| (c.live_at, c.deployment.clone()));
    let in_period = |c: &Change| c.live_at >= from && c.live_at < to;
    let days = ((to - from).num_seconds() as f64 / 86_400.0).max(1.0 / 86_400.0);
    let period: Vec<(usize, &Change)> =
        all.iter().enumerate().filter(|(_, c)| in_period(c)).map(|(i, c)| (i, *c)).collect();

    let lead: Vec<f64> = period
        .iter()
        .filter(|(_, c)| !c.rollback)
        .filter_map(|(_, c)| c.committed_at.map(|t| (c.live_at - t).num_milliseconds().max(0) as f64 / 1000.0))
        .collect();

    let mut judged = 0;
    let mut restore = vec![];
    for &(i, c) in period.iter().filter(|(_, c)| !c.rollback) {
        judged += 1;
        let Some(next) = all.get(i + 1) else { continue };
        let failed = next.rollback || (next.fix && next.live_at - c.live_at <= c.bake);
        if failed {
            let detected = match c.unhealthy_at.filter(|t| *t >= c.live_at) {
                Some(t) => t.min(next.created_at),
                None => next.created_at,
            };
            restore.push((next.live_at - detected).num_milliseconds().max(0) as f64 / 1000.0);
        }
    }
    let failed = restore.len();
    let frequency = period.len() as f64 / days;
    let lead_p50 = nearest_rank(&lead, 0.5);
    let cfr = (judged > 0).then(|| failed as f64 / judged as f64);
    let restore_p50 = nearest_rank(&restore, 0.5);
    let bands = Bands {
        deployment_frequency: frequency_band(frequency),
        lead_time: lead_p50.map(lead_time_band),
        change_failure_rate: cfr.map(failure_rate_band),
        time_to_restore: restore_p50.map(restore_band),
    };
    let performance =
        [Some(bands.deployment_frequency), bands.lead_time, bands.change_failure_rate, bands.time_to_restore]
            .into_iter()
            .flatten()
            .min();
    FourKeys {
        days,
        changes: period.len(),
        judged_changes: judged,
        deployment_frequency_per_day: frequency,
        lead_time_seconds_p50: lead_p50,
        lead_time_seconds_p90: nearest_rank(&lead, 0.9),
        failed_changes: failed,
        change_failure_rate: cfr,
        time_to_restore_seconds_p50: restore_p50,
        bands,
        performance,
    }
}

const HOUR: f64 = 3_600.0;
const DAY: f64 = 86_400.0;

/// Elite: at least daily (on demand); high: at least weekly; medium: at
/// least monthly; low: less often.
pub fn frequency_band(per_day: f64) -> Band {
    match per_day {
        f if f >= 1.0 => Band::Elite,
        f if f >= 1.0 / 7.0 => Band::High,
        f if f >= 1.0 / 30.0 => Band::Medium,
        _ => Band::Low,
    }
}

/// Elite: under a day; high: under a week; medium: under a month (30 days).
pub fn lead_time_band(seconds: f64) -> Band {
    match seconds {
        s if s < DAY => Band::Elite,
        s if s < 7.0 * DAY => Band::High,
        s if s < 30.0 * DAY => Band::Medium,
        _ => Band::Low,
    }
}

/// Elite: at most 15 %; high: at most 30 %; medium: at most 45 %.
pub fn failure_rate_band(rate: f64) -> Band {
    match rate {
        r if r <= 0.15 => Band::Elite,
        r if r <= 0.30 => Band::High,
        r if r <= 0.45 => Band::Medium,
        _ => Band::Low,
    }
}

/// Elite: under an hour; high: under a day; medium: under a week.
pub fn restore_band(seconds: f64) -> Band {
    match seconds {
        s if s < HOUR => Band::Elite,
        s if s < DAY => Band::High,
        s if s < 7.0 * DAY => Band::Medium,
        _ => Band::Low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        chrono::DateTime::from_timestamp(1_795_000_000, 0).expect("time")
    }

    /// A change going live at `live_min` minutes, committed `lead_min`
    /// minutes before, created a minute before going live.
    fn change(id: &str, live_min: i64, lead_min: Option<i64>) -> Change {
        let live_at = t0() + Duration::minutes(live_min);
        Change {
            deployment: id.into(),
            created_at: live_at - Duration::minutes(1),
            live_at,
            committed_at: lead_min.map(|l| live_at - Duration::minutes(l)),
            rollback: false,
            fix: false,
            unhealthy_at: None,
            bake: Duration::minutes(5),
        }
    }

    #[test]
    fn the_four_keys_of_a_known_history_are_exact() {
        let day = 24 * 60;
        let mut history = vec![
            // Before the period: judged only as what came before.
            change("old", -10, Some(5)),
            change("a", 0, Some(30)),
            // b fails: seen unhealthy 10 min after going live, rolled back
            // (created at +14 min, live at +15).
            Change { unhealthy_at: Some(t0() + Duration::minutes(2 * day + 10)), ..change("b", 2 * day, Some(60)) },
            Change { rollback: true, ..change("rb", 2 * day + 15, None) },
            // c fails: a fix goes live 4 min later, within the 5 min bake.
            change("c", 4 * day, Some(120)),
            Change { fix: true, ..change("c-fix", 4 * day + 4, Some(3)) },
            // d is followed by a fix outside its bake: not a failure.
            change("d", 6 * day, Some(240)),
            Change { fix: true, ..change("d-fix", 6 * day + 30, Some(10)) },
        ];
        // After the period: tells that nothing followed d-fix within it.
        history.push(change("later", 9 * day, Some(1)));
        let k = four_keys(&history, t0(), t0() + Duration::days(7));
        assert_eq!((k.changes, k.judged_changes), (7, 6), "a, b, rb, c, c-fix, d, d-fix");
        assert!((k.deployment_frequency_per_day - 1.0).abs() < 1e-12);
        // Lead times (min) of the 6 non-rollbacks: 30, 60, 120, 3, 240, 10.
        assert_eq!(k.lead_time_seconds_p50, Some(30.0 * 60.0));
        assert_eq!(k.lead_time_seconds_p90, Some(240.0 * 60.0));
        assert_eq!(k.failed_changes, 2);
        assert_eq!(k.change_failure_rate, Some(2.0 / 6.0));
        // b: unhealthy at +10, restored at +15 → 5 min; c: fix created at
        // +3, live at +4 → 1 min. p50 by nearest rank of [60, 300] s: 60.
        assert_eq!(k.time_to_restore_seconds_p50, Some(60.0));
        assert_eq!(
            k.bands,
            Bands {
                deployment_frequency: Band::Elite,
                lead_time: Some(Band::Elite),
                change_failure_rate: Some(Band::Medium),
                time_to_restore: Some(Band::Elite),
            }
        );
        assert_eq!(k.performance, Some(Band::Medium));
    }

    #[test]
    fn a_quiet_project_has_no_rates_only_a_low_frequency() {
        let k = four_keys(&[change("old", -60, Some(1))], t0(), t0() + Duration::days(30));
        assert_eq!((k.changes, k.failed_changes), (0, 0));
        assert_eq!((k.change_failure_rate, k.lead_time_seconds_p50, k.time_to_restore_seconds_p50), (None, None, None));
        assert_eq!(k.performance, Some(Band::Low));
    }

    #[test]
    fn the_bands_follow_doras_thresholds() {
        assert_eq!(frequency_band(1.0 / 7.0), Band::High);
        assert_eq!(frequency_band(1.0 / 31.0), Band::Low);
        assert_eq!(lead_time_band(DAY), Band::High);
        assert_eq!(failure_rate_band(0.15), Band::Elite);
        assert_eq!(failure_rate_band(0.46), Band::Low);
        assert_eq!(restore_band(HOUR), Band::High);
        assert_eq!(restore_band(8.0 * DAY), Band::Low);
    }

    #[test]
    fn fixes_are_marked_by_the_commits_first_word() {
        for yes in ["fix: null header", "Fix(router): x", "hotfix crash", "revert!: v2", "  fix"] {
            assert!(is_fix(yes), "{yes}");
        }
        for no in ["feat: add fixtures", "prefix: x", "fixes", ""] {
            assert!(!is_fix(no), "{no}");
        }
    }
}
