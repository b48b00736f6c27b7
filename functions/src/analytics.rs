//! Analytics: the platform's housekeeping, as a function like the others.
//! It consumes no deployment event; it takes the dead letters the bus
//! pushes back (GCP: each dead-letter topic's push subscription), and its
//! periodic run (Cloud Scheduler's call on GCP, a timer in `bifrost up`)
//! publishes again the outbox events the bus never confirmed, folds
//! health reports older than an hour into one-minute buckets, and removes
//! the time series (health, traffic minutes, analytics results) older than
//! the retention (`--retention`, 30 days), and the routers' tallies not
//! reported for as long (those of a serving deployment stay).
//!
//! The same run analyses the windows its schedule owes (`bifrost up
//! --analytics-every`, `BIFROST_ANALYTICS_EVERY` on Cloud Run): for every
//! project, its cost and anomalies over each closed window
//! ([`bifrost_core::analytics::run`]), kept once per (project, window).
//! `bifrost analytics run --window` (and the Cloud Run job) run one window
//! by hand.

use std::time::Duration;

use async_trait::async_trait;
use bifrost_core::analytics::cost::{Cost, Prices};
use bifrost_core::analytics::run::{self as analysis, AnalyticsResult, History, LOOKBACK, PointRow, SeriesAnomaly};
use bifrost_core::analytics::window::{Window, align_down};
use bifrost_core::domain::{Deployment, LogLine, Project, Timestamp, new_id, now};
use bifrost_core::events::Event;
use bifrost_core::ports::Store;

use crate::Ctx;
use crate::driver::{Consumes, Decision, Function, RunResult};

/// Outbox events younger than this may still be in flight from another
/// instance: left alone.
pub const UNCONFIRMED_AFTER: Duration = Duration::from_secs(60);
/// Health reports older than this become one-minute buckets.
pub const FOLD_AFTER: chrono::Duration = chrono::Duration::hours(1);

pub struct Analytics;

#[async_trait]
impl Function for Analytics {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn consumes(&self) -> &'static [Consumes] {
        &[]
    }

    async fn reconcile(&self, _ctx: &Ctx, _deployment: Option<&Deployment>, _event: &Event) -> Decision {
        Decision::Done
    }

    fn takes_dead_letters(&self) -> bool {
        true
    }

    fn scheduled(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &Ctx) -> RunResult {
        let republished = ctx.dead_letters.republish_unconfirmed(UNCONFIRMED_AFTER).await.map_err(|e| e.to_string())?;
        let folded = ctx.store.downsample_health(now() - FOLD_AFTER).await.map_err(|e| e.to_string())?;
        let pruned = match ctx.settings.retention {
            Some(keep) => {
                let series = ctx.store.prune_series(now() - keep).await.map_err(|e| e.to_string())?;
                series + prune_tallies(&*ctx.store, now() - keep).await?
            }
            None => 0,
        };
        let every = ctx.settings.analytics_every;
        let mut analysed = 0;
        if let Some(every) = every {
            let runs = catch_up(&*ctx.store, now(), every, |w| async move { run_window(ctx, w).await }).await?;
            analysed = runs.len();
        }
        tracing::info!(republished, folded, pruned, analysed, "analytics run");
        Ok(format!(
            "republished {republished} events; folded {folded} health reports; \
             removed {pruned} series rows and tallies past the retention; analysed {analysed} windows"
        ))
    }
}

/// Routers' tallies not reported since `before`, except those of the
/// deployments serving now (live, or the second side of a split).
async fn prune_tallies(store: &dyn Store, before: Timestamp) -> Result<usize, String> {
    let projects = store.list_projects().await.map_err(|e| e.to_string())?;
    let serving: Vec<String> = projects.iter().flat_map(|p| p.serving().map(str::to_string)).collect();
    store.prune_tallies(before, &serving).await.map_err(|e| e.to_string())
}

