//! The router's Prometheus families, and the layer that fills them. Labels
//! are bounded: an app is named only when it exists (a request for an
//! unknown host counts under `app=""`), the deployment is the live one,
//! the code a class (`2xx` … `5xx`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use bifrost_core::ports::{MetricsSource, TrafficCounts};

use crate::{AppTarget, Route};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: String,
    pub deployment: String,
    pub code: &'static str,
    /// "true" for answers `bifrost chaos` made up.
    pub injected: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub app: String,
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub app: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

/// Why the proxy could not get an answer from a replica: set on the
/// response by the proxy, counted here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamError(pub &'static str);

/// Set on a response the rate limit answered.
#[derive(Clone, Copy, Debug)]
pub struct RateLimited;

fn duration_histogram() -> Histogram {
    Histogram::new(bounds())
}

/// Latency bucket bounds (seconds) of the duration histogram and of the
/// per-deployment counts analysis reads: 100 µs doubling 17 times (~6.5 s).
fn bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, BUCKETS as u16)
}
const BUCKETS: usize = 17;

/// One deployment's answers, for [`MetricsSource`]: requests, 5xx, and
/// latency per bucket (the last one: over every bound).
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS + 1],
}

impl Counts {
    fn record(&self, status: u16, seconds: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = bounds().position(|le| seconds <= le).unwrap_or(BUCKETS);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// One deployment's series, taken from the families once: a request
/// updates them without building, hashing and looking up label strings.
/// (Key "" is every request for no known app.)
struct Served {
    app: String,
    deployment: String,
    counts: Counts,
    duration: Histogram,
    in_flight: Gauge<i64, AtomicI64>,
    /// By code class (1xx … 5xx) × injected; made on first use, so only
    /// series that happened are exposed.
    requests: [OnceLock<Counter>; 10],
}

pub struct RouterMetrics {
    /// Per deployment served since start (a handful per deploy).
    served: RwLock<HashMap<Arc<str>, Arc<Served>>>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    rate_limited: Family<AppLabel, Counter>,
    script_errors: Family<AppLabel, Counter>,
    in_flight: Family<AppLabel, Gauge<i64, AtomicI64>>,
    /// Every app's in-flight requests (the load a clustered node gossips).
    in_flight_total: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for RouterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterMetrics")
    }
}

impl Default for RouterMetrics {
    fn default() -> Self {
        RouterMetrics {
            served: RwLock::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            upstream_errors: Family::default(),
            rate_limited: Family::default(),
            script_errors: Family::default(),
            in_flight: Family::default(),
            in_flight_total: Gauge::default(),
        }
    }
}

impl RouterMetrics {
    /// Requests being answered now, all apps together.
    pub fn in_flight(&self) -> i64 {
        self.in_flight_total.get()
    }

    /// Adds the families to `registry` under `bifrost_router_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("bifrost_router");
        r.register("requests", "Requests answered, by app, deployment and code class", self.requests.clone());
        r.register(
            "request_duration_seconds",
            "Time to the response's headers, by app and deployment",
            self.duration.clone(),
        );
        r.register("upstream_errors", "Requests no replica answered, by kind", self.upstream_errors.clone());
        r.register("rate_limited", "Requests refused by the app's rate limit", self.rate_limited.clone());
        r.register("script_errors", "Requests a traffic script failed on", self.script_errors.clone());
        r.register("in_flight", "Requests being answered now", self.in_flight.clone());
    }

    fn served(&self, app: &str, deployment: &str) -> Option<Arc<Served>> {
        if let Some(s) = self.served.read().ok()?.get(deployment) {
            return Some(s.clone());
        }
        let mut map = self.served.write().ok()?;
        let made = map.entry(Arc::from(deployment)).or_insert_with(|| {
            let labels = DurationLabels { app: app.into(), deployment: deployment.into() };
            Arc::new(Served {
                app: app.into(),
                deployment: deployment.into(),
                counts: Counts::default(),
                duration: self.duration.get_or_create(&labels).clone(),
                in_flight: self.in_flight.get_or_create(&AppLabel { app: app.into() }).clone(),
                requests: Default::default(),
            })
        });
        Some(made.clone())
    }

    fn count_request(&self, served: &Served, status: u16, injected: bool) {
        let (code, i) = match status {
            100..=199 => ("1xx", 0),
            200..=299 => ("2xx", 1),
            300..=399 => ("3xx", 2),
            400..=499 => ("4xx", 3),
            _ => ("5xx", 4),
        };
        let injected_label = if injected { "true" } else { "false" };
        served.requests[i * 2 + usize::from(injected)]
            .get_or_init(|| {
                let labels = RequestLabels {
                    app: served.app.clone(),
                    deployment: served.deployment.clone(),
                    code,
                    injected: injected_label,
                };
                self.requests.get_or_create(&labels).clone()
            })
            .inc();
    }
}

#[async_trait::async_trait]
impl MetricsSource for RouterMetrics {
    async fn counts(&self, deployment_id: &str) -> Result<TrafficCounts, String> {
        Ok(self.counts_of(deployment_id))
    }
}

