//! The innermost service: forwards to a replica on the upstream connection
//! the client's connection holds ([`crate::upstream`]); JSON bodies for
//! 404/502/503/504.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode, Uri};
use tower::Service;

use crate::metrics::UpstreamError;
use crate::upstream::{Downstream, SendError, Upstreams};
use crate::{AppTarget, Route, RouterConfig, Routes, SESSION_COOKIE, app_of, error};

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded. (Names, not
/// strings: removing by `&str` parses the name again on every request.)
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_BIFROST_DEPLOYMENT: HeaderName = HeaderName::from_static("x-bifrost-deployment");

#[derive(Clone)]
pub struct Proxy {
    routes: Arc<dyn Routes>,
    config: Arc<RouterConfig>,
    next: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn new(routes: Arc<dyn Routes>, config: RouterConfig) -> Self {
        Proxy { routes, config: Arc::new(config), next: Arc::new(AtomicUsize::new(0)) }
    }
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

impl Proxy {
    async fn forward(&self, mut req: Request<Body>) -> Response<Body> {
        // (Taken, not cloned: nothing below the proxy reads it.)
        let target = match req.extensions_mut().remove::<AppTarget>() {
            Some(t) => t,
            None => match app_of(&req, &self.config.domain, self.config.path_routing) {
                Some((app, path)) => AppTarget { app, path },
                None => return error(StatusCode::NOT_FOUND, "not_found", "no app in this request".into(), ""),
            },
        };
        let app = target.app.as_str();
        let Some(route) = req.extensions_mut().remove::<Route>().or_else(|| self.routes.route(app)) else {
            return error(StatusCode::NOT_FOUND, "no_such_app", format!("no live deployment of app {app:?}"), app);
        };
        if route.endpoints.is_empty() {
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("app {app:?} has no healthy replicas"),
                app,
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp.extensions_mut().insert(UpstreamError("no_healthy_replica"));
            return resp;
        }
        let client_host = req.headers().get(header::HOST).cloned();
        let peer = crate::peer_ip(&req);
        strip_hop_by_hop(req.headers_mut());
        strip_credentials(req.headers_mut());
        if let Some(h) = client_host {
            req.headers_mut().insert(X_FORWARDED_HOST, h);
        }
        if let Some(ip) = peer
            && let Some(v) = ip_header(ip)
        {
            req.headers_mut().append(X_FORWARDED_FOR, v);
        }
        req.headers_mut().insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        // A request without a body can be tried on a second replica when the
        // first refuses the connection.
        let retryable = req.headers().get(header::CONTENT_LENGTH).is_none_or(|v| v == "0")
            && !req.headers().contains_key(header::TRANSFER_ENCODING);
        // The request line is origin-form (`/path?query`): the rewritten
        // path, else the client's own (an absolute-form URI loses its
        // scheme and authority); the client's Host stays (the app sees the
        // name it was called by).
        let uri = match target.path.as_deref() {
            Some(p) => p.parse::<Uri>(),
            None if req.uri().scheme().is_none() && req.uri().authority().is_none() => Ok(req.uri().clone()),
            None => Uri::try_from(req.uri().path_and_query().map_or("/", |p| p.as_str())),
        };
        let uri = match uri {
            Ok(u) => u,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("bad request path: {e}"), app),
        };
        let upstreams = match req.extensions().get::<axum::extract::ConnectInfo<Downstream>>() {
            Some(c) => c.0.upstreams().clone(),
            None => Arc::new(Upstreams::default()),
        };
        let n = route.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let (parts, body) = req.into_parts();
        let mut parts = Some(parts);
        let mut body = Some(body);
        let attempts = if retryable { n.min(2) } else { 1 };
        let mut last_error = String::new();
        let mut kind = "connect";
        for attempt in 0..attempts {
            let addr = route.endpoints[(start + attempt) % n];
            // Cloned only when a second attempt may need them.
            let head = if attempt + 1 < attempts { parts.clone() } else { parts.take() };
            let Some(mut head) = head else { break };
            head.uri = uri.clone();
            // The protocol version is the hop's own: the router speaks
            // HTTP/1.1 to the app whatever the client spoke.
            head.version = axum::http::Version::HTTP_11;
            if !head.headers.contains_key(header::HOST)
                && let Ok(v) = HeaderValue::from_str(&addr.to_string())
            {
                head.headers.insert(header::HOST, v);
            }
            let up = Request::from_parts(head, body.take().unwrap_or_else(Body::empty));
            match tokio::time::timeout(self.config.upstream_timeout, upstreams.send(addr, up)).await {
                Ok(Ok(resp)) => {
                    let (mut parts, incoming) = resp.into_parts();
                    // And HTTP/1.1 to the client (hyper downgrades for a
                    // 1.0 client): an app answering in HTTP/1.0 (Python's
                    // http.server) would otherwise close every client's
                    // keep-alive connection after one response.
                    parts.version = axum::http::Version::HTTP_11;
                    strip_hop_by_hop(&mut parts.headers);
                    strip_platform_cookies(&mut parts.headers, &self.config.domain);
                    if let Ok(v) = HeaderValue::from_str(&route.deployment_id) {
                        parts.headers.insert(X_BIFROST_DEPLOYMENT, v);
                    }
                    // For the access log only (an extension map costs two
                    // allocations on every response).
                    if crate::access_log::enabled() {
                        parts.extensions.insert(crate::Upstream(addr));
                    }
                    return Response::from_parts(parts, Body::new(incoming));
                }
                Ok(Err(SendError::Connect(e))) => {
                    last_error = format!("replica {addr} refused the connection: {e}");
                    continue;
                }
                Ok(Err(SendError::Failed(e))) => {
                    last_error = format!("replica {addr} failed: {e}");
                    kind = "failed";
                    break;
                }
                Err(_) => {
                    let mut resp = error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "gateway_timeout",
                        format!("app {app:?} did not answer within {:?}", self.config.upstream_timeout),
                        app,
                    );
                    resp.extensions_mut().insert(UpstreamError("timeout"));
                    return resp;
                }
            }
        }
        let mut resp = error(StatusCode::BAD_GATEWAY, "bad_gateway", last_error, app);
        resp.extensions_mut().insert(UpstreamError(kind));
        resp
    }
}

