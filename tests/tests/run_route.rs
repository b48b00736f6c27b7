//! Build, run, route — end to end: pushes become healthy apps answering at
//! their own URL; broken builds and unhealthy apps fail with reasons; a new
//! push replaces the live app with no failed request; a crash mid-build
//! leaves nothing stuck and no orphans; rollback brings an old build back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bifrost_e2e::{GitRepo, Platform, alive, finished, pids_with_env};
use serde_json::Value;

fn add_project(p: &Platform, name: &str, repo: &GitRepo) {
    p.add_project(name, repo)
}

async fn push(p: &Platform, repo: &GitRepo, delivery: &str) -> String {
    p.push(repo, delivery).await
}

fn replica_pids(replicas: &Value) -> Vec<u32> {
    replicas
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["pid"].as_u64().map(|p| p as u32)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_push_becomes_a_healthy_app_on_two_replicas() {
    let p = Platform::start();
    let repo = GitRepo::from_example("hello-python");
    add_project(&p, "hello-python", &repo);
    let id = push(&p, &repo, "a-1").await;
    let c = p.client();
    let d = c.wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "healthy", "{d:#}\nlog:\n{}", p.log_text());
    let statuses: Vec<&str> = d["history"].as_array().expect("h").iter().filter_map(|h| h["to"].as_str()).collect();
    assert_eq!(statuses, ["queued", "validating", "building", "built", "deploying", "running", "healthy"]);

    let replicas = c.get(&format!("/api/v1/deployments/{id}/replicas")).await.body;
    assert_eq!(replicas.as_array().map(Vec::len), Some(2), "min_replicas = 2: {replicas:#}");
    // Round robin over both replicas, through Host: hello-python.localhost.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, deployment, body) = c.app_get("hello-python", "/").await.expect("request");
        assert_eq!(status, 200, "{body}");
        assert_eq!(deployment.as_deref(), Some(id.as_str()));
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["message"], "Hello from Bifrost");
        seen.insert(v["replica"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["0", "1"]);
    // The URL the CLI gives; nothing of the app on the dashboard's own host.
    let fallback = c.get("/apps/hello-python/healthz").await;
    assert_ne!(fallback.body["status"], "ok", "an app answered on the dashboard's origin: {:?}", fallback.body);
    let open = p.cli(&["open", "hello-python", "--print"]);
    assert!(open.stdout.trim().starts_with("http://hello-python.localhost:"), "{open:?}");
    // Unknown apps get a JSON 404, not the API.
    let (status, _, body) = c.app_get("nope", "/").await.expect("request");
    assert_eq!(status, 404);
    assert!(body.contains("no_such_app"), "{body}");
    // Replica output is in the logs.
    let logs = p.cli(&["logs", &id]);
    assert!(logs.stdout.contains("hello-python listening on 127.0.0.1:"), "{}", logs.stdout);
}

#[tokio::test]
async fn a_broken_build_fails_with_the_compiler_error_in_the_logs() {
    let p = Platform::start();
    let repo = GitRepo::from_example("hello-rust");
    repo.commit(&[("src/main.rs", "fn main() {\n    let port: u16 = \"not a number\";\n}\n")], "break");
    add_project(&p, "hello-rust", &repo);
    let id = push(&p, &repo, "b-1").await;
    let d = p.client().wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.contains("cargo build --release") && reason.contains("mismatched types"), "{reason}");
    let logs = p.cli(&["logs", &id]);
    assert_eq!(logs.code, 0);
    assert!(logs.stdout.contains("error[E0308]"), "compiler error line missing:\n{}", logs.stdout);
    assert!(logs.stdout.contains("src/main.rs:2"), "{}", logs.stdout);
    // Nothing runs for a failed build.
    let replicas = p.client().get(&format!("/api/v1/deployments/{id}/replicas")).await.body;
    assert_eq!(replicas, serde_json::json!([]));
}

