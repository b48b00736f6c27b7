//! One analytics run over one app and one closed window: its cost (from
//! its replicas' minutes) and the anomalies of its six series in the
//! window (against their lookback). The homes read the history, call
//! [`analyse`], and keep the [`AnalyticsResult`] once per (app, window).
//!
//! The series are judged on 5-minute points ([`POINT`]), each the mean of
//! its minutes:
//!
//! | series           | a point                                        | floor    |
//! |------------------|------------------------------------------------|----------|
//! | `cpu_cores`      | cores used, summed over replicas               | 0.05     |
//! | `rss_mib`        | resident memory, summed over replicas (MiB)    | 64       |
//! | `requests_per_s` | requests the routers answered per second       | 1        |
//! | `error_rate`     | 5xx ÷ requests (only with requests)            | 0.05     |
//! | `p99_ms`         | the worst minute's p99 latency                 | 100      |
//! | `cost_per_hour`  | the point's cost × 12                          | 0.01     |

use std::collections::BTreeMap;

use chrono::Duration;
use serde::{Deserialize, Serialize};

use super::anomaly::{self, Point, Settings};
use super::cost::{self, Cost, Prices, Usage};
use super::window::{Window, align_down};
use crate::domain::{HealthSample, Timestamp};

/// The resolution anomalies are judged at.
pub const POINT: Duration = Duration::minutes(5);
/// How often a series' baseline moves ([`anomaly::detect_rolling`]).
pub const REFRESH: Duration = Duration::hours(1);
/// How far back a point's baseline reaches by default.
pub const LOOKBACK: Duration = Duration::days(7);
/// The series and their floors (see the module's table).
pub const SERIES: [(&str, f64); 6] = [
    ("cpu_cores", 0.05),
    ("rss_mib", 64.0),
    ("requests_per_s", 1.0),
    ("error_rate", 0.05),
    ("p99_ms", 100.0),
    ("cost_per_hour", 0.01),
];

/// One minute of one deployment's traffic, as the routers counted it
/// (the gateway's sampler writes one per serving deployment a minute).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficMinute {
    pub deployment_id: String,
    pub project_id: String,
    /// The minute's start.
    pub minute: Timestamp,
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: Option<f64>,
}

/// One replica over one minute: what it asked for and what it used (the
/// mean of the sidecar's reports in that minute).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaMinute {
    pub deployment_id: String,
    pub replica: u32,
    pub minute: Timestamp,
    pub requested_cores: f64,
    pub requested_gib: f64,
    pub used_cores: Option<f64>,
    pub used_gib: Option<f64>,
}

const GIB: f64 = (1u64 << 30) as f64;

/// One replica's mean usage over one minute of sidecar reports (what the
/// store's `usage_minutes` answers).
#[derive(Clone, Debug, PartialEq)]
pub struct UsageMinute {
    pub replica: u32,
    pub minute: Timestamp,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<f64>,
}

/// Sidecar reports as usage minutes: per (replica, minute), the mean of
/// the reports that carry each reading; by minute, then replica.
pub fn usage_minutes(samples: &[HealthSample]) -> Vec<UsageMinute> {
    // (minute, replica) → (cpu sum, cpu n, rss sum, rss n)
    let mut acc: BTreeMap<(i64, u32), (f64, u32, f64, u32)> = BTreeMap::new();
    for s in samples {
        let minute = align_down(s.at, Duration::minutes(1)).timestamp_millis();
        let a = acc.entry((minute, s.replica)).or_default();
        if let Some(c) = s.cpu_percent.filter(|c| c.is_finite()) {
            a.0 += c;
            a.1 += 1;
        }
        if let Some(r) = s.rss_bytes {
            a.2 += r as f64;
            a.3 += 1;
        }
    }
    acc.into_iter()
        .filter_map(|((ms, replica), (c, cn, r, rn))| {
            Some(UsageMinute {
                replica,
                minute: chrono::DateTime::from_timestamp_millis(ms)?,
                cpu_percent: (cn > 0).then(|| c / f64::from(cn)),
                rss_bytes: (rn > 0).then(|| r / f64::from(rn)),
            })
        })
        .collect()
}

