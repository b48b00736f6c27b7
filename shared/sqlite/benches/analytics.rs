//! One analytics run over the embedded store (issue "Scheduled
//! analytics"): 100 apps × 30 days of per-minute history (a sidecar
//! bucket and a traffic minute per app per minute, 8.6 million rows), one
//! run over the whole 30 days (goal ≤ 5 s, ≤ 200 MiB) and one 5-minute
//! window over the 100 apps (goal ≤ 100 ms), both as the schedule's next
//! window (each app's points kept from the window before) and with every
//! app's 7-day lookback read — each app's history read from SQLite, its
//! cost and anomalies computed, as many apps at once as there are cores;
//! no result kept, so every iteration does the work.
//! The peer in the same run: one app's 30 days judged with a baseline
//! recomputed for every point (`anomaly::detect`) instead of once an hour.

use std::sync::Arc;

use bifrost_core::analytics::anomaly::{self, Point, Settings};
use bifrost_core::analytics::cost::Prices;
use bifrost_core::analytics::run::{self as analysis, REFRESH};
use bifrost_core::analytics::window::{Window, align_down};
use bifrost_core::domain::{Project, now};
use bifrost_core::events::Subscription;
use bifrost_core::ports::Store;
use bifrost_core::status::Status;
use bifrost_functions::analytics::{PointCache, analyse, history, in_parallel};
use bifrost_sqlite::SqliteStore;
use bifrost_testkit::history::{Minute, app_history, steady};
use chrono::Duration;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const APPS: usize = 100;
const DAYS: i64 = 30;

/// The peak resident set of this process so far (KiB).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What a run does for every project, without keeping the results (so
/// each iteration does the work): as many apps at once as there are cores.
/// `cache`: the points the schedule kept from the window before (a fresh
/// one: every app reads its whole lookback).
async fn analyse_all(
    store: &Arc<dyn Store>,
    projects: &[Project],
    window: Window,
    prices: &Prices,
    cache: Arc<PointCache>,
) -> usize {
    let (store, prices) = (store.clone(), prices.clone());
    let found = in_parallel(projects.to_vec(), move |p| {
        let (store, prices, cache) = (store.clone(), prices.clone(), cache.clone());
        async move { Ok(analyse(&*store, &p, window, &prices, &cache).await?.2.len()) }
    })
    .await;
    found.into_iter().map(|r| r.expect("analysed")).sum()
}

fn runs(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("bifrost.db"), vec![Subscription::new("validate", Status::Queued)])
            .expect("opens"),
    );
    let end = align_down(now(), Duration::hours(1));
    let start = end - Duration::days(DAYS);
    let minutes = DAYS * 1440;
    let t = std::time::Instant::now();
    let projects: Vec<Project> = rt.block_on(async {
        let mut out = vec![];
        for i in 0..APPS {
            // Each app a little different; one spike a day in every tenth.
            let p = app_history(&*store, &format!("app-{i:03}"), start, minutes, |m| {
                let s = steady(m + i as i64);
                let spike = i % 10 == 0 && m % 1440 == 700;
                Minute { requests: if spike { s.requests * 20 } else { s.requests }, ..s }
            })
            .await
            .expect("history");
            out.push(p);
        }
        out
    });
    println!(
        "analytics: wrote {APPS} apps × {DAYS} days ({} rows) in {:.0} s; peak RSS {} MiB",
        APPS as i64 * minutes * 2,
        t.elapsed().as_secs_f64(),
        peak_rss_kib() / 1024
    );
    let prices = Prices::default();
    let month = Window { start, end };
    let five = Window { start: end - Duration::minutes(5), end };

    // Memory of one whole run, measured apart from criterion's loop.
    let before = peak_rss_kib();
    let t = std::time::Instant::now();
    let found = rt.block_on(analyse_all(&store, &projects, month, &prices, Arc::default()));
    println!(
        "analytics: one 30-day run over {APPS} apps: {:.2} s, {found} anomalies; peak RSS {} MiB (before the run {} MiB)",
        t.elapsed().as_secs_f64(),
        peak_rss_kib() / 1024,
        before / 1024
    );

    let mut g = c.benchmark_group("analytics");
    g.sample_size(10);
    g.bench_function(format!("30-day run, {APPS} apps"), |b| {
        b.iter(|| rt.block_on(analyse_all(&store, &projects, month, &prices, Arc::default())))
    });
    g.bench_function("5-minute window, one app, lookback read", |b| {
        b.iter(|| rt.block_on(analyse_all(&store, &projects[..1], five, &prices, Arc::default())))
    });
    g.bench_function(format!("5-minute window, {APPS} apps, lookback read"), |b| {
        b.iter(|| rt.block_on(analyse_all(&store, &projects, five, &prices, Arc::default())))
    });
    // The schedule's next window: the run before kept each app's points.
    let before = Window { start: five.start - Duration::minutes(5), end: five.start };
    let warm = Arc::new(PointCache::default());
    rt.block_on(analyse_all(&store, &projects, before, &prices, warm.clone()));
    g.bench_function(format!("5-minute window, {APPS} apps, the schedule's next (points kept)"), |b| {
        b.iter_batched(
            || Arc::new((*warm).clone()),
            |cache| rt.block_on(analyse_all(&store, &projects, five, &prices, cache)),
            BatchSize::PerIteration,
        )
    });
    // The detector alone on one app's 5-minute request-rate points over 30
    // days: the hourly baseline, and the peer's baseline per point.
    let h = rt.block_on(history(&*store, &projects[0], month.start, month.end)).expect("reads");
    let mut by_point: std::collections::BTreeMap<i64, u64> = Default::default();
    for t in &h.traffic {
        *by_point.entry(align_down(t.minute, analysis::POINT).timestamp()).or_default() += t.requests;
    }
    let points: Vec<Point> = by_point
        .iter()
        .filter_map(|(s, r)| Some(Point { at: chrono::DateTime::from_timestamp(*s, 0)?, value: *r as f64 / 300.0 }))
        .collect();
    let settings = Settings::with_floor(1.0);
    g.bench_function("one series, 30 days: hourly baseline", |b| {
        b.iter(|| anomaly::detect_rolling(&points, start, end, &settings, REFRESH))
    });
    g.bench_function("one series, 30 days: baseline per point (peer)", |b| {
        b.iter(|| anomaly::detect(&points, start, end, &settings))
    });
    g.finish();
}

criterion_group!(benches, runs);
criterion_main!(benches);
