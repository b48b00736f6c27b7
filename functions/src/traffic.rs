//! Recent traffic per deployment, for the dashboard: every few seconds the
//! routers' counts ([`MetricsSource`]) of each deployment that serves
//! (live, or a split's second) are kept, a ring of the last 15 minutes; the
//! rate, error rate and p99 between consecutive readings are what the
//! charts draw. The counts are the in-process router's (embedded) plus
//! what `bifrost-router` nodes report to the gateway ([`StoreTallies`]:
//! the only source on GCP, where the routers are their own deployment).
//!
//! Each minute the sampler also closes, per deployment, the minute just
//! past (its requests, 5xx and p99) into the store: the per-minute series
//! analytics read (`bifrost_core::analytics::run`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bifrost_core::analytics::run::TrafficMinute;
use bifrost_core::domain::{Timestamp, now};
use bifrost_core::ports::{MetricsSource, Store, TrafficCounts};

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
    /// Per deployment: the minute being counted and the counts at its
    /// first reading.
    minute_marks: Mutex<HashMap<String, (Timestamp, TrafficCounts)>>,
}

impl TrafficRecorder {
    pub fn new(source: Arc<dyn MetricsSource>) -> TrafficRecorder {
        TrafficRecorder { source, rings: Mutex::new(HashMap::new()), minute_marks: Mutex::new(HashMap::new()) }
    }

    /// The minutes that ended since the last call: for each deployment
    /// whose latest reading is in a later minute than its mark, the mark's
    /// minute (what was counted from the mark to that reading). `project_of`
    /// names each deployment's project (unknown ones are skipped).
    pub fn close_minutes(&self, project_of: &HashMap<String, String>) -> Vec<TrafficMinute> {
        let (Ok(rings), Ok(mut marks)) = (self.rings.lock(), self.minute_marks.lock()) else { return vec![] };
        marks.retain(|id, _| rings.contains_key(id));
        let mut out = vec![];
        for (id, ring) in rings.iter() {
            let Some((at, counts)) = ring.back() else { continue };
            let minute = bifrost_core::analytics::window::align_down(*at, chrono::Duration::minutes(1));
            match marks.get(id) {
                Some((m, _)) if *m >= minute => continue,
                Some((m, earlier)) => {
                    if let Some(project_id) = project_of.get(id) {
                        let w = counts.since(earlier);
                        out.push(TrafficMinute {
                            deployment_id: id.clone(),
                            project_id: project_id.clone(),
                            minute: *m,
                            requests: w.requests,
                            errors: counts.errors.saturating_sub(earlier.errors),
                            p99_ms: w.p99_ms,
                        });
                    }
                }
                None => {}
            }
            marks.insert(id.clone(), (minute, counts.clone()));
        }
        out
    }

    /// The routers' cumulative counts of one deployment now (what a canary's
    /// analysis window is the difference of).
    pub async fn counts(&self, deployment_id: &str) -> Result<TrafficCounts, String> {
        self.source.counts(deployment_id).await
    }

    /// Takes a reading of each of `deployments` and forgets the others; a
    /// reading that fails is skipped (the next interval spans the gap).
    pub async fn sample(&self, deployments: &[String]) {
        let at = now();
        let mut read = Vec::with_capacity(deployments.len());
        for id in deployments {
            if let Ok(c) = self.source.counts(id).await {
                read.push((id, c));
            }
        }
        let Ok(mut rings) = self.rings.lock() else { return };
        rings.retain(|id, _| deployments.contains(id));
        for (id, counts) in read {
            let ring = rings.entry(id.clone()).or_default();
            ring.push_back((at, counts));
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
            let project_of: HashMap<String, String> =
                projects.iter().flat_map(|p| p.serving().map(|d| (d.to_string(), p.id.clone()))).collect();
            let serving: Vec<String> = project_of.keys().cloned().collect();
            recorder.sample(&serving).await;
            let minutes = recorder.close_minutes(&project_of);
            if let Err(e) = ctx.store.record_traffic_minutes(minutes).await {
                tracing::warn!(error = %e, "keeping the last minute's traffic failed");
            }
        }
    });
}

