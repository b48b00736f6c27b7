//! The app's `[traffic] headers` (on the request, after the platform's
//! credentials are gone) and `response_headers` (on the app's answer).

use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use tower::{Layer, Service};

use crate::Route;

#[derive(Clone, Copy, Debug, Default)]
pub struct HeaderRulesLayer;

impl<S> Layer<S> for HeaderRulesLayer {
    type Service = HeaderRulesService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HeaderRulesService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct HeaderRulesService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for HeaderRulesService<S>
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
        let Some(traffic) = req.extensions().get::<Route>().map(|r| r.traffic.clone()) else {
            return Box::pin(self.inner.call(req));
        };
        traffic.spec().request_headers.apply(req.headers_mut());
        let fut = self.inner.call(req);
        if traffic.spec().response_headers.is_empty() {
            return Box::pin(fut);
        }
        Box::pin(async move {
            let mut resp = fut.await?;
            traffic.spec().response_headers.apply(resp.headers_mut());
            Ok(resp)
        })
    }
}
