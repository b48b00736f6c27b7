//! One line per request on the `bifrost::access` target. As text, seed
//! 003's shape — `status | 0.003s | upstream | METHOD path` (the formatter
//! adds the time; `bifrost_service` writes the line in a format of its own)
//! — with app, deployment and request id as fields; on Cloud Run the JSON
//! logger turns the same fields into Cloud Logging's `httpRequest`. Filter
//! it with BIFROST_LOG.

use std::time::Instant;

/// Whether anyone listens to the access log (else its work is skipped).
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: "bifrost::access", tracing::Level::INFO)
}

/// A header's text for the line ("-" when absent or not text).
fn text(v: &Option<axum::http::HeaderValue>) -> &str {
    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
}

layer!(AccessLogLayer => AccessLog, |self, req| {
    if !enabled() {
        return Box::pin(self.inner.call(req));
    }
    // What the line needs, kept without copying: header values and the URI
    // share the request's buffer (this runs on every request).
    let start = Instant::now();
    let method = req.method().clone();
    let target = req.extensions().get::<crate::AppTarget>().map(|t| t.app.clone()).unwrap_or_default();
    let uri = req.uri().clone();
    let request_id = req.headers().get(crate::X_REQUEST_ID).cloned();
    let user_agent = req.headers().get(axum::http::header::USER_AGENT).cloned();
    let remote_ip = crate::peer_ip(&req);
    let fut = self.inner.call(req);
    Box::pin(async move {
        let resp = fut.await?;
        let deployment = resp.headers().get(crate::proxy::X_BIFROST_DEPLOYMENT).and_then(|v| v.to_str().ok());
        let upstream = resp.extensions().get::<crate::Upstream>().map(|u| u.0);
        let status = resp.status().as_u16();
        let seconds = start.elapsed().as_secs_f64();
        let path = uri.path_and_query().map_or("", |p| p.as_str());
        let (request_id, user_agent) = (text(&request_id), text(&user_agent));
        let (remote_ip, deployment, upstream) = (Hyphen(remote_ip), deployment.unwrap_or("-"), Hyphen(upstream));
        // Text as `&str` (recorded as strings: the text line quotes one with
        // spaces, the user agent); the message is seed 003's line.
        tracing::info!(
            target: "bifrost::access",
            app = target.as_str(), %method, path, status, seconds, deployment, request_id, %remote_ip, user_agent,
            "{status} | {seconds:.3}s | {upstream} | {method} {path}"
        );
        Ok(resp)
    })
});

/// An optional value shown as itself or "-".
struct Hyphen<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Hyphen<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}
