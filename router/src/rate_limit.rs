//! The app's `[traffic] rate_limit`: a request over it is answered here
//! with 429, the platform's JSON error body, `Retry-After` and the IETF
//! httpapi draft's `RateLimit-Limit` / `-Remaining` / `-Reset`; one under it
//! goes on and its response carries the same three headers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::{HeaderMap, Request, Response, StatusCode};

use crate::traffic::{LimitKey, PeerCounts, Verdict};
use crate::{AppTarget, Route, error};

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The count a request is charged to.
fn key_of(req: &Request<Body>, key: &LimitKey) -> String {
    match key {
        LimitKey::App => String::new(),
        // The peer, never X-Forwarded-For (a client writes that itself).
        LimitKey::ClientIp => crate::peer_ip(req).map(|ip| ip.to_string()).unwrap_or_default(),
        LimitKey::Header(name) => {
            req.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default()
        }
    }
}

fn put(headers: &mut HeaderMap, name: HeaderName, n: u64) {
    headers.insert(name, HeaderValue::from(n));
}

/// The rate limit layer; in a cluster, app-wide limits count the other
/// nodes' admissions too (`peers`).
#[derive(Clone, Default)]
pub struct RateLimitLayer {
    pub peers: Option<Arc<dyn PeerCounts>>,
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, peers: self.peers.clone() }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    peers: Option<Arc<dyn PeerCounts>>,
}

impl<S> tower::Service<Request<Body>> for RateLimit<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = crate::BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        limit(self, req)
    }
}

fn limit<S>(this: &mut RateLimit<S>, req: Request<Body>) -> crate::BoxFuture<Result<Response<Body>, S::Error>>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    let Some(route) = req.extensions().get::<Route>() else { return Box::pin(this.inner.call(req)) };
    let Some(rule) = &route.traffic.spec().rate else { return Box::pin(this.inner.call(req)) };
    let app = req.extensions().get::<AppTarget>().map(|t| t.app.as_str()).unwrap_or_default();
    let verdict = match (&this.peers, &rule.key) {
        (Some(peers), LimitKey::App) => route.traffic.check_shared(app, peers.as_ref()),
        _ => route.traffic.check(&key_of(&req, &rule.key)),
    };
    match verdict {
        Verdict::Unlimited => Box::pin(this.inner.call(req)),
        Verdict::Limited { limit, retry_after_s } => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("app {app:?} allows {} requests; retry in {retry_after_s}s", rule.text),
                app,
            );
            let h = resp.headers_mut();
            put(h, RETRY_AFTER, retry_after_s);
            put(h, LIMIT, u64::from(limit));
            put(h, REMAINING, 0);
            put(h, RESET, retry_after_s);
            resp.extensions_mut().insert(crate::metrics::RateLimited);
            Box::pin(async move { Ok(resp) })
        }
        Verdict::Allowed { limit, remaining, reset_s } => {
            let fut = this.inner.call(req);
            Box::pin(async move {
                let mut resp = fut.await?;
                let h = resp.headers_mut();
                put(h, LIMIT, u64::from(limit));
                put(h, REMAINING, u64::from(remaining));
                put(h, RESET, reset_s);
                Ok(resp)
            })
        }
    }
}
