//! The rolling safety net: a deployment that goes live and then fails
//! within its `[rollout] bake` is rolled back by itself to the previous
//! healthy one (a rollback deployment, as `bifrost rollback` makes).

use std::time::{Duration, Instant};

use bifrost_e2e::{Platform, python_app};

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
    let deadline = Instant::now() + Duration::from_secs(120);
    let project = loop {
        let project = c.get("/api/v1/projects/baked").await.body;
        let live = project["live_deployment_id"].as_str().unwrap_or_default().to_string();
        if live != v1 && live != v2 {
            break project;
        }
        assert!(Instant::now() < deadline, "never rolled back: {project:#}\n{}", p.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let rollback =
        c.get(&format!("/api/v1/deployments/{}", project["live_deployment_id"].as_str().expect("live"))).await.body;
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
