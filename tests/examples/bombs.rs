//! The platform under three parallel upload bombs (bench/bombs.sh runs it):
//! a `.tar.gz` of ~1.5 MiB that unpacks to 1.6 GiB, uploaded three times at
//! once to the real `bifrost up` (BIFROST_BIN), while a client asks
//! `/healthz` as fast as it answers. Reports the platform's RSS (sampled
//! every 5 ms from /proc) against its idle baseline, and /healthz latency
//! percentiles during the bombs. Goals: RSS +≤ 64 MiB, /healthz p99 ≤ 50 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bifrost_e2e::Platform;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bomb() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    let zeros = vec![0u8; 8 << 20];
    for i in 0..200 {
        let mut h = tar::Header::new_gnu();
        h.set_size(zeros.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("zeros/{i}"), zeros.as_slice()).expect("append");
    }
    b.into_inner().and_then(|g| g.finish()).expect("bomb")
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bomb = bomb();
    let p = Platform::start_with(&[("BIFROST_LOG", "warn")]);
    assert_eq!(p.cli(&["projects", "add", "bomb"]).code, 0);
    let pid = p.pid();
    let c = p.client();
    // Warm up the paths the bombs and probes take, then the idle baseline.
    for _ in 0..50 {
        c.get("/healthz").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_kib(pid);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    let started = Instant::now();
    let uploads: Vec<_> = (0..3)
        .map(|_| {
            let (c, body) = (p.client(), bomb.clone());
            tokio::spawn(async move {
                c.request("POST", "/api/v1/projects/bomb/deployments", body, &[("content-type", "application/gzip")])
                    .await
            })
        })
        .collect();
    let mut latencies = vec![];
    while uploads.iter().any(|u| !u.is_finished()) {
        let t = Instant::now();
        assert_eq!(c.get("/healthz").await.status, 200);
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed();
    let mut refused = 0;
    for u in uploads {
        let a = u.await.expect("upload");
        if a.status == 422 {
            refused += 1;
        } else {
            eprintln!("unexpected answer: {} {:?}", a.status, a.body);
        }
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    latencies.sort_by(f64::total_cmp);
    println!(
        "3 parallel bombs ({} KiB each, 1.6 GiB unpacked): {refused}/3 refused in {:.2} s",
        bomb.len() / 1024,
        elapsed.as_secs_f64()
    );
    println!(
        "platform RSS: idle {:.1} MiB, peak {:.1} MiB, +{:.1} MiB",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(baseline) as f64 / 1024.0
    );
    println!(
        "/healthz during the bombs: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
}
