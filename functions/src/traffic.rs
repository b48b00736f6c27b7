//! Recent traffic per deployment, for the dashboard: every few seconds the
//! router's counts ([`MetricsSource`]) of each deployment that serves
//! (live, or a split's second) are kept, a ring of the last 15 minutes; the
//! rate, error rate and p99 between consecutive readings are what the
//! charts draw. Only where the router runs in the platform's process
//! (embedded); on GCP the routers are their own deployment.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bifrost_core::domain::{Timestamp, now};
use bifrost_core::ports::{MetricsSource, TrafficCounts};

use crate::Ctx;

/// Seconds between two readings.
pub const EVERY_S: u64 = 5;
/// Readings kept per deployment (15 minutes).
const KEEP: usize = 180;

/// One interval of a deployment's traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficPoint {
    /// The interval's end.
    pub at: Timestamp,
    pub requests_per_s: f64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
}

pub struct TrafficRecorder {
    source: Arc<dyn MetricsSource>,
    rings: Mutex<HashMap<String, VecDeque<(Timestamp, TrafficCounts)>>>,
}

impl TrafficRecorder {
    pub fn new(source: Arc<dyn MetricsSource>) -> TrafficRecorder {
        TrafficRecorder { source, rings: Mutex::new(HashMap::new()) }
    }

    /// The router's cumulative counts of one deployment now (what a canary's
    /// analysis window is the difference of).
    pub fn counts(&self, deployment_id: &str) -> TrafficCounts {
        self.source.counts(deployment_id)
    }

    /// Takes a reading of each of `deployments` and forgets the others.
    pub fn sample(&self, deployments: &[String]) {
        let at = now();
        let Ok(mut rings) = self.rings.lock() else { return };
        rings.retain(|id, _| deployments.contains(id));
        for id in deployments {
            let ring = rings.entry(id.clone()).or_default();
            ring.push_back((at, self.source.counts(id)));
            while ring.len() > KEEP {
                ring.pop_front();
            }
        }
    }

    /// The deployment's intervals, oldest first.
    pub fn series(&self, deployment_id: &str) -> Vec<TrafficPoint> {
        let Ok(rings) = self.rings.lock() else { return vec![] };
        let Some(ring) = rings.get(deployment_id) else { return vec![] };
        ring.iter()
            .zip(ring.iter().skip(1))
            .map(|((t0, c0), (t1, c1))| {
                let w = c1.since(c0);
                let secs = ((*t1 - *t0).num_milliseconds() as f64 / 1000.0).max(0.001);
                TrafficPoint {
                    at: *t1,
                    requests_per_s: w.requests as f64 / secs,
                    error_rate: w.error_rate,
                    p99_ms: w.p99_ms,
                }
            })
            .collect()
    }

    /// The last minute (or what there is of it) as one interval.
    pub fn recent(&self, deployment_id: &str) -> Option<TrafficPoint> {
        let rings = self.rings.lock().ok()?;
        let ring = rings.get(deployment_id)?;
        let (t1, c1) = ring.back()?;
        let (t0, c0) = ring.iter().rev().find(|(t, _)| (*t1 - *t).num_seconds() >= 60).or_else(|| ring.front())?;
        if t0 == t1 {
            return None;
        }
        let w = c1.since(c0);
        let secs = (*t1 - *t0).num_milliseconds() as f64 / 1000.0;
        Some(TrafficPoint {
            at: *t1,
            requests_per_s: w.requests as f64 / secs,
            error_rate: w.error_rate,
            p99_ms: w.p99_ms,
        })
    }
}

/// Samples, every [`EVERY_S`] seconds, the deployments that serve.
pub fn run(ctx: Ctx, recorder: Arc<TrafficRecorder>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(EVERY_S));
        loop {
            tick.tick().await;
            let Ok(projects) = ctx.store.list_projects().await else { continue };
            let serving: Vec<String> = projects
                .iter()
                .flat_map(|p| p.live_deployment_id.iter().cloned().chain(p.split.iter().map(|s| s.deployment.clone())))
                .collect();
            recorder.sample(&serving);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts that a test moves by hand.
    #[derive(Default)]
    struct Counts(Mutex<HashMap<String, TrafficCounts>>);

    impl MetricsSource for Counts {
        fn counts(&self, id: &str) -> TrafficCounts {
            self.0.lock().expect("lock").get(id).cloned().unwrap_or_default()
        }
    }

    #[test]
    fn each_interval_is_the_difference_of_two_readings() {
        let counts = Arc::new(Counts::default());
        let r = TrafficRecorder::new(counts.clone());
        let set = |requests, errors| {
            counts.0.lock().expect("lock").insert(
                "d1".into(),
                TrafficCounts { requests, errors, latency_buckets: vec![(0.01, requests), (f64::INFINITY, requests)] },
            );
        };
        set(0, 0);
        r.sample(&["d1".into()]);
        assert!(r.series("d1").is_empty(), "one reading is no interval");
        std::thread::sleep(std::time::Duration::from_millis(20));
        set(100, 10);
        r.sample(&["d1".into()]);
        let s = r.series("d1");
        assert_eq!(s.len(), 1);
        assert!((s[0].error_rate - 0.1).abs() < 1e-9);
        assert!(s[0].requests_per_s > 0.0);
        // All 100 under 10 ms: the 99th is 99 % of the way to 10 ms.
        assert!(s[0].p99_ms.is_some_and(|p| (p - 9.9).abs() < 1e-9), "{:?}", s[0].p99_ms);
        assert_eq!(r.recent("d1").map(|p| p.error_rate), Some(0.1));
        r.sample(&[]);
        assert!(r.series("d1").is_empty(), "a deployment that stopped serving is forgotten");
    }
}
