//! Policy decision latency with the shipped policies (issue goal: p99 ≤ 100 µs).
//! The peer in the same run: compiling the policy for every decision, which
//! is what the engine cache saves.

use bifrost_policy::{Evaluator, Gate};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn decisions(c: &mut Criterion) {
    let ev = Evaluator::new();
    let deploy_input = json!({
        "action": "deploy", "app": "web", "deployment": "d01", "actor": "user:alice",
        "host": {"disk_free_gb": 40.5, "cpu_load": 0.4, "memory_available_mb": 8192},
    });
    let promote_input = json!({
        "action": "promote", "app": "web", "step": 1, "weight": 10, "overrides": {"max_p99_ms": 800},
        "canary": {"requests": 1200, "errors": 3, "error_rate": 0.0025, "p50_ms": 4.0, "p99_ms": 35.0},
        "stable": {"requests": 10800, "errors": 20, "error_rate": 0.0019, "p50_ms": 4.0, "p99_ms": 31.0},
    });
    let mut g = c.benchmark_group("policy");
    for (gate, input) in [(Gate::Deploy, &deploy_input), (Gate::Promote, &promote_input)] {
        let (rego, data) = gate.shipped();
        g.bench_function(format!("{gate}/cached engine"), |b| b.iter(|| ev.decide(gate, rego, &data, input.clone())));
        g.bench_function(format!("{gate}/compile each time (peer)"), |b| {
            b.iter(|| Evaluator::new().decide(gate, rego, &data, input.clone()))
        });
        // The goal is on the p99, which criterion does not report: timed
        // one decision at a time.
        let mut times: Vec<f64> = (0..20_000)
            .map(|_| {
                let t = std::time::Instant::now();
                std::hint::black_box(ev.decide(gate, rego, &data, input.clone()));
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "policy/{gate}/cached engine: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (20,000 decisions)",
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
