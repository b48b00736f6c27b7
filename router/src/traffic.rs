//! An app's traffic rules as the router applies them: its rate limit (with
//! the limiter that counts it) and its header rules, compiled once when a
//! deployment goes live, not per request.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::header::{HeaderName, HeaderValue};
use governor::clock::DefaultClock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Whose requests one limit counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LimitKey {
    #[default]
    App,
    ClientIp,
    Header(HeaderName),
}

/// `requests` per `per`, `burst` at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateRule {
    pub requests: u32,
    pub per: Duration,
    /// `None`: one second's worth of the rate (at least 1).
    pub burst: Option<u32>,
    pub key: LimitKey,
    /// As the user wrote it (`100/s`), for the 429's message.
    pub text: String,
}

impl RateRule {
    fn quota(&self) -> Option<Quota> {
        let requests = NonZeroU32::new(self.requests)?;
        let per_request = self.per.checked_div(requests.get())?;
        let default_burst = (u64::from(requests.get()) * 1000 / self.per.as_millis().max(1) as u64).max(1);
        let burst = NonZeroU32::new(self.burst.unwrap_or(default_burst.min(u64::from(u32::MAX)) as u32))?;
        Some(Quota::with_period(per_request)?.allow_burst(burst))
    }
}

/// Headers set and removed, in that order (remove first, so a name in both
/// ends up set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    /// From names and values as deploy.toml has them (already validated;
    /// anything that still does not parse, or names a header the router
    /// owns, is left out).
    pub fn from_pairs<'a>(
        set: impl IntoIterator<Item = (&'a str, &'a str)>,
        remove: impl IntoIterator<Item = &'a str>,
    ) -> HeaderRules {
        let owned = |n: &HeaderName| crate::ROUTER_HEADERS.contains(&n.as_str());
        HeaderRules {
            set: set
                .into_iter()
                .filter_map(|(n, v)| Some((HeaderName::try_from(n).ok()?, HeaderValue::try_from(v).ok()?)))
                .filter(|(n, _)| !owned(n))
                .collect(),
            remove: remove.into_iter().filter_map(|n| HeaderName::try_from(n).ok()).filter(|n| !owned(n)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut axum::http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// What the rules are made from: plain data, comparable, so a deployment
/// going live with the same rules keeps the app's limiter (and its counts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficSpec {
    pub rate: Option<RateRule>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

impl TrafficSpec {
    /// deploy.toml's `[traffic]` as the router applies it.
    pub fn from_config(t: &bifrost_core::config::Traffic) -> TrafficSpec {
        use bifrost_core::config::RateLimitKey;
        let rules = |h: &bifrost_core::config::Headers| {
            HeaderRules::from_pairs(
                h.set.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                h.remove.iter().map(String::as_str),
            )
        };
        TrafficSpec {
            rate: t.rate_limit.as_ref().map(|r| RateRule {
                requests: r.requests,
                per: Duration::from_millis(r.per.millis),
                burst: t.rate_limit_burst,
                key: match &t.rate_limit_key {
                    RateLimitKey::App => LimitKey::App,
                    RateLimitKey::ClientIp => LimitKey::ClientIp,
                    RateLimitKey::Header(h) => {
                        HeaderName::try_from(h.as_str()).map(LimitKey::Header).unwrap_or_default()
                    }
                },
                text: r.to_string(),
            }),
            request_headers: rules(&t.headers),
            response_headers: rules(&t.response_headers),
        }
    }
}

type Limiter = RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Keys kept before forgetting the ones whose limit has fully recovered.
const KEYS_BEFORE_SWEEP: usize = 10_000;

/// What the other routers of a cluster admitted (gossiped): an app-wide
/// limit holds across the cluster when each node admits only while the sum
/// of every node's count in the current window is under it.
pub trait PeerCounts: Send + Sync + 'static {
    /// The other nodes' admitted requests of `app` in the window that
    /// starts at `window_ms` (ms since the epoch).
    fn others(&self, app: &str, window_ms: u64) -> u64;
    /// This node's count of `app` in that window, to gossip.
    fn publish(&self, app: &str, window_ms: u64, count: u64);
}

/// An app's compiled rules and its limiter.
pub struct TrafficRules {
    spec: TrafficSpec,
    limiter: Option<(Limiter, Quota)>,
    checks: AtomicU64,
    /// Clustered app-wide limits: (window start ms, requests admitted here).
    window: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for TrafficRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficRules").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl PartialEq for TrafficRules {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for TrafficRules {}

impl Default for TrafficRules {
    fn default() -> Self {
        TrafficRules::new(TrafficSpec::default())
    }
}

/// The limiter's answer for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No limit configured.
    Unlimited,
    Allowed {
        limit: u32,
        remaining: u32,
        reset_s: u64,
    },
    Limited {
        limit: u32,
        retry_after_s: u64,
    },
}

impl TrafficRules {
    pub fn new(spec: TrafficSpec) -> TrafficRules {
        let limiter =
            spec.rate.as_ref().and_then(|r| r.quota()).map(|q| (RateLimiter::dashmap(q).with_middleware(), q));
        TrafficRules { spec, limiter, checks: AtomicU64::new(0), window: Mutex::new((0, 0)) }
    }

    /// Counts one request of an app-wide limit shared by a cluster: fixed
    /// windows of the rule's period (`100/s`: each second) aligned on the
    /// epoch, so every node names the same window; admitted while this
    /// node's count plus the others' is under the limit (`requests` per
    /// window plus any `rate_limit_burst`). Other keys (client IP, header)
    /// are limited per node: gossiping every client's count is not worth it.
    pub fn check_shared(&self, app: &str, peers: &dyn PeerCounts) -> Verdict {
        let Some(rule) = &self.spec.rate else { return Verdict::Unlimited };
        let per_ms = (rule.per.as_millis() as u64).max(1);
        let limit = rule.requests.saturating_add(rule.burst.unwrap_or(0));
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let start = now - now % per_ms;
        let reset_s = (start + per_ms - now).div_ceil(1000).max(1);
        let others = peers.others(app, start);
        let mut w = match self.window.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        if w.0 != start {
            *w = (start, 0);
        }
        if w.1 + others >= u64::from(limit) {
            return Verdict::Limited { limit, retry_after_s: reset_s };
        }
        w.1 += 1;
        let mine = w.1;
        drop(w);
        peers.publish(app, start, mine);
        let remaining = u64::from(limit).saturating_sub(mine + others);
        Verdict::Allowed { limit, remaining: remaining as u32, reset_s }
    }

    pub fn spec(&self) -> &TrafficSpec {
        &self.spec
    }

    /// Counts one request of `key` against the limit.
    pub fn check(&self, key: &str) -> Verdict {
        let Some((limiter, quota)) = &self.limiter else { return Verdict::Unlimited };
        let limit = quota.burst_size().get();
        // Per-client keys would otherwise grow without end.
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(1024) && limiter.len() > KEYS_BEFORE_SWEEP {
            limiter.retain_recent();
        }
        match limiter.check_key(&key.to_string()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let refill = quota.replenish_interval() * (limit - remaining);
                Verdict::Allowed { limit, remaining, reset_s: ceil_secs(refill) }
            }
            Err(not_until) => Verdict::Limited {
                limit,
                retry_after_s: ceil_secs(not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()))).max(1),
            },
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(requests: u32, per: Duration, burst: Option<u32>) -> TrafficRules {
        TrafficRules::new(TrafficSpec {
            rate: Some(RateRule { requests, per, burst, key: LimitKey::App, text: String::new() }),
            ..TrafficSpec::default()
        })
    }

    #[test]
    fn the_default_burst_is_one_second_of_the_rate() {
        let r = rule(5, Duration::from_secs(1), None);
        let allowed = (0..20).filter(|_| matches!(r.check("k"), Verdict::Allowed { .. })).count();
        assert_eq!(allowed, 5);
        // Slower than one per second: a burst of one.
        let slow = rule(60, Duration::from_secs(3600), None);
        assert!(matches!(slow.check("k"), Verdict::Allowed { limit: 1, remaining: 0, .. }));
        assert!(matches!(slow.check("k"), Verdict::Limited { limit: 1, retry_after_s: 60 }));
    }

    #[test]
    fn remaining_counts_down_and_keys_count_apart() {
        let r = rule(100, Duration::from_secs(60), Some(3));
        assert_eq!(r.check("a"), Verdict::Allowed { limit: 3, remaining: 2, reset_s: 1 });
        assert!(matches!(r.check("a"), Verdict::Allowed { remaining: 1, .. }));
        assert!(matches!(r.check("a"), Verdict::Allowed { remaining: 0, .. }));
        assert!(matches!(r.check("a"), Verdict::Limited { limit: 3, .. }));
        assert!(matches!(r.check("b"), Verdict::Allowed { remaining: 2, .. }), "another key has its own count");
        assert_eq!(TrafficRules::default().check("a"), Verdict::Unlimited);
    }

    /// Other nodes with fixed counts; what this node publishes.
    #[derive(Default)]
    struct Peers {
        others: u64,
        published: Mutex<Vec<u64>>,
    }

    impl PeerCounts for Peers {
        fn others(&self, _app: &str, _window_ms: u64) -> u64 {
            self.others
        }
        fn publish(&self, _app: &str, _window_ms: u64, count: u64) {
            self.published.lock().expect("published").push(count);
        }
    }

    #[test]
    fn a_shared_limit_admits_only_what_the_other_nodes_left() {
        // 10 per hour: one window for the whole test.
        let r = rule(10, Duration::from_secs(3600), None);
        let peers = Peers { others: 7, ..Peers::default() };
        let verdicts: Vec<Verdict> = (0..5).map(|_| r.check_shared("app", &peers)).collect();
        let admitted = verdicts.iter().filter(|v| matches!(v, Verdict::Allowed { .. })).count();
        assert_eq!(admitted, 3, "{verdicts:?}");
        assert!(matches!(verdicts[0], Verdict::Allowed { limit: 10, remaining: 2, .. }), "{verdicts:?}");
        assert!(matches!(verdicts[4], Verdict::Limited { limit: 10, .. }));
        assert_eq!(*peers.published.lock().expect("published"), [1, 2, 3], "each admitted request is published");
        let full = Peers { others: 10, ..Peers::default() };
        assert!(matches!(
            rule(10, Duration::from_secs(3600), None).check_shared("app", &full),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn header_rules_remove_then_set_and_never_touch_the_routers_headers() {
        let rules = HeaderRules::from_pairs(
            [("X-Served-By", "bifrost"), ("X-Bifrost-Deployment", "forged"), ("X-Request-Id", "forged")],
            ["X-Debug", "X-Served-By", "x-bifrost-deployment"],
        );
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("1"));
        h.insert("x-served-by", HeaderValue::from_static("app"));
        h.insert("x-bifrost-deployment", HeaderValue::from_static("d1"));
        rules.apply(&mut h);
        assert_eq!(h.get("x-served-by").map(|v| v.as_bytes()), Some(&b"bifrost"[..]));
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h.get("x-bifrost-deployment").map(|v| v.as_bytes()), Some(&b"d1"[..]));
        assert!(!h.contains_key("x-request-id"));
    }
}
