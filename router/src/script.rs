//! The app's routing script (`[traffic] script`, or a version pushed with
//! `bifrost scripts push`): `handle(req)` runs on this worker thread's own
//! Lua state ([`bifrost_scripts::Engine`]) and may answer, change the
//! request and its answer, or pin the request to a side of the split. It
//! runs before the split, so `variant` can pin it.
//!
//! *Boundary*: the script sees the request only after the platform's
//! credentials are gone (it could otherwise copy the session cookie into a
//! header the app receives); it cannot touch the router's own headers, nor
//! set a cookie for the platform's domain. A script that fails or hits a
//! limit is answered 500 `script_error` (fail closed); the client learns
//! nothing of the script, the operator gets the Lua error and line
//! (`bifrost scripts list`, the log).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode};
use bifrost_scripts::{Action, Engine, Script, ScriptError, Variant};
use tower::{Layer, Service};

use crate::metrics::RouterMetrics;
use crate::proxy::{strip_credentials, strip_platform_cookies};
use crate::{AppTarget, ROUTER_HEADERS, Route, error};

/// Where failed runs are told (the platform keeps the count and the last
/// error for `bifrost scripts list`).
pub trait ScriptReports: Send + Sync {
    fn report(&self, app: &str, script: &Script, error: &ScriptError);
}

/// Set on the request when the script pinned its side of the split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pinned(pub Variant);

#[derive(Clone)]
pub struct ScriptLayer {
    pub metrics: Arc<RouterMetrics>,
    pub reports: Option<Arc<dyn ScriptReports>>,
    /// The platform's domain (cookies for it are dropped).
    pub domain: Arc<str>,
}

impl<S> Layer<S> for ScriptLayer {
    type Service = ScriptService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ScriptService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct ScriptService<S> {
    inner: S,
    layer: ScriptLayer,
}

fn owned(name: &HeaderName) -> bool {
    ROUTER_HEADERS.contains(&name.as_str())
}

/// A script's change that names a header only the router writes is the
/// script's error.
fn refuse_owned<'a>(script: &Script, names: impl IntoIterator<Item = &'a HeaderName>) -> Result<(), ScriptError> {
    match names.into_iter().find(|n| owned(n)) {
        Some(n) => Err(ScriptError {
            kind: bifrost_scripts::ErrorKind::Runtime,
            message: format!("{}: header {n} is the router's own; a script cannot set or remove it", script.name),
            line: None,
        }),
        None => Ok(()),
    }
}

impl<S> Service<Request<Body>> for ScriptService<S>
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some((script, deployment)) =
            req.extensions().get::<Route>().and_then(|r| Some((r.script.clone()?, r.deployment_id.clone())))
        else {
            return Box::pin(self.inner.call(req));
        };
        let Some(target) = req.extensions().get::<AppTarget>().cloned() else {
            return Box::pin(self.inner.call(req));
        };
        let started = Instant::now();
        strip_credentials(req.headers_mut());
        let outcome = run(&script, &target, &deployment, &mut req).and_then(|action| {
            if let Action::Change(c) = &action {
                refuse_owned(&script, c.set_headers.iter().map(|(n, _)| n).chain(&c.remove_headers))?;
                refuse_owned(&script, c.response_headers.iter().map(|(n, _)| n))?;
            }
            Ok(action)
        });
        let app = target.app.as_str();
        let layer = &self.layer;
        match outcome {
            Ok(Action::Pass) => Box::pin(self.inner.call(req)),
            Ok(Action::Answer(a)) => {
                let mut resp = Response::new(Body::from(a.body));
                *resp.status_mut() = a.status;
                for (n, v) in a.headers.into_iter().filter(|(n, _)| !owned(n)) {
                    resp.headers_mut().append(n, v);
                }
                strip_platform_cookies(resp.headers_mut(), &layer.domain);
                deployment_header(&mut resp, &deployment);
                layer.metrics.script_answered(app, &deployment, resp.status().as_u16(), started.elapsed());
                Box::pin(async move { Ok(resp) })
            }
            Ok(Action::Change(c)) => {
                let h = req.headers_mut();
                for n in &c.remove_headers {
                    h.remove(n);
                }
                for (n, v) in c.set_headers {
                    h.insert(n, v);
                }
                if let Some(path) = c.path
                    && let Some(t) = req.extensions_mut().get_mut::<AppTarget>()
                {
                    t.path = Some(path);
                }
                if let Some(v) = c.variant {
                    req.extensions_mut().insert(Pinned(v));
                }
                let fut = self.inner.call(req);
                if c.response_headers.is_empty() {
                    return Box::pin(fut);
                }
                let (headers, domain) = (c.response_headers, layer.domain.clone());
                Box::pin(async move {
                    let mut resp = fut.await?;
                    for (n, v) in headers {
                        resp.headers_mut().insert(n, v);
                    }
                    strip_platform_cookies(resp.headers_mut(), &domain);
                    Ok(resp)
                })
            }
            Err(e) => {
                tracing::warn!(target: "bifrost::script", app, script = %script.name, error = %e.message, "routing script failed");
                if let Some(r) = &layer.reports {
                    r.report(app, &script, &e);
                }
                layer.metrics.script_failed(app, &deployment, started.elapsed());
                let mut resp = error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "script_error",
                    "the app's routing script failed on this request".into(),
                    app,
                );
                deployment_header(&mut resp, &deployment);
                Box::pin(async move { Ok(resp) })
            }
        }
    }
}

