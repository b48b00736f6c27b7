//! The embedded runtime: supervised local processes, one per replica, each
//! on a free loopback port, confined by the [`Sandbox`], with its own log
//! stream. A supervisor restarts a replica that exits (with capped backoff)
//! and reports one that keeps crashing; a prober (or the replica's health
//! sidecar) checks `[health]` continuously so the router only sends traffic
//! to healthy replicas.
//!
//! It is a reconciler like the GKE runtime: `apply` is idempotent, `stop`
//! of something unknown is done.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc, watch};

use super::builder::{LocalArtifact, strip_ansi};
use super::process::{GroupGuard, Masker, Output, describe_exit, free_port, pump_pair};
use super::sandbox::{Jail, Limits, Sandbox, Supervised, main_pid};
use bifrost_core::config::Health;
use bifrost_core::ports::{LogSink, Observation, ReplicaSpec, ReplicaStatus, Runtime, RuntimeError};

mod probe;
mod sidecar;
mod supervise;

use probe::*;
pub use sidecar::SidecarLauncher;
use sidecar::*;
use supervise::*;

/// What the runtime tells the platform on its own initiative.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    /// A deployment's replicas keep crashing (five exits in five minutes).
    /// Before it is live this fails it; a live one is only reported
    /// degraded, and its replicas keep being restarted.
    CrashLoop { deployment_id: String, reason: String },
    /// A replica that was serving went down: it exited, or was restarted
    /// after failing its health checks. Sent every time (it is restarted
    /// either way); within a live deployment's bake this rolls it back.
    ReplicaDown { deployment_id: String, reason: String },
}

/// Crashes within this window that make a crash loop.
const CRASH_WINDOW: Duration = Duration::from_secs(300);
const CRASH_LOOP: usize = 5;
/// How long a stopped replica gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);
/// Longest wait between restarts of a crashing replica (or sidecar).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Processes one replica may have (a fork bomb stops there).
const REPLICA_PIDS: u32 = 512;

#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    deployments: Mutex<HashMap<String, Arc<Running>>>,
    log: Arc<dyn LogSink>,
    sandbox: Sandbox,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    /// When set, each replica gets a health sidecar and its reports (via
    /// [`Runtime::observe`]) decide health; otherwise the runtime probes.
    sidecar: Option<SidecarLauncher>,
}

struct Running {
    spec: ReplicaSpec,
    artifact: LocalArtifact,
    replicas: Vec<Arc<Replica>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    failure_reported: AtomicBool,
}

struct Replica {
    index: u32,
    state: Mutex<ReplicaState>,
    /// Bumped on every state change of any replica of the deployment.
    changes: Arc<watch::Sender<u64>>,
    /// Set by the prober when a replica that was healthy fails its checks.
    restart: Notify,
}

#[derive(Default, Clone)]
struct ReplicaState {
    port: Option<u16>,
    pid: Option<u32>,
    listening: bool,
    healthy: bool,
    ever_healthy: bool,
    successes: u32,
    failures: u32,
    last_probe: Option<String>,
    restarts: u32,
    exits_before_listening: u32,
    last_exit: Option<String>,
    tail: Vec<String>,
    cpu_percent: Option<f64>,
    rss_bytes: Option<u64>,
    threads: Option<u32>,
    open_fds: Option<u32>,
    /// Why the health sidecar is not reporting, if it is not.
    sidecar_problem: Option<String>,
}

impl ReplicaState {
    /// Counts one probe result (the runtime's own, or a sidecar's report)
    /// against `[health]`'s thresholds. Returns true when a replica that
    /// was healthy has now failed enough to be restarted (liveness).
    fn record_probe(&mut self, ok: bool, description: String, health: &Health) -> bool {
        self.last_probe = Some(description);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= health.success_threshold {
                self.healthy = true;
                self.ever_healthy = true;
            }
            false
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= health.failure_threshold {
                self.healthy = false;
                return self.ever_healthy;
            }
            false
        }
    }
}

impl ProcessRuntime {
    /// Replicas run confined by `sandbox`; with a `sidecar`, each gets a
    /// health sidecar whose reports decide its health.
    pub fn new(
        log: Arc<dyn LogSink>,
        sandbox: Sandbox,
        sidecar: Option<SidecarLauncher>,
    ) -> (ProcessRuntime, mpsc::UnboundedReceiver<RuntimeEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner { deployments: Mutex::new(HashMap::new()), log, sandbox, events: tx, sidecar };
        (ProcessRuntime { inner: Arc::new(inner) }, rx)
    }

    fn get(&self, deployment_id: &str) -> Option<Arc<Running>> {
        self.inner.deployments.lock().ok()?.get(deployment_id).cloned()
    }

    /// Addresses of the replicas that may take traffic now.
    pub fn endpoints(&self, deployment_id: &str) -> Vec<SocketAddr> {
        let Some(r) = self.get(deployment_id) else { return vec![] };
        r.replicas
            .iter()
            .filter_map(|rep| {
                let s = rep.state.lock().ok()?;
                let port = s.port?;
                (s.healthy && s.listening).then(|| SocketAddr::from(([127, 0, 0, 1], port)))
            })
            .collect()
    }

