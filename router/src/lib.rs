//! The data plane. A request for `<app>.<domain>` (or, on a listener of its
//! own, `/apps/<app>/...`) goes to one of the healthy replicas of the app's
//! live deployment, on an upstream connection the client's connection
//! holds ([`upstream`]; [`serve()`] puts it on each request). Built as a tower
//! stack, one layer per job, stacked in [`service`]: request id → access
//! log → (the app and its route, looked up once) → (script) → split →
//! metrics → rate limit → header rules → chaos → proxy. Listeners facing
//! clients are served by [`serve()`], with the client timeouts a public
//! listener needs.
//!
//! *Boundary*: an app never sees the platform's credentials — the session
//! cookie and Bifrost API tokens are stripped from every request — and
//! cannot set cookies for the platform's domain (such `Set-Cookie` headers
//! are dropped from its responses).
//!
//! The router knows nothing of stores or runtimes: it asks a [`Routes`].

/// A layer that needs no state of its own: the `Layer`, the service
/// wrapping `inner`, and the `Service` impl (readiness from `inner`, boxed
/// future); only `call` is the layer's own.
macro_rules! layer {
    ($(#[$doc:meta])* $layer:ident => $service:ident, |$this:ident, $req:pat_param| $call:block) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $layer;

        impl<S> tower::Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> Self::Service {
                $service { inner }
            }
        }

        #[derive(Clone, Debug)]
        pub struct $service<S> {
            inner: S,
        }

        impl<S> tower::Service<axum::http::Request<axum::body::Body>> for $service<S>
        where
            S: tower::Service<axum::http::Request<axum::body::Body>, Response = axum::http::Response<axum::body::Body>>
                + Send
                + 'static,
            S::Future: Send + 'static,
        {
            type Response = axum::http::Response<axum::body::Body>;
            type Error = S::Error;
            type Future = crate::BoxFuture<Result<axum::http::Response<axum::body::Body>, S::Error>>;

            fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
                self.inner.poll_ready(cx)
            }

            fn call(&mut $this, $req: axum::http::Request<axum::body::Body>) -> Self::Future $call
        }
    };
}

mod access_log;
pub mod chaos;
mod header_rules;
pub mod metrics;
mod proxy;
mod rate_limit;
mod request_id;
pub mod script;
pub mod serve;
pub mod split;
pub mod traffic;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

pub use access_log::AccessLogLayer;
pub use chaos::{ChaosLayer, ChaosRule, FaultRule};
pub use header_rules::HeaderRulesLayer;
pub use metrics::{MetricsLayer, RouterMetrics};
pub use proxy::Proxy;
pub use rate_limit::RateLimitLayer;
pub use request_id::{RequestIdLayer, X_REQUEST_ID};
pub use script::{ScriptLayer, ScriptReports};
pub use serve::{ClientTimeouts, serve};
pub use split::{Split, SplitLayer};
pub use traffic::{PeerCounts, TrafficRules};
pub use upstream::{Downstream, raise_open_files_limit};

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Headers only the router writes: an app's rules cannot set or remove them.
pub const ROUTER_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-bifrost-deployment",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-host",
];

/// Where an app's traffic goes now.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The live deployment (sent back as `X-Bifrost-Deployment`).
    pub deployment_id: Arc<str>,
    /// Healthy replicas; empty means the app is down (503). (Shared: a
    /// route is cloned for every request.)
    pub endpoints: Arc<[SocketAddr]>,
    /// The live deployment's `[traffic]`, compiled, with the app's limiter.
    pub traffic: Arc<TrafficRules>,
    /// A second deployment taking a share of clients (canary, A/B).
    pub split: Option<Split>,
    /// Faults to inject (`bifrost chaos`), until they expire.
    pub chaos: Option<ChaosRule>,
    /// The app's routing script: a pushed version, else the live
    /// deployment's `[traffic] script`.
    pub script: Option<Arc<bifrost_scripts::Script>>,
}

/// The replica that answered, set on the response by the proxy.
#[derive(Clone, Copy, Debug)]
pub struct Upstream(pub SocketAddr);

