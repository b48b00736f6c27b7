//! Routes from the gateway: `bifrost-router --gateway URL` follows
//! `/api/v1/routes/stream` with a `router` token and serves what it says.
//!
//! *Static stability*: when the gateway cannot be reached the router keeps
//! serving the last table it had, and reconnects (0.5 s doubling to 5 s)
//! with `Last-Event-ID` so it receives only what changed meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bifrost_api::sse::{SseEvent, SseParser};
use bifrost_core::routes::{RouteChange, RouteEntry, RouteTable};
use bifrost_core::scripts::{MAX_REPORTED_APPS, MAX_REPORTED_SCRIPTS};
use bifrost_router::traffic::TrafficSpec;
use bifrost_router::{ChaosRule, Route, Routes, ScriptReports, Split, TrafficRules};
use bifrost_scripts::{Limits, Script, ScriptError};
use futures::StreamExt;

/// Longest silence on the stream (the gateway sends a keep-alive every
/// 15 s) before the router reconnects.
const SILENCE: Duration = Duration::from_secs(45);

/// How often names in endpoints (`svc.ns.svc.cluster.local:80`) are
/// resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// The routing table the router serves: the gateway's, compiled.
#[derive(Default)]
pub struct FeedRoutes {
    table: RwLock<Option<Arc<RouteTable>>>,
    compiled: RwLock<HashMap<String, Route>>,
    loaded: AtomicBool,
    /// A change did not fit the table held: ask for a snapshot next time.
    resync: AtomicBool,
}

impl Routes for FeedRoutes {
    fn route(&self, app: &str) -> Option<Route> {
        self.compiled.read().ok()?.get(app).cloned()
    }
}

impl FeedRoutes {
    /// A table has been received (ready to serve).
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// The version served, once a table arrived.
    pub fn version(&self) -> Option<String> {
        self.table.read().ok()?.as_ref().map(|t| t.version.clone())
    }

    fn table(&self) -> Option<Arc<RouteTable>> {
        self.table.read().ok()?.clone()
    }

    /// Serves `table`: each route compiled, keeping an app's limiter (and
    /// its counts) and compiled script when they did not change.
    pub async fn serve(&self, table: Arc<RouteTable>) {
        let before = self.compiled.read().map(|m| m.clone()).unwrap_or_default();
        let mut next = HashMap::with_capacity(table.routes.len());
        for entry in &table.routes {
            next.insert(entry.app.clone(), compile(entry, before.get(&entry.app)).await);
        }
        if let Ok(mut m) = self.compiled.write() {
            *m = next;
        }
        if let Ok(mut t) = self.table.write() {
            *t = Some(table);
        }
        self.loaded.store(true, Ordering::Relaxed);
    }
}

async fn compile(entry: &RouteEntry, before: Option<&Route>) -> Route {
    let spec = TrafficSpec::from_config(&entry.traffic);
    let traffic = match before {
        Some(b) if *b.traffic.spec() == spec => b.traffic.clone(),
        _ => Arc::new(TrafficRules::new(spec)),
    };
    let script = entry.script.as_ref().map(|s| match before.and_then(|b| b.script.clone()) {
        Some(kept) if kept.sha256 == s.sha256 => kept,
        _ => Arc::new(Script::new(&s.name, &s.source, Limits::default())),
    });
    let split = match &entry.split {
        Some(s) => {
            let endpoints = resolve(&s.endpoints).await;
            (!endpoints.is_empty()).then(|| Split {
                deployment_id: Arc::from(s.deployment.as_str()),
                weight: s.weight,
                endpoints: endpoints.into(),
            })
        }
        None => None,
    };
    Route {
        deployment_id: Arc::from(entry.deployment.as_str()),
        endpoints: resolve(&entry.endpoints).await.into(),
        traffic,
        split,
        chaos: entry.chaos.as_ref().map(|c| ChaosRule::new(c.deployment.as_deref(), &c.fault, &c.until)),
        script,
    }
}

/// `host:port`s to addresses: literal ones as they are, names looked up
/// (one that does not resolve is left out and logged).
async fn resolve(endpoints: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        match e.parse::<SocketAddr>() {
            Ok(a) => out.push(a),
            Err(_) => match tokio::net::lookup_host(e.as_str()).await {
                Ok(found) => out.extend(found),
                Err(err) => tracing::warn!(endpoint = %e, error = %err, "an endpoint does not resolve"),
            },
        }
    }
    out
}

