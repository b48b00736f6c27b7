//! Health sidecars under the real `bifrost up`: one per replica, their
//! reports in the API (replicas, the health series, SSE), a hung app caught
//! by `failure_threshold` failed probes in a row, and a sidecar presenting
//! another replica's real token refused.

use std::time::{Duration, Instant};

use bifrost_e2e::{GitRepo, Platform, pids_with_env, sidecar_bin};
use serde_json::Value;

const SECRET: &str = "s3cret";

async fn healthy_hello(p: &Platform) -> String {
    let repo = GitRepo::from_example("hello-python");
    let out = p.cli(&["projects", "add", "hello-python", "--repo", &repo.path_str(), "--webhook-secret", SECRET]);
    assert_eq!(out.code, 0, "{out:?}");
    let a = p.client().webhook("push", "sc-1", SECRET, &repo.push_payload("refs/heads/main", &repo.head())).await;
    let id = a.body["deployment"]["id"].as_str().expect("id").to_string();
    let d = p
        .client()
        .wait_deployment(&id, "healthy", |d| matches!(d["status"].as_str(), Some("healthy" | "failed")))
        .await;
    assert_eq!(d["status"], "healthy", "{d:#}");
    id
}

/// The token `bifrost up` derives for a replica (from the data dir's key).
fn replica_token(p: &Platform, deployment: &str, replica: u32) -> String {
    let hexed = std::fs::read_to_string(p.data_dir.join("ingest.key")).expect("ingest.key");
    let key = hexed
        .trim()
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 16).unwrap_or(0))
        .collect::<Vec<u8>>();
    bifrost_core::auth::sidecar_token(&key, deployment, replica)
}

#[tokio::test]
async fn sidecar_reports_reach_the_api_and_a_hung_app_is_caught() {
    let p = Platform::start();
    assert!(sidecar_bin().exists(), "the e2e tests run with the sidecar built");
    let id = healthy_hello(&p).await;
    let c = p.client();
    // hello-python: interval 1s, failure_threshold 3, 2 replicas.
    // One sidecar per replica, each carrying its own token.
    let sidecars = pids_with_env("BIFROST_SIDECAR_TOKEN", &replica_token(&p, &id, 0));
    assert_eq!(sidecars.len(), 1, "replica 0's sidecar");

    // The replicas carry the sidecar's view of their processes.
    let start = Instant::now();
    let replicas = loop {
        let r = c.get(&format!("/api/v1/deployments/{id}/replicas")).await.body;
        if r.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["rss_bytes"].as_u64().unwrap_or(0) > 0)) {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no sidecar numbers: {r:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for r in replicas.as_array().expect("replicas") {
        assert!(r["threads"].as_u64().unwrap_or(0) >= 1 && r["open_fds"].as_u64().unwrap_or(0) >= 3, "{r:#}");
        assert!(r["last_probe"].as_str().is_some_and(|s| s.starts_with("HTTP 200")), "{r:#}");
    }
    // The series is stored, per replica.
    let series = c.get(&format!("/api/v1/deployments/{id}/health")).await.body;
    let samples = series.as_array().expect("series");
    for replica in [0, 1] {
        let mine: Vec<&Value> = samples.iter().filter(|s| s["replica"] == replica).collect();
        assert!(!mine.is_empty(), "no samples of replica {replica}: {series:#}");
        assert!(mine.iter().any(|s| s["probe_ok"] == 1.0 && s["latency_ms"].as_f64().is_some()), "{mine:?}");
    }
    // And streamed live.
    let path = format!("/api/v1/deployments/{id}/events");
    let events = c.sse_all(&path, None, |_, event, _| event == "health");
    let events = tokio::time::timeout(Duration::from_secs(10), events).await.expect("a health event within 10 s");
    let (id_field, _, data) = events.iter().find(|(_, e, _)| e == "health").expect("health event").clone();
    assert!(id_field.is_none(), "health events are live-only, without an id");
    assert_eq!(data["deployment_id"], id.as_str());

    // Hang replica 0 (SIGSTOP: the process lives, the port accepts, nothing answers).
    let pid = replicas[0]["pid"].as_u64().expect("pid") as i32;
    let stopped = Instant::now();
    let status = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    let caught = loop {
        let r = c.get(&format!("/api/v1/deployments/{id}/replicas")).await.body;
        let rep0 = r.as_array().and_then(|a| a.iter().find(|x| x["index"] == 0)).cloned().unwrap_or(Value::Null);
        if rep0["healthy"] == false || rep0["restarts"].as_u64().unwrap_or(0) > 0 {
            break rep0;
        }
        // Only a guard against waiting forever; how fast it is caught is
        // measured in BENCHMARKS.md, not asserted here.
        assert!(stopped.elapsed() < Duration::from_secs(120), "a hung replica was never caught: {r:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status();
    eprintln!("hung replica caught after {:?}", stopped.elapsed());
    // The order of events: the sidecar's probes failed failure_threshold (3)
    // times in a row, then the replica was unhealthy, and any restart came
    // because of that.
    assert_eq!(caught["healthy"], false, "marked unhealthy: {caught:#}");
    assert!(caught["consecutive_failures"].as_u64().unwrap_or(0) >= 3, "3 failed probes in a row: {caught:#}");
    if caught["restarts"] != 0 {
        let exit = caught["last_exit"].as_str().unwrap_or("");
        assert!(exit.contains("after failing its health checks"), "restarted for its health: {caught:#}");
    }
    let probe = caught["last_probe"].as_str().unwrap_or("");
    assert!(probe.contains("no HTTP answer"), "{probe}");
}

/// Runs a sidecar reporting as `replica` of `deployment` with `token` for
/// a while, and returns what it printed.
async fn sidecar_stderr(p: &Platform, deployment: &str, replica: u32, token: &str) -> String {
    let child = tokio::process::Command::new(sidecar_bin())
        .args(["--target", "127.0.0.1:9", "--interval", "200ms", "--endpoint", &p.ingest_url])
        .args(["--deployment", deployment, "--replica", &replica.to_string(), "--token", token])
        .kill_on_drop(true)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sidecar");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().expect("pid");
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let o = child.wait_with_output().await.expect("wait");
    assert!(o.status.success(), "SIGTERM is a clean exit: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_sidecar_with_another_replicas_token_is_refused() {
    let p = Platform::start();
    let id = healthy_hello(&p).await;
    // Replica 1's real token, exactly what its own sidecar carries.
    let theirs = replica_token(&p, &id, 1);
    assert_eq!(pids_with_env("BIFROST_SIDECAR_TOKEN", &theirs).len(), 1, "replica 1's sidecar carries this token");
    // It is good for replica 1 ...
    let own = sidecar_stderr(&p, &id, 1, &theirs).await;
    assert!(own.contains("connected to") && !own.contains("unauthenticated"), "{own}");
    // ... and refused when it claims to be replica 0.
    let stolen = sidecar_stderr(&p, &id, 0, &theirs).await;
    assert!(stolen.contains("unauthenticated"), "{stolen}");
    assert!(!stolen.contains("connected to"), "{stolen}");
}
