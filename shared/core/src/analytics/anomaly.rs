//! Anomalies in one series (an app's CPU, RSS, request rate, error rate,
//! p99 or cost per hour): each point of the window is compared with the
//! points of the lookback before it (default 7 days, at least 30 points)
//! by the robust z-score of Iglewicz and Hoaglin,
//!
//! ```text
//! z = 0.6745 × (value − median) / MAD      MAD = median(|x − median|)
//! ```
//!
//! and flagged when |z| passes the threshold (3.5) and the value or the
//! median is at least the series' floor, so an idle app's noise (0 → 1
//! request) does not alarm. When more than half the baseline is one value
//! (MAD = 0) the mean absolute deviation stands in (`z = (value − median)
//! / (1.253314 × MeanAD)`); a baseline that never moved makes any change
//! an anomaly, with the score capped at [`MAX_SCORE`].

use chrono::Duration;
use serde::Serialize;

use super::median;
use crate::domain::Timestamp;

/// The score given when the baseline never moved.
pub const MAX_SCORE: f64 = 1000.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub at: Timestamp,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub lookback: Duration,
    pub min_points: usize,
    pub threshold: f64,
    /// Below this (value and median both), nothing is flagged.
    pub floor: f64,
}

impl Settings {
    /// The defaults with the series' own floor.
    pub fn with_floor(floor: f64) -> Settings {
        Settings { lookback: Duration::days(7), min_points: 30, threshold: 3.5, floor }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    pub at: Timestamp,
    pub value: f64,
    /// The lookback's median.
    pub baseline: f64,
    pub score: f64,
}

/// The anomalies among `series`' points in `[from, to)` (`series` in any
/// order; points before `from` serve as the baseline).
pub fn detect(series: &[Point], from: Timestamp, to: Timestamp, s: &Settings) -> Vec<Anomaly> {
    let mut points = series.to_vec();
    points.sort_by_key(|p| p.at);
    let mut out = vec![];
    for (i, p) in points.iter().enumerate().filter(|(_, p)| p.at >= from && p.at < to) {
        let since = p.at - s.lookback;
        let baseline: Vec<f64> =
            points[..i].iter().rev().take_while(|b| b.at >= since).map(|b| b.value).filter(|v| v.is_finite()).collect();
        if baseline.len() < s.min_points || !p.value.is_finite() {
            continue;
        }
        let Some(m) = median(&baseline) else { continue };
        let score = robust_z(p.value, m, &baseline);
        if score.abs() > s.threshold && p.value.abs().max(m.abs()) >= s.floor {
            out.push(Anomaly { at: p.at, value: p.value, baseline: m, score });
        }
    }
    out
}

fn robust_z(value: f64, m: f64, baseline: &[f64]) -> f64 {
    let deviations: Vec<f64> = baseline.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&deviations).unwrap_or(0.0);
    let z = if mad > 0.0 {
        0.6745 * (value - m) / mad
    } else {
        let mean_ad = deviations.iter().sum::<f64>() / deviations.len() as f64;
        if mean_ad > 0.0 {
            (value - m) / (1.253314 * mean_ad)
        } else if value == m {
            0.0
        } else {
            (value - m).signum() * MAX_SCORE
        }
    };
    z.clamp(-MAX_SCORE, MAX_SCORE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        chrono::DateTime::from_timestamp(1_795_000_000, 0).expect("time")
    }

    /// A point a minute, values from `f(minute)`.
    fn series(minutes: i64, f: impl Fn(i64) -> f64) -> Vec<Point> {
        (0..minutes).map(|m| Point { at: t0() + Duration::minutes(m), value: f(m) }).collect()
    }

    fn last_five(n: i64) -> (Timestamp, Timestamp) {
        (t0() + Duration::minutes(n - 5), t0() + Duration::minutes(n))
    }

    /// A noisy but steady load: 40–48 % CPU in a repeating pattern.
    fn steady(m: i64) -> f64 {
        40.0 + ((m * 7) % 9) as f64
    }

    #[test]
    fn an_injected_spike_is_found_with_its_baseline_and_score() {
        let mut s = series(200, steady);
        s[197].value = 95.0;
        let (from, to) = last_five(200);
        let found = detect(&s, from, to, &Settings::with_floor(5.0));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].at, found[0].value), (s[197].at, 95.0));
        assert_eq!(found[0].baseline, 44.0);
        // MAD of the pattern 40..=48 around 44 is 2: 0.6745 × 51 / 2.
        assert!((found[0].score - 0.6745 * 51.0 / 2.0).abs() < 1e-9, "{}", found[0].score);
    }

    #[test]
    fn steady_and_idle_series_raise_nothing() {
        let (from, to) = last_five(200);
        assert!(detect(&series(200, steady), from, to, &Settings::with_floor(5.0)).is_empty());
        // An idle app: 0 requests/s with one stray request — under the floor.
        let mut idle = series(200, |_| 0.0);
        idle[198].value = 0.02;
        assert!(detect(&idle, from, to, &Settings::with_floor(1.0)).is_empty());
        // The same jump above the floor, on a baseline that never moved.
        idle[198].value = 5.0;
        let found = detect(&idle, from, to, &Settings::with_floor(1.0));
        assert_eq!(found.iter().map(|a| a.score).collect::<Vec<_>>(), [MAX_SCORE]);
    }

    #[test]
    fn too_short_a_history_judges_nothing() {
        let mut s = series(25, steady);
        s[24].value = 1000.0;
        let (from, to) = last_five(25);
        assert!(detect(&s, from, to, &Settings::with_floor(5.0)).is_empty(), "fewer than 30 points before it");
        // Only the lookback counts: 200 points, but a 10-minute lookback.
        let mut long = series(200, steady);
        long[199].value = 1000.0;
        let (from, to) = last_five(200);
        let short_lookback = Settings { lookback: Duration::minutes(10), ..Settings::with_floor(5.0) };
        assert!(detect(&long, from, to, &short_lookback).is_empty());
    }

    #[test]
    fn mostly_constant_baselines_use_the_mean_deviation() {
        // 195 zeros, five errors spread over the baseline: MAD 0, MeanAD > 0.
        let mut s = series(200, |m| if m % 40 == 0 { 0.02 } else { 0.0 });
        s[199].value = 0.5;
        let (from, to) = last_five(200);
        let found = detect(&s, from, to, &Settings::with_floor(0.01));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].score > 3.5 && found[0].score < MAX_SCORE, "{}", found[0].score);
    }
}
