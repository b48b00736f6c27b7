//! Weighted, sticky splits: a route may name a second deployment and the
//! share of clients (0–100) it gets. A client's side is a stable hash of
//! (app, client key) mod 100 compared with the weight, so a client on the
//! second deployment at 10 % is still on it at 50 % and nobody flips back
//! and forth as the weight moves. The key is the router's own
//! `bifrost_variant` cookie, else the client's address; the cookie is set
//! on the first answer to the very key the address gave, so a client that
//! keeps cookies stays where its first request went even if its address
//! changes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::http::header::{COOKIE, HeaderValue, SET_COOKIE};

use crate::{AppTarget, Route};

/// The router's own cookie (never the platform's session).
pub const VARIANT_COOKIE: &str = "bifrost_variant";

/// The second deployment of a route and its share of clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub deployment_id: Arc<str>,
    pub endpoints: Arc<[std::net::SocketAddr]>,
    /// 0–100: the share of clients sent here.
    pub weight: u8,
}

/// FNV-1a, 64-bit: stable across processes, versions and routers (the
/// standard library's hasher promises none of that).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The client's key: its variant cookie if it sent a well-formed one, else
/// one made from its address (what the cookie is then set to).
fn client_key(req: &Request<Body>) -> (String, bool) {
    let from_cookie = req
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == VARIANT_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    match from_cookie {
        Some(v) => (v.to_ascii_lowercase(), true),
        None => {
            let ip = crate::IpText::of(crate::peer_ip(req));
            (format!("{:016x}", fnv1a(&[b"ip", ip.as_str().as_bytes()])), false)
        }
    }
}

/// Whether `key`'s clients of `app` go to the second deployment at `weight`.
pub fn second_side(app: &str, key: &str, weight: u8) -> bool {
    fnv1a(&[app.as_bytes(), key.as_bytes()]) % 100 < u64::from(weight.min(100))
}

layer!(SplitLayer => SplitService, |self, mut req| {
    let Some(split) = req.extensions().get::<Route>().and_then(|r| r.split.clone()) else {
        return Box::pin(self.inner.call(req));
    };
    let app = req.extensions().get::<AppTarget>().map(|t| t.app.clone()).unwrap_or_default();
    let (key, had_cookie) = client_key(&req);
    // A script's `variant` decides this one request; the cookie still
    // records the client's own side.
    let second = match req.extensions().get::<crate::script::Pinned>() {
        Some(crate::script::Pinned(v)) => *v == bifrost_scripts::Variant::Canary,
        None => second_side(&app, &key, split.weight),
    };
    if second
        && let Some(route) = req.extensions_mut().get_mut::<Route>()
    {
        route.deployment_id = split.deployment_id.clone();
        route.endpoints = split.endpoints.clone();
    }
    let fut = self.inner.call(req);
    Box::pin(async move {
        let mut resp = fut.await?;
        if !had_cookie
            && let Ok(v) = HeaderValue::from_str(&format!(
                "{VARIANT_COOKIE}={key}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
            ))
        {
            resp.headers_mut().append(SET_COOKIE, v);
        }
        Ok(resp)
    })
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrafficRules;
    use axum::http::Response;
    use std::convert::Infallible;
    use tower::Layer;
    use tower::ServiceExt;

    #[test]
    fn a_client_on_the_second_side_stays_there_as_the_weight_rises() {
        let keys: Vec<String> =
            (0..2000).map(|i| format!("{:016x}", fnv1a(&[b"k", &i.to_string().into_bytes()]))).collect();
        let side = |w| keys.iter().filter(|k| second_side("web", k, w)).cloned().collect::<Vec<_>>();
        let (at10, at50, at100) = (side(10), side(50), side(100));
        assert!(at10.iter().all(|k| at50.contains(k)), "someone on the second side at 10% left it at 50%");
        assert_eq!(at100.len(), keys.len());
        assert!(side(0).is_empty());
        // The shares are near the weights (2,000 clients).
        for (w, n) in [(10, at10.len()), (50, at50.len())] {
            let share = n as f64 / keys.len() as f64 * 100.0;
            assert!((share - f64::from(w)).abs() < 3.0, "weight {w}%: {share:.1}% of clients");
        }
        // Another app splits the same clients differently.
        assert_ne!(side(50), keys.iter().filter(|k| second_side("api", k, 50)).cloned().collect::<Vec<_>>());
    }

    fn route(weight: u8) -> Route {
        Route {
            deployment_id: Arc::from("stable"),
            endpoints: vec![].into(),
            traffic: Arc::new(TrafficRules::default()),
            split: Some(Split { deployment_id: Arc::from("canary"), endpoints: vec![].into(), weight }),
            chaos: None,
            script: None,
        }
    }

    /// Answers with the deployment the request was routed to.
    async fn served(weight: u8, cookie: Option<&str>, ip: [u8; 4]) -> (String, Option<String>) {
        let svc = SplitLayer.layer(tower::service_fn(|req: Request<Body>| async move {
            let d = req.extensions().get::<Route>().map(|r| r.deployment_id.to_string()).unwrap_or_default();
            Ok::<_, Infallible>(Response::new(Body::from(d)))
        }));
        let mut req = Request::builder().uri("/").body(Body::empty()).expect("request");
        req.extensions_mut().insert(route(weight));
        req.extensions_mut().insert(AppTarget { app: "web".into(), path: None });
        req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 4000))));
        if let Some(c) = cookie {
            req.headers_mut().insert(COOKIE, HeaderValue::from_str(&format!("a=1; {VARIANT_COOKIE}={c}")).expect("v"));
        }
        let resp = svc.oneshot(req).await.expect("infallible");
        let set = resp.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.expect("body");
        (String::from_utf8_lossy(&body).into_owned(), set)
    }

    #[tokio::test]
    async fn the_first_answer_sets_the_cookie_the_next_requests_follow() {
        // Find an address whose clients land on the canary at 50%.
        let mut ip = [10, 0, 0, 0];
        let (first, cookie) = loop {
            ip[3] += 1;
            let (d, set) = served(50, None, ip).await;
            if d == "canary" {
                break (d, set.expect("the first answer sets the variant cookie"));
            }
        };
        let value = cookie.split(';').next().and_then(|c| c.split_once('=')).map(|(_, v)| v.to_string()).expect("v");
        assert!(cookie.contains("HttpOnly") && cookie.contains("Path=/"), "{cookie}");
        // With the cookie, from another address, at a higher weight: still the canary; no new cookie.
        let (again, set) = served(80, Some(&value), [192, 168, 1, 1]).await;
        assert_eq!((first.as_str(), again.as_str(), set), ("canary", "canary", None));
        // Weight 0 and 100 are absolute.
        assert_eq!(served(0, Some(&value), ip).await.0, "stable");
        assert_eq!(served(100, None, [1, 2, 3, 4]).await.0, "canary");
    }
}