/// The price table's key among the analytics settings.
const PRICES: &str = "prices";
/// The schedule's progress: the end of the last window it finished.
const SCHEDULE: &str = "schedule";
/// Deployments of a project considered per run (newest first).
const MAX_DEPLOYMENTS: usize = 1_000;

/// The price table: the admin's (`bifrost analytics prices set`), else
/// the documented defaults.
pub async fn prices(store: &dyn Store) -> Result<Prices, String> {
    match store.analytics_setting(PRICES).await.map_err(|e| format!("reading the prices: {e}"))? {
        Some(text) => serde_json::from_str(&text).map_err(|e| format!("the stored prices do not read: {e}")),
        None => Ok(Prices::default()),
    }
}

/// Replaces the price table (checked first: bad prices change nothing).
pub async fn set_prices(store: &dyn Store, prices: &Prices) -> Result<(), String> {
    prices.check()?;
    let text = serde_json::to_string(prices).map_err(|e| e.to_string())?;
    store.set_analytics_setting(PRICES, &text).await.map_err(|e| format!("keeping the prices: {e}"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    done_until: Timestamp,
}

/// Runs, oldest first, each window of `every` the schedule owes at `now`
/// (after its last finished one, at most 7 days back), recording progress
/// after each: a process killed mid-way resumes at the next window, and a
/// window run twice keeps its first result. Returns what each run did.
pub async fn catch_up<F, Fut>(
    store: &dyn Store,
    now: Timestamp,
    every: chrono::Duration,
    mut run: F,
) -> Result<Vec<RunSummary>, String>
where
    F: FnMut(Window) -> Fut,
    Fut: std::future::Future<Output = Result<RunSummary, String>>,
{
    let done_until = match store.analytics_setting(SCHEDULE).await.map_err(|e| e.to_string())? {
        Some(text) => serde_json::from_str::<Progress>(&text).ok().map(|p| p.done_until),
        None => None,
    };
    let mut out = vec![];
    for w in Window::owed(done_until, now, every) {
        out.push(run(w).await?);
        let text = serde_json::to_string(&Progress { done_until: w.end }).map_err(|e| e.to_string())?;
        store.set_analytics_setting(SCHEDULE, &text).await.map_err(|e| format!("recording progress: {e}"))?;
    }
    Ok(out)
}

/// What one run over one window did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub window: String,
    pub run_id: String,
    /// Projects analysed now.
    pub stored: usize,
    /// Projects whose result for this window was kept already.
    pub already: usize,
    pub anomalies: usize,
}

/// Analyses every project over `window`.
pub async fn run_window(ctx: &Ctx, window: Window) -> Result<RunSummary, String> {
    let prices = prices(&*ctx.store).await?;
    let run_id = new_id("run_");
    let mut summary = RunSummary { window: window.to_string(), run_id: run_id.clone(), ..RunSummary::default() };
    let projects = ctx.store.list_projects().await.map_err(|e| format!("listing projects: {e}"))?;
    let (store, cache) = (ctx.store.clone(), ctx.points.clone());
    let analysed = in_parallel(projects.clone(), move |p| {
        let (store, prices, run_id, cache) = (store.clone(), prices.clone(), run_id.clone(), cache.clone());
        async move { analyse_project(&*store, &p, window, &prices, &run_id, &cache).await }
    })
    .await;
    let mut results = Vec::with_capacity(projects.len());
    for (p, outcome) in projects.iter().zip(analysed) {
        let (kept, new) = outcome?;
        if new {
            summary.stored += 1;
            summary.anomalies += kept.anomalies.len();
            feed_anomalies(ctx, p, &kept).await;
        } else {
            summary.already += 1;
        }
        results.push(kept);
    }
    // Every result of the window, new or kept before: a run that failed
    // here is run again (its progress is not recorded), and the export's
    // row keys tell a second copy apart.
    if let Some(export) = &ctx.export {
        export.export(&results).await.map_err(|e| format!("exporting {window}: {e}"))?;
    }
    tracing::info!(window = %window, run_id = summary.run_id, stored = summary.stored, already = summary.already,
        anomalies = summary.anomalies, "analytics window");
    Ok(summary)
}

/// `f` over each item, as many at once as the machine has cores (each
/// app's reading is on SQLite's reader connections or Firestore's
/// network, its analysis on its own task); results in the items' order.
pub async fn in_parallel<T, R, F, Fut>(items: Vec<T>, f: F) -> Vec<Result<R, String>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R, String>> + Send + 'static,
{
    let width = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut out: Vec<Option<Result<R, String>>> = (0..items.len()).map(|_| None).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = items.into_iter().enumerate();
    loop {
        while tasks.len() < width {
            let Some((i, item)) = pending.next() else { break };
            let fut = f(item);
            tasks.spawn(async move { (i, fut.await) });
        }
        match tasks.join_next().await {
            Some(Ok((i, r))) => out[i] = Some(r),
            Some(Err(e)) => return vec![Err(format!("an analysis task failed: {e}"))],
            None => break,
        }
    }
    out.into_iter().map(|r| r.unwrap_or_else(|| Err("not analysed".into()))).collect()
}

/// One project's history over `[from, to)`: its replicas' minutes (from
/// the sidecars' reports, at each deployment's `[resources]`) and its
/// traffic minutes.
pub async fn history(store: &dyn Store, p: &Project, from: Timestamp, to: Timestamp) -> Result<History, String> {
    let deployments = store
        .list_deployments(Some(&p.id), MAX_DEPLOYMENTS)
        .await
        .map_err(|e| format!("listing {}'s deployments: {e}", p.name))?;
    let mut h = History { project_id: p.id.clone(), project: p.name.clone(), ..History::default() };
    for d in deployments.iter().filter(|d| ran_since(d, from)) {
        let usage =
            store.usage_minutes(&d.id, from, to).await.map_err(|e| format!("reading {}'s health: {e}", d.id))?;
        let r = d.config.as_ref().map(|c| c.config.resources.clone()).unwrap_or_default();
        h.replicas.extend(analysis::replica_minutes(
            &d.id,
            &usage,
            r.cpu.millicores as f64 / 1000.0,
            r.memory.bytes as f64 / (1u64 << 30) as f64,
        ));
    }
    h.traffic =
        store.traffic_minutes(&p.id, from, to).await.map_err(|e| format!("reading {}'s traffic: {e}", p.name))?;
    Ok(h)
}

/// Each app's 5-minute points over the last lookback, as the schedule's
/// runs computed them, so the next window's run reads only its own 5
/// minutes (a process that starts, or a window that does not follow the
/// last, reads the whole lookback once). The points are what a run
/// reading the store would compute, at the same prices (a price change
/// drops them). 129 KiB per app.
#[derive(Default)]
pub struct PointCache {
    apps: std::sync::Mutex<std::collections::HashMap<String, KeptPoints>>,
}

#[derive(Clone)]
struct KeptPoints {
    prices: Prices,
    /// The rows cover `[from, until)`.
    from: Timestamp,
    until: Timestamp,
    rows: Vec<PointRow>,
}

impl Clone for PointCache {
    fn clone(&self) -> Self {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner()).clone();
        PointCache { apps: std::sync::Mutex::new(apps) }
    }
}

