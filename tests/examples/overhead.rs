//! Platform overhead benchmark (bench/overhead.sh runs it):
//!
//!   overhead [DEPLOYS]
//!
//! Starts the real `bifrost up` (BIFROST_BIN), registers a git repo of
//! examples/hello-python, and pushes DEPLOYS commits one after the other,
//! each as a signed webhook, waiting for healthy. For each deploy:
//!
//!   total     = healthy time − the moment the webhook was sent
//!   build     = the sum of the build steps' own durations (the builder logs
//!               "<step> took N s" for each)
//!   start     = the slowest replica's spawn → listening time (logged as
//!               "listening on port P after N ms")
//!   probes    = (success_threshold − 1) × interval: waiting the app's own
//!               [health] config asks for
//!   overhead  = total − build − start − probes
//!
//! Prints one line per deploy and a JSON summary with p50/p99.

use std::time::Duration;

use bifrost_e2e::{GitRepo, Platform};
use serde_json::Value;

const SECRET: &str = "bench-secret";

fn at_ms(v: &Value) -> f64 {
    let s = v.as_str().expect("timestamp");
    let t: chrono::DateTime<chrono::Utc> = s.parse().expect("RFC 3339");
    t.timestamp_micros() as f64 / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let p = Platform::start_with(&[("BIFROST_LOG", "warn")]);
    let repo = GitRepo::from_example("hello-python");
    let out = p.cli(&["projects", "add", "hello-python", "--repo", &repo.path_str(), "--webhook-secret", SECRET]);
    assert_eq!(out.code, 0, "projects add: {out:?}");
    let c = p.client();
    let config = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("deploy.toml");
    let parsed = bifrost_core::config::parse(&config).expect("valid example");
    let probes_ms = (parsed.health.success_threshold.saturating_sub(1)) as f64
        * parsed.health.interval.as_std().as_secs_f64()
        * 1000.0;

    let mut rows = vec![];
    let mut phases: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for i in 0..n {
        let sha = repo.commit(&[("VERSION", &format!("{i}\n"))], &format!("bench {i}"));
        let sent = chrono::Utc::now().timestamp_micros() as f64 / 1000.0;
        let push = c.webhook("push", &format!("bench-{i}"), SECRET, &repo.push_payload("refs/heads/main", &sha)).await;
        assert_eq!(push.status, 201, "{:?}", push.body);
        let id = push.body["deployment"]["id"].as_str().expect("id").to_string();
        let d = c.wait_deployment(&id, "healthy", |d| d["status"] == "healthy" || d["status"] == "failed").await;
        assert_eq!(d["status"], "healthy", "{d:#}");
        let healthy = d["history"]
            .as_array()
            .and_then(|h| h.iter().rev().find(|r| r["to"] == "healthy"))
            .map(|r| at_ms(&r["at"]))
            .expect("healthy record");
        let logs = c.get(&format!("/api/v1/deployments/{id}/logs")).await;
        let mut build = 0.0;
        let mut start: f64 = 0.0;
        for item in logs.body.as_array().into_iter().flatten() {
            let line = item["line"].as_str().unwrap_or("");
            let plain: String = bifrost_local::strip_ansi(line);
            if let Some(secs) = plain.trim().rsplit_once(" took ").and_then(|(_, s)| s.strip_suffix('s')) {
                build += secs.parse::<f64>().unwrap_or(0.0) * 1000.0;
            }
            if let Some(ms) = plain.split(" after ").nth(1).and_then(|s| s.strip_suffix(" ms")) {
                start = start.max(ms.parse().unwrap_or(0.0));
            }
        }
        // Where the rest went: time spent in each status, minus the app's share.
        let times: Vec<(String, f64)> = d["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["to"].as_str().unwrap_or("").to_string(), at_ms(&r["at"])))
            .collect();
        let mut prev = sent;
        for (status, t) in &times {
            let app_share = match status.as_str() {
                "built" => build,
                "running" => start,
                "healthy" => probes_ms,
                _ => 0.0,
            };
            phases.entry(status.clone()).or_default().push(t - prev - app_share);
            prev = *t;
        }
        let total = healthy - sent;
        let overhead = total - build - start - probes_ms;
        println!(
            "deploy {i:>2}: total {total:>7.1} ms  build {build:>7.1}  start {start:>6.1}  probes {probes_ms:>6.1}  overhead {overhead:>6.1} ms"
        );
        rows.push((total, overhead));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut overhead: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let mut total: Vec<f64> = rows.iter().map(|r| r.0).collect();
    overhead.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    let mut breakdown = serde_json::Map::new();
    for (status, mut v) in phases {
        v.sort_by(f64::total_cmp);
        breakdown.insert(format!("to_{status}"), serde_json::json!((percentile(&v, 0.5) * 10.0).round() / 10.0));
    }
    println!(
        "{}",
        serde_json::json!({
            "platform_ms_p50_by_step": breakdown,
            "deploys": n,
            "overhead_ms": {"p50": percentile(&overhead, 0.5), "p99": percentile(&overhead, 0.99), "max": overhead[n - 1]},
            "total_ms": {"p50": percentile(&total, 0.5), "p99": percentile(&total, 0.99)},
        })
    );
}
