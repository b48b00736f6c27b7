//! How the dashboard reaches the gateway API: in the same process (a tower
//! call into the gateway's router, as `bifrost up` does) or over HTTP (the
//! `bifrost-web` binary, Cloud Run's `web` service). Either way every call
//! carries the signed-in user's token, so the API enforces roles too.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

#[derive(Clone)]
pub enum Backend {
    InProcess(axum::Router),
    Http { base: String, client: reqwest::Client },
}

/// A failed API call: the HTTP status and the API's own message.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
}

impl ApiFailure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiFailure { status, message: message.into() }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Backend {
    pub fn http(base: &str) -> Self {
        Backend::Http { base: base.trim_end_matches('/').to_string(), client: reqwest::Client::new() }
    }

    /// Sends one request; the answer's body streams (SSE passes through).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
        extra: HeaderMap,
    ) -> Result<Response, ApiFailure> {
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiFailure::new(StatusCode::UNAUTHORIZED, "the session token is not valid text"))?;
        match self {
            Backend::InProcess(router) => {
                let mut req = Request::builder().method(method).uri(path);
                if let Some(h) = req.headers_mut() {
                    h.extend(extra);
                    h.insert(header::AUTHORIZATION, bearer);
                    if body.is_some() {
                        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    }
                }
                let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
                let req = req.body(body).map_err(|e| ApiFailure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
                router.clone().oneshot(req).await.map_err(|e| match e {})
            }
            Backend::Http { base, client } => {
                let mut req = client.request(method, format!("{base}{path}")).headers(extra);
                req = req.header(header::AUTHORIZATION, bearer);
                if let Some(b) = body {
                    req = req.json(&b);
                }
                let resp = req.send().await.map_err(|e| {
                    ApiFailure::new(StatusCode::BAD_GATEWAY, format!("the Bifrost API at {base} did not answer: {e}"))
                })?;
                let mut out = Response::builder().status(resp.status().as_u16());
                if let Some(h) = out.headers_mut() {
                    for (k, v) in resp.headers() {
                        h.insert(k.clone(), v.clone());
                    }
                }
                out.body(Body::from_stream(resp.bytes_stream()))
                    .map_err(|e| ApiFailure::new(StatusCode::BAD_GATEWAY, e.to_string()))
            }
        }
    }

    /// Calls the API and decodes a JSON answer; a non-2xx answer becomes an
    /// [`ApiFailure`] carrying the API's error message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ApiFailure> {
        let resp = self.request(method, path, token, body, HeaderMap::new()).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .map_err(|e| ApiFailure::new(StatusCode::BAD_GATEWAY, format!("reading the API's answer: {e}")))?;
        if !status.is_success() {
            let v = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            let at = |p: &str| v.as_ref().and_then(|v| v.pointer(p));
            let mut message = at("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("the API answered {status}"));
            // A refused policy or script says where (`details.line`).
            if let Some(line) = at("/error/details/line").and_then(|l| l.as_u64()) {
                message = format!("line {line}: {message}");
            }
            return Err(ApiFailure::new(status, message));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiFailure::new(StatusCode::BAD_GATEWAY, format!("unexpected answer from {path}: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> Result<T, ApiFailure> {
        self.call(Method::GET, path, token, None).await
    }
}