impl PointCache {
    /// The app's kept points if they reach back far enough for `window`
    /// and end where it starts.
    fn take(&self, project_id: &str, prices: &Prices, window: Window) -> Option<Vec<PointRow>> {
        let aligned = |t: Timestamp| align_down(t, analysis::POINT) == t;
        if !aligned(window.start) || !aligned(window.end) {
            return None;
        }
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let kept = apps.remove(project_id)?;
        (kept.prices == *prices && kept.until == window.start && kept.from <= analysis::reach(window, LOOKBACK))
            .then_some(kept.rows)
    }

    /// Where the app's kept points end (none kept: `None`).
    pub fn kept_until(&self, project_id: &str) -> Option<Timestamp> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner()).get(project_id).map(|k| k.until)
    }

    /// Keeps the app's points up to `window`'s end, as far back as the
    /// next window needs.
    fn keep(&self, project_id: &str, prices: &Prices, window: Window, mut rows: Vec<PointRow>) {
        if align_down(window.end, analysis::POINT) != window.end {
            return;
        }
        let from = analysis::reach(Window { start: window.end, end: window.end }, LOOKBACK);
        rows.retain(|r| r.at >= from);
        // A long window's rows would otherwise keep their whole capacity.
        rows.shrink_to_fit();
        let kept = KeptPoints { prices: prices.clone(), from, until: window.end, rows };
        self.apps.lock().unwrap_or_else(|e| e.into_inner()).insert(project_id.to_string(), kept);
    }
}