/// A deployment's usage minutes as replica minutes at its request: a
/// replica that reported in a minute ran that minute.
pub fn replica_minutes(
    deployment_id: &str,
    usage: &[UsageMinute],
    requested_cores: f64,
    requested_gib: f64,
) -> Vec<ReplicaMinute> {
    usage
        .iter()
        .map(|u| ReplicaMinute {
            deployment_id: deployment_id.to_string(),
            replica: u.replica,
            minute: u.minute,
            requested_cores,
            requested_gib,
            used_cores: u.cpu_percent.map(|c| c / 100.0),
            used_gib: u.rss_bytes.map(|r| r / GIB),
        })
        .collect()
}

impl ReplicaMinute {
    fn usage(&self) -> Usage {
        Usage {
            deployment: self.deployment_id.clone(),
            seconds: 60.0,
            requested_cores: self.requested_cores,
            requested_gib: self.requested_gib,
            used_cores: self.used_cores,
            used_gib: self.used_gib,
        }
    }
}

/// What a run reads of one app: its replicas' minutes and its traffic
/// minutes over the window and the lookback before it.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub project_id: String,
    pub project: String,
    pub replicas: Vec<ReplicaMinute>,
    pub traffic: Vec<TrafficMinute>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesAnomaly {
    pub series: String,
    pub at: Timestamp,
    pub value: f64,
    pub baseline: f64,
    pub score: f64,
}

/// What one run found for one app in one window: kept once per (app,
/// window); a second run of the same window keeps the first's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsResult {
    pub project_id: String,
    pub project: String,
    pub window: Window,
    pub run_id: String,
    pub computed_at: Timestamp,
    pub cost: Cost,
    pub currency: String,
    pub errors: u64,
    pub anomalies: Vec<SeriesAnomaly>,
}

/// One 5-minute point's sums.
#[derive(Default)]
struct Bucket {
    cores: f64,
    gib: f64,
    cost: f64,
    replicas: bool,
    requests: u64,
    errors: u64,
    p99: Option<f64>,
    traffic: bool,
}

/// The app's cost and anomalies in `window` (the run's id and time are
/// the caller's). `lookback`: how far back baselines reach.
pub fn analyse(h: &History, window: Window, prices: &Prices, lookback: Duration) -> (Cost, u64, Vec<SeriesAnomaly>) {
    let since = window.start - lookback;
    let in_window = |t: Timestamp| t >= window.start && t < window.end;
    let usage: Vec<Usage> = h.replicas.iter().filter(|r| in_window(r.minute)).map(ReplicaMinute::usage).collect();
    let (requests, errors) =
        h.traffic.iter().filter(|t| in_window(t.minute)).fold((0, 0), |(r, e), t| (r + t.requests, e + t.errors));
    let cost = cost::allocate(&usage, prices, requests);

    let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
    let bucket_of = |t: Timestamp| align_down(t, POINT).timestamp_millis();
    for r in h.replicas.iter().filter(|r| r.minute >= since && r.minute < window.end) {
        let b = buckets.entry(bucket_of(r.minute)).or_default();
        let (cpu, memory, _) = r.usage().charge(prices);
        b.cores += r.used_cores.unwrap_or(0.0);
        b.gib += r.used_gib.unwrap_or(0.0);
        b.cost += cpu + memory;
        b.replicas = true;
    }
    for t in h.traffic.iter().filter(|t| t.minute >= since && t.minute < window.end) {
        let b = buckets.entry(bucket_of(t.minute)).or_default();
        b.requests += t.requests;
        b.errors += t.errors;
        b.p99 = match (b.p99, t.p99_ms) {
            (Some(a), Some(c)) => Some(a.max(c)),
            (a, c) => a.or(c),
        };
        b.traffic = true;
    }
    let per_point = (POINT.num_seconds() / 60) as f64;
    let per_hour = 3600.0 / POINT.num_seconds() as f64;
    let mut series: [Vec<Point>; 6] = Default::default();
    for (ms, b) in &buckets {
        let Some(at) = chrono::DateTime::from_timestamp_millis(*ms) else { continue };
        let mut push = |i: usize, value: f64| series[i].push(Point { at, value });
        if b.replicas {
            push(0, b.cores / per_point);
            push(1, b.gib * 1024.0 / per_point);
            push(5, b.cost * per_hour);
        }
        if b.traffic {
            push(2, b.requests as f64 / POINT.num_seconds() as f64);
            if b.requests > 0 {
                push(3, b.errors as f64 / b.requests as f64);
            }
            if let Some(p) = b.p99 {
                push(4, p);
            }
        }
    }
    let mut anomalies = vec![];
    for ((name, floor), points) in SERIES.iter().zip(&series) {
        let settings = Settings { lookback, ..Settings::with_floor(*floor) };
        for a in anomaly::detect_rolling(points, window.start, window.end, &settings, REFRESH) {
            anomalies.push(SeriesAnomaly {
                series: name.to_string(),
                at: a.at,
                value: a.value,
                baseline: a.baseline,
                score: a.score,
            });
        }
    }
    anomalies.sort_by(|a, b| (a.at, &a.series).cmp(&(b.at, &b.series)));
    (cost, errors, anomalies)
}