#[tokio::test]
async fn an_app_that_never_answers_its_health_path_fails_with_what_the_probe_saw() {
    let p = Platform::start();
    let repo = GitRepo::from_example("hello-python");
    let toml =
        std::fs::read_to_string(repo.path().join("deploy.toml")).expect("toml").replace("/healthz", "/nothing-here");
    repo.commit(&[("deploy.toml", &toml)], "bad health path");
    add_project(&p, "hello-python", &repo);
    let id = push(&p, &repo, "c-1").await;
    let d = p.client().wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.contains("GET /nothing-here") && reason.contains("404"), "{reason}");
    assert!(reason.contains("3 health check(s) in a row"), "failure_threshold is 3: {reason}");
    // Its replicas are stopped.
    let c = p.client();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if c.get(&format!("/api/v1/deployments/{id}/replicas")).await.body == serde_json::json!([]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("replicas of a failed deployment were not stopped");
}

#[tokio::test]
async fn a_new_push_replaces_the_live_app_without_a_failed_request() {
    let p = Platform::start();
    let repo = GitRepo::from_example("hello-python");
    add_project(&p, "hello-python", &repo);
    let c = p.client();
    let v1 = push(&p, &repo, "d-1").await;
    assert_eq!(c.wait_deployment(&v1, "finished", finished).await["status"], "healthy");
    let old = c.get(&format!("/api/v1/deployments/{v1}/replicas")).await.body;
    let old_pids = replica_pids(&old);
    assert_eq!(old_pids.len(), 2);

    // A client hammering the URL during the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::<String>::new()));
    let mut loops = vec![];
    for _ in 0..4 {
        let (stop, ok, bad, seen, c) = (stop.clone(), ok.clone(), bad.clone(), seen.clone(), p.client());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.app_get("hello-python", "/").await {
                    Ok((200, _, body)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if let Ok(v) = serde_json::from_str::<Value>(&body) {
                            seen.lock().expect("lock").insert(v["message"].as_str().unwrap_or("").to_string());
                        }
                    }
                    Ok((status, _, body)) => bad.lock().expect("lock").push(format!("{status}: {body}")),
                    Err(e) => bad.lock().expect("lock").push(e),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml"))
        .expect("toml")
        .replace("Hello from Bifrost", "Hello again");
    repo.commit(&[("deploy.toml", &toml)], "v2");
    let v2 = push(&p, &repo, "d-2").await;
    assert_eq!(c.wait_deployment(&v2, "finished", finished).await["status"], "healthy");
    // Keep hammering through the drain of the old replicas.
    let start = Instant::now();
    while old_pids.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("client loop");
    }
    let bad = bad.lock().expect("lock").clone();
    assert!(bad.is_empty(), "{} non-2xx answers during the switch, e.g. {:?}", bad.len(), &bad[..bad.len().min(3)]);
    assert!(ok.load(Ordering::Relaxed) > 50, "the client loop barely ran");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.contains("Hello from Bifrost") && seen.contains("Hello again"), "{seen:?}");
    assert!(old_pids.iter().all(|p| !alive(*p)), "the old replicas still run");
    let old = c.get(&format!("/api/v1/deployments/{v1}")).await.body;
    assert_eq!(old["status"], "superseded");
    let project = c.get("/api/v1/projects/hello-python").await.body;
    assert_eq!(project["live_deployment_id"], v2.as_str());
}