/// The connection's peer address, when the listener recorded it
/// (`ConnectInfo<Downstream>`, or a bare `ConnectInfo<SocketAddr>`).
pub fn peer_ip(req: &Request<Body>) -> Option<std::net::IpAddr> {
    let ext = req.extensions();
    ext.get::<axum::extract::ConnectInfo<Downstream>>()
        .map(|c| c.0.peer.ip())
        .or_else(|| ext.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

/// An IP address's text on the stack: layers that read the client's IP on
/// every request (the split's key, a script's `req.client_ip`) skip
/// `Display`'s machinery and a `String`.
pub(crate) struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub(crate) fn of(ip: Option<std::net::IpAddr>) -> IpText {
        let mut t = IpText { buf: [0; 45], len: 0 };
        match ip {
            Some(std::net::IpAddr::V4(v4)) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if octet >= 100 {
                        t.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        t.push(b'0' + octet / 10 % 10);
                    }
                    t.push(b'0' + octet % 10);
                }
            }
            Some(v6) => {
                use std::io::Write;
                let mut rest = &mut t.buf[..];
                let _ = write!(rest, "{v6}");
                let left = rest.len();
                t.len = t.buf.len() - left;
            }
            None => {}
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// The routing table the router reads for every request.
pub trait Routes: Send + Sync + 'static {
    /// `None`: no such app, or it has no live deployment.
    fn route(&self, app: &str) -> Option<Route>;
}

/// The session cookie the dashboard sets: never forwarded to an app.
pub const SESSION_COOKIE: &str = "bifrost_session";

#[derive(Clone)]
pub struct RouterConfig {
    /// Apps are `<name>.<domain>`; embedded: `localhost`.
    pub domain: String,
    /// Longest wait for an upstream's response headers (then 504).
    pub upstream_timeout: Duration,
    /// Also route `/apps/<app>/...` by path. Only on a listener of its own
    /// (`--apps-listen`): on the dashboard's it would put apps on the
    /// dashboard's origin.
    pub path_routing: bool,
    /// Where requests are counted (shared by every listener's stack).
    pub metrics: Arc<RouterMetrics>,
    /// Where a routing script's failures are told.
    pub script_reports: Option<Arc<dyn ScriptReports>>,
    /// In a cluster: the other routers' admissions, so app-wide rate
    /// limits hold across every node.
    pub peer_counts: Option<Arc<dyn traffic::PeerCounts>>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            domain: "localhost".into(),
            upstream_timeout: Duration::from_secs(60),
            path_routing: false,
            metrics: Arc::default(),
            script_reports: None,
            peer_counts: None,
        }
    }
}

/// The app a `Host: <app>.<domain>[:port]` names.
pub fn app_by_host(req: &Request<Body>, domain: &str) -> Option<String> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host()).unwrap_or("");
    let host =
        host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map(|(h, _)| h).unwrap_or(host);
    let app = host.strip_suffix(domain).and_then(|h| h.strip_suffix('.'))?;
    (!app.is_empty() && !app.contains('.')).then(|| app.to_ascii_lowercase())
}

/// Which app a request is for: `Host: <app>.<domain>[:port]`, or (with
/// `path_routing`) `/apps/<app>/...`, then also the path the app should see.
pub fn app_of(req: &Request<Body>, domain: &str, path_routing: bool) -> Option<(String, Option<String>)> {
    if let Some(app) = app_by_host(req, domain) {
        return Some((app, None));
    }
    if !path_routing {
        return None;
    }
    let path = req.uri().path();
    let rest = path.strip_prefix("/apps/")?;
    let (app, tail) = rest.split_once('/').map(|(a, t)| (a, format!("/{t}"))).unwrap_or((rest, "/".to_string()));
    if app.is_empty() {
        return None;
    }
    let tail = match req.uri().query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail,
    };
    Some((app.to_ascii_lowercase(), Some(tail)))
}

/// What the app request carries through the stack.
#[derive(Clone, Debug)]
pub struct AppTarget {
    pub app: String,
    /// Path and query to send upstream when it differs from the request's.
    pub path: Option<String>,
}