impl RouterMetrics {
    /// Every deployment this router has answered for since it started.
    pub fn deployments(&self) -> Vec<String> {
        self.served
            .read()
            .map(|m| m.keys().filter(|k| !k.is_empty()).map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// One deployment's cumulative counts (zero when never seen).
    pub fn counts_of(&self, deployment_id: &str) -> TrafficCounts {
        let Some(served) = self.served.read().ok().and_then(|m| m.get(deployment_id).cloned()) else {
            return TrafficCounts::default();
        };
        let c = &served.counts;
        let mut cumulative = 0;
        let latency_buckets = bounds()
            .chain(std::iter::once(f64::INFINITY))
            .zip(c.buckets.iter())
            .map(|(le, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (le, cumulative)
            })
            .collect();
        TrafficCounts {
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            latency_buckets,
        }
    }
}

impl RouterMetrics {
    /// A request the app's script answered itself (not the app: it does
    /// not count in the deployment's analysis).
    pub fn script_answered(&self, app: &str, deployment: &str, status: u16, took: std::time::Duration) {
        let code = class(status);
        self.requests
            .get_or_create(&RequestLabels { app: app.into(), deployment: deployment.into(), code, injected: "false" })
            .inc();
        self.duration
            .get_or_create(&DurationLabels { app: app.into(), deployment: deployment.into() })
            .observe(took.as_secs_f64());
    }

    /// A request the app's script failed on (answered 500 `script_error`).
    pub fn script_failed(&self, app: &str, deployment: &str, took: std::time::Duration) {
        self.script_answered(app, deployment, 500, took);
        self.script_errors.get_or_create(&AppLabel { app: app.into() }).inc();
    }
}

fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[derive(Clone, Debug)]
pub struct MetricsLayer(pub Arc<RouterMetrics>);

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<RouterMetrics>,
}

/// Decrements the in-flight gauges however the request ends (a client
/// that hangs up drops the future).
struct InFlight(Option<Arc<Served>>, Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.in_flight.dec();
        }
        self.1.dec();
    }
}

impl<S> Service<Request<Body>> for MetricsService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = crate::BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        // Only an app that exists is named (unknown hosts would grow the families).
        let served = match (req.extensions().get::<Route>(), req.extensions().get::<AppTarget>()) {
            (Some(r), Some(t)) => self.metrics.served(&t.app, &r.deployment_id),
            _ => self.metrics.served("", ""),
        };
        if let Some(s) = &served {
            s.in_flight.inc();
        }
        self.metrics.in_flight_total.inc();
        let mut in_flight = InFlight(served, self.metrics.in_flight_total.clone());
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let Some(served) = in_flight.0.take() else { return Ok(resp) };
            served.in_flight.dec();
            drop(in_flight);
            let m = &metrics;
            let status = resp.status().as_u16();
            let seconds = start.elapsed().as_secs_f64();
            if !served.deployment.is_empty() {
                served.counts.record(status, seconds);
            }
            m.count_request(&served, status, resp.extensions().get::<crate::chaos::Injected>().is_some());
            served.duration.observe(seconds);
            if let Some(UpstreamError(kind)) = resp.extensions().get::<UpstreamError>() {
                m.upstream_errors.get_or_create(&UpstreamLabels { app: served.app.clone(), kind }).inc();
            }
            if resp.extensions().get::<RateLimited>().is_some() {
                m.rate_limited.get_or_create(&AppLabel { app: served.app.clone() }).inc();
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrafficRules;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn analysis_reads_what_the_layer_counted_per_deployment() {
        let metrics = Arc::new(RouterMetrics::default());
        let before = metrics.counts_of("d1");
        for status in [200u16, 200, 503, 200] {
            let svc = MetricsLayer(metrics.clone()).layer(tower::service_fn(move |_req: Request<Body>| async move {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = axum::http::StatusCode::from_u16(status).expect("status");
                Ok::<_, Infallible>(resp)
            }));
            let mut req = Request::builder().uri("/").body(Body::empty()).expect("request");
            req.extensions_mut().insert(Route {
                deployment_id: Arc::from("d1"),
                endpoints: vec![].into(),
                traffic: Arc::new(TrafficRules::default()),
                split: None,
                chaos: None,
                script: None,
            });
            req.extensions_mut().insert(AppTarget { app: "web".into(), path: None });
            svc.oneshot(req).await.expect("infallible");
        }
        let w = metrics.counts_of("d1").since(&before);
        assert_eq!(w.requests, 4);
        assert!((w.error_rate - 0.25).abs() < 1e-9);
        assert!(w.p99_ms.is_some(), "four requests in the window have a p99");
        assert_eq!(metrics.counts_of("other"), TrafficCounts::default());
        assert_eq!(
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    app: "web".into(),
                    deployment: "d1".into(),
                    code: "5xx",
                    injected: "false"
                })
                .get(),
            1
        );
    }
}