    /// Deployments with replicas here.
    pub fn running(&self) -> Vec<String> {
        self.inner.deployments.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Stops everything (platform shutdown), all deployments at once.
    pub async fn stop_all(&self) {
        let stops = self.running().into_iter().map(|id| {
            let this = self.clone();
            async move {
                let _ = this.stop(&id, Duration::ZERO).await;
            }
        });
        futures_join_all(stops).await;
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    async fn endpoints(&self, deployment_id: &str) -> Vec<String> {
        ProcessRuntime::endpoints(self, deployment_id).iter().map(SocketAddr::to_string).collect()
    }

    async fn host_facts(&self) -> bifrost_core::ports::HostFacts {
        let root = self.inner.sandbox.apps_root().to_path_buf();
        tokio::task::spawn_blocking(move || crate::host::facts(&root)).await.unwrap_or_default()
    }

    async fn apply(&self, spec: ReplicaSpec) -> Result<(), RuntimeError> {
        if self.get(&spec.deployment_id).is_some() {
            // Already running: applying the same spec again changes nothing.
            return Ok(());
        }
        let artifact: LocalArtifact = serde_json::from_value(spec.artifact.clone())
            .map_err(|e| RuntimeError::Failed(format!("the artifact is not runnable here: {e}")))?;
        let artifact = relocate_legacy(&self.inner.sandbox, &spec.project_id, artifact)?;
        if !artifact.dir.exists() {
            return Err(RuntimeError::Failed(format!(
                "the build output {} is gone (was it cleaned up?); deploy again",
                artifact.dir.display()
            )));
        }
        let (stop, _) = watch::channel(false);
        let changes = Arc::new(watch::channel(0u64).0);
        let replicas = (0..spec.replicas.max(1))
            .map(|index| {
                Arc::new(Replica {
                    index,
                    state: Mutex::new(ReplicaState::default()),
                    changes: changes.clone(),
                    restart: Notify::new(),
                })
            })
            .collect();
        let running = Arc::new(Running {
            spec,
            artifact,
            replicas,
            stop,
            tasks: Mutex::new(vec![]),
            failure_reported: AtomicBool::new(false),
        });
        {
            let mut map =
                self.inner.deployments.lock().map_err(|_| RuntimeError::Unavailable("runtime lock".into()))?;
            if map.contains_key(&running.spec.deployment_id) {
                return Ok(());
            }
            map.insert(running.spec.deployment_id.clone(), running.clone());
        }
        let mut tasks = vec![];
        for rep in &running.replicas {
            tasks.push(tokio::spawn(supervise(self.inner.clone(), running.clone(), rep.clone())));
        }
        if let Ok(mut t) = running.tasks.lock() {
            t.extend(tasks);
        }
        Ok(())
    }

    async fn wait_listening(&self, deployment_id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + timeout;
        let mut changes = None;
        loop {
            let Some(r) = self.get(deployment_id) else {
                return Err(RuntimeError::Failed(format!("deployment {deployment_id} has no replicas here")));
            };
            // Subscribed before reading, so no change slips between.
            let rx = changes.get_or_insert_with(|| r.replicas[0].changes.subscribe());
            let states: Vec<(u32, ReplicaState)> =
                r.replicas.iter().filter_map(|rep| rep.state.lock().ok().map(|s| (rep.index, s.clone()))).collect();
            if states.iter().all(|(_, s)| s.listening) {
                return Ok(());
            }
            if let Some((i, s)) = states.iter().find(|(_, s)| s.exits_before_listening >= 3) {
                return Err(RuntimeError::Failed(format!(
                    "replica {i} {} before listening on $PORT ({} times); last lines:\n{}",
                    s.last_exit.as_deref().unwrap_or("exited"),
                    s.exits_before_listening,
                    s.tail.join("\n")
                )));
            }
            if Instant::now() >= deadline {
                let (i, s) = states.iter().find(|(_, s)| !s.listening).cloned().unwrap_or_default();
                return Err(RuntimeError::Failed(format!(
                    "replica {i} did not listen on $PORT ({}) within {}s; last lines:\n{}",
                    s.port.map(|p| p.to_string()).unwrap_or_default(),
                    timeout.as_secs(),
                    s.tail.join("\n")
                )));
            }
            let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
            let _ = tokio::time::timeout(wait, rx.changed()).await;
        }
    }

    async fn observe(&self, deployment_id: &str, replica: u32, o: Observation) {
        let Some(run) = self.get(deployment_id) else { return };
        let Some(rep) = run.replicas.iter().find(|r| r.index == replica) else { return };
        let health = &run.spec.config.health;
        let mut restart = false;
        update(rep, |s| {
            s.cpu_percent = o.cpu_percent;
            s.rss_bytes = o.rss_bytes;
            s.threads = o.threads;
            s.open_fds = o.open_fds;
            s.sidecar_problem = None;
            // Like the runtime's own probes, counting starts once the app listens.
            if s.listening {
                restart = s.record_probe(o.ok, o.description.clone(), health);
            }
        });
        if restart {
            rep.restart.notify_one();
        }
    }

    async fn watch_status(
        &self,
        deployment_id: &str,
        timeout: Duration,
        done: &(dyn for<'s> Fn(&'s [ReplicaStatus]) -> bool + Send + Sync),
    ) -> Vec<ReplicaStatus> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.get(deployment_id).map(|r| r.replicas[0].changes.subscribe());
        loop {
            let status = self.status(deployment_id).await;
            let left = deadline.saturating_duration_since(Instant::now());
            if done(&status) || left.is_zero() {
                return status;
            }
            match &mut rx {
                Some(rx) => {
                    if let Ok(Err(_)) = tokio::time::timeout(left, rx.changed()).await {
                        // Stopped: nothing changes any more.
                        return self.status(deployment_id).await;
                    }
                }
                None => return status,
            }
        }
    }