#[tokio::test]
async fn a_crash_during_a_build_leaves_nothing_stuck_and_no_orphans() {
    let mut p = Platform::start();
    let c = p.client();
    // A live app whose replicas the crash will orphan.
    let live = GitRepo::from_example("hello-python");
    add_project(&p, "hello-python", &live);
    let live_id = push(&p, &live, "e-1").await;
    assert_eq!(c.wait_deployment(&live_id, "finished", finished).await["status"], "healthy");
    let live_pids = replica_pids(&c.get(&format!("/api/v1/deployments/{live_id}/replicas")).await.body);
    assert_eq!(live_pids.len(), 2);

    // A build that hangs the first time (it records its pid in the
    // project's build cache, the one place outside its tree it may write),
    // and is quick after.
    let slow = GitRepo::new(&[
        (
            "deploy.toml",
            "[app]\nname = \"slow\"\nruntime = \"static\"\n\n[build]\ncommand = \"if [ ! -e $BIFROST_CACHE_DIR/ran-once ]; then touch $BIFROST_CACHE_DIR/ran-once; echo $$ > $BIFROST_CACHE_DIR/build.pid; sleep 600; fi\"\n",
        ),
        ("public/index.html", "slow but fine"),
    ]);
    add_project(&p, "slow", &slow);
    let slow_project = c.get("/api/v1/projects/slow").await.body["id"].as_str().expect("id").to_string();
    let pidfile = p.apps_dir().join(&slow_project).join("cache/build.pid");
    let slow_id = push(&p, &slow, "e-2").await;
    let start = Instant::now();
    while std::fs::read_to_string(&pidfile).map(|s| s.trim().is_empty()).unwrap_or(true) {
        assert!(start.elapsed() < Duration::from_secs(60), "the build never started; log:\n{}", p.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let build_pid: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid number");
    assert!(alive(build_pid));

    p.kill9();
    // The dead platform's builds and replicas end by themselves: their
    // supervisors notice the platform is gone.
    let start = Instant::now();
    while (alive(build_pid) || live_pids.iter().any(|p| alive(*p))) && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(build_pid), "the hung build survived the platform's death");
    assert!(live_pids.iter().all(|pid| !alive(*pid)), "old replicas survived the platform's death");
    p.restart(&[]);

    let c = p.client();
    // The interrupted build runs again and the deployment finishes.
    let d = c.wait_deployment(&slow_id, "finished", finished).await;
    assert_eq!(d["status"], "healthy", "{d:#}");
    let (status, _, body) = c.app_get("slow", "/").await.expect("request");
    assert_eq!((status, body.as_str()), (200, "slow but fine"));
    // The live app came back on new processes.
    let start = Instant::now();
    loop {
        if let Ok((200, _, _)) = c.app_get("hello-python", "/").await {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "hello-python did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_pids = replica_pids(&c.get(&format!("/api/v1/deployments/{live_id}/replicas")).await.body);
    assert_eq!(new_pids.len(), 2);
    assert!(new_pids.iter().all(|p| !live_pids.contains(p)));
    // Every process the platform owns now belongs to a running replica.
    let _ = pids_with_env;
}

#[tokio::test]
async fn rollback_makes_an_earlier_build_live_again() {
    let p = Platform::start();
    let repo = GitRepo::from_example("hello-python");
    add_project(&p, "hello-python", &repo);
    let c = p.client();
    let v1 = push(&p, &repo, "f-1").await;
    assert_eq!(c.wait_deployment(&v1, "finished", finished).await["status"], "healthy");
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml"))
        .expect("toml")
        .replace("Hello from Bifrost", "Version two");
    repo.commit(&[("deploy.toml", &toml)], "v2");
    let v2 = push(&p, &repo, "f-2").await;
    assert_eq!(c.wait_deployment(&v2, "finished", finished).await["status"], "healthy");
    assert!(c.app_get("hello-python", "/").await.expect("get").2.contains("Version two"));

    let out = p.cli(&["rollback", "hello-python", "--to", &v1, "--wait", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rolled = out.json();
    assert_eq!(rolled["status"], "healthy");
    assert_eq!(rolled["rollback_of"], v1.as_str());
    let reasons: Vec<&str> =
        rolled["history"].as_array().expect("h").iter().filter_map(|h| h["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains(&format!("reusing the build of {v1}"))), "{reasons:?}");
    let (_, deployment, body) = c.app_get("hello-python", "/").await.expect("get");
    assert!(body.contains("Hello from Bifrost"), "{body}");
    assert_eq!(deployment.as_deref(), rolled["id"].as_str());
    // Nothing earlier to go back to for a fresh project.
    let none = p.cli(&["rollback", "nope"]);
    assert_eq!(none.code, 6, "{none:?}");
}

#[tokio::test]
async fn cancelling_a_build_kills_its_whole_process_group() {
    let p = Platform::start();
    // The build starts a grandchild (a background sleep) and waits on it;
    // the pid goes to the project's build cache.
    let repo = GitRepo::new(&[
        (
            "deploy.toml",
            "[app]\nname = \"slow\"\nruntime = \"static\"\n\n[build]\ncommand = \"sleep 600 & echo $! > $BIFROST_CACHE_DIR/child.pid; wait\"\n",
        ),
        ("index.html", "x"),
    ]);
    add_project(&p, "slow", &repo);
    let project = p.client().get("/api/v1/projects/slow").await.body["id"].as_str().expect("id").to_string();
    let pidfile = p.apps_dir().join(project).join("cache/child.pid");
    let id = push(&p, &repo, "g-1").await;
    let start = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap_or_default().trim().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "build never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grandchild: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("number");
    assert!(alive(grandchild));
    let out = p.cli(&["cancel", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let start = Instant::now();
    while alive(grandchild) {
        assert!(start.elapsed() < Duration::from_secs(60), "the build's grandchild survived the cancel");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = p.cli(&["logs", &id]);
    assert!(logs.stdout.contains("build stopped"), "{}", logs.stdout);
    assert_eq!(p.client().get(&format!("/api/v1/deployments/{id}")).await.body["status"], "cancelled");
}

#[tokio::test]
async fn a_replica_that_keeps_crashing_fails_the_deployment_with_its_last_lines() {
    let p = Platform::start();
    let repo = GitRepo::new(&[
        ("deploy.toml", "[app]\nname = \"crashy\"\nruntime = \"python\"\n\n[run]\ncommand = \"python3 boom.py\"\n"),
        (
            "boom.py",
            "import sys\nprint('starting up', flush=True)\nsys.exit('config file /etc/crashy.conf is missing')\n",
        ),
    ]);
    add_project(&p, "crashy", &repo);
    let id = push(&p, &repo, "h-1").await;
    let d = p.client().wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.contains("exited with 1 before listening"), "{reason}");
    assert!(
        reason.contains("config file /etc/crashy.conf is missing"),
        "the app's last lines belong in the reason: {reason}"
    );
    let logs = p.cli(&["logs", &id]);
    assert!(logs.stdout.matches("starting up").count() >= 3, "it was restarted with backoff:\n{}", logs.stdout);
}

/// A replica the kernel kills at its memory limit says so: the
/// deployment's reason (its last lines) names the limit, not only a signal.
#[tokio::test]
async fn a_replica_killed_at_its_memory_limit_fails_the_deployment_saying_out_of_memory() {
    let p = Platform::start();
    let repo = GitRepo::new(&[
        (
            "deploy.toml",
            "[app]\nname = \"hungry\"\nruntime = \"python\"\n\n[run]\ncommand = \"python3 eat.py\"\n\n[resources]\nmemory = \"48Mi\"\n",
        ),
        ("eat.py", "print('eating', flush=True)\nheap = b'x' * (200 * 1024 * 1024)\n"),
    ]);
    add_project(&p, "hungry", &repo);
    let id = push(&p, &repo, "m-1").await;
    let d = p.client().wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.contains("killed by SIGKILL"), "{reason}");
    assert!(reason.contains("out of memory") && reason.contains("memory limit of 48 MiB"), "{reason}");
}

#[tokio::test]
async fn live_events_stream_status_and_logs_and_resume_without_gaps() {
    let p = Platform::start();
    let repo = GitRepo::from_example("hello-python");
    add_project(&p, "hello-python", &repo);
    let id = push(&p, &repo, "i-1").await;
    let c = p.client();
    let path = format!("/api/v1/deployments/{id}/events");
    let all = c.sse(&path, None, |v| v["status"] == "healthy").await;
    let statuses: Vec<&str> =
        all.iter().filter(|(_, e, _)| e == "status").filter_map(|(_, _, v)| v["status"].as_str()).collect();
    assert_eq!(statuses, ["queued", "validating", "building", "built", "deploying", "running", "healthy"]);
    assert!(all.iter().any(|(_, e, v)| e == "log" && v["stream"] == "build"), "no build log line");
    assert!(all.iter().any(|(_, e, v)| e == "log" && v["stream"] == "replica-1"), "no replica log line");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ids must increase");
    // Resume from the middle: exactly the rest, nothing twice.
    let middle = all[all.len() / 2].0;
    let last = all.last().expect("events").0;
    let rest = c.sse(&path, Some(middle), |v| v["seq"].as_u64() == Some(last)).await;
    let want: Vec<u64> = all.iter().map(|e| e.0).filter(|s| *s > middle).collect();
    let got: Vec<u64> = rest.iter().map(|e| e.0).collect();
    assert_eq!(got, want);

    // `bifrost logs -f` follows the same stream until stopped.
    let mut follow = std::process::Command::new(bifrost_e2e::bifrost_bin())
        .args(["logs", "-f", &id])
        .env("BIFROST_SERVER", &p.url)
        .env("BIFROST_TOKEN", bifrost_e2e::ADMIN_TOKEN)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A request now shows up in the replica's log stream, live.
    let _ = c.app_get("hello-python", "/").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = follow.kill();
    let out = follow.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("healthy"), "{text}");
    assert!(text.contains("\"GET / HTTP/1.1\" 200"), "the live request's log line is missing:\n{text}");
}

/// The threads of a process (`Threads:` in /proc/PID/status).
fn threads_of(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// A static site under 256 concurrent clients stays one process of a few
/// threads inside a 64 MiB limit, answering every request: its file server
/// once started a thread per waiting read (past 450 under load) until the
/// kernel killed the replica at its memory limit.
#[tokio::test]
async fn a_static_site_under_256_concurrent_clients_keeps_its_replica_and_a_few_threads() {
    let p = Platform::start();
    let repo = GitRepo::new(&[
        (
            "deploy.toml",
            "[app]\nname = \"busy\"\nruntime = \"static\"\n\n[health]\npath = \"/\"\ninterval = \"30s\"\n\n[resources]\ncpu = \"2\"\nmemory = \"64Mi\"\n",
        ),
        ("public/index.html", "hello under load\n"),
    ]);
    add_project(&p, "busy", &repo);
    let id = push(&p, &repo, "busy-1").await;
    let c = p.client();
    let d = c.wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "healthy", "{d:#}\nlog:\n{}", p.log_text());
    let replicas = c.get(&format!("/api/v1/deployments/{id}/replicas")).await.body;
    let addr = replicas[0]["address"].as_str().expect("address").to_string();
    let pid = replica_pids(&replicas)[0];

    // 256 clients, each on its own keep-alive connection, straight at the replica.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..256 {
        let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
        let (url, stop, answered, failed) = (format!("http://{addr}/"), stop.clone(), answered.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match http.get(&url).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok { &answered } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut most_threads = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        most_threads = most_threads.max(threads_of(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let (answered, failed) = (answered.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(answered >= 256, "only {answered} requests answered");
    assert_eq!(failed, 0, "{failed} requests failed ({answered} answered)\nlog:\n{}", p.log_text());
    assert!(alive(pid), "the replica (pid {pid}) is gone\nlog:\n{}", p.log_text());
    let after = c.get(&format!("/api/v1/deployments/{id}/replicas")).await.body;
    assert_eq!(after[0]["restarts"], 0, "{after:#}");
    assert!(
        most_threads > 0 && most_threads <= 32,
        "the replica ran {most_threads} threads ({answered} requests answered)"
    );
}