fn deployment_header(resp: &mut Response<Body>, deployment: &str) {
    if let Ok(v) = HeaderValue::from_str(deployment) {
        resp.headers_mut().insert(crate::proxy::X_BIFROST_DEPLOYMENT, v);
    }
}

/// The request as the script sees it, and its decision. The headers are
/// lent to the script's state for the call (moved, not copied).
fn run(script: &Script, target: &AppTarget, deployment: &str, req: &mut Request<Body>) -> Result<Action, ScriptError> {
    let mut headers = std::mem::take(req.headers_mut());
    let (path, query) = match &target.path {
        Some(p) => p.split_once('?').unwrap_or((p.as_str(), "")),
        None => (req.uri().path(), req.uri().query().unwrap_or("")),
    };
    let ip = crate::IpText::of(crate::peer_ip(req));
    let mut view = bifrost_scripts::Request {
        method: req.method().as_str(),
        path,
        query,
        headers: Some(&mut headers),
        client_ip: ip.as_str(),
        app: &target.app,
        deployment,
    };
    let out = Engine::run(&target.app, script, &mut view);
    *req.headers_mut() = headers;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrafficRules;
    use bifrost_scripts::Limits;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// An app that echoes what reached it: path, and every request header.
    fn echo() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone {
        tower::service_fn(|req: Request<Body>| async move {
            let path = req.extensions().get::<AppTarget>().and_then(|t| t.path.clone()).unwrap_or_default();
            let pinned = req.extensions().get::<Pinned>().map(|p| format!("{:?}", p.0)).unwrap_or_default();
            let mut seen = format!("path={path} pinned={pinned}\n");
            for (n, v) in req.headers() {
                seen.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
            }
            Ok::<_, Infallible>(Response::new(Body::from(seen)))
        })
    }

    struct Seen(std::sync::Mutex<Vec<String>>);
    impl ScriptReports for Seen {
        fn report(&self, app: &str, _script: &Script, error: &ScriptError) {
            self.0.lock().expect("lock").push(format!("{app}: {}", error.message));
        }
    }

    async fn call(source: &str, req: Request<Body>) -> (Response<Body>, String, Arc<Seen>) {
        let seen = Arc::new(Seen(Default::default()));
        let layer =
            ScriptLayer { metrics: Arc::default(), reports: Some(seen.clone()), domain: Arc::from("localhost") };
        let mut req = req;
        req.extensions_mut().insert(Route {
            deployment_id: Arc::from("d1"),
            endpoints: vec![].into(),
            traffic: Arc::new(TrafficRules::default()),
            split: None,
            chaos: None,
            script: Some(Arc::new(Script::new("web.lua", source, Limits::default()))),
        });
        req.extensions_mut().insert(AppTarget { app: "web".into(), path: None });
        let resp = layer.layer(echo()).oneshot(req).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        (Response::from_parts(parts, Body::empty()), String::from_utf8_lossy(&bytes).into_owned(), seen)
    }

    fn get(path: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .header("host", "web.localhost")
            .header("cookie", "bifrost_session=secret; theme=dark")
            .header("authorization", "Bearer bft_secrettoken")
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn a_script_answers_rewrites_and_pins() {
        let src = r#"
            function handle(req)
              if req.path == "/down" then return { status = 503, body = "maintenance", headers = { ["x-bifrost-deployment"] = "forged", ["set-cookie"] = "s=1; Domain=localhost" } } end
              if req.path == "/old" then return { path = "/new", set_headers = { ["x-ab"] = "b" }, variant = "canary", response_headers = { ["x-script"] = "1" } } end
            end"#;
        let (resp, body, _) = call(src, get("/down")).await;
        assert_eq!((resp.status().as_u16(), body.as_str()), (503, "maintenance"));
        assert_eq!(resp.headers()["x-bifrost-deployment"], "d1", "the router says who answered, not the script");
        assert!(resp.headers().get("set-cookie").is_none(), "no cookie for the platform's domain");
        let (resp, body, _) = call(src, get("/old")).await;
        assert!(body.starts_with("path=/new pinned=Canary\n"), "{body}");
        assert!(body.contains("x-ab: b"), "{body}");
        assert_eq!(resp.headers()["x-script"], "1");
        let (_, body, _) = call(src, get("/other")).await;
        assert!(body.starts_with("path= pinned=\n"), "passed through untouched: {body}");
    }

    #[tokio::test]
    async fn a_script_never_sees_the_platforms_credentials() {
        let src = r#"function handle(req) return { set_headers = { ["x-leak"] = (req.headers.cookie or "") .. "|" .. (req.headers.authorization or "") } } end"#;
        let (_, body, _) = call(src, get("/")).await;
        assert!(!body.contains("secret"), "{body}");
        assert!(body.contains("x-leak: theme=dark|"), "the app's own cookie stays: {body}");
    }

    #[tokio::test]
    async fn a_failing_script_answers_500_without_details_and_is_reported() {
        for src in [
            "function handle(req)\n  error('db password is hunter2')\nend",
            "function handle(req) while true do end end",
            "function handle(req) return { set_headers = { ['x-request-id'] = 'forged' } } end",
        ] {
            let (resp, body, seen) = call(src, get("/")).await;
            assert_eq!(resp.status().as_u16(), 500, "{src}");
            assert!(body.contains("\"script_error\""), "{body}");
            assert!(!body.contains("hunter2"), "the client learns nothing of the script: {body}");
            let reports = seen.0.lock().expect("lock").clone();
            assert_eq!(reports.len(), 1, "{src}: {reports:?}");
            assert!(reports[0].starts_with("web: web.lua"), "{reports:?}");
        }
    }
}
