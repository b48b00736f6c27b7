//! What each router layer costs per request, alone, around an inner
//! service that answers at once (`cargo bench -p bifrost-router`). The
//! peer in the same run is that inner service with no layer: a row's cost
//! is its time minus the baseline's.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use bifrost_router::traffic::{HeaderRules, LimitKey, RateRule, TrafficSpec};
use bifrost_router::{
    AccessLogLayer, AppTarget, HeaderRulesLayer, MetricsLayer, RateLimitLayer, RequestIdLayer, Route, RouterMetrics,
    ScriptLayer, Split, SplitLayer, TrafficRules,
};
use bifrost_scripts::{Limits, Script};

/// What docs/scripts.md shows an app doing: block a path, A/B by header,
/// add a response header — on a request that hits none of the early exits.
const REPRESENTATIVE: &str = r#"
function handle(req)
  if req.path:find("^/admin") then return { status = 403, body = "forbidden" } end
  if req.headers["x-beta"] == "1" then return { variant = "canary" } end
  return { response_headers = { ["x-served-by"] = "lua" } }
end
"#;
// The allocator the router ships with (`bifrost up`, `bifrost-router-node`):
// a layer's allocations cost what they cost in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use tower::{Layer, Service};

fn route() -> Route {
    let spec = TrafficSpec {
        rate: Some(RateRule {
            requests: 1_000_000_000,
            per: std::time::Duration::from_secs(1),
            burst: None,
            key: LimitKey::App,
            text: "1000000000/s".into(),
        }),
        request_headers: HeaderRules::from_pairs([("X-Served-By", "bifrost")], []),
        response_headers: HeaderRules::from_pairs([("Cache-Control", "no-store")], []),
    };
    Route {
        deployment_id: Arc::from("01stable"),
        endpoints: Arc::from([std::net::SocketAddr::from(([127, 0, 0, 1], 9000))]),
        traffic: Arc::new(TrafficRules::new(spec)),
        split: Some(Split { deployment_id: Arc::from("01canary"), endpoints: vec![].into(), weight: 10 }),
        chaos: None,
        script: None,
    }
}

/// What wrk sends (and the rows without a note use).
const FEW_HEADERS: &[(&str, &str)] = &[("host", "web.localhost"), ("user-agent", "bench")];

/// What a browser sends on a page load (Chromium's set, trimmed values).
const BROWSER_HEADERS: &[(&str, &str)] = &[
    ("host", "web.localhost"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    ),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("accept-language", "en-GB,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br"),
    ("cookie", "theme=dark; _ga=GA1.1.123456789.1700000000"),
    ("referer", "https://web.localhost/"),
    ("sec-ch-ua", "\"Chromium\";v=\"120\", \"Not_A Brand\";v=\"8\""),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Linux\""),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "same-origin"),
    ("upgrade-insecure-requests", "1"),
];

fn request(route: &Route, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder().uri("/orders?id=7");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut req = req.body(Body::empty()).expect("request");
    req.extensions_mut().insert(route.clone());
    req.extensions_mut().insert(AppTarget { app: "web".into(), path: None });
    req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([10, 0, 0, 7], 40000))));
    req
}

fn inner() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone + Send {
    tower::service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) })
}

/// One request through `svc`, driven to completion (nothing in these
/// layers waits on I/O).
fn once<S>(svc: &mut S, route: &Route)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    once_with(svc, route, FEW_HEADERS)
}

fn once_with<S>(svc: &mut S, route: &Route, headers: &[(&str, &str)])
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let resp = svc.call(request(route, headers)).now_or_never().expect("ready at once").expect("infallible");
    std::hint::black_box(resp);
}

fn layers(c: &mut Criterion) {
    let route = route();
    let mut g = c.benchmark_group("router layer, per request");
    let mut base = inner();
    g.bench_function("baseline: no layer", |b| b.iter(|| once(&mut base, &route)));
    let mut svc = RequestIdLayer.layer(inner());
    g.bench_function("request id", |b| b.iter(|| once(&mut svc, &route)));
    let mut svc = SplitLayer.layer(inner());
    g.bench_function("split (90/10, sticky)", |b| b.iter(|| once(&mut svc, &route)));
    let mut svc = MetricsLayer(Arc::new(RouterMetrics::default())).layer(inner());
    g.bench_function("metrics", |b| b.iter(|| once(&mut svc, &route)));
    let mut svc = RateLimitLayer::default().layer(inner());
    g.bench_function("rate limit (not hit)", |b| b.iter(|| once(&mut svc, &route)));
    let mut svc = HeaderRulesLayer.layer(inner());
    g.bench_function("header rules (1 request, 1 response)", |b| b.iter(|| once(&mut svc, &route)));
    let mut svc = AccessLogLayer.layer(inner());
    g.bench_function("access log (no subscriber)", |b| b.iter(|| once(&mut svc, &route)));
    let script_layer = ScriptLayer { metrics: Arc::default(), reports: None, domain: Arc::from("localhost") };
    for (name, source) in
        [("script: return nil", "function handle(req) return nil end"), ("script: representative", REPRESENTATIVE)]
    {
        let scripted =
            Route { script: Some(Arc::new(Script::new("bench.lua", source, Limits::default()))), ..route.clone() };
        let mut svc = script_layer.layer(inner());
        g.bench_function(name, |b| b.iter(|| once(&mut svc, &scripted)));
        if name == "script: representative" {
            let headers = BROWSER_HEADERS;
            g.bench_function("baseline, a browser's 14 headers", |b| b.iter(|| once_with(&mut base, &route, headers)));
            let row = "script: representative, a browser's 14 headers";
            g.bench_function(row, |b| b.iter(|| once_with(&mut svc, &scripted, headers)));
        }
    }
    let mut all = tower::ServiceBuilder::new()
        .layer(RequestIdLayer)
        .layer(AccessLogLayer)
        .layer(SplitLayer)
        .layer(MetricsLayer(Arc::new(RouterMetrics::default())))
        .layer(RateLimitLayer::default())
        .layer(HeaderRulesLayer)
        .service(inner());
    g.bench_function("every layer", |b| b.iter(|| once(&mut all, &route)));
    g.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
