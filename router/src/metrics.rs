//! The router's Prometheus families, and the layer that fills them. Labels
//! are bounded: an app is named only when it exists (a request for an
//! unknown host counts under `app=""`), the deployment is the live one,
//! the code a class (`2xx` … `5xx`).

use std::sync::atomic::AtomicI64;
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

use crate::{AppTarget, Route};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: String,
    pub deployment: String,
    pub code: &'static str,
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
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub struct RouterMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    rate_limited: Family<AppLabel, Counter>,
    script_errors: Family<AppLabel, Counter>,
    in_flight: Family<AppLabel, Gauge<i64, AtomicI64>>,
}

impl std::fmt::Debug for RouterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterMetrics")
    }
}

impl Default for RouterMetrics {
    fn default() -> Self {
        RouterMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            upstream_errors: Family::default(),
            rate_limited: Family::default(),
            script_errors: Family::default(),
            in_flight: Family::default(),
        }
    }
}

impl RouterMetrics {
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

    /// Requests counted for `app` with this code class (tests, canary analysis).
    pub fn requests(&self, app: &str, deployment: &str, code: &'static str) -> u64 {
        self.requests.get_or_create(&RequestLabels { app: app.into(), deployment: deployment.into(), code }).get()
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
pub struct MetricsLayer(pub std::sync::Arc<RouterMetrics>);

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: std::sync::Arc<RouterMetrics>,
}

/// Decrements the in-flight gauge however the request ends (a client that
/// hangs up drops the future).
struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
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
        let (app, deployment) = match (req.extensions().get::<Route>(), req.extensions().get::<AppTarget>()) {
            (Some(r), Some(t)) => (t.app.clone(), r.deployment_id.to_string()),
            _ => (String::new(), String::new()),
        };
        let gauge = self.metrics.in_flight.get_or_create_owned(&AppLabel { app: app.clone() });
        gauge.inc();
        let in_flight = InFlight(gauge);
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            drop(in_flight);
            let m = &metrics;
            let code = class(resp.status().as_u16());
            m.requests.get_or_create(&RequestLabels { app: app.clone(), deployment: deployment.clone(), code }).inc();
            m.duration
                .get_or_create(&DurationLabels { app: app.clone(), deployment })
                .observe(start.elapsed().as_secs_f64());
            if let Some(UpstreamError(kind)) = resp.extensions().get::<UpstreamError>() {
                m.upstream_errors.get_or_create(&UpstreamLabels { app: app.clone(), kind }).inc();
            }
            if resp.extensions().get::<RateLimited>().is_some() {
                m.rate_limited.get_or_create(&AppLabel { app }).inc();
            }
            Ok(resp)
        })
    }
}