/// Follows the gateway's route feed for as long as the process runs;
/// `on_version` is told each version served.
pub async fn follow(
    routes: Arc<FeedRoutes>,
    gateway: String,
    token: String,
    on_version: impl Fn(&str) + Send + Sync + 'static,
) {
    let client = match reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "route feed: no HTTP client; routing nothing");
            return;
        }
    };
    let url = format!("{}/api/v1/routes/stream", gateway.trim_end_matches('/'));
    // Names in endpoints move (a Service's address); look them up again.
    let refresh = routes.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESOLVE_EVERY);
        loop {
            tick.tick().await;
            if let Some(t) = refresh.table()
                && t.routes.iter().flat_map(|r| &r.endpoints).any(|e| e.parse::<SocketAddr>().is_err())
            {
                refresh.serve(t).await;
            }
        }
    });
    let mut backoff = Duration::from_millis(500);
    let mut last_problem = String::new();
    loop {
        match stream_once(&client, &url, &token, &routes, &on_version).await {
            Ok(received) => {
                if received {
                    backoff = Duration::from_millis(500);
                }
                tracing::info!("route feed: the gateway closed the stream; reconnecting");
            }
            Err(problem) => {
                // Said once per kind of trouble, not on every retry.
                if problem != last_problem {
                    tracing::warn!("route feed: {problem} (serving the last table; retrying)");
                    last_problem = problem;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection: until it ends. `Ok(true)` if anything arrived.
async fn stream_once(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    routes: &FeedRoutes,
    on_version: &(impl Fn(&str) + Send + Sync),
) -> Result<bool, String> {
    let mut req = client.get(url).bearer_auth(token).header("accept", "text/event-stream");
    if let Some(v) = routes.version().filter(|_| !routes.resync.swap(false, Ordering::Relaxed)) {
        req = req.header("last-event-id", v);
    }
    let resp = req.send().await.map_err(|e| format!("cannot reach the gateway at {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        return Err(format!("the gateway answered {status}: {message}"));
    }
    let mut body = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut received = false;
    loop {
        let chunk = match tokio::time::timeout(SILENCE, body.next()).await {
            Err(_) => return Err(format!("nothing from the gateway in {}s", SILENCE.as_secs())),
            Ok(None) => return Ok(received),
            Ok(Some(Err(e))) => return Err(format!("the route stream broke: {e}")),
            Ok(Some(Ok(c))) => c,
        };
        for event in parser.push_bytes(&chunk) {
            let table =
                next_table(routes.table(), &event).inspect_err(|_| routes.resync.store(true, Ordering::Relaxed))?;
            received = true;
            let version = table.version.clone();
            routes.serve(table).await;
            on_version(&version);
        }
    }
}

/// The table an event leads to. A change that does not start from the
/// table held, or does not end at the version it names, ends the
/// connection, and the next one asks for a snapshot.
fn next_table(held: Option<Arc<RouteTable>>, event: &SseEvent) -> Result<Arc<RouteTable>, String> {
    match event.event.as_str() {
        "snapshot" => {
            let t: RouteTable = serde_json::from_str(&event.data).map_err(|e| format!("a bad snapshot: {e}"))?;
            tracing::info!(version = %t.version, routes = t.routes.len(), "route feed: table loaded");
            Ok(Arc::new(t))
        }
        "change" => {
            let c: RouteChange = serde_json::from_str(&event.data).map_err(|e| format!("a bad change: {e}"))?;
            let held = held.ok_or("a change before any snapshot")?;
            let t = held.apply(&c).map_err(|w| format!("a change from {} while holding {}", w.base, w.have))?;
            if t.version != c.version {
                return Err(format!("a change meant to reach {} reached {}", c.version, t.version));
            }
            tracing::info!(version = %t.version, set = c.set.len(), removed = c.removed.len(), "route feed: table changed");
            Ok(Arc::new(t))
        }
        other => Err(format!("an unknown event {other:?} on the route stream")),
    }
}

/// Deployments' counts sent in one report (more wait for the next one):
/// the gateway's limit on a report's size.
const MAX_REPORTED: usize = 200;

/// Posts this router's `/cluster/status` to the gateway every 5 s (the
/// dashboard's cluster page), with its counts of each deployment it
/// answered for that changed since the gateway last took them (`traffic`:
/// a canary's analysis and the dashboard's numbers when the routers run
/// apart from the platform). Failures are logged once per kind.
/// This process's failed runs of routing scripts, cumulative per (app,
/// sha256), for its reports: the gateway shows them in `bifrost scripts
/// list` with the last error and its line.
#[derive(Default)]
pub struct ScriptFailures(Mutex<HashMap<AppScript, Failures>>);

/// (app, sha256 of the script).
type AppScript = (String, String);

#[derive(Clone, Debug, PartialEq)]
struct Failures {
    errors: u64,
    last_error: String,
    line: Option<u32>,
    at_ms: i64,
}

impl ScriptReports for ScriptFailures {
    fn report(&self, app: &str, script: &Script, error: &ScriptError) {
        let at_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let f = m.entry((app.to_string(), script.sha256.clone())).or_insert(Failures {
            errors: 0,
            last_error: String::new(),
            line: None,
            at_ms,
        });
        f.errors += 1;
        f.last_error = error.message.chars().take(500).collect();
        f.line = error.line;
        f.at_ms = at_ms;
    }
}

impl ScriptFailures {
    /// The failures not yet taken by the gateway (at most what one report
    /// may carry): `{app: {sha256: {...}}}`, and their counts to mark taken.
    fn untaken(&self, taken: &HashMap<AppScript, u64>) -> (serde_json::Value, Vec<(AppScript, u64)>) {
        let m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut body = serde_json::Map::new();
        let mut counts = Vec::new();
        for ((app, sha256), f) in m.iter().filter(|(k, f)| taken.get(*k) != Some(&f.errors)) {
            if !body.contains_key(app) {
                if body.len() >= MAX_REPORTED_APPS {
                    continue;
                }
                body.insert(app.clone(), serde_json::json!({}));
            }
            let scripts = body.get_mut(app).and_then(|s| s.as_object_mut());
            let Some(scripts) = scripts.filter(|s| s.len() < MAX_REPORTED_SCRIPTS) else { continue };
            scripts.insert(
                sha256.clone(),
                serde_json::json!({"errors": f.errors, "last_error": f.last_error, "line": f.line, "at_ms": f.at_ms}),
            );
            counts.push(((app.clone(), sha256.clone()), f.errors));
        }
        (serde_json::Value::Object(body), counts)
    }
}

pub async fn report(
    gateway: String,
    token: String,
    metrics: Arc<bifrost_router::RouterMetrics>,
    failures: Arc<ScriptFailures>,
    status: impl Fn() -> serde_json::Value + Send + 'static,
) {
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else { return };
    let url = format!("{}/api/v1/routers/report", gateway.trim_end_matches('/'));
    // This process's counts start at zero: its tallies are its own.
    let started_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut taken: HashMap<String, u64> = HashMap::new();
    let mut scripts_taken: HashMap<AppScript, u64> = HashMap::new();
    let mut last_problem = String::new();
    loop {
        let changed: serde_json::Map<String, serde_json::Value> = metrics
            .deployments()
            .into_iter()
            .map(|id| {
                let c = metrics.counts_of(&id);
                (id, c)
            })
            .filter(|(id, c)| taken.get(id) != Some(&c.requests))
            .filter_map(|(id, c)| Some((id, serde_json::to_value(c).ok()?)))
            .take(MAX_REPORTED)
            .collect();
        let mut body = status();
        body["traffic"] = serde_json::json!({"started_ms": started_ms, "deployments": changed});
        let (scripts, script_counts) = failures.untaken(&scripts_taken);
        if !script_counts.is_empty() {
            body["scripts"] = scripts;
        }
        let problem = match client.post(&url).bearer_auth(&token).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                for (id, c) in &changed {
                    taken.insert(id.clone(), c["requests"].as_u64().unwrap_or_default());
                }
                scripts_taken.extend(script_counts);
                String::new()
            }
            Ok(r) => format!("the gateway answered {}", r.status()),
            Err(e) => format!("cannot reach the gateway: {e}"),
        };
        if problem != last_problem {
            if !problem.is_empty() {
                tracing::warn!("reporting the cluster's status: {problem}");
            }
            last_problem = problem;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