/// One project's cost, 5xx count and anomalies over `window`, from the
/// store (and the points `cache` kept from the window before).
pub async fn analyse(
    store: &dyn Store,
    p: &Project,
    window: Window,
    prices: &Prices,
    cache: &PointCache,
) -> Result<(Cost, u64, Vec<SeriesAnomaly>), String> {
    let (h, rows) = match cache.take(&p.id, prices, window) {
        Some(mut rows) => {
            let h = history(store, p, window.start, window.end).await?;
            rows.extend(analysis::points(&h, window.start, window.end, prices));
            (h, rows)
        }
        None => {
            let reach = analysis::reach(window, LOOKBACK);
            let h = history(store, p, reach, window.end).await?;
            let rows = analysis::points(&h, reach, window.end, prices);
            (h, rows)
        }
    };
    let (cost, errors) = analysis::cost_in(&h, window, prices);
    let anomalies = analysis::judge(&rows, window, LOOKBACK);
    cache.keep(&p.id, prices, window, rows);
    Ok((cost, errors, anomalies))
}

/// Whether a deployment may have run after `since` (one that ended
/// before has nothing to read).
fn ran_since(d: &Deployment, since: Timestamp) -> bool {
    !(d.status.is_terminal() && d.updated_at < since)
}

/// Analyses one project over `window` unless that is done already.
pub async fn analyse_project(
    store: &dyn Store,
    p: &Project,
    window: Window,
    prices: &Prices,
    run_id: &str,
    cache: &PointCache,
) -> Result<(AnalyticsResult, bool), String> {
    let done = store.analytics(&p.id, window.start, window.start + chrono::Duration::milliseconds(1)).await;
    if let Some(kept) = done.map_err(|e| e.to_string())?.into_iter().find(|r| r.window == window) {
        return Ok((kept, false));
    }
    let (cost, errors, anomalies) = analyse(store, p, window, prices, cache).await?;
    let result = AnalyticsResult {
        project_id: p.id.clone(),
        project: p.name.clone(),
        window,
        run_id: run_id.to_string(),
        computed_at: now(),
        cost,
        currency: prices.currency.clone(),
        errors,
        anomalies,
    };
    store.put_analytics(result).await.map_err(|e| format!("keeping {}'s result: {e}", p.name))
}

/// Each anomaly of a new result, as a line in the live deployment's feed
/// (the dashboard and `bifrost logs --follow` show it).
async fn feed_anomalies(ctx: &Ctx, p: &Project, r: &AnalyticsResult) {
    let Some(live) = &p.live_deployment_id else { return };
    let lines: Vec<LogLine> = r
        .anomalies
        .iter()
        .map(|a| LogLine {
            deployment_id: live.clone(),
            project: p.name.clone(),
            at: now(),
            stream: "analytics".into(),
            line: format!(
                "anomaly: {} at {} was {:.4} against a baseline of {:.4} (robust z {:.1})",
                a.series,
                a.at.format("%Y-%m-%d %H:%M UTC"),
                a.value,
                a.baseline,
                a.score
            ),
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.append_logs(lines).await {
        tracing::warn!(project = p.name, error = %e, "could not add anomalies to the feed");
    }
}
