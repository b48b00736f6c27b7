//! The router's data plane through `bifrost up`, against real apps: the
//! live deployment's `[traffic]` rate limit (accuracy, per-key counts, the
//! 429 and its headers) and header rules both ways; request ids and the
//! X-Forwarded-* headers on every request.

use std::time::{Duration, Instant};

use bifrost_e2e::{AppClient, GitRepo, Platform, python_app};
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

    // The access log's line (seed 003's shape) names the request and its id.
    let line = p.log_line("the request", |l| l.contains("| GET /headers") && l.contains("client-chosen-42")).await;
    assert!(line.contains("200 | ") && line.contains("s | 127.0.0.1:"), "{line}");
    // The rest once each, after the message (not method, path, status and
    // time again as fields).
    assert!(line.contains(&format!(" app=headers deployment={id} request_id=client-chosen-42 ")), "{line}");
    assert!(!line.contains(" path=") && !line.contains(" status="), "{line}");

    // No id, or one that is not a short visible-ASCII token: the router makes one.
    let a = app.get("/", &[]).await;
    let b = app.get("/", &[("x-request-id", &"x".repeat(200))]).await;
    let (a, b) = (header(&a, "x-request-id").expect("an id"), header(&b, "x-request-id").expect("an id"));
    assert!(!a.is_empty() && a != b && b.len() <= 128, "{a} / {b}");
}

