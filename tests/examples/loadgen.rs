//! A small closed-loop load generator for the benchmarks (loopback only; it
//! stops by itself after `--seconds`).
//!
//!   loadgen get URL [CONCURRENCY] [SECONDS]
//!   loadgen webhook URL SECRET REPO COMMIT [CONCURRENCY] [SECONDS]
//!
//! Prints one JSON line: requests, errors, rps, p50/p90/p99/max in ms.
//! Every webhook carries a new X-GitHub-Delivery, so each one is a new
//! deployment (not a dedupe hit).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let url = args.get(2).cloned().expect("URL");
    let (body, secret, rest) = match mode.as_str() {
        "get" => (None, String::new(), 3),
        "webhook" => {
            let secret = args.get(3).cloned().expect("SECRET");
            let repo = args.get(4).cloned().expect("REPO");
            let commit = args.get(5).cloned().expect("COMMIT");
            let payload = serde_json::json!({
                "ref": "refs/heads/main", "after": commit, "deleted": false,
                "repository": {"full_name": "bench/app", "clone_url": repo},
                "sender": {"login": "bench"}
            });
            (Some(serde_json::to_vec(&payload).expect("json")), secret, 6)
        }
        _ => {
            eprintln!("usage: loadgen get URL [C] [S] | loadgen webhook URL SECRET REPO COMMIT [C] [S]");
            std::process::exit(2);
        }
    };
    let concurrency: usize = args.get(rest).and_then(|a| a.parse().ok()).unwrap_or(16);
    let seconds: u64 = args.get(rest + 1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let signature = body.as_ref().map(|b| bifrost_core::auth::sign_github(secret.as_bytes(), b));

    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (client, url, body, signature) = (client.clone(), url.clone(), body.clone(), signature.clone());
        let (counter, errors) = (counter.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let t = Instant::now();
                let rb = match (&body, &signature) {
                    (Some(b), Some(sig)) => client
                        .post(&url)
                        .header("x-github-event", "push")
                        .header("x-github-delivery", format!("bench-{}", counter.fetch_add(1, Ordering::Relaxed)))
                        .header("x-hub-signature-256", sig)
                        .header("content-type", "application/json")
                        .body(b.clone()),
                    _ => client.get(&url),
                };
                match rb.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len(), "errors": errors.load(Ordering::Relaxed),
            "rps": (all.len() as f64 / elapsed).round(),
            "p50_ms": (pct(0.50) * 100.0).round() / 100.0, "p90_ms": (pct(0.90) * 100.0).round() / 100.0,
            "p99_ms": (pct(0.99) * 100.0).round() / 100.0, "max_ms": (all.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0) * 100.0).round() / 100.0,
        })
    );
}
