//! Canary timing benchmark (bench/canary.sh runs it):
//!
//!   canary_timing [ROUNDS]
//!
//! Starts the real `bifrost up` (BIFROST_BIN), a python app live, and
//! traffic from 50 sticky clients (a request every 5 ms, each on its own
//! task). Each round pushes a canary with ten 1-second steps (10 … 100 %)
//! and measures, from the audit records:
//!
//!   window → step   each step's record minus (the previous step's record +
//!                   analysis_interval): reading the router's counts,
//!                   asking the promote policy, the compare-and-set write
//!   (+ the router re-reads splits every 200 ms)
//!
//! then puts chaos on the next canary and measures
//!
//!   deny → weight 0   the last answer the canary served minus the deny's
//!                     record: as the clients saw it, through the router.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_e2e::{AppClient, Platform, python_app};
use serde_json::Value;

fn at_ms(v: &Value) -> f64 {
    let t: chrono::DateTime<chrono::Utc> = v.as_str().expect("timestamp").parse().expect("RFC 3339");
    t.timestamp_micros() as f64 / 1000.0
}

fn now_ms() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const STEPS: &str = "[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]";

async fn wait_finished(p: &Platform, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = p.client().get(&format!("/api/v1/deployments/{id}")).await.body;
        if bifrost_e2e::finished(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{id} never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let p = Platform::start_with(&[("BIFROST_LOG", "warn")]);
    let repo = python_app("timed", "");
    p.add_project("timed", &repo);
    let v1 = p.push(&repo, "t-0").await;
    p.healthy(&v1).await;
    let toml = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("toml");

    // Every answer: (when, which deployment).
    let answers: Arc<Mutex<Vec<(f64, String)>>> = Arc::default();
    let client = Arc::new(AppClient::new(&p, "timed"));
    let a = answers.clone();
    let traffic = tokio::spawn(async move {
        for i in 0u64.. {
            let (client, a) = (client.clone(), a.clone());
            tokio::spawn(async move {
                let r = client.get("/", &[("cookie", &format!("bifrost_variant={:016x}", i % 50))]).await;
                let dep = r.headers().get("x-bifrost-deployment").and_then(|v| v.to_str().ok()).unwrap_or("-");
                a.lock().expect("lock").push((now_ms(), dep.to_string()));
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let mut step_ms = vec![];
    let mut deny_ms = vec![];
    for round in 0..rounds {
        // A healthy canary through ten steps.
        let canary = format!(
            "{toml}\n[rollout]\nstrategy = \"canary\"\nsteps = {STEPS}\nanalysis_interval = \"1s\"\nmin_requests = 5\n"
        );
        repo.commit(&[("deploy.toml", &canary), ("VERSION", &format!("{round}a"))], "canary");
        let id = p.push(&repo, &format!("t-{round}a")).await;
        let d = wait_finished(&p, &id).await;
        assert_eq!(d["status"], "healthy", "{d:#}");
        let audit = p.client().get("/api/v1/audit?limit=200").await.body;
        let steps: Vec<f64> = audit
            .as_array()
            .expect("audit")
            .iter()
            .rev()
            .filter(|r| r["reason"].as_str().is_some_and(|s| s.starts_with(&format!("canary {id}: step "))))
            .map(|r| at_ms(&r["at"]))
            .collect();
        let promoted =
            d["history"].as_array().and_then(|h| h.iter().find(|r| r["to"] == "healthy")).map(|r| at_ms(&r["at"]));
        let ends: Vec<f64> = steps.iter().copied().chain(promoted).collect();
        for w in ends.windows(2) {
            step_ms.push(w[1] - (w[0] + 1000.0));
        }

        // A canary answering errors: the deny, then weight 0 at the router.
        repo.commit(&[("deploy.toml", &canary), ("VERSION", &format!("{round}b"))], "bad canary");
        let bad = p.push(&repo, &format!("t-{round}b")).await;
        loop {
            let project = p.client().get("/api/v1/projects/timed").await.body;
            if project["rollout"]["deployment"] == bad.as_str() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = p.cli(&["chaos", "timed", "--deployment", &bad, "--error-rate", "0.9", "--for", "5m"]);
        assert_eq!(out.code, 0, "{out:?}");
        let d = wait_finished(&p, &bad).await;
        assert_eq!(d["status"], "failed", "{d:#}");
        let denied = d["history"].as_array().and_then(|h| h.last()).map(|r| at_ms(&r["at"])).expect("deny record");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let last_canary = answers
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, dep)| *dep == bad)
            .map(|(t, _)| *t)
            .fold(f64::MIN, f64::max);
        deny_ms.push((last_canary - denied).max(0.0));
        assert_eq!(p.cli(&["chaos", "timed", "--recover"]).code, 0);
        println!(
            "round {round}: window → step p50 {:.1} ms (9 steps); deny → last canary answer {:.1} ms",
            {
                let mut s = step_ms[step_ms.len() - 9.min(step_ms.len())..].to_vec();
                s.sort_by(f64::total_cmp);
                percentile(&s, 0.5)
            },
            deny_ms[round]
        );
    }
    traffic.abort();
    step_ms.sort_by(f64::total_cmp);
    deny_ms.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "rounds": rounds,
            "window_to_step_ms": {"n": step_ms.len(), "p50": percentile(&step_ms, 0.5), "p99": percentile(&step_ms, 0.99), "max": step_ms.last()},
            "deny_to_weight_0_ms": {"n": deny_ms.len(), "p50": percentile(&deny_ms, 0.5), "max": deny_ms.last()},
        })
    );
}