/// The platform's credentials never reach an app: its session cookie is cut
/// out of `Cookie` (other cookies stay), and an `Authorization` carrying a
/// Bifrost API token (`Bearer bft_…`) is removed.
pub(crate) fn strip_credentials(headers: &mut axum::http::HeaderMap) {
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').map(|(k, _)| k.trim()) != Some(SESSION_COOKIE))
        .map(str::to_string)
        .collect();
    if headers.contains_key(header::COOKIE) {
        headers.remove(header::COOKIE);
        if !cookies.is_empty()
            && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
        {
            headers.insert(header::COOKIE, v);
        }
    }
    let bifrost_token = headers.get_all(header::AUTHORIZATION).iter().any(|v| {
        v.to_str().ok().and_then(|v| v.trim().split_once(' ')).is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.trim_start().starts_with("bft_")
        })
    });
    if bifrost_token {
        headers.remove(header::AUTHORIZATION);
    }
}

/// An app may set cookies for its own host only: a `Set-Cookie` whose
/// `Domain` covers the platform's domain (`Domain=localhost` from
/// `hello.localhost`) would reach the dashboard, and is dropped.
pub(crate) fn strip_platform_cookies(headers: &mut axum::http::HeaderMap, domain: &str) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    let keep: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let Ok(text) = v.to_str() else { return false };
            !text.split(';').skip(1).any(|attr| {
                let Some((k, val)) = attr.split_once('=') else { return false };
                let val = val.trim().trim_start_matches('.').to_ascii_lowercase();
                k.trim().eq_ignore_ascii_case("domain") && (val == domain || domain.ends_with(&format!(".{val}")))
            })
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in keep {
        headers.append(header::SET_COOKIE, v);
    }
}

/// An address as a header value, written on the stack (this runs on every
/// request).
fn ip_header(ip: std::net::IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    let mut buf = [0u8; 48];
    let mut w = &mut buf[..];
    write!(w, "{ip}").ok()?;
    let len = 48 - w.len();
    HeaderValue::from_bytes(&buf[..len]).ok()
}

fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap) {
    // Also drop headers the Connection header names. The common values
    // (`keep-alive`, `close`, `upgrade`) name nothing beyond the fixed
    // list, and cost no allocation.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter(|s| {
            !s.is_empty()
                && !s.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP.iter().any(|h| s.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|s| HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()).ok())
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    /// App "slow", deployment d1, served by one replica at `addr`.
    fn one_replica(addr: std::net::SocketAddr) -> Route {
        Route {
            deployment_id: Arc::from("d1"),
            endpoints: vec![addr].into(),
            traffic: Arc::default(),
            split: None,
            chaos: None,
            script: None,
        }
    }

    struct One(Route);
    impl Routes for One {
        fn route(&self, app: &str) -> Option<Route> {
            (app == "slow").then(|| self.0.clone())
        }
    }

    #[tokio::test]
    async fn an_app_that_does_not_answer_in_time_gets_a_504_on_every_request_of_a_connection() {
        use tower::ServiceExt;
        // Accepts and reads, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((tcp, _)) = silent.accept().await {
                open.push(tcp);
            }
        });
        let route = one_replica(addr);
        let config = RouterConfig { upstream_timeout: std::time::Duration::from_millis(150), ..Default::default() };
        let svc = crate::service(Arc::new(One(route)), config);
        let client = Downstream::new(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)));
        for _ in 0..2 {
            let mut req = Request::builder().uri("/").header("host", "slow.localhost").body(Body::empty()).expect("r");
            req.extensions_mut().insert(axum::extract::ConnectInfo(client.clone()));
            let resp = svc.clone().oneshot(req).await.expect("infallible");
            assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(json["error"]["code"], "gateway_timeout");
            assert_eq!(json["error"]["message"], "app \"slow\" did not answer within 150ms");
        }
    }

    #[tokio::test]
    async fn clients_of_an_http_1_0_app_get_http_1_1_and_keep_their_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An app speaking HTTP/1.0: one response per connection, its end
        // marked by the close.
        let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = old.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = old.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold").await;
            }
        });
        let route = one_replica(addr);
        let svc = crate::service(Arc::new(One(route)), RouterConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let router = listener.local_addr().expect("addr");
        let timeouts = crate::ClientTimeouts::default();
        tokio::spawn(crate::serve(crate::serve::nodelay(listener), svc, timeouts, std::future::pending()));
        let mut client = tokio::net::TcpStream::connect(router).await.expect("connect");
        for i in 0..3 {
            client.write_all(b"GET / HTTP/1.1\r\nHost: slow.localhost\r\n\r\n").await.expect("write");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The body's length is unknown to the router: chunked, ended by
            // the last chunk.
            while !got.ends_with(b"0\r\n\r\n") {
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "request {i}: the router closed the client's connection");
                got.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 200"), "request {i}: {text}");
            assert!(text.contains("\r\n3\r\nold\r\n"), "request {i}: {text}");
        }
    }

    #[test]
    fn the_session_cookie_and_bifrost_tokens_are_stripped() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "theme=dark; bifrost_session=abc".parse().expect("v"));
        h.append(header::COOKIE, "app=1".parse().expect("v"));
        h.insert(header::AUTHORIZATION, "Bearer bft_admin".parse().expect("v"));
        strip_credentials(&mut h);
        assert_eq!(h.get(header::COOKIE).and_then(|v| v.to_str().ok()), Some("theme=dark; app=1"));
        assert!(!h.contains_key(header::AUTHORIZATION));
        // The app's own bearer tokens pass.
        let mut own = HeaderMap::new();
        own.insert(header::AUTHORIZATION, "Bearer app-token".parse().expect("v"));
        own.insert(header::COOKIE, "bifrost_session=x".parse().expect("v"));
        strip_credentials(&mut own);
        assert!(own.contains_key(header::AUTHORIZATION) && !own.contains_key(header::COOKIE));
    }

    #[test]
    fn an_app_cannot_set_cookies_for_the_platforms_domain() {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, "own=1; Path=/".parse().expect("v"));
        h.append(header::SET_COOKIE, "bifrost_session=evil; Domain=localhost; Path=/".parse().expect("v"));
        h.append(header::SET_COOKIE, "x=1; domain=.apps.example.com".parse().expect("v"));
        strip_platform_cookies(&mut h, "localhost");
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(left, ["own=1; Path=/", "x=1; domain=.apps.example.com"]);
        strip_platform_cookies(&mut h, "apps.example.com");
        assert_eq!(h.get_all(header::SET_COOKIE).iter().count(), 1);
    }
}
