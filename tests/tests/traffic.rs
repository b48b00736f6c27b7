//! The router's data plane through `bifrost up`, against real apps: the
//! live deployment's `[traffic]` rate limit (accuracy, per-key counts, the
//! 429 and its headers) and header rules both ways; request ids and the
//! X-Forwarded-* headers on every request.

use std::time::{Duration, Instant};

use bifrost_e2e::{GitRepo, Platform, python_app};
use serde_json::Value;

/// python_app with a `[traffic]` section appended to its deploy.toml.
fn app_with_traffic(name: &str, traffic: &str) -> GitRepo {
    let repo = python_app(name, "");
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("deploy.toml");
    repo.commit(&[("deploy.toml", &format!("{toml}\n[traffic]\n{traffic}\n"))], "traffic rules");
    repo
}

async fn deploy(p: &Platform, name: &str, repo: &GitRepo) -> String {
    p.add_project(name, repo);
    let id = p.push(repo, &format!("{name}-1")).await;
    p.healthy(&id).await;
    id
}

/// Requests through the router (`Host: <app>.localhost:<port>`).
struct AppClient {
    http: reqwest::Client,
    base: String,
    host: String,
}

impl AppClient {
    fn new(p: &Platform, app: &str) -> AppClient {
        let base = p.client().base().to_string();
        let port = base.rsplit(':').next().unwrap_or("80").to_string();
        AppClient { http: reqwest::Client::new(), base, host: format!("{app}.localhost:{port}") }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base)).header("host", &self.host);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.expect("the router answers")
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_client_at_three_times_the_limit_gets_the_limit_and_its_burst() {
    let p = Platform::start();
    let repo = app_with_traffic("limited", "rate_limit = \"20/s\"");
    deploy(&p, "limited", &repo).await;
    let app = AppClient::new(&p, "limited");

    // 60 requests a second (3x the limit) for 5 s, paced.
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / 60));
    let (mut ok, mut limited) = (0u32, 0u32);
    let mut first_429: Option<reqwest::Response> = None;
    let start = Instant::now();
    for _ in 0..300 {
        tick.tick().await;
        let r = app.get("/", &[]).await;
        match r.status().as_u16() {
            200 => {
                ok += 1;
                assert_eq!(header(&r, "ratelimit-limit"), Some("20"), "an allowed answer says the limit");
                assert!(header(&r, "ratelimit-remaining").is_some());
            }
            429 => {
                limited += 1;
                first_429.get_or_insert(r);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // GCRA: the burst (one second's worth, 20) plus 20 per second.
    let expected = 20.0 * elapsed + 20.0;
    let off = (f64::from(ok) - expected).abs() / expected;
    assert!(off <= 0.05, "{ok} requests got through in {elapsed:.2}s; expected {expected:.0} ±5% ({limited} limited)");

    let r = first_429.expect("some requests were over the limit");
    let retry: u64 = header(&r, "retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!(retry >= 1);
    assert_eq!(header(&r, "ratelimit-remaining"), Some("0"));
    assert_eq!(header(&r, "ratelimit-limit"), Some("20"));
    assert!(header(&r, "ratelimit-reset").is_some());
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    let body: Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["app"], "limited");
}

#[tokio::test]
async fn a_header_keyed_limit_counts_each_key_apart() {
    let p = Platform::start();
    let repo =
        app_with_traffic("keyed", "rate_limit = \"2/m\"\nrate_limit_key = \"header:X-Api-Key\"\nrate_limit_burst = 2");
    deploy(&p, "keyed", &repo).await;
    let app = AppClient::new(&p, "keyed");
    let statuses = |key: &'static str| {
        let app = &app;
        async move {
            let mut s = vec![];
            for _ in 0..3 {
                s.push(app.get("/", &[("x-api-key", key)]).await.status().as_u16());
            }
            s
        }
    };
    assert_eq!(statuses("alice").await, [200, 200, 429], "alice's burst of 2, then the limit");
    assert_eq!(statuses("bob").await, [200, 200, 429], "bob has a count of his own");
}

#[tokio::test]
async fn header_rules_apply_both_ways_and_every_request_has_an_id() {
    let p = Platform::start();
    let repo = app_with_traffic(
        "headers",
        "headers.set = { X-Served-By = \"bifrost\" }\nheaders.remove = [\"X-Debug\"]\n\
         response_headers.set = { Cache-Control = \"no-store\" }\nresponse_headers.remove = [\"Server\"]",
    );
    let id = deploy(&p, "headers", &repo).await;
    let app = AppClient::new(&p, "headers");

    let r = app.get("/headers", &[("x-debug", "1"), ("x-request-id", "client-chosen-42")]).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "cache-control"), Some("no-store"), "response_headers.set");
    assert_eq!(header(&r, "server"), None, "response_headers.remove (python's http.server sends one)");
    assert_eq!(header(&r, "x-request-id"), Some("client-chosen-42"), "a valid client id is echoed");
    assert_eq!(header(&r, "x-bifrost-deployment"), Some(id.as_str()));
    let seen: Value = r.json().await.expect("the app's view of the request headers");
    let seen: std::collections::BTreeMap<String, String> = seen
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    assert_eq!(seen.get("x-served-by").map(String::as_str), Some("bifrost"), "headers.set: {seen:?}");
    assert!(!seen.contains_key("x-debug"), "headers.remove: {seen:?}");
    assert_eq!(seen.get("x-request-id").map(String::as_str), Some("client-chosen-42"));
    assert_eq!(seen.get("x-forwarded-for").map(String::as_str), Some("127.0.0.1"));
    assert_eq!(seen.get("x-forwarded-proto").map(String::as_str), Some("http"));
    assert_eq!(seen.get("x-forwarded-host"), Some(&app.host));

    // No id, or one that is not a short visible-ASCII token: the router makes one.
    let a = app.get("/", &[]).await;
    let b = app.get("/", &[("x-request-id", &"x".repeat(200))]).await;
    let (a, b) = (header(&a, "x-request-id").expect("an id"), header(&b, "x-request-id").expect("an id"));
    assert!(!a.is_empty() && a != b && b.len() <= 128, "{a} / {b}");
}
