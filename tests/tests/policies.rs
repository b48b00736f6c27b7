//! Policy gates through `bifrost up` and the CLI: the shipped deploy policy
//! lets a deployment start; a threshold raised with `policies data` blocks
//! the next one with the disk reason and starts nothing; a per-project
//! value lets one project through; a policy that does not compile is
//! refused with its line and the one in force stays; every decision is in
//! the audit record with its input and the policy's and data's sha256.

use bifrost_e2e::Platform;
use serde_json::Value;

fn static_site(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("deploy.toml"), format!("[app]\nname = \"{name}\"\nruntime = \"static\"\n"))
        .expect("toml");
    std::fs::write(dir.path().join("index.html"), "hi").expect("html");
    dir
}

/// `bifrost deploy DIR --wait` → (exit code, stderr, the newest deployment
/// of the project).
async fn deploy(p: &Platform, name: &str, dir: &tempfile::TempDir) -> (i32, String, Value) {
    let out = p.cli(&["deploy", &dir.path().display().to_string(), "--wait"]);
    let api = p.client();
    let list = api.get(&format!("/api/v1/projects/{name}/deployments?limit=1")).await.body;
    let id = list[0]["id"].as_str().unwrap_or_else(|| panic!("no deployment of {name}: {list} {out:?}")).to_string();
    (out.code, out.stderr, api.get(&format!("/api/v1/deployments/{id}")).await.body)
}

fn gate_evidence(d: &Value) -> Value {
    let history = d["history"].as_array().expect("history");
    history.iter().rev().find_map(|h| h.get("evidence").cloned()).unwrap_or_else(|| panic!("no decision in {d:#}"))
}

