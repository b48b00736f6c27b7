//! Routing scripts through `bifrost up`, against a real app: the
//! deployment's own `[traffic] script` (compiled at validate: a syntax
//! error is a deploy.toml error at the `script` line), a version pushed
//! live changing answers without a redeploy, hostile scripts refused at the
//! push or contained at run time while the app keeps answering, rollback,
//! and the errors shown in `bifrost scripts list` and the metrics.

use std::time::{Duration, Instant};

use bifrost_e2e::{AppClient, Platform, python_app};
use serde_json::Value;

/// Status, body, and the `x-script` header of a request through the router.
async fn get(app: &AppClient, path: &str) -> (u16, String, Option<String>) {
    let r = app.get(path, &[]).await;
    let tag = r.headers().get("x-script").and_then(|v| v.to_str().ok()).map(str::to_string);
    (r.status().as_u16(), r.text().await.unwrap_or_default(), tag)
}

/// Polls until `path` answers with the `x-script` tag `want`.
async fn until_tag(app: &AppClient, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, tag) = get(app, path).await;
        if tag.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered with x-script: {want} (last {tag:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const REPO_SCRIPT: &str = r#"
function handle(req)
  if req.path == "/maintenance" then
    return { status = 503, body = "back soon", headers = { ["retry-after"] = "60" } }
  end
  return { response_headers = { ["x-script"] = "repo" } }
end
"#;

fn script_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bifrost-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test]
async fn scripts_run_from_the_repo_change_on_push_refuse_hostile_ones_and_roll_back() {
    let p = Platform::start();
    let repo = python_app("scripted", "");
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("deploy.toml");
    let with_script = format!("{toml}\n[traffic]\nscript = \"routes/app.lua\"\n");
    repo.commit(&[("deploy.toml", &with_script), ("routes/app.lua", REPO_SCRIPT)], "a routing script");
    p.add_project("scripted", &repo);
    let id = p.push(&repo, "scripted-1").await;
    p.healthy(&id).await;
    let app = AppClient::new(&p, "scripted");

    // The deployment's own script runs.
    let (status, _, tag) = get(&app, "/").await;
    assert_eq!((status, tag.as_deref()), (200, Some("repo")));
    let (status, body, _) = get(&app, "/maintenance").await;
    assert_eq!((status, body.as_str()), (503, "back soon"));

    // A push changes answers within seconds, without a redeploy.
    let v1 = script_file(
        "v1.lua",
        "function handle(req)\n  return { response_headers = { [\"x-script\"] = \"v1\" } }\nend\n",
    );
    let out = p.cli(&["scripts", "push", "scripted", v1.to_str().expect("path")]);
    assert_eq!(out.code, 0, "{out:?}");
    until_tag(&app, "/", "v1").await;
    let (status, _, _) = get(&app, "/maintenance").await;
    assert_eq!(status, 200, "the pushed version replaced the repo's whole script");

    // Hostile scripts are refused at the push, with the Lua error and line;
    // v1 keeps running.
    for (name, text, says) in [
        ("syntax.lua", "function handle(req)\n  return {\nend\n", "scripted@v2:3:"),
        ("require.lua", "function handle(req)\n  local os = require(\"os\")\nend\n", "scripted@v2:2:"),
        ("spin.lua", "function handle(req)\n  while true do end\nend\n", "instruction limit"),
        (
            "bomb.lua",
            "function handle(req)\n  local t = {}\n  for i = 1, 1e9 do t[i] = {i, i, i} end\nend\n",
            "limit exceeded",
        ),
        (
            "rep.lua",
            "function handle(req)\n  return { body = string.rep(\"x\", 1e9), status = 200 }\nend\n",
            "string limit",
        ),
        (
            "pattern.lua",
            "function handle(req)\n  local s = string.rep(\"a\", 20000)\n  return { status = 200, body = tostring(s:find(\".-.-.-.-b\")) }\nend\n",
            "pattern limit",
        ),
        (
            // A number's text is matched too: this held a router thread for minutes.
            "number.lua",
            "function handle(req)\n  return { status = 200, body = tostring(string.find(1111111111111111111, (\".-\"):rep(16) .. \"x\")) }\nend\n",
            "pattern limit",
        ),
        ("nohandle.lua", "x = 1\n", "must define `function handle(req)`"),
    ] {
        let file = script_file(name, text);
        let out = p.cli(&["scripts", "push", "scripted", file.to_str().expect("path")]);
        assert_ne!(out.code, 0, "{name} was accepted: {out:?}");
        assert!(out.stderr.contains(says) && out.stderr.contains("422"), "{name}: {}", out.stderr);
        let (status, _, tag) = get(&app, "/").await;
        assert_eq!((status, tag.as_deref()), (200, Some("v1")), "{name}: the running script stays");
    }
    let listed: Value = serde_json::from_str(&p.cli(&["scripts", "list", "scripted", "--json"]).stdout).expect("json");
    assert_eq!(listed["versions"].as_array().map(Vec::len), Some(1), "refused pushes are not kept: {listed}");

    // One that passes its dry run but misbehaves on some requests is
    // contained: those are answered 500 script_error, the rest go on.
    let v2 = script_file(
        "v2.lua",
        "function handle(req)\n  if req.path == \"/spin\" then while true do end end\n  if req.path == \"/boom\" then error(\"secret detail\") end\n  return { response_headers = { [\"x-script\"] = \"v2\" } }\nend\n",
    );
    assert_eq!(p.cli(&["scripts", "push", "scripted", v2.to_str().expect("path")]).code, 0);
    until_tag(&app, "/", "v2").await;
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let (status, body, _) = get(&app, "/spin").await;
        assert_eq!(status, 500);
        assert!(body.contains("script_error") && !body.contains("secret"), "{body}");
        let started = Instant::now();
        let (status, _, tag) = get(&app, "/").await;
        worst = worst.max(started.elapsed());
        assert_eq!((status, tag.as_deref()), (200, Some("v2")), "other requests are served");
    }
    eprintln!("slowest ordinary request between contained ones: {worst:?}");
    let (status, body, _) = get(&app, "/boom").await;
    assert_eq!(status, 500);
    assert!(!body.contains("secret detail"), "the client learns nothing of the script: {body}");

    // The errors and their line show in `scripts list`.
    let list = p.cli(&["scripts", "list", "scripted"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains("v2") && list.stdout.contains("running"), "{}", list.stdout);
    assert!(list.stdout.contains("scripted@v2:3: secret detail"), "{}", list.stdout);
    let listed: Value = serde_json::from_str(&p.cli(&["scripts", "list", "scripted", "--json"]).stdout).expect("json");
    let v2_health = &listed["versions"][1]["health"];
    assert_eq!(v2_health["errors"], 6, "{listed}");
    assert_eq!(v2_health["line"], 3, "{listed}");
    assert_eq!(listed["deployment_script"]["state"], "overridden");
    assert_eq!(listed["deployment_script"]["path"], "routes/app.lua");

    // Counted in the metrics.
    let metrics = p.client().get("/metrics").await.body.as_str().unwrap_or("").to_string();
    assert!(
        metrics.lines().any(|l| l.starts_with("bifrost_router_script_errors_total{app=\"scripted\"} 6")),
        "{metrics}"
    );

    // A viewer may not push.
    let c = p.client();
    let viewer = c.post("/api/v1/tokens", serde_json::json!({"name": "vee", "role": "viewer"})).await;
    let viewer = viewer.body["token"].as_str().expect("a token").to_string();
    assert_eq!(p.cli_as(&viewer, &["scripts", "push", "scripted", v1.to_str().expect("path")]).code, 5);

    // Rollback: the version before, then the deployment's own.
    assert_eq!(p.cli(&["scripts", "rollback", "scripted"]).code, 0);
    until_tag(&app, "/", "v1").await;
    let back = p.cli(&["scripts", "rollback", "scripted", "--to", "0"]);
    assert_eq!(back.code, 0, "{back:?}");
    assert!(back.stdout.contains("routes/app.lua"), "{}", back.stdout);
    until_tag(&app, "/", "repo").await;
    let again = p.cli(&["scripts", "rollback", "scripted"]);
    assert_eq!(again.code, 7, "nothing pushed runs, nothing to roll back: {again:?}");
    assert!(again.stderr.contains("no pushed script runs"), "{}", again.stderr);
}

#[tokio::test]
async fn a_script_that_does_not_compile_fails_the_deploy_at_the_script_line() {
    let p = Platform::start();
    let repo = python_app("badscript", "");
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("deploy.toml");
    let with_script = format!("{toml}\n[traffic]\nscript = \"routes/app.lua\"\n");
    let script_line = with_script.lines().position(|l| l.starts_with("script =")).expect("line") as u64 + 1;
    repo.commit(
        &[("deploy.toml", &with_script), ("routes/app.lua", "function handle(req)\n  return {\nend\n")],
        "broken",
    );
    p.add_project("badscript", &repo);
    let id = p.push(&repo, "badscript-1").await;
    let d = p.client().wait_deployment(&id, "failed", |d| d["status"] == "failed").await;
    let errors = d["config_errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["path"], "traffic.script");
    assert_eq!(errors[0]["line"], script_line);
    let message = errors[0]["message"].as_str().unwrap_or("");
    assert!(message.contains("routes/app.lua:3:"), "the Lua line is in the message: {message}");

    // A script path with no file is refused the same way.
    let missing = format!("{toml}\n[traffic]\nscript = \"routes/none.lua\"\n");
    repo.commit(&[("deploy.toml", &missing)], "no such script");
    let id = p.push(&repo, "badscript-2").await;
    let d = p.client().wait_deployment(&id, "failed", |d| d["status"] == "failed").await;
    assert!(d["config_errors"][0]["message"].as_str().unwrap_or("").contains("no file \"routes/none.lua\""), "{d}");
}