/// The counts `bifrost-router` nodes reported to the gateway, summed over
/// routers (each tally is cumulative since its router started, so the sum
/// only grows).
pub struct StoreTallies(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl MetricsSource for StoreTallies {
    async fn counts(&self, deployment_id: &str) -> Result<TrafficCounts, String> {
        let tallies = self.0.tallies(deployment_id).await.map_err(|e| format!("reading the routers' counts: {e}"))?;
        let mut sum = TrafficCounts::default();
        for t in &tallies {
            sum.add(&t.counts);
        }
        Ok(sum)
    }
}

/// Several sources of one deployment's counts added together: `bifrost up`'s
/// own router and the nodes that follow its gateway. Fails if any fails
/// (a partial sum would read as a drop in traffic).
pub struct Summed(pub Vec<Arc<dyn MetricsSource>>);

#[async_trait::async_trait]
impl MetricsSource for Summed {
    async fn counts(&self, deployment_id: &str) -> Result<TrafficCounts, String> {
        let mut sum = TrafficCounts::default();
        for s in &self.0 {
            sum.add(&s.counts(deployment_id).await?);
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts that a test moves by hand.
    #[derive(Default)]
    struct Counts(Mutex<HashMap<String, TrafficCounts>>);

    #[async_trait::async_trait]
    impl MetricsSource for Counts {
        async fn counts(&self, id: &str) -> Result<TrafficCounts, String> {
            Ok(self.0.lock().expect("lock").get(id).cloned().unwrap_or_default())
        }
    }

    /// A source that cannot be read.
    struct Broken;

    #[async_trait::async_trait]
    impl MetricsSource for Broken {
        async fn counts(&self, _: &str) -> Result<TrafficCounts, String> {
            Err("unreachable".into())
        }
    }

    #[tokio::test]
    async fn summed_sources_add_up_and_fail_when_one_fails() {
        let (a, b) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let c = |n| TrafficCounts { requests: n, errors: 1, latency_buckets: vec![(f64::INFINITY, n)] };
        a.0.lock().expect("lock").insert("d1".into(), c(3));
        b.0.lock().expect("lock").insert("d1".into(), c(4));
        let sum = Summed(vec![a.clone(), b]).counts("d1").await.expect("reads");
        assert_eq!(sum, TrafficCounts { requests: 7, errors: 2, latency_buckets: vec![(f64::INFINITY, 7)] });
        assert!(Summed(vec![a, Arc::new(Broken)]).counts("d1").await.is_err());
    }

    #[tokio::test]
    async fn each_interval_is_the_difference_of_two_readings() {
        let counts = Arc::new(Counts::default());
        let r = TrafficRecorder::new(counts.clone());
        let set = |requests, errors| {
            counts.0.lock().expect("lock").insert(
                "d1".into(),
                TrafficCounts { requests, errors, latency_buckets: vec![(0.01, requests), (f64::INFINITY, requests)] },
            );
        };
        set(0, 0);
        r.sample(&["d1".into()]).await;
        assert!(r.series("d1").is_empty(), "one reading is no interval");
        std::thread::sleep(std::time::Duration::from_millis(20));
        set(100, 10);
        r.sample(&["d1".into()]).await;
        let s = r.series("d1");
        assert_eq!(s.len(), 1);
        assert!((s[0].error_rate - 0.1).abs() < 1e-9);
        assert!(s[0].requests_per_s > 0.0);
        // All 100 under 10 ms: the 99th is 99 % of the way to 10 ms.
        assert!(s[0].p99_ms.is_some_and(|p| (p - 9.9).abs() < 1e-9), "{:?}", s[0].p99_ms);
        assert_eq!(r.recent("d1").map(|p| p.error_rate), Some(0.1));
        r.sample(&[]).await;
        assert!(r.series("d1").is_empty(), "a deployment that stopped serving is forgotten");
    }

    #[test]
    fn a_minute_is_closed_once_a_reading_falls_in_the_next() {
        let counts = Arc::new(Counts::default());
        let r = TrafficRecorder::new(counts);
        let t = |s: i64| chrono::DateTime::from_timestamp(1_794_999_600 + s, 0).expect("time");
        let c = |requests, errors| TrafficCounts {
            requests,
            errors,
            latency_buckets: vec![(0.05, requests), (f64::INFINITY, requests)],
        };
        let push = |at, counts| {
            r.rings.lock().expect("lock").entry("d1".into()).or_default().push_back((at, counts));
        };
        let projects = HashMap::from([("d1".to_string(), "p1".to_string())]);
        push(t(2), c(10, 0));
        assert!(r.close_minutes(&projects).is_empty(), "the first reading only marks its minute");
        push(t(30), c(50, 1));
        assert!(r.close_minutes(&projects).is_empty(), "the minute is not over");
        push(t(62), c(110, 4));
        let closed = r.close_minutes(&projects);
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!((closed[0].minute, closed[0].requests, closed[0].errors), (t(0), 100, 4));
        assert_eq!(closed[0].project_id, "p1");
        assert!(closed[0].p99_ms.is_some_and(|p| p <= 50.0));
        assert!(r.close_minutes(&projects).is_empty(), "closed once");
    }
}