#[tokio::test]
async fn the_deploy_gate_allows_blocks_with_reasons_and_takes_project_values() {
    let p = Platform::start();
    let web = static_site("web");

    // The shipped policy is in force and lets a deployment start.
    let list = p.cli(&["policies", "list", "--json"]).json();
    let deploy_policy = &list["policies"][0];
    assert_eq!((deploy_policy["name"].as_str(), deploy_policy["shipped"].as_bool()), (Some("deploy"), Some(true)));
    let (code, _, d) = deploy(&p, "web", &web).await;
    assert_eq!((code, d["status"].as_str()), (0, Some("healthy")), "{d:#}\n{}", p.log_text());
    let ev = gate_evidence(&d);
    assert_eq!((ev["gate"].as_str(), ev["allow"].as_bool()), (Some("deploy"), Some(true)), "{ev:#}");
    assert!(ev["input"]["host"]["disk_free_gb"].is_number(), "the host's facts are the input: {ev:#}");
    assert_eq!(ev["policy_sha256"], deploy_policy["policy_sha256"], "{ev:#}");

    // A policy that does not compile is refused with its line; nothing changes.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.rego");
    std::fs::write(&bad, "package deploy\nimport rego.v1\n\ndeny contains msg if {\n  msg := \n}\n").expect("write");
    let out = p.cli(&["policies", "set", "deploy", bad.to_str().expect("path")]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("does not compile") && out.stderr.contains("line"), "{out:?}");
    assert_eq!(p.cli(&["policies", "show", "deploy", "--json"]).json()["version"], 0);

    // A threshold no disk meets: the next deployment is blocked with the
    // disk reason, seed 003's lines, and nothing starts.
    let out = p.cli(&["policies", "data", "deploy", "--set", "min_disk_gb=100000"]);
    assert_eq!(out.code, 0, "{out:?}");
    let api = p.client();
    let before = api.get("/api/v1/projects/web").await.body["live_deployment_id"].clone();
    let blocked_site = static_site("web");
    std::fs::write(blocked_site.path().join("index.html"), "v2").expect("html");
    let (code, stderr, d) = deploy(&p, "web", &blocked_site).await;
    assert_ne!(code, 0, "a blocked deployment is a failure: {d:#}");
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("deployment denied by policy deploy v1: Disk free "), "{reason}");
    assert!(reason.ends_with("is below minimum 100000GB"), "{reason}");
    assert!(
        stderr.contains("[DENY] Disk free") && stderr.contains("[BLOCKED] deployment denied by policy deploy"),
        "{stderr}"
    );
    let ev = gate_evidence(&d);
    assert_eq!((ev["allow"].as_bool(), ev["policy_version"].as_u64()), (Some(false), Some(1)), "{ev:#}");
    let id = d["id"].as_str().expect("id");
    let replicas = api.get(&format!("/api/v1/deployments/{id}/replicas")).await.body;
    assert_eq!(replicas.as_array().map(Vec::len), Some(0), "a blocked deployment started replicas: {replicas}");
    assert!(d["history"].as_array().expect("history").iter().all(|h| h["to"] != "deploying"), "{d:#}");
    let after = api.get("/api/v1/projects/web").await.body["live_deployment_id"].clone();
    assert_eq!(before, after, "the live deployment changed");
    let (status, _, body) = api.app_get("web", "/").await.expect("app answers");
    assert_eq!((status, body.as_str()), (200, "hi"), "the live version keeps serving");

    // `policies test` decides without acting: exit 1 when denied.
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"host": {"disk_free_gb": 20}}"#).expect("write");
    let out = p.cli(&["policies", "test", "deploy", "--input", input.to_str().expect("path")]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("[DENY] Disk free 20GB is below minimum 100000GB"), "{out:?}");

    // One project's own value lets it through; the others stay blocked.
    let out = p.cli(&["policies", "data", "deploy", "--set", "min_disk_gb=0", "--project", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = p.cli(&["policies", "test", "deploy", "--input", input.to_str().expect("path"), "--project", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (code, _, d) = deploy(&p, "web", &blocked_site).await;
    assert_eq!((code, d["status"].as_str()), (0, Some("healthy")), "{d:#}");
    let (code, _, d) = deploy(&p, "api", &static_site("api")).await;
    assert_ne!(code, 0, "{d:#}");
    assert_eq!(d["status"], "failed", "another project is still blocked: {d:#}");

    // Every change is a version: who, what.
    let show = p.cli(&["policies", "show", "deploy", "--json"]).json();
    let history: Vec<String> = show["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|v| {
            format!("v{} {} {}", v["version"], v["set_by"].as_str().unwrap_or(""), v["reason"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        history,
        ["v1 token:admin data: min_disk_gb=100000", "v2 token:admin data for web: min_disk_gb=0"],
        "{show:#}"
    );
}

#[tokio::test]
async fn only_admins_change_policies_and_a_change_on_an_old_version_is_refused() {
    let p = Platform::start();
    let api = p.client();
    let a = api.post("/api/v1/tokens", serde_json::json!({"name": "dev", "role": "deployer"})).await;
    let deployer = a.body["token"].as_str().expect("token").to_string();
    let out = p.cli_as(&deployer, &["policies", "data", "deploy", "--set", "min_disk_gb=1"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("HTTP 403"), "{out:?}");
    assert_eq!(p.cli_as(&deployer, &["policies", "show", "deploy", "--json"]).json()["version"], 0);

    let put = |base: u64| {
        let api = p.client();
        async move {
            let body = serde_json::json!({"data": {"min_disk_gb": 1}, "base_version": base}).to_string().into_bytes();
            api.request("PUT", "/api/v1/policies/deploy", body, &[("content-type", "application/json")]).await
        }
    };
    assert_eq!(put(0).await.status, 200);
    let stale = put(0).await;
    assert_eq!(stale.status, 409, "{:?}", stale.body);
    let wrong_package = api
        .request(
            "PUT",
            "/api/v1/policies/promote",
            serde_json::json!({"rego": "package infra\nimport rego.v1\ndeny contains \"x\" if false\n"})
                .to_string()
                .into_bytes(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(wrong_package.status, 422, "{:?}", wrong_package.body);
    assert_eq!(wrong_package.body["error"]["details"]["line"], 1, "{:?}", wrong_package.body);

    // A draft is tried before it is made: by admins only, compile-checked
    // as a change is, decided on the input, and nothing stored.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("path").to_string()
    };
    let input = file("input.json", r#"{"host": {"disk_free_gb": 20}}"#);
    let strict = file("strict.json", r#"{"min_disk_gb": 50}"#);
    let broken = file("broken.rego", "package deploy\nimport rego.v1\ndeny contains msg if {\n  msg := sprintf(\n}\n");
    let out = p.cli_as(&deployer, &["policies", "test", "deploy", "--input", &input, "--data", &strict]);
    assert!(out.code != 0 && out.stderr.contains("HTTP 403"), "a deployer tried a draft: {out:?}");
    let out = p.cli(&["policies", "test", "deploy", "--input", &input, "--data", &strict]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("draft on v1") && out.stdout.contains("[DENY] Disk free 20GB is below minimum 50GB"),
        "{out:?}"
    );
    let out = p.cli(&["policies", "test", "deploy", "--input", &input, "--rego", &broken]);
    // Not compiling is exit 3 (invalid), apart from a denial's 1.
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("policy deploy does not compile") && out.stderr.contains("(line 4)"), "{out:?}");
    let now = p.cli(&["policies", "show", "deploy", "--json"]).json();
    assert_eq!((now["version"].as_u64(), now["data"]["min_disk_gb"].as_u64()), (Some(1), Some(1)), "{now:#}");
}
