//! The rolling safety net: a deployment that goes live and then fails
//! within its `[rollout] bake` — its process exits, or it keeps running
//! but fails its health checks — is rolled back by itself to the previous
//! healthy one (a rollback deployment, as `bifrost rollback` makes).

use std::time::{Duration, Instant};

use bifrost_e2e::{Platform, python_app};

/// Waits until neither `v1` nor `v2` is live (a rollback deployment is),
/// and returns that deployment.
async fn rolled_back(p: &Platform, app: &str, v1: &str, v2: &str) -> serde_json::Value {
    let c = p.client();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let project = c.get(&format!("/api/v1/projects/{app}")).await.body;
        let live = project["live_deployment_id"].as_str().unwrap_or_default().to_string();
        if !live.is_empty() && live != v1 && live != v2 {
            return c.get(&format!("/api/v1/deployments/{live}")).await.body;
        }
        assert!(Instant::now() < deadline, "never rolled back: {project:#}\n{}", p.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_deployment_failing_within_its_bake_is_rolled_back_to_the_previous_healthy_one() {
    let p = Platform::start();
    let repo = python_app("baked", "");
    p.add_project("baked", &repo);
    let v1 = p.push(&repo, "b-1").await;
    p.healthy(&v1).await;
    // v2: healthy until /crash, then crashes on every start.
    let flaky = python_app(
        "baked",
        r#"marker = os.path.join(os.environ["HOME"], "v2-started-once")
if os.path.exists(marker):
    print("crashing on start", flush=True)
    sys.exit(3)
open(marker, "w").close()"#,
    );
    let app = std::fs::read_to_string(flaky.path().join("app.py")).expect("app.py");
    repo.commit(&[("app.py", &app)], "v2: flaky");
    let v2 = p.push(&repo, "b-2").await;
    p.healthy(&v2).await;
    let c = p.client();
    let _ = c.app_get("baked", "/crash").await;
    let rollback = rolled_back(&p, "baked", &v1, &v2).await;
    assert_eq!(rollback["rollback_of"], v1.as_str(), "{rollback:#}");
    assert_eq!(rollback["created_by"], "system:bake", "{rollback:#}");
    let first = &rollback["history"][0];
    assert_eq!(first["reason"], format!("rollback to {v1}"), "{rollback:#}");
    let failed = c.get(&format!("/api/v1/deployments/{v2}")).await.body;
    assert_eq!(failed["status"], "superseded", "{failed:#}");
    let logs = c.get(&format!("/api/v1/deployments/{v2}/logs")).await.body.to_string();
    assert!(logs.contains("failed within its bake") && logs.contains(&format!("rolling back to {v1}")), "{logs}");
    let (status, _, body) = c.app_get("baked", "/").await.expect("answers");
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn a_live_deployment_failing_its_health_checks_within_its_bake_is_rolled_back() {
    let p = Platform::start();
    let repo = python_app("sickly", "");
    p.add_project("sickly", &repo);
    let v1 = p.push(&repo, "s-1").await;
    p.healthy(&v1).await;
    // v2: its process keeps running, but after /sick it answers 500 to
    // everything, its health path included.
    let app = r#"import os, http.server
PORT = int(os.environ["PORT"])
sick = False
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global sick
        sick = sick or self.path == "/sick"
        self.send_response(500 if sick else 200); self.end_headers(); self.wfile.write(b"v2")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", PORT), H).serve_forever()
"#;
    repo.commit(&[("app.py", app)], "v2: falls ill");
    let v2 = p.push(&repo, "s-2").await;
    p.healthy(&v2).await;
    let c = p.client();
    let _ = c.app_get("sickly", "/sick").await;
    let rollback = rolled_back(&p, "sickly", &v1, &v2).await;
    assert_eq!(
        (rollback["rollback_of"].as_str(), rollback["created_by"].as_str()),
        (Some(v1.as_str()), Some("system:bake"))
    );
    let logs = c.get(&format!("/api/v1/deployments/{v2}/logs")).await.body.to_string();
    assert!(
        logs.contains("failed within its bake: replica 0 restarted after failing its health checks"),
        "the reason names the failed health checks: {logs}"
    );
    let (status, _, body) = c.app_get("sickly", "/").await.expect("answers");
    assert_eq!((status, body.as_str()), (200, "ok"), "v1 answers again");
}