pub type RouterService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The router's tower stack.
pub fn service(routes: Arc<dyn Routes>, config: RouterConfig) -> RouterService {
    // (An `Arc`: the stack, closures included, is cloned for every request.)
    let (domain, by_path) = (Arc::<str>::from(config.domain.as_str()), config.path_routing);
    let table = routes.clone();
    let stack = ServiceBuilder::new()
        .layer(RequestIdLayer)
        // Which app: computed once, read by every layer below.
        .map_request(move |mut req: Request<Body>| {
            if let Some((app, path)) = app_of(&req, &domain, by_path) {
                req.extensions_mut().insert(AppTarget { app, path });
            }
            req
        })
        .layer(AccessLogLayer)
        // Its route (live deployment, replicas, traffic rules), looked up once.
        .map_request(move |mut req: Request<Body>| {
            if let Some(route) = req.extensions().get::<AppTarget>().and_then(|t| table.route(&t.app)) {
                req.extensions_mut().insert(route);
            }
            req
        })
        // The app's script: may answer, change the request, pin the split.
        .layer(ScriptLayer {
            metrics: config.metrics.clone(),
            reports: config.script_reports.clone(),
            domain: Arc::from(config.domain.as_str()),
        })
        // Which deployment serves this client, before anything counts it.
        .layer(SplitLayer)
        .layer(MetricsLayer(config.metrics.clone()))
        .layer(RateLimitLayer { peers: config.peer_counts.clone() })
        .layer(HeaderRulesLayer)
        .layer(ChaosLayer)
        .service(Proxy::new(routes, config));
    BoxCloneSyncService::new(stack)
}

/// A JSON error answer in the platform's shape.
pub fn error(status: StatusCode, code: &str, message: String, app: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message, "app": app}});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, path: &str) -> Request<Body> {
        Request::builder().uri(path).header(header::HOST, host).body(Body::empty()).expect("request")
    }

    #[test]
    fn an_ip_text_is_what_display_writes() {
        let ips = ["0.0.0.0", "9.10.99.100", "255.255.255.255", "192.0.2.1", "::1", "2001:db8::8a2e:370:7334"]
            .map(|t| t.parse::<std::net::IpAddr>().expect("ip"));
        let longest: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().expect("ip");
        for ip in ips.into_iter().chain([longest]) {
            assert_eq!(IpText::of(Some(ip)).as_str(), ip.to_string());
        }
        assert_eq!(IpText::of(None).as_str(), "");
    }

    #[test]
    fn apps_by_host_and_path() {
        let app_of = |r: &Request<Body>, d: &str| app_of(r, d, true);
        assert_eq!(app_of(&req("hello.localhost:7070", "/x"), "localhost"), Some(("hello".into(), None)));
        assert_eq!(app_of(&req("Hello.localhost", "/"), "localhost"), Some(("hello".into(), None)));
        assert_eq!(
            app_of(&req("127.0.0.1:7070", "/apps/hello/a/b?q=1"), "localhost"),
            Some(("hello".into(), Some("/a/b?q=1".into())))
        );
        assert_eq!(
            app_of(&req("127.0.0.1:7070", "/apps/hello"), "localhost"),
            Some(("hello".into(), Some("/".into())))
        );
        assert_eq!(app_of(&req("localhost:7070", "/api/v1/projects"), "localhost"), None);
        assert_eq!(app_of(&req("a.b.localhost", "/"), "localhost"), None);
        assert_eq!(app_of(&req("evil-localhost", "/"), "localhost"), None);
        assert_eq!(app_of(&req("web.apps.example.com", "/"), "apps.example.com"), Some(("web".into(), None)));
    }

    #[test]
    fn the_dashboards_host_never_routes_apps_by_path() {
        assert_eq!(super::app_of(&req("127.0.0.1:7070", "/apps/hello/"), "localhost", false), None);
        assert_eq!(super::app_of(&req("hello.localhost", "/"), "localhost", false), Some(("hello".into(), None)));
    }
}
