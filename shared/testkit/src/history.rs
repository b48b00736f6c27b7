//! A deterministic history for analytics: apps whose replicas and traffic
//! report known values each minute, written straight into a [`Store`],
//! and the checks one analytics run over them must pass on every store
//! (SQLite in shared's tests, Firestore against the emulator).

use bifrost_core::analytics::cost::Prices;
use bifrost_core::analytics::run::TrafficMinute;
use bifrost_core::analytics::window::{Window, align_down};
use bifrost_core::domain::{
    Actor, ConfigSnapshot, HealthSample, NewDeployment, NewProject, Project, Source, Timestamp, now,
};
use bifrost_core::ports::{Patch, Store, Transition};
use bifrost_core::status::Status;
use bifrost_functions::analytics::{PointCache, RunSummary, analyse, analyse_project, catch_up};
use chrono::Duration;

/// What one replica reported and the routers counted in one minute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Minute {
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

const MIB: u64 = 1 << 20;

/// A steady app: 20 % of a core, 100 MiB, 10 requests/s with a little
/// noise (9.5–10.5 a second), 20 ms p99, no errors.
pub fn steady(m: i64) -> Minute {
    Minute {
        cpu_percent: 20.0,
        rss_bytes: 100 * MIB,
        requests: 570 + ((m * 7) % 5) as u64 * 15,
        errors: 0,
        p99_ms: 20.0,
    }
}

/// Writes project `name` with one live deployment asking for 500m CPU
/// and 512Mi, and `minutes` minutes of its history from `start`: a
/// sidecar report (a one-minute bucket) and a traffic minute each.
pub async fn app_history(
    store: &dyn Store,
    name: &str,
    start: Timestamp,
    minutes: i64,
    each: impl Fn(i64) -> Minute,
) -> Result<Project, String> {
    let e = |e: bifrost_core::error::StoreError| format!("{name}: {e}");
    store
        .create_project(NewProject { name: name.into(), repo: None, branch: "main".into(), webhook_secret: None })
        .await
        .map_err(e)?;
    let d = store
        .create_deployment(NewDeployment {
            project: name.into(),
            source: Source::Git {
                repo: "/tmp/repo".into(),
                git_ref: "main".into(),
                commit: "a".repeat(40),
                committed_at: None,
            },
            actor: Actor::token("history"),
            dedupe_key: None,
            rollback_of: None,
            artifact: None,
        })
        .await
        .map_err(e)?
        .deployment;
    let config = bifrost_core::config::parse(&format!(
        "[app]\nname = \"{name}\"\nruntime = \"python\"\n\n[resources]\ncpu = \"500m\"\nmemory = \"512Mi\"\n"
    ))
    .map_err(|errs| format!("{name}: {errs:?}"))?;
    let path = Status::PIPELINE;
    for (i, pair) in path[..6].windows(2).enumerate() {
        let mut t = Transition::new(&d.id, pair[0], pair[1], "history", Actor::function("history"));
        if i == 1 {
            let snapshot = ConfigSnapshot { source: String::new(), config: config.clone(), script: None };
            t = t.with_patch(Patch { config: Some(snapshot), ..Patch::default() });
        }
        store.transition(t).await.map_err(e)?;
    }
    let live = Transition::new(&d.id, Status::Running, Status::Healthy, "history", Actor::function("verify"))
        .with_patch(Patch { make_live: true, ..Patch::default() });
    store.transition(live).await.map_err(e)?;
    let project = store.get_project(name).await.map_err(e)?;
    let (mut health, mut traffic) = (vec![], vec![]);
    for m in 0..minutes {
        let v = each(m);
        let minute = start + Duration::minutes(m);
        health.push(HealthSample {
            deployment_id: d.id.clone(),
            replica: 0,
            at: minute + Duration::seconds(30),
            span_s: 60,
            probe_ok: 1.0,
            http_status: Some(200),
            latency_ms: Some(5.0),
            cpu_percent: Some(v.cpu_percent),
            rss_bytes: Some(v.rss_bytes),
            threads: Some(4),
            open_fds: Some(12),
            error: None,
        });
        traffic.push(TrafficMinute {
            deployment_id: d.id.clone(),
            project_id: project.id.clone(),
            minute,
            requests: v.requests,
            errors: v.errors,
            p99_ms: (v.requests > 0).then_some(v.p99_ms),
        });
    }
    store.record_health(health).await.map_err(e)?;
    store.record_traffic_minutes(traffic).await.map_err(e)?;
    Ok(project)
}

fn fail(msg: String) -> Result<(), String> {
    Err(msg)
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return fail(format!($($fmt)+));
        }
    };
}

