//! Fault injection (`bifrost chaos`, seed 003's chaos) at the router, so
//! any app can be exercised: a share of requests is answered with an error
//! status instead of reaching the app, or reaches it late. It ends by
//! itself at `until`. Injected answers are marked ([`Injected`]) and
//! counted as the deployment's own errors, so analysis sees them as such.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;

use crate::{AppTarget, Route, error};

#[derive(Clone, Debug, PartialEq)]
pub enum FaultRule {
    Error { rate: f64, status: StatusCode },
    Delay { rate: f64, delay: Duration },
}

/// An app's fault injection as the router applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosRule {
    /// Only this deployment's traffic; `None`: whatever serves the app.
    pub deployment: Option<std::sync::Arc<str>>,
    pub fault: FaultRule,
    pub until: SystemTime,
}

impl ChaosRule {
    /// A project's `bifrost chaos` (as stored, or as the route feed carries it).
    pub fn new(
        deployment: Option<&str>,
        fault: &bifrost_core::domain::Fault,
        until: &bifrost_core::domain::Timestamp,
    ) -> ChaosRule {
        use bifrost_core::domain::Fault;
        ChaosRule {
            deployment: deployment.map(std::sync::Arc::from),
            fault: match fault {
                Fault::Error { rate, status } => FaultRule::Error {
                    rate: *rate,
                    status: StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                },
                Fault::Delay { rate, delay_ms } => {
                    FaultRule::Delay { rate: *rate, delay: Duration::from_millis(*delay_ms) }
                }
            },
            until: SystemTime::UNIX_EPOCH + Duration::from_millis(until.timestamp_millis().max(0) as u64),
        }
    }
}

/// Set on a response the router made up instead of asking the app.
#[derive(Clone, Copy, Debug)]
pub struct Injected;

/// A uniform draw in [0, 1): splitmix64 over a shared counter (sampling
/// faults needs speed, not secrecy).
fn draw() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    if z == 0 {
        z = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    }
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

layer!(ChaosLayer => ChaosService, |self, req| {
    let rule = req.extensions().get::<Route>().and_then(|r| {
        let c = r.chaos.as_ref()?;
        let applies = SystemTime::now() < c.until && c.deployment.as_ref().is_none_or(|d| *d == r.deployment_id);
        applies.then(|| c.fault.clone())
    });
    match rule {
        Some(FaultRule::Error { rate, status }) if draw() < rate => {
            let app = req.extensions().get::<AppTarget>().map(|t| t.app.clone()).unwrap_or_default();
            let deployment = req.extensions().get::<Route>().map(|r| r.deployment_id.clone());
            let mut resp = error(status, "injected_fault", "fault injected by bifrost chaos".into(), &app);
            resp.extensions_mut().insert(Injected);
            if let Some(v) = deployment.and_then(|d| axum::http::HeaderValue::from_str(&d).ok()) {
                resp.headers_mut().insert(crate::proxy::X_BIFROST_DEPLOYMENT, v);
            }
            Box::pin(async move { Ok(resp) })
        }
        Some(FaultRule::Delay { rate, delay }) if draw() < rate => {
            let fut = self.inner.call(req);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                fut.await
            })
        }
        _ => Box::pin(self.inner.call(req)),
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrafficRules;
    use axum::body::Body;
    use axum::http::{Request, Response};
    use std::convert::Infallible;
    use std::sync::Arc;
    use tower::Layer;
    use tower::ServiceExt;

    async fn statuses(chaos: Option<ChaosRule>, n: usize) -> Vec<u16> {
        let mut out = vec![];
        for _ in 0..n {
            let svc = ChaosLayer.layer(tower::service_fn(|_req: Request<Body>| async {
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }));
            let mut req = Request::builder().uri("/").body(Body::empty()).expect("request");
            req.extensions_mut().insert(Route {
                deployment_id: Arc::from("d1"),
                endpoints: vec![].into(),
                traffic: Arc::new(TrafficRules::default()),
                split: None,
                chaos: chaos.clone(),
                script: None,
            });
            out.push(svc.oneshot(req).await.expect("infallible").status().as_u16());
        }
        out
    }

    fn error_rule(rate: f64, until: SystemTime, deployment: Option<&str>) -> ChaosRule {
        ChaosRule {
            deployment: deployment.map(Arc::from),
            fault: FaultRule::Error { rate, status: StatusCode::SERVICE_UNAVAILABLE },
            until,
        }
    }

    #[tokio::test]
    async fn errors_are_injected_at_their_rate_until_they_expire() {
        let later = SystemTime::now() + Duration::from_secs(600);
        assert!(statuses(Some(error_rule(1.0, later, None)), 20).await.iter().all(|s| *s == 503));
        let half = statuses(Some(error_rule(0.5, later, None)), 2000).await;
        let injected = half.iter().filter(|s| **s == 503).count();
        assert!((850..=1150).contains(&injected), "{injected} of 2000 at rate 0.5");
        let past = SystemTime::now() - Duration::from_secs(1);
        assert!(statuses(Some(error_rule(1.0, past, None)), 20).await.iter().all(|s| *s == 200), "expired");
        assert!(
            statuses(Some(error_rule(1.0, later, Some("d2"))), 20).await.iter().all(|s| *s == 200),
            "another deployment's fault"
        );
        assert!(statuses(None, 5).await.iter().all(|s| *s == 200));
    }
}
