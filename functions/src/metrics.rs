//! The platform's Prometheus metrics (`GET /metrics`): deployments by
//! status, transitions, the outbox backlog, dead letters, delivery latency,
//! build durations, SSE subscribers, and each replica's CPU, RSS and open
//! files from its sidecar. The router registers its own families in the
//! same registry. Labels are bounded: status names, function names, apps,
//! deployments and replica numbers — never a path or a client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bifrost_core::Status;
use bifrost_core::domain::{Deployment, FeedItem, FeedKind, HealthSample, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Ctx;

/// OpenMetrics text, for a scraper that asks for it (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus' classic text format: everyone else (curl, promtool).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as Prometheus' classic format: a counter's HELP and
/// TYPE name its `_total` series, and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE ", "# UNIT "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if prefix == "# UNIT " {
                    continue;
                }
                let name = if counters.contains(name) { format!("{name}_total") } else { name.to_string() };
                out.push_str(&format!("{prefix}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    app: String,
    deployment: String,
    replica: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// One open live stream, counted until dropped.
pub struct SseOpen(Gauge);

impl Drop for SseOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The platform's metrics and the registry they (and the router's) live in.
pub struct Metrics {
    registry: Mutex<Registry>,
    deployments: Family<StatusLabel, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    outbox_pending: Gauge,
    outbox_oldest_age: FloatGauge,
    dead_letters: Gauge,
    delivery_latency: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    build_duration: Histogram,
    sse_subscribers: Gauge,
    replica_cpu: Family<ReplicaLabels, FloatGauge>,
    replica_rss: Family<ReplicaLabels, Gauge>,
    replica_fds: Family<ReplicaLabels, Gauge>,
    /// Per deployment: its app, when it started building, its replicas'
    /// series (removed when it ends, so the families stay bounded).
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Default)]
struct Seen {
    app: String,
    building_since: Option<Timestamp>,
    replicas: Vec<ReplicaLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            deployments: Family::default(),
            transitions: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_oldest_age: FloatGauge::default(),
            dead_letters: Gauge::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            build_duration: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            sse_subscribers: Gauge::default(),
            replica_cpu: Family::default(),
            replica_rss: Family::default(),
            replica_fds: Family::default(),
            seen: Mutex::new(HashMap::new()),
        };
        m.register(|r| {
            let r = r.sub_registry_with_prefix("bifrost");
            r.register("deployments", "Deployments by status", m.deployments.clone());
            r.register("transitions", "Status transitions by (from, to)", m.transitions.clone());
            r.register("outbox_pending", "Outbox deliveries not yet acknowledged", m.outbox_pending.clone());
            r.register(
                "outbox_oldest_age_seconds",
                "Age of the oldest unacknowledged outbox delivery",
                m.outbox_oldest_age.clone(),
            );
            r.register("dead_letters", "Dead-lettered deliveries", m.dead_letters.clone());
            r.register(
                "delivery_latency_seconds",
                "From an event's commit to its function's acknowledgement",
                m.delivery_latency.clone(),
            );
            r.register("build_duration_seconds", "From building to built or failed", m.build_duration.clone());
            r.register("sse_subscribers", "Open live (SSE) streams", m.sse_subscribers.clone());
            r.register("replica_cpu_percent", "A replica's CPU use, from its sidecar", m.replica_cpu.clone());
            r.register("replica_rss_bytes", "A replica's resident memory, from its sidecar", m.replica_rss.clone());
            r.register("replica_open_fds", "A replica's open files, from its sidecar", m.replica_fds.clone());
        });
        m
    }

    /// Lets another part (the router) register its families.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The deployments there are at start (the gauge then follows the feed).
    pub fn seed(&self, deployments: &[Deployment]) {
        let mut seen = self.seen();
        for d in deployments {
            self.deployments.get_or_create(&StatusLabel { status: d.status.as_str().into() }).inc();
            if !d.status.is_terminal() {
                seen.entry(d.id.clone()).or_default().app = d.project.clone();
            }
        }
    }

    /// One committed feed item: a status change moves the gauges.
    pub fn on_feed(&self, item: &FeedItem) {
        let FeedKind::Status { from, status, .. } = &item.kind else { return };
        let label = |s: &Status| StatusLabel { status: s.as_str().into() };
        if let Some(from) = from {
            self.deployments.get_or_create(&label(from)).dec();
        }
        self.deployments.get_or_create(&label(status)).inc();
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.map_or("none", |f| f.as_str()).into(),
                to: status.as_str().into(),
            })
            .inc();
        let mut seen = self.seen();
        let entry = seen.entry(item.deployment_id.clone()).or_default();
        entry.app = item.project.clone();
        if *status == Status::Building {
            entry.building_since = Some(item.at);
        } else if *from == Some(Status::Building)
            && let Some(since) = entry.building_since.take()
        {
            self.build_duration.observe((item.at - since).num_milliseconds().max(0) as f64 / 1000.0);
        }
        if status.is_terminal()
            && let Some(gone) = seen.remove(&item.deployment_id)
        {
            for l in gone.replicas {
                self.replica_cpu.remove(&l);
                self.replica_rss.remove(&l);
                self.replica_fds.remove(&l);
            }
        }
    }

    /// One sidecar report. Only deployments the feed knows are still
    /// running get series (a report for anything else adds none).
    pub fn on_health(&self, h: &HealthSample) {
        let mut seen = self.seen();
        let Some(entry) = seen.get_mut(&h.deployment_id) else { return };
        let l = ReplicaLabels {
            app: entry.app.clone(),
            deployment: h.deployment_id.clone(),
            replica: h.replica.to_string(),
        };
        if !entry.replicas.contains(&l) {
            entry.replicas.push(l.clone());
        }
        if let Some(cpu) = h.cpu_percent {
            self.replica_cpu.get_or_create(&l).set(cpu);
        }
        if let Some(rss) = h.rss_bytes {
            self.replica_rss.get_or_create(&l).set(rss.min(i64::MAX as u64) as i64);
        }
        if let Some(fds) = h.open_fds {
            self.replica_fds.get_or_create(&l).set(i64::from(fds));
        }
    }

    /// An event reached its function and was acknowledged, `latency` after
    /// its commit.
    pub fn delivered(&self, function: &str, latency: Duration) {
        self.delivery_latency
            .get_or_create(&FunctionLabel { function: function.into() })
            .observe(latency.as_secs_f64());
    }

    /// Counts one open live stream until the guard is dropped.
    pub fn sse_open(&self) -> SseOpen {
        self.sse_subscribers.inc();
        SseOpen(self.sse_subscribers.clone())
    }

    /// The exposition, with the backlog and dead letters read now.
    pub async fn encode(&self, ctx: &Ctx) -> String {
        if let Ok(b) = ctx.dead_letters.backlog().await {
            self.outbox_pending.set(b.pending as i64);
            self.outbox_oldest_age.set(b.oldest_age.map_or(0.0, |a| a.as_secs_f64()));
        }
        if let Ok(dead) = ctx.dead_letters.dead_letters().await {
            self.dead_letters.set(dead.len() as i64);
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}
