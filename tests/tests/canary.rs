//! Canary rollouts through `bifrost up` with a real app, the router and
//! generated traffic: a healthy canary goes live through every step; one
//! answering errors (chaos on the canary only) is rolled back on the error
//! rate while clients on the stable side see no error; one answering slowly
//! is rolled back on p99; one with no traffic is inconclusive three times,
//! pauses, and `bifrost rollout promote` moves it on. Behind routers of
//! their own (as on GKE), a canary is analysed on what they report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_e2e::router::RouterProc;
use bifrost_e2e::{AppClient, GitRepo, Platform, python_app};
use serde_json::Value;

const CANARY: &str = "\n[rollout]\nstrategy = \"canary\"\nsteps = [25, 50, 100]\nanalysis_interval = \"2s\"\nmin_requests = 10\nmax_p99_ms = 900\n";

/// Answers per deployment: (2xx, other).
type Seen = Arc<Mutex<BTreeMap<String, (u64, u64)>>>;

/// Clients with 40 different variant cookies, a request every 10 ms (each
/// on its own task, so a slow answer does not slow the others), until
/// dropped.
fn traffic(p: &Platform, app: &str) -> (Seen, tokio::task::JoinHandle<()>) {
    traffic_to(AppClient::new(p, app))
}

fn traffic_to(client: AppClient) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let client = Arc::new(client);
    let s = seen.clone();
    let task = tokio::spawn(async move {
        for i in 0u64.. {
            let (client, s) = (client.clone(), s.clone());
            tokio::spawn(async move {
                let cookie = format!("bifrost_variant={:016x}", i % 40);
                let r = client.get("/", &[("cookie", &cookie)]).await;
                let dep =
                    r.headers().get("x-bifrost-deployment").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                let ok = r.status().is_success();
                let mut m = s.lock().expect("lock");
                let e = m.entry(dep).or_default();
                if ok { e.0 += 1 } else { e.1 += 1 }
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (seen, task)
}

fn commit_version(repo: &GitRepo, v: &str, rollout: &str) {
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("toml");
    let base = toml.split("\n[rollout]").next().unwrap_or(&toml).to_string();
    repo.commit(&[("deploy.toml", &format!("{base}{rollout}")), ("VERSION", v)], v);
}

async fn finished(p: &Platform, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = p.client().get(&format!("/api/v1/deployments/{id}")).await.body;
        if bifrost_e2e::finished(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{id} never finished: {d:#}\nlog:\n{}", p.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the project's rollout is the canary `id`'s.
async fn rolling(p: &Platform, app: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let project = p.client().get(&format!("/api/v1/projects/{app}")).await.body;
        if project["rollout"]["deployment"] == id {
            return project;
        }
        assert!(Instant::now() < deadline, "no rollout of {id}: {project:#}\n{}", p.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dashboard's server functions, signed in as the admin (the session
/// cookie the sign-in sets, as a browser holds it).
struct Dashboard {
    http: reqwest::Client,
    url: String,
    session: String,
}

impl Dashboard {
    async fn sign_in(p: &Platform) -> Dashboard {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let session = bifrost_e2e::dashboard_session(&http, &p.url, bifrost_e2e::ADMIN_TOKEN).await;
        Dashboard { http, url: p.url.clone(), session }
    }

    /// Calls `/ui/api/<name>` with a form; the answer's body (asserted 200).
    async fn call(&self, name: &str, form: &[(&str, &str)]) -> String {
        let r = self
            .http
            .post(format!("{}/ui/api/{name}", self.url))
            .header("cookie", format!("bifrost_session={}", self.session))
            .header("origin", &self.url)
            .form(form)
            .send()
            .await
            .expect("server function");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{name}: {body}");
        body
    }
}

/// Every audit reason of every deployment, oldest first.
async fn all_reasons(p: &Platform) -> Vec<String> {
    let audit = p.client().get("/api/v1/audit?limit=500").await.body;
    audit.as_array().expect("audit").iter().rev().filter_map(|r| r["reason"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn a_canary_goes_live_through_its_steps_and_is_rolled_back_on_errors_and_latency() {
    let p = Platform::start();
    let repo = python_app("web", "");
    p.add_project("web", &repo);
    let v1 = p.push(&repo, "c-1").await;
    p.healthy(&v1).await;
    let (seen, task) = traffic(&p, "web");

    // (a) A healthy canary: every window allowed, then live.
    commit_version(&repo, "2", CANARY);
    let v2 = p.push(&repo, "c-2").await;
    let d = finished(&p, &v2).await;
    assert_eq!(d["status"], "healthy", "{d:#}\n{}", p.log_text());
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("canary promoted through 25% → 50% → 100%: [PASS]"), "{reason}");
    // Each step is on the canary's own trail, its decision (both sides'
    // numbers) the record's evidence.
    let trail = d["history"].as_array().cloned().unwrap_or_default();
    let reasons: Vec<&str> = trail.iter().filter_map(|h| h["reason"].as_str()).collect();
    for step in ["step 1 of 3, 25% of clients", "step 2 of 3, 50% of clients — [PASS] step 1 of 3 (25%)"] {
        assert!(reasons.iter().any(|r| r.contains(step)), "no {step:?} in {reasons:#?}");
    }
    let first = trail.iter().find(|h| h["evidence"]["gate"] == "promote").map(|h| h["evidence"]["input"].clone());
    let input = first.unwrap_or_default();
    assert_eq!(input["stable_deployment"], v1.as_str(), "{input:#}");
    assert!(input["canary"]["p50_ms"].as_f64().is_some() && input["stable"]["p99_ms"].as_f64().is_some(), "{input:#}");
    let project = p.client().get("/api/v1/projects/web").await.body;
    assert_eq!(project["live_deployment_id"], v2.as_str());
    assert!(project["rollout"].is_null() && project["split"].is_null(), "{project:#}");
    assert_eq!(seen.lock().expect("lock").get(&v2).map(|s| s.1), Some(0), "the healthy canary answered errors");

    // (b) Errors on the canary only: denied on the error rate, rolled back;
    // the stable side saw no error throughout.
    commit_version(&repo, "3", CANARY);
    let v3 = p.push(&repo, "c-3").await;
    rolling(&p, "web", &v3).await;
    let out = p.cli(&["chaos", "web", "--deployment", &v3, "--error-rate", "0.5", "--for", "5m"]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = finished(&p, &v3).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("denied by policy promote v0: Error rate ") && reason.contains("exceeds maximum 1%"),
        "{reason}"
    );
    let evidence = d["history"].as_array().and_then(|h| h.last()).map(|h| h["evidence"].clone()).unwrap_or_default();
    assert_eq!((evidence["gate"].as_str(), evidence["allow"].as_bool()), (Some("promote"), Some(false)), "{d:#}");
    assert!(evidence["input"]["canary"]["requests"].as_u64().is_some_and(|n| n >= 10), "{evidence:#}");
    let project = p.client().get("/api/v1/projects/web").await.body;
    assert_eq!(project["live_deployment_id"], v2.as_str(), "the stable stays live");
    assert!(project["split"].is_null(), "weight 0 after the rollback: {project:#}");
    assert_eq!(seen.lock().expect("lock").get(&v2).map(|s| s.1), Some(0), "a client on the stable side saw an error");
    assert_eq!(p.cli(&["chaos", "web", "--recover"]).code, 0);

    // (c) Slow answers on the canary: denied on p99.
    commit_version(&repo, "4", CANARY);
    let v4 = p.push(&repo, "c-4").await;
    rolling(&p, "web", &v4).await;
    let out = p.cli(&["chaos", "web", "--deployment", &v4, "--delay", "1s", "--rate", "1.0", "--for", "5m"]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = finished(&p, &v4).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("P99 latency ") && reason.contains("exceeds maximum 900ms"), "{reason}");
    task.abort();

    // The report tells the story.
    let report = p.cli(&["audit", "web", "--since", "1h"]).stdout;
    assert!(report.contains("canary promoted through"), "{report}");
}

#[tokio::test]
async fn a_canary_without_traffic_is_inconclusive_then_paused_until_promoted_by_hand() {
    let p = Platform::start();
    let repo = python_app("quiet", "");
    p.add_project("quiet", &repo);
    let v1 = p.push(&repo, "q-1").await;
    p.healthy(&v1).await;
    commit_version(
        &repo,
        "2",
        "\n[rollout]\nstrategy = \"canary\"\nsteps = [50, 100]\nanalysis_interval = \"1s\"\nmin_requests = 50\n",
    );
    let v2 = p.push(&repo, "q-2").await;
    rolling(&p, "quiet", &v2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let project = loop {
        let project = p.client().get("/api/v1/projects/quiet").await.body;
        if project["rollout"]["paused"].is_string() {
            break project;
        }
        assert!(Instant::now() < deadline, "never paused: {project:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let paused = project["rollout"]["paused"].as_str().unwrap_or_default();
    assert!(paused.contains("0 canary request(s) in the window, fewer than min_requests 50 (3 of 3)"), "{paused}");
    assert_eq!(project["rollout"]["inconclusive"], 3);
    let history = all_reasons(&p).await;
    assert_eq!(
        history.iter().filter(|r| r.starts_with("canary window extended: inconclusive")).count(),
        2,
        "{history:#?}"
    );
    let d = p.client().get(&format!("/api/v1/deployments/{v2}")).await.body;
    assert_eq!(d["status"], "running", "a paused canary neither passes nor fails: {d:#}");

    // The live status view shows it, for people and for scripts.
    let view = p.cli(&["status", "quiet", "--once", "--json"]);
    assert_eq!(view.code, 0, "{view:?}");
    let v = view.json();
    assert_eq!(v["live"]["deployment"], v1.as_str(), "{v:#}");
    assert_eq!((v["rollout"]["deployment"].as_str(), v["rollout"]["step"].as_u64()), (Some(v2.as_str()), Some(1)));
    assert_eq!(v["gates"]["deploy"]["allow"], true, "{v:#}");
    assert!(v["gates"]["promote"].as_str().is_some_and(|s| s.starts_with("inconclusive")), "{v:#}");
    let sides: Vec<&str> =
        v["traffic"].as_array().expect("traffic").iter().filter_map(|s| s["deployment"].as_str()).collect();
    assert_eq!(sides, [v1.as_str(), v2.as_str()], "{v:#}");
    let text = p.cli(&["status", "quiet", "--once"]).stdout;
    assert!(text.contains("canary") && text.contains("PAUSED") && text.contains("50% of clients"), "{text}");
    assert!(text.contains("[PASS] allowed the live deployment"), "{text}");
    assert!(!text.contains('\u{1b}'), "no terminal control codes when not a terminal: {text:?}");

    // The dashboard's rollout view (built on the server) says the same,
    // and its Promote moves the rollout on.
    let ui = Dashboard::sign_in(&p).await;
    let html = ui.call("server_html", &[("page", &format!("rollout:{v2}")), ("hours", "24")]).await;
    let html: String = serde_json::from_str(&html).expect("the server function answers a JSON string");
    assert!(html.contains(r#"data-testid="rollout-state">paused<"#), "{html}");
    assert!(html.contains(r#"<li class="current">50%</li><li class="pending">100%</li>"#), "{html}");
    assert_eq!(html.matches(r#"data-verdict="inconclusive""#).count(), 2, "{html}");
    assert_eq!(html.matches(r#"data-verdict="paused""#).count(), 1, "{html}");
    assert!(html.contains("0 canary request(s) in the window"), "{html}");
    let promoted = ui.call("rollout", &[("project", "quiet"), ("action", "promote")]).await;
    assert_eq!(promoted, "\"promote\"", "{promoted}");
    let d = finished(&p, &v2).await;
    assert_eq!(d["status"], "healthy", "{d:#}");
    assert!(d["reason"].as_str().unwrap_or_default().contains("promoted by hand"), "{d:#}");
    let html = ui.call("server_html", &[("page", &format!("rollout:{v2}")), ("hours", "24")]).await;
    let html: String = serde_json::from_str(&html).expect("a JSON string");
    assert!(html.contains(r#"data-testid="rollout-state">ended<"#), "{html}");

    // Nothing to promote or abort any more.
    let out = p.cli(&["rollout", "abort", "quiet"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("has no canary rolling out"), "{out:?}");
}

#[tokio::test]
async fn a_rollout_killed_mid_step_resumes_at_the_same_step() {
    let mut p = Platform::start();
    let repo = python_app("durable", "");
    p.add_project("durable", &repo);
    let v1 = p.push(&repo, "k-1").await;
    p.healthy(&v1).await;
    let (_seen, task) = traffic(&p, "durable");
    commit_version(
        &repo,
        "2",
        "\n[rollout]\nstrategy = \"canary\"\nsteps = [20, 50, 100]\nanalysis_interval = \"3s\"\nmin_requests = 5\n",
    );
    let v2 = p.push(&repo, "k-2").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let project = p.client().get("/api/v1/projects/durable").await.body;
        if project["rollout"]["step"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never reached step 2: {project:#}\n{}", p.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.restart_same_port();
    let project = p.client().get("/api/v1/projects/durable").await.body;
    assert_eq!((project["rollout"]["step"].as_u64(), project["rollout"]["weight"].as_u64()), (Some(2), Some(50)));
    let d = finished(&p, &v2).await;
    task.abort();
    assert_eq!(d["status"], "healthy", "{d:#}\n{}", p.log_text());
    let history = all_reasons(&p).await;
    let starts = history.iter().filter(|r| r.contains("step 1 of 3, 20% of clients")).count();
    assert_eq!(starts, 1, "the rollout started over after the restart: {history:#?}");
    assert!(history.iter().any(|r| r.contains("step 2 of 3, 50% of clients")), "{history:#?}");
}

/// The routers run apart from the platform (as on GKE): the app's traffic
/// reaches it only through a `bifrost-router` following the gateway, which
/// reports its counts; the canary's windows are judged on them and it goes
/// live. A report the gateway cannot believe is refused whole.
#[tokio::test]
async fn a_canary_behind_a_router_of_its_own_is_judged_on_the_routers_reports() {
    let p = Platform::start();
    let repo = python_app("edge", "");
    p.add_project("edge", &repo);
    let v1 = p.push(&repo, "e-1").await;
    p.healthy(&v1).await;
    let token = p.router_token("edge-router").await;
    let router = RouterProc::spawn(
        "edge-1",
        None,
        &["--listen", "127.0.0.1:0", "--gateway", &p.url],
        &[("BIFROST_ROUTER_TOKEN", &token)],
        None,
    );
    router.ready().await;
    let (seen, task) = traffic_to(AppClient::at(&router.url, "edge"));

    // The router's counts reach the dashboard's numbers (reported every 5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = p.client().get("/api/v1/projects/edge/traffic").await.body;
        if t["serving"][0]["recent"]["requests_per_s"].as_f64().is_some_and(|r| r > 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the router's traffic never showed: {t:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Windows longer than the report interval, so each holds a report.
    let rollout =
        "\n[rollout]\nstrategy = \"canary\"\nsteps = [50, 100]\nanalysis_interval = \"7s\"\nmin_requests = 10\n";
    commit_version(&repo, "2", rollout);
    let v2 = p.push(&repo, "e-2").await;
    let d = finished(&p, &v2).await;
    task.abort();
    assert_eq!(d["status"], "healthy", "{d:#}\n{}", p.log_text());
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("canary promoted through 50% → 100%: [PASS]"), "{reason}");
    let decided = d["history"].as_array().and_then(|h| h.iter().find(|r| r["evidence"]["gate"] == "promote").cloned());
    let input = decided.map(|r| r["evidence"]["input"].clone()).unwrap_or_default();
    assert!(input["canary"]["requests"].as_u64().is_some_and(|n| n >= 10), "{input:#}");
    assert!(input["stable"]["requests"].as_u64().is_some_and(|n| n >= 10), "{input:#}");
    assert!(seen.lock().expect("lock").get(&v2).is_some_and(|s| s.0 > 0), "no client reached the canary");

    // Impossible counts are refused, and nothing of the report is kept.
    let as_router = p.client().with_token(&token);
    let forged =
        |traffic: serde_json::Value| serde_json::json!({"local_node": "forger", "members": 1, "traffic": traffic});
    for (traffic, why) in [
        (
            serde_json::json!({"started_ms": 1, "deployments": {v2.clone(): {"requests": 1, "errors": 5, "latency_buckets": []}}}),
            "errors",
        ),
        (
            serde_json::json!({"started_ms": 1, "deployments": {"../etc": {"requests": 1, "errors": 0, "latency_buckets": []}}}),
            "not a deployment id",
        ),
        (serde_json::json!({"deployments": {}}), "started_ms"),
    ] {
        let r = as_router.post("/api/v1/routers/report", forged(traffic)).await;
        assert_eq!(r.status, 422, "{why}: {:?}", r.body);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| m.contains(why)), "{why}: {:?}", r.body);
    }
    let routers = p.client().get("/api/v1/routers").await.body;
    let nodes: Vec<&str> =
        routers["routers"].as_array().expect("routers").iter().filter_map(|r| r["node"].as_str()).collect();
    assert!(!nodes.contains(&"forger"), "a refused report was kept: {nodes:?}");
    assert!(!routers.to_string().contains("\"traffic\""), "counts are not shown as the router's status");
}
