//! The dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver + fantoccini) against a real `bifrost up`.
//! Screenshots land in `target/test-artifacts/`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bifrost_e2e::{ADMIN_TOKEN, GitRepo, Platform};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session. On drop its whole process group ends:
/// killing chromedriver alone leaves the browser it started running.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own group, and Chromium stays in it.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Starts chromedriver and a browser; `None` (with a loud message) when
/// they are not installed and this run does not require every test.
async fn browser() -> Option<Browser> {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var("BIFROST_REQUIRE_ALL_TESTS").is_err(),
            "{CHROMIUM} / {CHROMEDRIVER} missing: `apt-get install chromium chromium-driver` (scripts/test.sh does)"
        );
        eprintln!("SKIPPED: no {CHROMIUM} / {CHROMEDRIVER} (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = free_port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().expect("profile dir");
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1400", format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    }))
    .expect("capabilities");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let client = loop {
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        match builder.capabilities(caps.clone()).connect(&url).await {
            Ok(c) => break c,
            Err(e) if started.elapsed() > Duration::from_secs(30) => panic!("chromedriver did not start: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    Some(Browser { client, driver, _profile: profile })
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

async fn screenshot(b: &Client, name: &str) {
    if let Ok(png) = b.screenshot().await {
        let _ = std::fs::write(artifacts().join(format!("dashboard-{name}.png")), png);
    }
}

async fn eval(b: &Client, script: &str) -> Value {
    b.execute(script, vec![]).await.unwrap_or(Value::Null)
}

/// Polls a JS expression until it is truthy; on timeout saves a screenshot
/// and fails with what was awaited and the page's text.
async fn wait_until(b: &Client, what: &str, expr: &str, timeout: Duration) -> Value {
    let started = Instant::now();
    let script = format!("return ({expr});");
    loop {
        let v = eval(b, &script).await;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(x) => *x,
            Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if started.elapsed() > timeout {
            let name = what.replace(' ', "-");
            screenshot(b, &format!("timeout-{name}")).await;
            let text = eval(b, "return document.body ? document.body.innerText : ''").await;
            panic!("timed out after {timeout:?} waiting for {what} ({expr}); page:\n{}", text.as_str().unwrap_or(""));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the policy editor on the deploy policy (clicked again until the
/// page has hydrated and the editor holds the Rego in force). A page that
/// shows no editor 20 s after its load is loaded again: in about one CI run
/// in two the page never became interactive (cause not found yet; the
/// screenshot `dashboard-policies-not-interactive.png` is kept for it).
async fn open_policy_editor(b: &Client) {
    let started = Instant::now();
    let mut loaded = Instant::now();
    loop {
        eval(b, "document.querySelector('[data-testid=edit-deploy]')?.click(); return true").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ready =
            eval(b, "return !!document.querySelector('[data-testid=editor-rego]')?.value.includes('package deploy')")
                .await;
        if ready == json!(true) {
            return;
        }
        if loaded.elapsed() > Duration::from_secs(20) {
            screenshot(b, "policies-not-interactive").await;
            b.refresh().await.expect("reload the policies page");
            loaded = Instant::now();
        }
        // Generous: hydration is slow on a loaded 2-core machine.
        assert!(started.elapsed() < Duration::from_secs(90), "the policy editor never opened");
    }
}

/// Types into a textarea as a person would (the page hears an input event).
async fn set_value(b: &Client, testid: &str, value: &str) {
    let script = format!(
        "const t = document.querySelector('[data-testid={testid}]'); t.value = arguments[0]; \
         t.dispatchEvent(new Event('input', {{bubbles: true}})); return true"
    );
    b.execute(&script, vec![json!(value)]).await.expect("set a value");
}

async fn click(b: &Client, css: &str) {
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect(css);
}

/// Signs in through the login page, as a person would.
async fn sign_in(b: &Client, base: &str, token: &str) {
    b.goto(&format!("{base}/")).await.expect("open dashboard");
    let url = b.current_url().await.expect("url");
    assert_eq!(url.path(), "/login", "a signed-out visit goes to the login page, got {url}");
    let input = b.wait().for_element(Locator::Css("[data-testid=token]")).await.expect("token field");
    input.send_keys(token).await.expect("type token");
    click(b, "[data-testid=sign-in]").await;
    wait_until(b, "the projects page after signing in", "location.pathname === '/' && document.querySelector('h1') && document.querySelector('h1').innerText === 'Projects'", Duration::from_secs(20)).await;
}

/// Hydrated and subscribed: the live badge only turns `live` in the browser.
async fn wait_live(b: &Client) {
    wait_until(
        b,
        "the live connection",
        "document.querySelector('[data-testid=live][data-conn=live]')",
        Duration::from_secs(30),
    )
    .await;
}

/// A hello-python whose build prints `lines` numbered, colored lines.
fn slow_build_repo(lines: u32, delay: &str) -> GitRepo {
    let repo = GitRepo::from_example("hello-python");
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("deploy.toml");
    let script = format!(
        "for i in $(seq 1 {lines}); do printf '\\033[32mbuild-line-%s\\033[0m compiled\\n' \"$i\"; sleep {delay}; done\n"
    );
    repo.commit(
        &[("deploy.toml", &format!("{toml}\n[build]\ncommand = \"sh build.sh\"\n")), ("build.sh", &script)],
        "slow build",
    );
    repo
}

async fn create_project(p: &Platform, repo: &GitRepo) {
    let c = p.client();
    let r = c.post("/api/v1/projects", json!({"name": "hello-python", "repo": repo.path_str()})).await;
    assert_eq!(r.status, 201, "create project: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_deploys_live_and_refuses_a_viewer() {
    let Some(browser) = browser().await else { return };
    let b = &browser.client;
    let p = Platform::start();
    let c = p.client();
    let wasm = reqwest::get(format!("{}/pkg/bifrost_web_bg.wasm", p.url)).await.expect("fetch wasm");
    assert_eq!(wasm.status(), 200, "no client bundle: run `cargo xtask web` (scripts/test.sh does)");
    let repo = slow_build_repo(30, "0.05");
    create_project(&p, &repo).await;
    let viewer = c.post("/api/v1/tokens", json!({"name": "watcher", "role": "viewer"})).await;
    let viewer_token = viewer.body["token"].as_str().expect("viewer token").to_string();

    sign_in(b, &p.url, ADMIN_TOKEN).await;
    wait_until(
        b,
        "the project card",
        "document.querySelector('[data-project=\"hello-python\"]')",
        Duration::from_secs(20),
    )
    .await;
    screenshot(b, "projects").await;

    // Deploy from the project page, then watch it go live without a reload.
    b.goto(&format!("{}/projects/hello-python", p.url)).await.expect("project page");
    wait_live(b).await;
    eval(b, "window.__noReload = 'still here'; return true").await;
    click(b, "[data-testid=deploy-button]").await;
    click(b, "[data-testid=confirm]").await;
    wait_until(
        b,
        "navigation to the new deployment",
        "location.pathname.startsWith('/deployments/')",
        Duration::from_secs(20),
    )
    .await;
    wait_until(
        b,
        "a build log line",
        "[...document.querySelectorAll('.line[data-stream=build]')].some(l => l.innerText.includes('build-line-'))",
        Duration::from_secs(60),
    )
    .await;
    // Colors from the build arrive as styled spans, not escape codes.
    let colored = eval(b, "return !!document.querySelector('.line[data-stream=build] .fg-2')").await;
    assert_eq!(colored, json!(true), "ANSI green was not rendered as a color");
    screenshot(b, "building").await;
    wait_until(b, "healthy", "document.querySelector('.page-head [data-status=healthy]')", Duration::from_secs(120))
        .await;
    let marker = eval(b, "return window.__noReload || null").await;
    assert_eq!(marker, json!("still here"), "the page reloaded; live updates must arrive without one");
    let steps = eval(b, "return [...document.querySelectorAll('[data-testid=pipeline] li')].map(l => [l.dataset.step, l.dataset.state, l.querySelector('.spent').innerText])").await;
    let steps = steps.as_array().cloned().unwrap_or_default();
    assert_eq!(steps.len(), 7, "pipeline steps: {steps:?}");
    for s in &steps[..6] {
        assert_eq!(s[1], "done", "every step before healthy is done: {steps:?}");
        assert!(!s[2].as_str().unwrap_or("").is_empty(), "each finished step shows its time: {steps:?}");
    }
    // The build took at least 30 × 50 ms: its step says so.
    let building = steps[2][2].as_str().unwrap_or("");
    assert!(building.ends_with(" s") || building.contains("min"), "building took >1 s, shown as {building:?}");

    // Search narrows the log to matching lines.
    let search = b.find(Locator::Css("[data-testid=log-search]")).await.expect("search box");
    search.send_keys("build-line-7 ").await.expect("type");
    let count = wait_until(b, "search results", "document.querySelector('[data-testid=log-count]').innerText.includes('match') && document.querySelector('[data-testid=log-count]').innerText", Duration::from_secs(5)).await;
    let count = count.as_str().unwrap_or("");
    assert!(count.starts_with("1 of ") && count.ends_with(" lines match"), "search count: {count:?}");
    let shown = eval(b, "return [...document.querySelectorAll('.line')].map(l => l.innerText)").await;
    let shown = shown.as_array().cloned().unwrap_or_default();
    assert!(!shown.is_empty() && shown.iter().all(|l| l.as_str().unwrap_or("").contains("build-line-7 ")), "{shown:?}");
    screenshot(b, "healthy").await;
    let deployment_path = b.current_url().await.expect("url").path().to_string();

    // The project's traffic panel and the deployment's charts show what the
    // router counted, with the chaos and the routing script in force.
    let pushed =
        c.post("/api/v1/projects/hello-python/scripts", json!({"source": "function handle(req) return nil end"})).await;
    assert_eq!(pushed.status, 201, "{:?}", pushed.body);
    let chaos = c
        .request(
            "PUT",
            "/api/v1/projects/hello-python/chaos",
            json!({"error_rate": 0.5, "for_s": 300}).to_string().into_bytes(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(chaos.status, 200, "{:?}", chaos.body);
    let load = {
        let c = p.client();
        tokio::spawn(async move {
            loop {
                let _ = c.app_get("hello-python", "/").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    b.goto(&format!("{}/projects/hello-python", p.url)).await.expect("project page");
    let counted = wait_until(
        b,
        "the traffic panel counting requests",
        "(() => { const r = document.querySelector('[data-testid=serving] tbody tr'); return r && r.children[3].innerText.includes('req/s') && r.children[4].innerText !== '0.0 %' && [r.children[3].innerText, r.children[4].innerText]; })()",
        Duration::from_secs(40),
    )
    .await;
    assert!(counted[0].as_str().is_some_and(|t| t.ends_with("req/s")), "{counted}");
    let chaos_shown = eval(b, "return document.querySelector('[data-testid=chaos]')?.innerText || ''").await;
    assert!(chaos_shown.as_str().unwrap_or("").contains("50% of requests"), "{chaos_shown}");
    let scripts = eval(b, "return [...document.querySelectorAll('[data-testid=scripts] tbody tr')].map(r => r.children[0].innerText + ' ' + r.children[1].innerText)").await;
    assert_eq!(scripts, json!(["v1 running"]), "the pushed script and its state");
    screenshot(b, "traffic").await;
    b.goto(&format!("{}{deployment_path}", p.url)).await.expect("deployment page");
    wait_until(
        b,
        "the requests chart",
        "document.querySelector('[data-testid=chart-requests] .latest')?.innerText.includes('req/s')",
        Duration::from_secs(30),
    )
    .await;
    load.abort();
    c.delete("/api/v1/projects/hello-python/chaos").await;

    // The policies in force and the audit report, as pages.
    b.goto(&format!("{}/policies", p.url)).await.expect("policies page");
    let data = wait_until(
        b,
        "the deploy policy's data",
        "document.querySelector('[data-testid=policy-deploy] [data-testid=policy-data]')?.innerText",
        Duration::from_secs(20),
    )
    .await;
    assert!(data.as_str().is_some_and(|d| d.contains("min_disk_gb")), "{data}");
    // An admin edits it: a draft that does not compile is refused with its
    // line (nothing stored), a data change is tried on the sample input,
    // then saved as the next version.
    open_policy_editor(b).await;
    set_value(b, "editor-rego", "package deploy\n\ndeny contains msg if {\n  msg := sprintf(\n}\n").await;
    click(b, "[data-testid=editor-try]").await;
    let refused = wait_until(
        b,
        "the compile error",
        "document.querySelector('[data-testid=editor-result] .form-error')?.innerText",
        Duration::from_secs(20),
    )
    .await;
    assert!(refused.as_str().is_some_and(|e| e.starts_with("line ")), "{refused}");
    assert_eq!(c.get("/api/v1/policies/deploy").await.body["version"], 0, "a refused draft was stored");
    open_policy_editor(b).await;
    eval(b, "const t = document.querySelector('[data-testid=editor-data]'); t.value = t.value.replace(/\"min_disk_gb\": *\\d+/, '\"min_disk_gb\": 1'); t.dispatchEvent(new Event('input', {bubbles: true})); return true").await;
    click(b, "[data-testid=editor-try]").await;
    let tried = wait_until(
        b,
        "the draft's decision",
        "document.querySelector('[data-testid=editor-result] pre')?.innerText",
        Duration::from_secs(20),
    )
    .await;
    assert!(tried.as_str().is_some_and(|t| t.contains("[PASS] policy deploy allowed the input")), "{tried}");
    click(b, "[data-testid=editor-save]").await;
    wait_until(
        b,
        "the saved version on the page",
        "document.querySelector('[data-testid=policy-deploy] h2')?.innerText.includes('v1')",
        Duration::from_secs(20),
    )
    .await;
    let stored = c.get("/api/v1/policies/deploy").await.body;
    assert_eq!((stored["version"].as_u64(), stored["data"]["min_disk_gb"].as_u64()), (Some(1), Some(1)), "{stored}");
    screenshot(b, "policies").await;
    b.goto(&format!("{}/audit/report", p.url)).await.expect("report page");
    let report = wait_until(
        b,
        "the audit report",
        "document.querySelector('[data-testid=report] table') && document.querySelector('[data-testid=report]').innerText",
        Duration::from_secs(20),
    )
    .await;
    let report = report.as_str().unwrap_or_default();
    assert!(report.contains("Bifrost audit report") && report.contains("Who did what"), "{report}");
    assert!(report.contains("hello-python"), "the timeline names the app: {report}");
    // Analytics: every project's tiles, then the app's drill-down.
    b.goto(&format!("{}/analytics", p.url)).await.expect("analytics page");
    let tiles = wait_until(
        b,
        "the analytics page",
        "document.querySelector('[data-testid=analytics-project]') && document.querySelector('[data-testid=analytics-project]').innerText",
        Duration::from_secs(20),
    )
    .await;
    let tiles = tiles.as_str().unwrap_or_default();
    assert!(tiles.contains("hello-python") && tiles.contains("deploys / day"), "{tiles}");
    b.goto(&format!("{}/analytics/hello-python", p.url)).await.expect("a project's analytics");
    let periods = wait_until(
        b,
        "the project's analytics",
        "document.querySelector('[data-testid=periods]') && document.querySelector('[data-testid=periods]').innerText",
        Duration::from_secs(20),
    )
    .await;
    assert!(periods.as_str().is_some_and(|t| t.contains("90 days")), "{periods}");
    screenshot(b, "analytics").await;

    // A viewer sees the same pages without the buttons...
    b.delete_all_cookies().await.expect("sign out");
    sign_in(b, &p.url, &viewer_token).await;
    b.goto(&format!("{}{deployment_path}", p.url)).await.expect("deployment page");
    wait_live(b).await;
    let actions = eval(b, "return document.querySelectorAll('[data-testid=actions], [data-testid=retry-button], [data-testid=cancel-button]').length").await;
    assert_eq!(actions, json!(0), "a viewer is offered actions");
    b.goto(&format!("{}/projects/hello-python", p.url)).await.expect("project page");
    wait_live(b).await;
    let deploy = eval(
        b,
        "return document.querySelectorAll('[data-testid=deploy-button], [data-testid=rollback-button]').length",
    )
    .await;
    assert_eq!(deploy, json!(0), "a viewer is offered deploy or rollback");
    screenshot(b, "viewer").await;

    // ...and calling the server function directly is refused, changing nothing.
    let before = c.get("/api/v1/projects/hello-python/deployments").await.body.as_array().map(Vec::len);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    // The viewer's session as the browser holds it: sealed by the sign-in.
    let session = bifrost_e2e::dashboard_session(&http, &p.url, &viewer_token).await;
    // The raw token is not a session.
    let raw = http
        .post(format!("{}/ui/api/deploy", p.url))
        .header("cookie", format!("bifrost_session={viewer_token}"))
        .header("origin", &p.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("project=hello-python&git_ref=main")
        .send()
        .await
        .expect("server fn call");
    assert_eq!(raw.status(), 401, "a raw token in the cookie signed someone in");
    let refused = http
        .post(format!("{}/ui/api/deploy", p.url))
        .header("cookie", format!("bifrost_session={session}"))
        .header("origin", &p.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("project=hello-python&git_ref=main")
        .send()
        .await
        .expect("server fn call");
    assert_eq!(refused.status(), 403, "a viewer's deploy must be refused");
    let text = refused.text().await.unwrap_or_default();
    assert!(text.contains("needs deployer"), "refusal says why: {text}");
    let after = c.get("/api/v1/projects/hello-python/deployments").await.body.as_array().map(Vec::len);
    assert_eq!(before, after, "the refused call created a deployment");
    // Without a session at all: 401, not a page.
    let anonymous = http
        .post(format!("{}/ui/api/retry", p.url))
        .body("id=x")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("call");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_log_survives_a_platform_restart_without_gaps_or_repeats() {
    let Some(browser) = browser().await else { return };
    let b = &browser.client;
    let mut p = Platform::start();
    let c = p.client();
    let repo = slow_build_repo(60, "0.1");
    create_project(&p, &repo).await;
    sign_in(b, &p.url, ADMIN_TOKEN).await;
    let created = c.post("/api/v1/projects/hello-python/deployments", json!({})).await;
    let id = created.body["deployment"]["id"].as_str().expect("deployment id").to_string();
    b.goto(&format!("{}/deployments/{id}", p.url)).await.expect("deployment page");
    wait_live(b).await;
    wait_until(
        b,
        "five build lines",
        "document.querySelectorAll('.line[data-stream=build]').length >= 5",
        Duration::from_secs(60),
    )
    .await;

    let max_before =
        eval(b, "return Math.max(...[...document.querySelectorAll('.line')].map(l => Number(l.dataset.seq)))").await;
    let max_before = max_before.as_u64().expect("seq of the newest line before the restart");
    // A crash mid-build: the browser's EventSource reconnects to the new
    // process with Last-Event-ID and resumes after the last line it saw.
    p.restart_same_port();
    let ended = wait_until(
        b,
        "the deployment to finish after the restart",
        "(() => { const s = document.querySelector('.page-head .badge'); return s && ['healthy','failed'].includes(s.dataset.status) && s.dataset.status; })()",
        Duration::from_secs(120),
    )
    .await;
    screenshot(b, "after-restart").await;
    let log_seqs = |v: &Value| -> Vec<u64> {
        v.as_array().into_iter().flatten().filter(|i| i["kind"] == "log").filter_map(|i| i["seq"].as_u64()).collect()
    };
    let c = p.client();
    let at_end = log_seqs(&c.get(&format!("/api/v1/deployments/{id}/logs")).await.body);
    // The last lines may still be in flight: wait for the page to catch up.
    wait_until(
        b,
        "every stored line on the page",
        &format!("document.querySelectorAll('.line').length >= {}", at_end.len()),
        Duration::from_secs(15),
    )
    .await;
    let shown = eval(b, "return [...document.querySelectorAll('.line')].map(l => Number(l.dataset.seq))").await;
    let shown: Vec<u64> = shown.as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    // Replicas keep logging, so the store may be ahead of the page: the page
    // must be exactly the store's beginning — same order, no gap, no repeat.
    let stored = log_seqs(&c.get(&format!("/api/v1/deployments/{id}/logs")).await.body);
    assert!(
        shown.len() >= at_end.len() && stored.len() >= shown.len(),
        "page {} lines, store {}",
        shown.len(),
        stored.len()
    );
    assert_eq!(shown, stored[..shown.len()], "the page's lines differ from the stored ones (ended {ended})");
    assert!(shown.iter().any(|s| *s > max_before), "nothing arrived after the restart (newest before: {max_before})");
}
