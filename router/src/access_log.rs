//! One line per request on the `bifrost::access` target. As text, seed
//! 003's shape — `status | 0.003s | upstream | METHOD path` (the formatter
//! adds the time) — with app, deployment and request id as fields; on Cloud
//! Run the JSON logger turns the same fields into Cloud Logging's
//! `httpRequest`. Filter it with BIFROST_LOG.

use std::time::Instant;

layer!(AccessLogLayer => AccessLog, |self, req| {
    // Skip the formatting work entirely when nobody listens.
    if !tracing::enabled!(target: "bifrost::access", tracing::Level::INFO) {
        return Box::pin(self.inner.call(req));
    }
    let start = Instant::now();
    let method = req.method().clone();
    let target = req.extensions().get::<crate::AppTarget>().map(|t| t.app.clone()).unwrap_or_default();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let request_id = text(crate::X_REQUEST_ID);
    let user_agent = text(axum::http::header::USER_AGENT);
    let remote_ip = crate::peer_ip(&req).map(|ip| ip.to_string()).unwrap_or_default();
    let fut = self.inner.call(req);
    Box::pin(async move {
        let resp = fut.await?;
        let deployment =
            resp.headers().get(crate::proxy::X_BIFROST_DEPLOYMENT).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
        let upstream = resp.extensions().get::<crate::Upstream>().map_or("-".to_string(), |u| u.0.to_string());
        let status = resp.status().as_u16();
        let seconds = start.elapsed().as_secs_f64();
        tracing::info!(
            target: "bifrost::access",
            app = %target, %method, %path, status, seconds, %deployment, %request_id, %remote_ip, %user_agent,
            "{status} | {seconds:.3}s | {upstream} | {method} {path}"
        );
        Ok(resp)
    })
});
