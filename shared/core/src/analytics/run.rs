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
    let mut in_order: Vec<&HealthSample> = samples.iter().collect();
    in_order.sort_by_key(|s| s.at);
    let mut minutes = UsageMinutes::default();
    for s in in_order {
        minutes.add(s.replica, s.at.timestamp_millis(), s.cpu_percent, s.rss_bytes.map(|r| r as f64));
    }
    minutes.finish()
}

/// Groups sidecar readings, given in time order, into usage minutes as
/// they pass (no map, no sort: a month of an app's reports is read in one
/// pass).
#[derive(Default)]
pub struct UsageMinutes {
    minute_ms: i64,
    /// The current minute's replicas: (replica, cpu sum, n, rss sum, n).
    open: Vec<(u32, f64, u32, f64, u32)>,
    done: Vec<UsageMinute>,
}

impl UsageMinutes {
    /// One reading (`at_ms` not before the last one's minute).
    pub fn add(&mut self, replica: u32, at_ms: i64, cpu_percent: Option<f64>, rss_bytes: Option<f64>) {
        let minute_ms = at_ms - at_ms.rem_euclid(60_000);
        if minute_ms != self.minute_ms {
            self.close();
            self.minute_ms = minute_ms;
        }
        let i = match self.open.iter().position(|o| o.0 == replica) {
            Some(i) => i,
            None => {
                self.open.push((replica, 0.0, 0, 0.0, 0));
                self.open.len() - 1
            }
        };
        let o = &mut self.open[i];
        if let Some(c) = cpu_percent.filter(|c| c.is_finite()) {
            o.1 += c;
            o.2 += 1;
        }
        if let Some(r) = rss_bytes.filter(|r| r.is_finite()) {
            o.3 += r;
            o.4 += 1;
        }
    }

    fn close(&mut self) {
        self.open.sort_by_key(|o| o.0);
        let Some(minute) = chrono::DateTime::from_timestamp_millis(self.minute_ms) else { return };
        for (replica, c, cn, r, rn) in self.open.drain(..) {
            self.done.push(UsageMinute {
                replica,
                minute,
                cpu_percent: (cn > 0).then(|| c / f64::from(cn)),
                rss_bytes: (rn > 0).then(|| r / f64::from(rn)),
            });
        }
    }

    /// The minutes, by minute then replica.
    pub fn finish(mut self) -> Vec<UsageMinute> {
        self.close();
        self.done
    }
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
    /// (CPU, memory) charged for this minute at `prices`.
    fn charge(&self, prices: &Prices) -> (f64, f64) {
        let requested = (self.requested_cores, self.requested_gib);
        let (cpu, memory, _) = cost::charge(60.0, requested, (self.used_cores, self.used_gib), prices);
        (cpu, memory)
    }

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

/// One 5-minute point of an app's six series (in [`SERIES`]' order; NaN
/// where the point had no data for that series — 64 bytes a point, so a
/// week of an app's points is 129 KiB).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointRow {
    pub at: Timestamp,
    pub values: [f64; 6],
}

/// The app's cost in `window` and the 5xx answered in it.
pub fn cost_in(h: &History, window: Window, prices: &Prices) -> (Cost, u64) {
    let in_window = |t: Timestamp| t >= window.start && t < window.end;
    let usage: Vec<Usage> = h.replicas.iter().filter(|r| in_window(r.minute)).map(ReplicaMinute::usage).collect();
    let (requests, errors) =
        h.traffic.iter().filter(|t| in_window(t.minute)).fold((0, 0), |(r, e), t| (r + t.requests, e + t.errors));
    (cost::allocate(&usage, prices, requests), errors)
}

/// The app's six series as 5-minute points over `[from, to)` (`from`
/// aligned to [`POINT`]), oldest first, only points with data.
pub fn points(h: &History, from: Timestamp, to: Timestamp, prices: &Prices) -> Vec<PointRow> {
    let from = align_down(from, POINT);
    let (step, base) = (POINT.num_milliseconds(), from.timestamp_millis());
    let count = ((to.timestamp_millis() - base).max(0) + step - 1) / step;
    let mut buckets: Vec<Bucket> = (0..count).map(|_| Bucket::default()).collect();
    let index = |t: Timestamp| ((t.timestamp_millis() - base) / step) as usize;
    for r in h.replicas.iter().filter(|r| r.minute >= from && r.minute < to) {
        let b = &mut buckets[index(r.minute)];
        let (cpu, memory) = r.charge(prices);
        b.cores += r.used_cores.unwrap_or(0.0);
        b.gib += r.used_gib.unwrap_or(0.0);
        b.cost += cpu + memory;
        b.replicas = true;
    }
    for t in h.traffic.iter().filter(|t| t.minute >= from && t.minute < to) {
        let b = &mut buckets[index(t.minute)];
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
    let seconds = POINT.num_seconds() as f64;
    buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| b.replicas || b.traffic)
        .filter_map(|(i, b)| {
            let at = chrono::DateTime::from_timestamp_millis(base + i as i64 * step)?;
            let used = |v: f64| if b.replicas { v } else { f64::NAN };
            let served = |v: Option<f64>| v.filter(|_| b.traffic).unwrap_or(f64::NAN);
            Some(PointRow {
                at,
                values: [
                    used(b.cores / per_point),
                    used(b.gib * 1024.0 / per_point),
                    served(Some(b.requests as f64 / seconds)),
                    served((b.requests > 0).then(|| b.errors as f64 / b.requests as f64)),
                    served(b.p99),
                    used(b.cost * per_hour),
                ],
            })
        })
        .collect()
}

/// The anomalies among `rows` in `window`, each point judged against the
/// rows of its `lookback` (rows oldest first).
pub fn judge(rows: &[PointRow], window: Window, lookback: Duration) -> Vec<SeriesAnomaly> {
    let mut anomalies = vec![];
    let mut series: Vec<Point> = Vec::with_capacity(rows.len());
    for (i, (name, floor)) in SERIES.iter().enumerate() {
        series.clear();
        series.extend(rows.iter().filter(|r| r.values[i].is_finite()).map(|r| Point { at: r.at, value: r.values[i] }));
        let settings = Settings { lookback, ..Settings::with_floor(*floor) };
        for a in anomaly::detect_rolling(&series, window.start, window.end, &settings, REFRESH) {
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
    anomalies
}

/// The earliest point judging `window` needs: the lookback of its first
/// hour's baseline (a window that starts at 10:35 is judged against the
/// week before 10:00, as the runs before it in that hour were).
pub fn reach(window: Window, lookback: Duration) -> Timestamp {
    align_down(window.start, REFRESH) - lookback
}

/// The app's cost and anomalies in `window` (the run's id and time are
/// the caller's). `lookback`: how far back baselines reach.
pub fn analyse(h: &History, window: Window, prices: &Prices, lookback: Duration) -> (Cost, u64, Vec<SeriesAnomaly>) {
    let (cost, errors) = cost_in(h, window, prices);
    let rows = points(h, reach(window, lookback), window.end, prices);
    (cost, errors, judge(&rows, window, lookback))
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
