//! The control plane end to end: the real `bifrost up`, real git repos,
//! signed GitHub webhooks, the CLI — and a crash.

use bifrost_e2e::{ADMIN_TOKEN, GitRepo, Platform};
use serde_json::{Value, json};

const SECRET: &str = "e2e-webhook-secret";

// The build sleeps: these tests look at the control plane up to `building`,
// and a build that ends at once would race them past it.
const VALID: &str = "[app]\nname = \"app\"\nruntime = \"python\"\n\n[build]\ncommand = \"sleep 120\"\n\n[run]\ncommand = \"python3 app.py\"\n\n[health]\npath = \"/healthz\"\n";

fn statuses(history: &Value) -> Vec<String> {
    history.as_array().expect("history").iter().map(|h| h["to"].as_str().unwrap_or("").to_string()).collect()
}

async fn setup(p: &Platform, repo: &GitRepo) {
    let out = p.cli(&["projects", "add", "app", "--repo", &repo.path_str(), "--webhook-secret", SECRET, "--json"]);
    assert_eq!(out.code, 0, "projects add: {out:?}");
    assert_eq!(out.json()["name"], "app");
}

#[tokio::test]
async fn signed_push_reaches_building_with_its_history() {
    let p = Platform::start();
    let repo = GitRepo::new(&[("deploy.toml", VALID), ("app.py", "print('hi')\n")]);
    setup(&p, &repo).await;
    let c = p.client();

    let ping = c
        .webhook(
            "ping",
            "ping-1",
            SECRET,
            &json!({"zen": "Design for failure.", "repository": repo.push_payload("", "")["repository"]}),
        )
        .await;
    assert_eq!(ping.status, 200, "{:?}", ping.body);
    assert_eq!(ping.body["status"], "pong");

    let sha = repo.head();
    // The push says when its head commit was made (the lead time's start).
    let mut payload = repo.push_payload("refs/heads/main", &sha);
    payload["head_commit"] = json!({"id": sha, "timestamp": "2026-11-29T10:00:00+01:00", "message": "add app"});
    let push = c.webhook("push", "delivery-1", SECRET, &payload).await;
    assert_eq!(push.status, 201, "{:?}", push.body);
    assert_eq!(push.body["status"], "queued");
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();
    assert_eq!(push.body["deployment"]["source"]["commit"], sha);
    assert_eq!(push.body["deployment"]["source"]["committed_at"], "2026-11-29T09:00:00.000Z");

    let d = c.wait_deployment(&id, "building", |d| d["status"] == "building").await;
    assert_eq!(statuses(&d["history"]), ["queued", "validating", "building"]);
    assert_eq!(d["history"][0]["actor"], "github:e2e-user");
    assert_eq!(d["history"][2]["actor"], "function:validate");
    assert_eq!(d["config"]["health"]["path"], "/healthz", "the validated config is snapshotted");
    assert_eq!(d["config_source"], VALID);

    // The same through the CLI.
    let out = p.cli(&["status", &id, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(statuses(&out.json()["history"]), ["queued", "validating", "building"]);
    let text = p.cli(&["status", &id]);
    assert!(text.stdout.contains("building") && text.stdout.contains("function:validate"), "{}", text.stdout);
    let listed = p.cli(&["deployments", "list", "--project", "app", "--json"]);
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn bad_signatures_and_unknown_repos_look_the_same() {
    let p = Platform::start();
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let c = p.client();
    let payload = repo.push_payload("refs/heads/main", &repo.head());

    let bad_sig = c.webhook("push", "d-bad", "not-the-secret", &payload).await;
    let mut other = payload.clone();
    other["repository"] = json!({"full_name": "someone/else", "clone_url": "https://github.com/someone/else.git"});
    let unknown = c.webhook("push", "d-unknown", SECRET, &other).await;
    let body = serde_json::to_vec(&payload).expect("json");
    let unsigned = c.webhook_raw("push", "d-none", None, body.clone()).await;
    let garbage_sig = c.webhook_raw("push", "d-garbage", Some("sha256=zzzz"), body).await;

    for a in [&bad_sig, &unknown, &unsigned, &garbage_sig] {
        assert_eq!(a.status, 401, "{:?}", a.body);
    }
    assert_eq!(bad_sig.body, unknown.body, "a bad signature and an unknown repo must be indistinguishable");
    let list = c.get("/api/v1/deployments").await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(0), "nothing was deployed");
}

#[tokio::test]
async fn tags_deletions_other_branches_and_events_are_ignored() {
    let p = Platform::start();
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let c = p.client();
    let sha = repo.head();

    let tag = c.webhook("push", "d1", SECRET, &repo.push_payload("refs/tags/v1.0", &sha)).await;
    let mut deletion = repo.push_payload("refs/heads/main", "0000000000000000000000000000000000000000");
    deletion["deleted"] = json!(true);
    let deleted = c.webhook("push", "d2", SECRET, &deletion).await;
    let feature = c.webhook("push", "d3", SECRET, &repo.push_payload("refs/heads/feature", &sha)).await;
    let issue = c.webhook("issues", "d4", SECRET, &repo.push_payload("refs/heads/main", &sha)).await;

    for (a, needle) in [(&tag, "tag"), (&deleted, "deletion"), (&feature, "feature"), (&issue, "issues")] {
        assert_eq!(a.status, 202, "{:?}", a.body);
        assert_eq!(a.body["status"], "ignored");
        assert!(a.body["reason"].as_str().is_some_and(|r| r.contains(needle)), "{:?}", a.body);
    }
    assert_eq!(c.get("/api/v1/deployments").await.body.as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_repeated_delivery_never_deploys_twice() {
    let p = Platform::start();
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let c = p.client();
    let payload = repo.push_payload("refs/heads/main", &repo.head());
    let first = c.webhook("push", "same-delivery", SECRET, &payload).await;
    let second = c.webhook("push", "same-delivery", SECRET, &payload).await;
    assert_eq!((first.status, second.status), (201, 200));
    assert_eq!(second.body["status"], "duplicate");
    assert_eq!(first.body["deployment"]["id"], second.body["deployment"]["id"]);
    assert_eq!(c.get("/api/v1/deployments").await.body.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn oversized_webhooks_are_refused_with_413() {
    let p = Platform::start();
    let c = p.client();
    let big = vec![b' '; 6 << 20];
    let a = c.webhook_raw("push", "big", Some("sha256=00"), big).await;
    assert_eq!(a.status, 413, "{:?}", a.body);
    assert_eq!(a.body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn an_invalid_deploy_toml_fails_with_line_numbers_in_api_and_cli() {
    let p = Platform::start();
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let bad = "[app]\nname = \"app\"\nruntime = \"pyhton\"\n\n[scaling]\nmin_replicas = 3\nmax_replicas = 1\n";
    let sha = repo.commit(&[("deploy.toml", bad)], "break it");
    let c = p.client();
    let push = c.webhook("push", "bad-1", SECRET, &repo.push_payload("refs/heads/main", &sha)).await;
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();
    let d = c.wait_deployment(&id, "failed", |d| d["status"] == "failed").await;
    let errors = d["config_errors"].as_array().expect("errors");
    let at: Vec<(u64, u64, &str)> = errors
        .iter()
        .map(|e| (e["line"].as_u64().unwrap_or(0), e["column"].as_u64().unwrap_or(0), e["path"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(at, [(3, 11, "app.runtime"), (7, 16, "scaling.max_replicas")]);
    assert_eq!(errors[0]["suggestion"], "python");
    assert_eq!(statuses(&d["history"]), ["queued", "validating", "failed"]);

    let out = p.cli(&["status", &id]);
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("deploy.toml:3:11:") && out.stderr.contains("deploy.toml:7:16:"), "{out:?}");

    // And the local validator agrees, exiting 3.
    std::fs::write(p.home.path().join("deploy.toml"), bad).expect("write");
    let v = p.cli(&["validate", &p.home.path().join("deploy.toml").display().to_string(), "--json"]);
    assert_eq!(v.code, 3, "{v:?}");
    assert_eq!(v.json()["valid"], false);
    assert_eq!(v.json()["errors"][0]["line"], 3);

    // `bifrost render` refuses it the same way and prints no YAML.
    let file = p.home.path().join("deploy.toml").display().to_string();
    let r = p.cli(&["render", &file, "--target", "gke"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.is_empty() && r.stderr.contains("deploy.toml:3:11:"), "{r:?}");
    // A valid one becomes the cluster's objects, one YAML document each.
    std::fs::write(p.home.path().join("deploy.toml"), VALID).expect("write");
    let r = p.cli(&["render", &file, "--target", "gke", "--image", "registry.example/app@sha256:00"]);
    assert_eq!(r.code, 0, "{r:?}");
    let kinds: Vec<&str> = r.stdout.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Ingress"
        ]
    );
    assert!(r.stdout.contains("image: registry.example/app@sha256:00"), "{}", r.stdout);
}

#[tokio::test]
async fn a_crash_after_accepting_a_webhook_loses_nothing() {
    // Paused: the webhook is accepted and stored, but validation does not run.
    let mut p = Platform::start_with(&[("BIFROST_PAUSED", "1")]);
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let push = p.client().webhook("push", "crash-1", SECRET, &repo.push_payload("refs/heads/main", &repo.head())).await;
    assert_eq!(push.status, 201, "{:?}", push.body);
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();
    let queued = p.client().get(&format!("/api/v1/deployments/{id}")).await;
    assert_eq!(queued.body["status"], "queued");

    p.kill9();
    p.restart(&[("BIFROST_PAUSED", "")]);
    let c = p.client();
    let d = c.wait_deployment(&id, "building", |d| d["status"] == "building").await;
    assert_eq!(statuses(&d["history"]), ["queued", "validating", "building"]);
    let events = c.get(&format!("/api/v1/deployments/{id}/history")).await;
    let kinds: Vec<&str> = events.body.as_array().expect("events").iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["deployment.queued", "deployment.validating", "deployment.building"]);
    // The delivery id survived too: a GitHub redelivery after the crash is still a duplicate.
    let again = c.webhook("push", "crash-1", SECRET, &repo.push_payload("refs/heads/main", &repo.head())).await;
    assert_eq!(again.body["status"], "duplicate");
}

#[tokio::test]
async fn roles_are_enforced() {
    let p = Platform::start();
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let c = p.client();
    let viewer = c.post("/api/v1/tokens", json!({"name": "vera", "role": "viewer"})).await;
    assert_eq!(viewer.status, 201, "{:?}", viewer.body);
    let vt = viewer.body["token"].as_str().expect("secret").to_string();
    let v = c.with_token(&vt);

    assert_eq!(v.get("/api/v1/projects").await.status, 200);
    let deploy = v.post("/api/v1/projects/app/deployments", json!({"ref": "main"})).await;
    assert_eq!(deploy.status, 403, "{:?}", deploy.body);
    assert!(deploy.body["error"]["message"].as_str().is_some_and(|m| m.contains("viewer")));
    assert_eq!(v.post("/api/v1/projects", json!({"name": "x"})).await.status, 403);
    assert_eq!(v.post("/api/v1/tokens", json!({"name": "y", "role": "admin"})).await.status, 403);

    let anon = c.with_token("bft_not-a-token");
    assert_eq!(anon.get("/api/v1/projects").await.status, 401);
    let cli = p.cli_as(&vt, &["deploy", "--project", "app", "--ref", "main"]);
    assert_eq!(cli.code, 5, "{cli:?}");

    // A deployer can deploy, retry and cancel.
    let dep = c.post("/api/v1/tokens", json!({"name": "dora", "role": "deployer"})).await;
    let d = c.with_token(dep.body["token"].as_str().expect("secret"));
    let created = d.post("/api/v1/projects/app/deployments", json!({"ref": "main"})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let revoked = c.delete("/api/v1/tokens/vera").await;
    assert_eq!(revoked.status, 200);
    assert_eq!(v.get("/api/v1/projects").await.status, 401, "revoked tokens stop working");
    let _ = ADMIN_TOKEN;
}

#[tokio::test]
async fn retry_cancel_and_dead_letters_through_the_cli() {
    let mut p = Platform::start_with(&[("BIFROST_PAUSED", "1"), ("BIFROST_MAX_DELIVERY_ATTEMPTS", "2")]);
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let sha = repo.head();
    let push = p.client().webhook("push", "dl-1", SECRET, &repo.push_payload("refs/heads/main", &sha)).await;
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();

    // The repository vanishes before validation can read it: deliveries fail,
    // retry, and give up into the dead-letter list.
    let moved = repo.path().with_extension("moved");
    std::fs::rename(repo.path(), &moved).expect("move repo away");
    // (The webhook asks the repository itself whether the push is the
    // branch's head and keeps no mirror; should one exist, validation must
    // still reach the repository.)
    let mirrors = p.data_dir.join("git");
    if mirrors.exists() {
        std::fs::remove_dir_all(mirrors).expect("drop the mirror");
    }
    p.restart(&[("BIFROST_PAUSED", "")]);
    let start = std::time::Instant::now();
    let dead = loop {
        let out = p.cli(&["events", "dead", "--json"]);
        let list = out.json();
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            break list;
        }
        assert!(start.elapsed().as_secs() < 60, "no dead letter appeared; log:\n{}", p.log_text());
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(dead[0]["event"]["deployment_id"], id.as_str());
    assert_eq!(dead[0]["subscription"], "validate-validating");
    assert!(dead[0]["last_error"].as_str().is_some_and(|e| e.contains("git")), "{dead:#}");
    let human = p.cli(&["events", "dead"]);
    assert!(human.stdout.contains("deployment.validating"), "{}", human.stdout);

    // Bring it back and redrive: the pipeline continues where it stopped.
    std::fs::rename(&moved, repo.path()).expect("move repo back");
    let r = p.cli(&["events", "dead", "--redrive", "--json"]);
    assert_eq!(r.json()["redriven"], 1, "{r:?}");
    let c = p.client();
    c.wait_deployment(&id, "building", |d| d["status"] == "building").await;
    assert_eq!(p.cli(&["events", "dead", "--json"]).json(), json!([]));

    // Cancel it, retry it (attempt 2), and refuse to retry what is not finished.
    let cancel = p.cli(&["cancel", &id, "--json"]);
    assert_eq!(cancel.json()["status"], "cancelled", "{cancel:?}");
    let again = p.cli(&["cancel", &id]);
    assert_eq!(again.code, 7, "cancelling twice is a conflict: {again:?}");
    let retry = p.cli(&["retry", &id, "--json"]);
    assert_eq!(retry.json()["attempt"], 2, "{retry:?}");
    c.wait_deployment(&id, "building again", |d| d["status"] == "building" && d["attempt"] == 2).await;
    let not_failed = p.cli(&["retry", &id]);
    assert_eq!(not_failed.code, 7, "{not_failed:?}");
    assert!(not_failed.stderr.contains("only failed or cancelled"), "{}", not_failed.stderr);
}

#[tokio::test]
async fn api_describes_itself_and_errors_are_json() {
    let p = Platform::start();
    let c = p.client();
    let health = c.get("/healthz").await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    let doc = c.get("/api/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in ["/api/v1/projects", "/api/v1/webhooks/github", "/api/v1/deployments/{id}/retry", "/api/v1/events/dead"]
    {
        assert!(doc.body["paths"].get(path).is_some(), "OpenAPI misses {path}");
    }
    let missing = c.get("/api/v1/deployments/d-nope").await;
    assert_eq!((missing.status, missing.body["error"]["code"].as_str()), (404, Some("not_found")));
    let bad_json = c.post("/api/v1/projects", json!({"nom": "x"})).await;
    assert_eq!(bad_json.status, 422, "{:?}", bad_json.body);
    assert!(bad_json.body["error"]["message"].as_str().is_some_and(|m| m.contains("name")));
    let bad_name = c.post("/api/v1/projects", json!({"name": "Bad_Name"})).await;
    assert_eq!(bad_name.status, 422);
    let bad_repo = c.post("/api/v1/projects", json!({"name": "nope", "repo": "/definitely/not/a/repo"})).await;
    assert_eq!(bad_repo.status, 422, "{:?}", bad_repo.body);
    assert_eq!(c.get("/api/v1/projects").await.body, json!([]), "failed creations change nothing");
}

#[tokio::test]
async fn deploying_a_directory_uploads_it_and_creates_the_project() {
    let p = Platform::start();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-python");
    let out = p.cli(&["deploy", &example.display().to_string(), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = &out.json()["deployment"];
    assert_eq!(d["project"], "hello-python");
    assert_eq!(d["source"]["kind"], "archive");
    let id = d["id"].as_str().expect("id").to_string();
    let c = p.client();
    let done = c.wait_deployment(&id, "building", |d| d["status"] == "building").await;
    assert_eq!(done["config"]["scaling"]["min_replicas"], 2, "the uploaded deploy.toml was validated");
    let project = c.get("/api/v1/projects/hello-python").await;
    assert_eq!((project.status, project.body["repo"].clone()), (200, Value::Null));

    // An invalid directory is refused locally: exit 3, nothing uploaded.
    let bad = p.home.path().join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(bad.join("deploy.toml"), "[app]\nname = \"hello-python\"\nruntime = \"ruby\"\n").expect("write");
    let refused = p.cli(&["deploy", &bad.display().to_string()]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("deploy.toml:3:11"), "{}", refused.stderr);
    let list = c.get("/api/v1/projects/hello-python/deployments").await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));

    // Deleting the project cancels what is in flight and keeps the audit trail.
    let rm = p.cli(&["projects", "rm", "hello-python", "--yes"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    assert_eq!(c.get("/api/v1/projects/hello-python").await.status, 404);
}

/// What arrives on `s` until a second passes without a byte.
async fn read_for_a_while(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_millis(1000), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// A response's head (lowercased) and its de-chunked body.
fn split_chunked(response: &str) -> (String, String) {
    let (head, mut rest) = response.split_once("\r\n\r\n").expect("a response head");
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        body.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    (head.to_lowercase(), body)
}

/// A subscription on a fresh connection is served by the fan-out (no
/// hyper: no `date` header); the same request after another one on a
/// kept-alive connection is served by the router. Both send the same bytes.
#[tokio::test]
async fn the_sse_fan_out_sends_what_the_router_sends() {
    use tokio::io::AsyncWriteExt;
    let p = Platform::start();
    let repo = GitRepo::new(&[("deploy.toml", VALID)]);
    setup(&p, &repo).await;
    let sha = repo.commit(&[("deploy.toml", "[app]\nname = \"app\"\nruntime = \"pyhton\"\n")], "break it");
    let c = p.client();
    let push = c.webhook("push", "fan-1", SECRET, &repo.push_payload("refs/heads/main", &sha)).await;
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();
    c.wait_deployment(&id, "failed", |d| d["status"] == "failed").await;
    let addr = p.url.trim_start_matches("http://").to_string();
    let sub = format!(
        "GET /api/v1/deployments/{id}/events?after=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );

    let mut fresh = tokio::net::TcpStream::connect(&addr).await.expect("connects");
    fresh.write_all(sub.as_bytes()).await.expect("writes");
    let (fast_head, fast) = split_chunked(&read_for_a_while(&mut fresh).await);

    let mut reused = tokio::net::TcpStream::connect(&addr).await.expect("connects");
    let two = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n{sub}");
    reused.write_all(two.as_bytes()).await.expect("writes");
    let text = read_for_a_while(&mut reused).await;
    let second = text.rfind("HTTP/1.1 200").expect("two responses");
    assert!(second > 0, "the health check answered first: {text}");
    let (routed_head, routed) = split_chunked(&text[second..]);

    for head in [&fast_head, &routed_head] {
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(head.contains("cache-control: no-cache"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
    }
    assert!(!fast_head.contains("date:"), "a fresh connection's subscription is the fan-out's: {fast_head}");
    assert!(routed_head.contains("date:"), "the kept-alive connection's is hyper's: {routed_head}");
    assert!(fast.contains("event: status") && fast.contains("\"status\":\"failed\""), "{fast}");
    assert_eq!(fast, routed, "the fan-out sends byte for byte what the router sends");

    // A bad token on a fresh connection is the router's to answer: 401, JSON.
    let mut bad = tokio::net::TcpStream::connect(&addr).await.expect("connects");
    let req = format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer nope\r\n\r\n");
    bad.write_all(req.as_bytes()).await.expect("writes");
    let answer = read_for_a_while(&mut bad).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}