    async fn stop(&self, deployment_id: &str, drain: Duration) -> Result<(), RuntimeError> {
        let Some(r) = self.get(deployment_id) else { return Ok(()) };
        // No traffic is taken away here: the router leaves a replaced
        // deployment when the live pointer moves (in the same transaction
        // that supersedes it). Taking its endpoints away at once raced that
        // switch and answered 503 in between; the drain serves whatever the
        // router still sends, then the replicas stop.
        if !drain.is_zero() {
            tokio::time::sleep(drain).await;
        }
        let _ = r.stop.send(true);
        let tasks: Vec<_> = r.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
        if let Ok(mut map) = self.inner.deployments.lock()
            // Replicas started again meanwhile (a split) are not these.
            && map.get(deployment_id).is_some_and(|now| Arc::ptr_eq(now, &r))
        {
            map.remove(deployment_id);
        }
        Ok(())
    }

    async fn status(&self, deployment_id: &str) -> Vec<ReplicaStatus> {
        let Some(r) = self.get(deployment_id) else { return vec![] };
        r.replicas
            .iter()
            .filter_map(|rep| {
                let s = rep.state.lock().ok()?.clone();
                Some(ReplicaStatus {
                    index: rep.index,
                    address: s.port.map(|p| format!("127.0.0.1:{p}")),
                    pid: s.pid,
                    listening: s.listening,
                    healthy: s.healthy,
                    consecutive_successes: s.successes,
                    consecutive_failures: s.failures,
                    last_probe: s.last_probe,
                    restarts: s.restarts,
                    last_exit: s.last_exit,
                    cpu_percent: s.cpu_percent,
                    rss_bytes: s.rss_bytes,
                    threads: s.threads,
                    open_fds: s.open_fds,
                    sidecar: s.sidecar_problem,
                })
            })
            .collect()
    }
}

async fn futures_join_all(futs: impl IntoIterator<Item = impl std::future::Future<Output = ()> + Send + 'static>) {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

fn update(rep: &Replica, f: impl FnOnce(&mut ReplicaState)) {
    if let Ok(mut s) = rep.state.lock() {
        f(&mut s);
    }
    rep.changes.send_modify(|g| *g = g.wrapping_add(1));
}

/// Build output an older version left inside the data dir (which apps can
/// no longer reach) moves into the apps dir, handed to the project's user;
/// its recorded paths follow. Output already there is used as it is.
fn relocate_legacy(sandbox: &Sandbox, project_id: &str, a: LocalArtifact) -> Result<LocalArtifact, RuntimeError> {
    let root = sandbox.project_dir(project_id);
    if a.dir.starts_with(&root) {
        return Ok(a);
    }
    let Some(name) = a.dir.file_name() else { return Ok(a) };
    let new = root.join(name);
    if !new.exists() && a.dir.exists() {
        let fail =
            |e: std::io::Error| RuntimeError::Unavailable(format!("moving {} into the apps dir: {e}", a.dir.display()));
        sandbox.own_dir(project_id, &root.join("cache")).map_err(fail)?;
        if let Err(e) = std::fs::rename(&a.dir, &new) {
            // Another filesystem: copy, then remove the old tree.
            if e.raw_os_error() != Some(18) {
                return Err(fail(e));
            }
            let copied = std::process::Command::new("cp").arg("-a").arg(&a.dir).arg(&new).status().map_err(fail)?;
            if !copied.success() {
                return Err(fail(std::io::Error::other("cp -a failed")));
            }
            let _ = std::fs::remove_dir_all(&a.dir);
        }
        sandbox.hand_over(project_id, &new).map_err(fail)?;
    }
    let moved = |p: &PathBuf| p.strip_prefix(&a.dir).map(|rest| new.join(rest)).unwrap_or_else(|_| p.clone());
    Ok(LocalArtifact {
        command: a.command.clone(),
        static_root: a.static_root.as_ref().map(moved),
        path_prepend: a.path_prepend.iter().map(moved).collect(),
        dir: new,
    })
}