/// The results that cover a period without overlap: by start, the longer
/// window first, each taken when it starts at or after the end of the last
/// one taken (a 1-hour backfill and the 5-minute runs inside it are not
/// counted twice).
pub fn without_overlap(mut results: Vec<AnalyticsResult>) -> Vec<AnalyticsResult> {
    results.sort_by(|a, b| a.window.start.cmp(&b.window.start).then(b.window.end.cmp(&a.window.end)));
    let mut covered: Option<Timestamp> = None;
    results.retain(|r| {
        let keep = covered.is_none_or(|c| r.window.start >= c);
        if keep {
            covered = Some(r.window.end);
        }
        keep
    });
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        chrono::DateTime::from_timestamp(1_794_999_600, 0).expect("time")
    }

    fn minute(d: &str, m: i64, cores: f64, gib: f64) -> ReplicaMinute {
        ReplicaMinute {
            deployment_id: d.into(),
            replica: 0,
            minute: t0() + Duration::minutes(m),
            requested_cores: 0.5,
            requested_gib: 0.5,
            used_cores: Some(cores),
            used_gib: Some(gib),
        }
    }

    fn traffic(m: i64, requests: u64, errors: u64) -> TrafficMinute {
        TrafficMinute {
            deployment_id: "d1".into(),
            project_id: "p1".into(),
            minute: t0() + Duration::minutes(m),
            requests,
            errors,
            p99_ms: Some(20.0),
        }
    }

    #[test]
    fn a_windows_cost_is_its_replica_minutes_at_the_larger_of_request_and_use() {
        let prices = Prices { currency: "USD".into(), cpu_core_hour: 0.06, memory_gib_hour: 0.012 };
        // Two replicas for an hour: one under its request, one over in CPU.
        let mut h = History::default();
        for m in 0..60 {
            h.replicas.push(minute("d1", m, 0.1, 0.25));
            h.replicas.push(ReplicaMinute { replica: 1, ..minute("d1", m, 2.0, 0.25) });
            h.traffic.push(traffic(m, 600, 6));
        }
        // Outside the window: not charged.
        h.replicas.push(minute("d1", 60, 9.0, 9.0));
        let w = Window { start: t0(), end: t0() + Duration::hours(1) };
        let (cost, errors, _) = analyse(&h, w, &prices, LOOKBACK);
        // (0.5 + 2.0) cores × 0.06 + (0.5 + 0.5) GiB × 0.012 = 0.162 for the hour.
        assert!((cost.total - 0.162).abs() < 1e-9, "{cost:?}");
        assert_eq!((cost.requests, errors), (36_000, 360));
        assert!(cost.per_1000_requests.is_some_and(|p| (p - 0.0045).abs() < 1e-9));
        // Idle: replica 0's unused 0.4 core and both replicas' 0.25 GiB.
        assert!((cost.idle - (0.4 * 0.06 + 0.5 * 0.012)).abs() < 1e-9, "{}", cost.idle);
    }

    #[test]
    fn a_traffic_spike_in_the_window_is_an_anomaly_of_its_series_only() {
        let mut h = History::default();
        // A day of steady 10 req/s with a little noise, then a 5-minute burst.
        for m in 0..1440 + 5 {
            let requests = if m >= 1440 { 6000 } else { 600 + ((m * 7) % 5) as u64 * 6 };
            h.traffic.push(traffic(m, requests, 0));
            h.replicas.push(minute("d1", m, 0.2, 0.25));
        }
        let w = Window { start: t0() + Duration::minutes(1440), end: t0() + Duration::minutes(1445) };
        let (_, _, anomalies) = analyse(&h, w, &Prices::default(), LOOKBACK);
        let series: Vec<&str> = anomalies.iter().map(|a| a.series.as_str()).collect();
        assert_eq!(series, ["requests_per_s"], "{anomalies:?}");
        assert_eq!(anomalies[0].value, 100.0);
        assert!(anomalies[0].baseline > 10.0 && anomalies[0].baseline < 11.0, "{:?}", anomalies[0]);
        // The same window a day earlier, steady: nothing.
        let quiet = Window { start: t0() + Duration::minutes(1435), end: t0() + Duration::minutes(1440) };
        assert!(analyse(&h, quiet, &Prices::default(), LOOKBACK).2.is_empty());
    }

    #[test]
    fn a_replicas_reports_become_one_usage_minute_each_with_their_means() {
        let sample = |replica, s: i64, cpu: Option<f64>, rss: Option<u64>| HealthSample {
            deployment_id: "d1".into(),
            replica,
            at: t0() + Duration::seconds(s),
            span_s: 0,
            probe_ok: 1.0,
            http_status: None,
            latency_ms: None,
            cpu_percent: cpu,
            rss_bytes: rss,
            threads: None,
            open_fds: None,
            error: None,
        };
        let u = usage_minutes(&[
            sample(0, 1, Some(10.0), Some(100)),
            sample(0, 30, Some(30.0), None),
            sample(1, 5, None, Some(300)),
            sample(0, 61, Some(50.0), Some(500)),
        ]);
        let seen: Vec<(i64, u32, Option<f64>, Option<f64>)> =
            u.iter().map(|m| ((m.minute - t0()).num_minutes(), m.replica, m.cpu_percent, m.rss_bytes)).collect();
        assert_eq!(seen, [(0, 0, Some(20.0), Some(100.0)), (0, 1, None, Some(300.0)), (1, 0, Some(50.0), Some(500.0))]);
        let r = replica_minutes("d1", &u[..1], 0.5, 1.0);
        assert_eq!((r[0].used_cores, r[0].requested_gib), (Some(0.2), 1.0));
    }

    #[test]
    fn overlapping_windows_are_counted_once() {
        let r = |start: i64, minutes: i64, run: &str| AnalyticsResult {
            project_id: "p".into(),
            project: "p".into(),
            window: Window { start: t0() + Duration::minutes(start), end: t0() + Duration::minutes(start + minutes) },
            run_id: run.into(),
            computed_at: t0(),
            cost: Cost::default(),
            currency: "USD".into(),
            errors: 0,
            anomalies: vec![],
        };
        let kept = without_overlap(vec![r(5, 5, "a"), r(0, 60, "hour"), r(60, 5, "b"), r(0, 5, "c")]);
        assert_eq!(kept.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["hour", "b"]);
    }
}
