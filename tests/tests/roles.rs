//! Every API route × every kind of caller, as a table: no token (401), a
//! role below the route's (403, before any body is read or anything is
//! looked up), the route's role and above (through), and a token limited
//! to another project (that project does not exist for it: 404).

use bifrost_e2e::{Client, Platform};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Need {
    /// A `bifrost-router` node: reads the routing table, nothing else.
    Router,
    Viewer,
    Deployer,
    Admin,
}

/// Which project a route touches: a project-limited token reaches only its own.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    /// Not about one project (lists filter; admin routes refuse).
    Global,
    /// The project the limited token is limited to.
    Own,
    /// Another project.
    Other,
}

struct Route {
    method: &'static str,
    path: String,
    body: Value,
    need: Need,
    scope: Scope,
}

fn route(method: &'static str, path: impl Into<String>, body: Value, need: Need, scope: Scope) -> Route {
    Route { method, path: path.into(), body, need, scope }
}

async fn static_deployment(p: &Platform, project: &str) -> String {
    assert_eq!(p.cli(&["projects", "add", project]).code, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("deploy.toml"), format!("[app]\nname = \"{project}\"\nruntime = \"static\"\n"))
        .expect("toml");
    std::fs::write(dir.path().join("index.html"), "hi").expect("html");
    let out = p.cli(&["deploy", &dir.path().display().to_string(), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(out.stdout.lines().last().unwrap_or("{}"))
        .or_else(|_| serde_json::from_str(&out.stdout))
        .expect("json");
    v["deployment"]["id"].as_str().or(v["id"].as_str()).expect("deployment id").to_string()
}

#[tokio::test]
async fn every_route_checks_the_callers_role_and_project() {
    let p = Platform::start();
    let admin = p.client();
    let own_dep = static_deployment(&p, "own").await;
    let other_dep = static_deployment(&p, "other").await;
    let token = |role: &str, project: Option<&str>, name: &str| {
        let admin = p.client();
        let (role, project, name) = (role.to_string(), project.map(str::to_string), name.to_string());
        async move {
            let a = admin.post("/api/v1/tokens", json!({"name": name, "role": role, "project": project})).await;
            assert_eq!(a.status, 201, "{:?}", a.body);
            a.body["token"].as_str().expect("token").to_string()
        }
    };
    let viewer = admin.with_token(&token("viewer", None, "t-viewer").await);
    let deployer = admin.with_token(&token("deployer", None, "t-deployer").await);
    let limited_token_text = token("deployer", Some("own"), "t-limited").await;
    let limited = admin.with_token(&limited_token_text);
    let router = admin.with_token(&token("router", None, "t-router").await);
    let anonymous = admin.with_token("");

    use Need::*;
    use Scope::*;
    let d = |id: &str, rest: &str| format!("/api/v1/deployments/{id}{rest}");
    let routes = vec![
        route("GET", "/api/v1/projects", Value::Null, Viewer, Global),
        route("POST", "/api/v1/projects", json!({"name": "made-by-{who}"}), Admin, Global),
        route("GET", "/api/v1/projects/own", Value::Null, Viewer, Own),
        route("GET", "/api/v1/projects/other", Value::Null, Viewer, Other),
        route("DELETE", "/api/v1/projects/no-such-project", Value::Null, Admin, Global),
        route("GET", "/api/v1/projects/own/deployments", Value::Null, Viewer, Own),
        route("GET", "/api/v1/projects/other/deployments", Value::Null, Viewer, Other),
        route("POST", "/api/v1/projects/own/deployments", json!({"ref": "main"}), Deployer, Own),
        route("POST", "/api/v1/projects/other/deployments", json!({"ref": "main"}), Deployer, Other),
        route("GET", "/api/v1/deployments", Value::Null, Viewer, Global),
        route("GET", d(&own_dep, ""), Value::Null, Viewer, Own),
        route("GET", d(&other_dep, ""), Value::Null, Viewer, Other),
        route("GET", d(&other_dep, "/history"), Value::Null, Viewer, Other),
        route("GET", d(&other_dep, "/logs"), Value::Null, Viewer, Other),
        route("GET", d(&other_dep, "/replicas"), Value::Null, Viewer, Other),
        route("GET", d(&other_dep, "/health"), Value::Null, Viewer, Other),
        route("GET", d(&own_dep, "/logs"), Value::Null, Viewer, Own),
        route("POST", d("d-none", "/retry"), Value::Null, Deployer, Global),
        route("POST", d(&other_dep, "/retry"), Value::Null, Deployer, Other),
        route("POST", d("d-none", "/cancel"), Value::Null, Deployer, Global),
        route("POST", d(&other_dep, "/cancel"), Value::Null, Deployer, Other),
        route("POST", "/api/v1/projects/own/rollback", json!({}), Deployer, Own),
        route("POST", "/api/v1/projects/other/rollback", json!({}), Deployer, Other),
        route("PUT", "/api/v1/projects/own/chaos", json!({"error_rate": 0.01, "for_s": 1}), Admin, Own),
        route("DELETE", "/api/v1/projects/own/chaos", Value::Null, Admin, Own),
        route("PUT", "/api/v1/projects/own/split", json!({"to": "d-none", "weight": 10}), Admin, Own),
        route("DELETE", "/api/v1/projects/own/split", Value::Null, Admin, Own),
        route("GET", "/api/v1/projects/own/traffic", Value::Null, Viewer, Own),
        route("GET", "/api/v1/projects/other/traffic", Value::Null, Viewer, Other),
        route("GET", d(&other_dep, "/traffic"), Value::Null, Viewer, Other),
        route("GET", "/api/v1/projects/own/scripts", Value::Null, Viewer, Own),
        route("GET", "/api/v1/projects/other/scripts", Value::Null, Viewer, Other),
        route("POST", "/api/v1/projects/own/scripts", json!({"source": "function handle(req) end"}), Deployer, Own),
        route("POST", "/api/v1/projects/other/scripts", json!({"source": "function handle(req) end"}), Deployer, Other),
        route("POST", "/api/v1/projects/own/scripts/rollback", json!({"to": 0}), Deployer, Own),
        route("GET", "/api/v1/policies", Value::Null, Viewer, Global),
        route("GET", "/api/v1/policies/deploy", Value::Null, Viewer, Global),
        // Bodies that change nothing (422 past the role check).
        route("PUT", "/api/v1/policies/deploy", json!({}), Admin, Global),
        route("PATCH", "/api/v1/policies/deploy/data", json!({"set": {}}), Admin, Global),
        route("POST", "/api/v1/policies/deploy/test", json!({"input": {}}), Deployer, Global),
        route("GET", "/api/v1/secrets", Value::Null, Admin, Global),
        route("PUT", "/api/v1/secrets/old-style", json!({"value": "x"}), Deployer, Global),
        route("GET", "/api/v1/projects/own/secrets", Value::Null, Deployer, Own),
        route("GET", "/api/v1/projects/other/secrets", Value::Null, Deployer, Other),
        route("PUT", "/api/v1/projects/own/secrets/api-key", json!({"value": "v"}), Deployer, Own),
        route("PUT", "/api/v1/projects/other/secrets/api-key", json!({"value": "v"}), Deployer, Other),
        route("DELETE", "/api/v1/projects/other/secrets/api-key", Value::Null, Deployer, Other),
        route("GET", "/api/v1/audit", Value::Null, Viewer, Global),
        route("GET", "/api/v1/events/dead", Value::Null, Viewer, Global),
        route("POST", "/api/v1/events/dead/redrive", json!({}), Admin, Global),
        route("GET", "/api/v1/tokens", Value::Null, Admin, Global),
        route("POST", "/api/v1/tokens", json!({"name": "made-by-{who}", "role": "viewer"}), Admin, Global),
        route("DELETE", "/api/v1/tokens/no-such-token", Value::Null, Admin, Global),
        route("GET", "/api/v1/whoami", Value::Null, Viewer, Global),
        route("POST", "/api/v1/validate", Value::Null, Viewer, Global),
        // Routers and admins only: not viewers, whatever they may read.
        route("GET", "/api/v1/routes", Value::Null, Router, Global),
        route("POST", "/api/v1/routers/report", json!({}), Router, Global),
        route("GET", "/api/v1/routers", Value::Null, Viewer, Global),
    ];
    let callers: Vec<(&str, &Client, Option<Need>, bool)> = vec![
        ("anonymous", &anonymous, None, false),
        ("viewer", &viewer, Some(Viewer), false),
        ("deployer", &deployer, Some(Deployer), false),
        ("admin", &admin, Some(Admin), false),
        ("limited deployer", &limited, Some(Deployer), true),
        ("router", &router, Some(Router), false),
    ];
    let mut failures = vec![];
    for r in &routes {
        for (who, client, role, limited_to_own) in &callers {
            let body = match &r.body {
                Value::Null => vec![],
                b => b.to_string().replace("{who}", &who.replace(' ', "-")).into_bytes(),
            };
            let a = client.request(r.method, &r.path, body, &[("content-type", "application/json")]).await;
            let expected = match role {
                None => "401",
                Some(role) if r.need == Router => {
                    if [Router, Admin].contains(role) {
                        "through"
                    } else {
                        "403"
                    }
                }
                Some(role) if *role < r.need => "403",
                Some(_) if *limited_to_own && r.scope == Other => "404",
                Some(_) if *limited_to_own && r.scope == Global && r.need == Admin => "403",
                Some(_) => "through",
            };
            let ok = match expected {
                "through" => ![401, 403].contains(&a.status),
                code => a.status.to_string() == code,
            };
            if !ok {
                failures.push(format!(
                    "{} {} as {who}: expected {expected}, got {} {}",
                    r.method, r.path, a.status, a.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        routes.len() * callers.len(),
        failures.join("\n")
    );

    // The event streams (not in the table: an allowed one never ends).
    let status_of = |client_token: &'static str, path: String| {
        let base = p.url.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .bearer_auth(client_token)
                .send()
                .await
                .expect("request");
            resp.status().as_u16()
        }
    };
    let limited_token: &'static str = Box::leak(limited_token_text.into_boxed_str());
    assert_eq!(status_of("", d(&own_dep, "/events")).await, 401);
    assert_eq!(status_of(limited_token, d(&other_dep, "/events")).await, 404);
    assert_eq!(status_of(limited_token, d(&own_dep, "/events")).await, 200);
    let router_token: &'static str = Box::leak(router.token().to_string().into_boxed_str());
    assert_eq!(status_of(router_token, d(&own_dep, "/events")).await, 403);
    assert_eq!(status_of(router_token, "/api/v1/events".into()).await, 403);
    assert_eq!(status_of(router_token, "/metrics".into()).await, 403, "a router token reads no metrics");
    assert_eq!(status_of(router_token, "/api/v1/routes/stream".into()).await, 200);
    let viewer_token: &'static str = Box::leak(viewer.token().to_string().into_boxed_str());
    assert_eq!(status_of(viewer_token, "/api/v1/routes/stream".into()).await, 403);
    // A router serves every app: it cannot be limited to one.
    let a = admin.post("/api/v1/tokens", json!({"name": "t-router-own", "role": "router", "project": "own"})).await;
    assert_eq!(a.status, 422, "{:?}", a.body);
    assert!(a.body.to_string().contains("router token cannot be limited"), "{:?}", a.body);

    // Lists a limited token reads hold only its project.
    let projects = limited.get("/api/v1/projects").await.body;
    let names: Vec<&str> = projects.as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["own"]);
    let deployments = limited.get("/api/v1/deployments").await.body;
    assert!(deployments.as_array().expect("list").iter().all(|d| d["project"] == "own"), "{deployments}");
    let audit = limited.get("/api/v1/audit").await.body;
    assert!(!audit.to_string().contains(&other_dep), "the audit showed another project: {audit}");
}
