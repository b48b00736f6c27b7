//! The app's `[traffic] headers` (on the request, after the platform's
//! credentials are gone) and `response_headers` (on the app's answer).

use crate::Route;

layer!(HeaderRulesLayer => HeaderRulesService, |self, mut req| {
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
});