/// `bifrost_router_requests_total{app="…",deployment="…",code="…"}` from an exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        let rest = rest.strip_suffix('}')?;
        let have: Vec<(&str, &str)> =
            rest.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, v.trim_matches('"'))).collect();
        (n == name && labels.iter().all(|want| have.contains(want))).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_what_was_sent_and_pass_promtool() {
    let p = Platform::start();
    let repo = app_with_traffic("counted", "rate_limit = \"5/m\"\nrate_limit_burst = 5");
    let id = deploy(&p, "counted", &repo).await;
    let app = AppClient::new(&p, "counted");
    let mut codes = std::collections::BTreeMap::<u16, u32>::new();
    for _ in 0..8 {
        *codes.entry(app.get("/", &[]).await.status().as_u16()).or_default() += 1;
    }
    assert_eq!(codes, [(200, 5), (429, 3)].into_iter().collect(), "the burst of 5 passes, then the limit");
    let unknown = AppClient::new(&p, "no-such-app");
    for _ in 0..2 {
        assert_eq!(unknown.get("/", &[]).await.status().as_u16(), 404);
    }

    let c = p.client();
    let base = c.base().to_string();
    let http = reqwest::Client::new();
    let scrape = |token: Option<String>, accept: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut r = http.get(format!("{base}/metrics")).header("accept", accept);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.expect("metrics answer");
            let status = r.status().as_u16();
            let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            (status, ctype, r.text().await.expect("body"))
        }
    };
    assert_eq!(scrape(None, "*/*").await.0, 401, "metrics need a token");
    let scoped =
        c.post("/api/v1/tokens", serde_json::json!({"name": "scoped", "role": "viewer", "project": "counted"})).await;
    let scoped = scoped.body["token"].as_str().expect("a token").to_string();
    assert_eq!(scrape(Some(scoped), "*/*").await.0, 403, "a project-limited token would see every app's numbers");
    let viewer = c.post("/api/v1/tokens", serde_json::json!({"name": "watcher", "role": "viewer"})).await;
    let viewer = viewer.body["token"].as_str().expect("a token").to_string();
    let (status, ctype, openmetrics) =
        scrape(Some(viewer.clone()), "application/openmetrics-text; version=1.0.0").await;
    assert_eq!(status, 200, "{openmetrics}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(openmetrics.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    let (status, ctype, text) = scrape(Some(viewer), "*/*").await;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");

    let requests = |code| {
        sample(&text, "bifrost_router_requests_total", &[("app", "counted"), ("deployment", &id), ("code", code)])
    };
    assert_eq!(requests("2xx"), Some(5.0), "{text}");
    assert_eq!(requests("4xx"), Some(3.0));
    assert_eq!(sample(&text, "bifrost_router_rate_limited_total", &[("app", "counted")]), Some(3.0));
    assert_eq!(
        sample(&text, "bifrost_router_requests_total", &[("app", ""), ("code", "4xx")]),
        Some(2.0),
        "unknown hosts are counted without naming them"
    );
    assert!(!text.contains("no-such-app"), "a label named an app that does not exist");
    assert_eq!(
        sample(&text, "bifrost_router_request_duration_seconds_count", &[("app", "counted"), ("deployment", &id)]),
        Some(8.0)
    );
    assert_eq!(sample(&text, "bifrost_deployments", &[("status", "healthy")]), Some(1.0));
    assert_eq!(sample(&text, "bifrost_transitions_total", &[("from", "running"), ("to", "healthy")]), Some(1.0));
    assert_eq!(sample(&text, "bifrost_build_duration_seconds_count", &[]), Some(1.0));
    assert!(
        sample(&text, "bifrost_delivery_latency_seconds_count", &[("function", "validate")]).is_some_and(|n| n >= 1.0)
    );
    assert!(sample(&text, "bifrost_outbox_pending", &[]).is_some());

    // promtool (Debian's prometheus package) reads the exposition as Prometheus would.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt install prometheus; scripts/test.sh does)");
    use std::io::Write;
    promtool.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = promtool.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asks through the router until `want` answers (routers pick up a change
/// within a second or two); the statuses seen on the way.
async fn until_status(app: &AppClient, want: u16) -> Vec<u16> {
    let mut seen = vec![];
    for _ in 0..200 {
        let s = app.get("/", &[]).await.status().as_u16();
        seen.push(s);
        if s == want {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never answered {want}; saw {seen:?}");
}

#[tokio::test]
async fn chaos_injects_errors_is_audited_ends_on_recover_and_expires_by_itself() {
    let p = Platform::start();
    let repo = python_app("shaky", "");
    let id = deploy(&p, "shaky", &repo).await;
    let app = AppClient::new(&p, "shaky");
    assert_eq!(app.get("/", &[]).await.status().as_u16(), 200);

    // Only an admin may inject faults; a bad request changes nothing.
    let c = p.client();
    let deployer = c.post("/api/v1/tokens", serde_json::json!({"name": "dee", "role": "deployer"})).await;
    let deployer = deployer.body["token"].as_str().expect("a token").to_string();
    let refused = p.cli_as(&deployer, &["chaos", "shaky", "--error-rate", "1"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    let bad = p.cli(&["chaos", "shaky", "--error-rate", "1.5"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("error_rate must be more than 0 and at most 1"), "{bad:?}");
    assert!(c.get("/api/v1/projects/shaky").await.body.get("chaos").is_none());

    let on = p.cli(&["chaos", "shaky", "--error-rate", "1", "--status", "503"]);
    assert_eq!(on.code, 0, "{on:?}");
    assert!(on.stdout.contains("100% of requests answered 503"), "{}", on.stdout);
    until_status(&app, 503).await;
    let r = app.get("/", &[]).await;
    assert_eq!(header(&r, "x-bifrost-deployment"), Some(id.as_str()));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "injected_fault");
    let shown = p.cli(&["projects", "show", "shaky"]);
    assert!(shown.stdout.contains("chaos") && shown.stdout.contains("503"), "{}", shown.stdout);
    let status = p.cli(&["status", &id]);
    assert!(status.stdout.contains("100% of requests answered 503"), "bifrost status shows it: {}", status.stdout);

    let off = p.cli(&["chaos", "shaky", "--recover"]);
    assert_eq!(off.code, 0, "{off:?}");
    until_status(&app, 200).await;

    // One that expires by itself.
    let short = p.cli(&["chaos", "shaky", "--error-rate", "1", "--status", "500", "--for", "2s"]);
    assert_eq!(short.code, 0, "{short:?}");
    until_status(&app, 500).await;
    until_status(&app, 200).await;
    let project = c.get("/api/v1/projects/shaky").await.body;
    assert_eq!(project["chaos"]["active"], false, "{project}");

    // Each change is in the live deployment's audit trail, its status unchanged.
    let d = c.get(&format!("/api/v1/deployments/{id}")).await.body;
    let reasons: Vec<&str> =
        d["history"].as_array().expect("history").iter().filter_map(|h| h["reason"].as_str()).collect();
    assert_eq!(reasons.iter().filter(|r| r.starts_with("chaos on: ")).count(), 2, "{reasons:?}");
    assert!(reasons.contains(&"chaos off"), "{reasons:?}");
    assert_eq!(d["status"], "healthy");
}

/// Which deployment served each of `clients` (told apart by their
/// `bifrost_variant` cookie, as browsers would be).
async fn sides(app: &AppClient, clients: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for key in clients {
        let r = app.get("/", &[("cookie", &format!("bifrost_variant={key}"))]).await;
        assert_eq!(r.status().as_u16(), 200);
        out.push(header(&r, "x-bifrost-deployment").unwrap_or("").to_string());
    }
    out
}

#[tokio::test]
async fn a_split_keeps_each_client_on_its_side_as_the_weight_moves() {
    let p = Platform::start();
    let repo = python_app("ab", "");
    let first = deploy(&p, "ab", &repo).await;
    repo.commit(&[("VERSION", "2")], "second build");
    let second = p.push(&repo, "ab-2").await;
    p.healthy(&second).await;
    let app = AppClient::new(&p, "ab");
    let clients: Vec<String> = (0..100u64).map(|i| format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
    assert!(sides(&app, &clients).await.iter().all(|d| *d == second), "before a split, all on the live one");

    // Only an admin splits; a bad split changes nothing.
    let c = p.client();
    let deployer = c.post("/api/v1/tokens", serde_json::json!({"name": "dee", "role": "deployer"})).await;
    let deployer = deployer.body["token"].as_str().expect("a token").to_string();
    assert_eq!(p.cli_as(&deployer, &["traffic", "split", "ab", "--to", &first, "--weight", "10"]).code, 5);
    let itself = p.cli(&["traffic", "split", "ab", "--to", &second, "--weight", "10"]);
    assert!(itself.code != 0 && itself.stderr.contains("is the live deployment"), "{itself:?}");
    assert!(p.cli(&["traffic", "split", "ab", "--to", &first, "--weight", "101"]).code != 0);
    assert!(c.get("/api/v1/projects/ab").await.body.get("split").is_none());

    // 10 %: the earlier build's replicas start again and take a share.
    let on = p.cli(&["traffic", "split", "ab", "--to", &first, "--weight", "10"]);
    assert_eq!(on.code, 0, "{on:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sides(&app, &clients).await.contains(&first) {
        assert!(Instant::now() < deadline, "no client reached the second deployment");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_first =
        |s: &[String]| s.iter().enumerate().filter(|(_, d)| **d == first).map(|(i, _)| i).collect::<Vec<_>>();
    // The pass that first saw it may have begun before the split applied:
    // two whole passes after it.
    let (ten, again) = (on_first(&sides(&app, &clients).await), on_first(&sides(&app, &clients).await));
    assert_eq!(ten, again, "the same clients, request after request");
    assert!((3..=20).contains(&ten.len()), "about 10 of 100 clients: {}", ten.len());

    // 50 %, then 100 %: nobody on the second deployment goes back.
    assert_eq!(p.cli(&["traffic", "split", "ab", "--to", &first, "--weight", "50"]).code, 0);
    // The router re-reads splits every second: once a pass shows the new
    // weight, one more whole pass is the settled state.
    let settled = |want: &'static (dyn Fn(usize) -> bool + Sync)| {
        let (app, clients, first) = (&app, &clients, first.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            let count = |s: Vec<String>| s.iter().filter(|d| **d == first).count();
            while !want(count(sides(app, clients).await)) {
                assert!(Instant::now() < deadline, "the new weight never showed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            sides(app, clients).await
        }
    };
    let fifty = on_first(&settled(&|n| n > 25).await);
    assert!(ten.iter().all(|i| fifty.contains(i)), "a client on it at 10% left it at 50%");
    assert!((35..=65).contains(&fifty.len()), "about 50 of 100: {}", fifty.len());
    let all = p.cli(&["traffic", "split", "ab", "--to", &first, "--weight", "100"]);
    assert_eq!(all.code, 0, "{all:?}");
    assert_eq!(on_first(&settled(&|n| n == 100).await).len(), 100);
    let shown = p.cli(&["projects", "show", "ab"]);
    assert!(shown.stdout.contains("100% of clients to"), "{}", shown.stdout);
    let status = p.cli(&["status", &first]);
    assert!(status.stdout.contains("100% of clients (traffic split"), "{}", status.stdout);

    // Reset: everyone back on the live deployment; audited.
    let off = p.cli(&["traffic", "reset", "ab"]);
    assert_eq!(off.code, 0, "{off:?}");
    assert!(settled(&|n| n == 0).await.iter().all(|d| *d == second));
    let d = c.get(&format!("/api/v1/deployments/{second}")).await.body;
    let reasons: Vec<&str> =
        d["history"].as_array().expect("history").iter().filter_map(|h| h["reason"].as_str()).collect();
    assert_eq!(reasons.iter().filter(|r| r.starts_with("traffic split: ")).count(), 3, "{reasons:?}");
    assert!(reasons.contains(&"traffic split reset"), "{reasons:?}");
}