/// One analytics run over a known history: the cost to the cent, the
/// injected spike found in its series only, steady and idle apps quiet,
/// the same window twice kept once, and a schedule that stops mid-way and
/// restarts catching up each missed window once, in order.
pub async fn analytics_run(store: &dyn Store, prefix: &str) -> Result<(), String> {
    // Four hours of history ending on the hour, a day ago.
    let t0 = align_down(now() - Duration::days(1), Duration::hours(1)) - Duration::hours(4);
    let minutes = 240;
    let steady_app = app_history(store, &format!("{prefix}steady"), t0, minutes, steady).await?;
    let spiky = app_history(store, &format!("{prefix}spiky"), t0, minutes, |m| {
        let s = steady(m);
        if m >= 235 { Minute { requests: s.requests * 10, ..s } } else { s }
    })
    .await?;
    let idle = app_history(store, &format!("{prefix}idle"), t0, minutes, |m| Minute {
        cpu_percent: 0.0,
        rss_bytes: 20 * MIB,
        requests: u64::from(m == 237),
        errors: 0,
        p99_ms: 3.0,
    })
    .await?;

    // Cost: 4 h × (0.5 core × $1 + 0.5 GiB × $0.5); 10 req/s × 4 h.
    let prices = Prices { currency: "EUR".into(), cpu_core_hour: 1.0, memory_gib_hour: 0.5 };
    let four_hours = Window { start: t0, end: t0 + Duration::minutes(minutes) };
    let (r, new) = analyse_project(store, &steady_app, four_hours, &prices, "run-cost", &PointCache::default()).await?;
    check!(new, "a first run keeps its result");
    check!((r.cost.total * 100.0).round() == 300.0, "cost {} (want 3.00)", r.cost.total);
    check!(r.cost.requests == 144_000 && r.currency == "EUR", "{} requests in {}", r.cost.requests, r.currency);
    let per_1000 = r.cost.per_1000_requests.unwrap_or(0.0);
    check!((per_1000 - 3.0 / 144.0).abs() < 1e-9, "per 1,000 requests {per_1000}");
    // Idle: the 0.3 core and 412 MiB asked for and not used.
    let idle_cost = 4.0 * (0.3 + 0.5 * (412.0 / 1024.0));
    check!((r.cost.idle - idle_cost).abs() < 1e-9, "idle {} (want {idle_cost})", r.cost.idle);
    check!(r.anomalies.is_empty(), "a steady app's anomalies: {:?}", r.anomalies);
    let (again, new) =
        analyse_project(store, &steady_app, four_hours, &prices, "run-again", &PointCache::default()).await?;
    // (Compared by run and value: JSON may move a float's last bit.)
    let same = again.run_id == r.run_id && (again.cost.total - r.cost.total).abs() < 1e-12;
    check!(!new && same, "the same window again keeps the first result (run {})", again.run_id);

    // The last five minutes: the spike, and only in the spiky app's request rate.
    let last = Window { start: t0 + Duration::minutes(235), end: t0 + Duration::minutes(240) };
    let (r, _) = analyse_project(store, &spiky, last, &prices, "run-spike", &PointCache::default()).await?;
    let found: Vec<(&str, f64)> = r.anomalies.iter().map(|a| (a.series.as_str(), a.value)).collect();
    check!(found.len() == 1 && found[0].0 == "requests_per_s", "spiky: {found:?}");
    check!((found[0].1 - 100.0).abs() < 1e-9, "the spike's rate {}", found[0].1);
    let baseline = r.anomalies[0].baseline;
    check!((9.5..=10.5).contains(&baseline), "baseline {baseline}");
    // The points a schedule keeps between its runs judge as reading the
    // store does: the spiky app's last half hour, window by window, both ways.
    let cache = PointCache::default();
    for k in 0..6 {
        let start = t0 + Duration::minutes(210 + 5 * k);
        let w = Window { start, end: start + Duration::minutes(5) };
        let (cost, _, kept) = analyse(store, &spiky, w, &prices, &cache).await?;
        let (fresh_cost, _, fresh) = analyse(store, &spiky, w, &prices, &PointCache::default()).await?;
        check!(cache.kept_until(&spiky.id) == Some(w.end), "the points are kept to {w}'s end");
        check!(kept == fresh, "{w}: with kept points {kept:?}, read afresh {fresh:?}");
        check!((cost.total - fresh_cost.total).abs() < 1e-12, "{w}: cost {} and {}", cost.total, fresh_cost.total);
        check!(k < 5 || kept.len() == 1, "the spike, found with kept points: {kept:?}");
    }
    for p in [&steady_app, &idle] {
        let (r, _) = analyse_project(store, p, last, &prices, "run-quiet", &PointCache::default()).await?;
        check!(r.anomalies.is_empty(), "{}: {:?}", p.name, r.anomalies);
    }

    // The schedule: first run, then a stop after two of the windows it
    // owes (a crash), then a restart.
    let every = Duration::minutes(5);
    let ran = std::sync::Mutex::new(Vec::<Window>::new());
    let cache = PointCache::default();
    let run = |fail_at: Option<usize>| {
        let (ran, cache) = (&ran, &cache);
        let spiky = &spiky;
        let prices = &prices;
        move |w: Window| async move {
            let n = ran.lock().map_err(|_| "lock")?.len();
            if fail_at == Some(n) {
                return Err(format!("killed before {w}"));
            }
            ran.lock().map_err(|_| "lock")?.push(w);
            analyse_project(store, spiky, w, prices, "run-schedule", cache).await?;
            Ok(RunSummary { window: w.to_string(), ..RunSummary::default() })
        }
    };
    let first = catch_up(store, t0 + Duration::minutes(62), every, run(None)).await?;
    check!(first.len() == 1, "a schedule's first run owes one window: {first:?}");
    let crashed = catch_up(store, t0 + Duration::minutes(87), every, run(Some(3))).await;
    check!(crashed.is_err(), "the third owed window fails");
    let resumed = catch_up(store, t0 + Duration::minutes(87), every, run(None)).await?;
    check!(resumed.len() == 3, "resumed at the window that failed: {resumed:?}");
    let nothing = catch_up(store, t0 + Duration::minutes(89), every, run(None)).await?;
    check!(nothing.is_empty(), "nothing owed: {nothing:?}");
    let starts: Vec<i64> = ran.lock().map_err(|_| "lock")?.iter().map(|w| (w.start - t0).num_minutes()).collect();
    check!(starts == [55, 60, 65, 70, 75, 80], "windows run, in order: {starts:?}");
    let kept = store.analytics(&spiky.id, t0 + Duration::minutes(55), t0 + Duration::minutes(85)).await;
    let kept = kept.map_err(|e| e.to_string())?;
    check!(kept.len() == 6, "one result per window: {}", kept.len());
    Ok(())
}
