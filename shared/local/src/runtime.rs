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

/// What the runtime tells the platform on its own initiative.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    /// A deployment's replicas keep crashing (five exits in five minutes).
    /// Before it is live this fails it; a live one is only reported
    /// degraded, and its replicas keep being restarted.
    CrashLoop { deployment_id: String, reason: String },
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

/// How replicas' health sidecars are started.
#[derive(Clone, Debug)]
pub struct SidecarLauncher {
    /// The `bifrost-sidecar` binary.
    pub program: PathBuf,
    /// The platform's gRPC ingest, e.g. `http://127.0.0.1:7071`.
    pub endpoint: String,
    /// Key of the per-replica tokens (`auth::sidecar_token`).
    pub key: Vec<u8>,
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
        if let Ok(mut map) = self.inner.deployments.lock() {
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

/// The command a replica runs, confined.
fn replica_jail(inner: &Inner, run: &Running, index: u32, port: u16) -> Result<Jail, String> {
    let spec = &run.spec;
    let command: Vec<std::ffi::OsString> = match (&run.artifact.static_root, &run.artifact.command) {
        (Some(root), _) => {
            let server = inner.sandbox.static_server()?;
            vec![
                server.into(),
                "serve-static".into(),
                "--root".into(),
                root.into(),
                "--port".into(),
                port.to_string().into(),
            ]
        }
        (None, Some(command)) => vec!["sh".into(), "-c".into(), format!("exec {command}").into()],
        (None, None) => return Err("no start command".into()),
    };
    let mut path: Vec<PathBuf> = run.artifact.path_prepend.clone();
    path.extend(std::env::split_paths(&inner.sandbox.path()));
    let mut env: Vec<(String, String)> = spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("PORT".to_string(), port.to_string()),
        ("BIFROST_APP".to_string(), spec.project.clone()),
        ("BIFROST_DEPLOYMENT".to_string(), spec.deployment_id.clone()),
        ("BIFROST_REPLICA".to_string(), index.to_string()),
    ]);
    if let Ok(joined) = std::env::join_paths(path) {
        env.push(("PATH".into(), joined.to_string_lossy().into_owned()));
    }
    if run.artifact.path_prepend.iter().any(|p| p.ends_with(".venv/bin")) {
        env.push(("VIRTUAL_ENV".into(), run.artifact.dir.join(".venv").display().to_string()));
    }
    let resources = &spec.config.resources;
    Ok(Jail {
        name: format!("{}-r{index}", spec.deployment_id),
        project_id: spec.project_id.clone(),
        dir: run.artifact.dir.clone(),
        writable: vec![],
        bind: vec![port],
        env,
        limits: Limits {
            memory_bytes: Some(resources.memory.bytes).filter(|b| *b > 0),
            cpu_millis: u32::try_from(resources.cpu.millicores).ok().filter(|m| *m > 0),
            pids_max: Some(REPLICA_PIDS),
        },
        command,
    })
}

/// Waits for a supervised process to end after asking it to stop: its
/// grace period, then at once, then the supervisor itself (last resort).
async fn end(child: &mut tokio::process::Child, sup: &mut Supervised) {
    sup.stop();
    if tokio::time::timeout(TERM_GRACE + Duration::from_secs(2), child.wait()).await.is_err() {
        sup.kill();
        if tokio::time::timeout(Duration::from_secs(3), child.wait()).await.is_err() {
            sup.kill_supervisor();
            let _ = child.wait().await;
        }
    }
    sup.done();
}

/// Keeps one replica running until the deployment is stopped.
async fn supervise(inner: Arc<Inner>, run: Arc<Running>, rep: Arc<Replica>) {
    let mut stop = run.stop.subscribe();
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut backoff = Duration::from_millis(250);
    let spec = &run.spec;
    let stream = format!("replica-{}", rep.index);
    let masker = Arc::new(Masker::new(spec.masked.iter().cloned()));
    loop {
        if *stop.borrow() {
            break;
        }
        let port = match free_port() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "no free port");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let out = Output::new(inner.log.clone(), &spec.deployment_id, &spec.project, &stream, masker.clone());
        let spawned = replica_jail(&inner, &run, rep.index, port)
            .and_then(|jail| inner.sandbox.command(&jail))
            .and_then(|mut cmd| cmd.spawn().map_err(|e| format!("could not start: {e}")));
        let started = Instant::now();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                out.say(format!("[bifrost] replica {} {e}", rep.index));
                update(&rep, |s| {
                    s.last_exit = Some(e.clone());
                    s.exits_before_listening += 1;
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut sup = Supervised::new(&child);
        // The app's own pid (below its supervisor): what the sidecar watches.
        let app_pid = match child.id() {
            Some(sup_pid) => main_pid(sup_pid, Duration::from_secs(2)).await.or(Some(sup_pid)),
            None => None,
        };
        update(&rep, |s| {
            s.port = Some(port);
            s.pid = app_pid;
            s.listening = false;
            s.healthy = false;
            s.successes = 0;
            s.failures = 0;
        });
        out.say(format!("[bifrost] started pid {} on port {port}", app_pid.unwrap_or(0)));
        let pump = {
            let (stdout, stderr, out) = (child.stdout.take(), child.stderr.take(), out.clone());
            tokio::spawn(async move { pump_pair(stdout, stderr, &out).await })
        };
        let announce = Announce { out: out.clone(), started };
        let self_probe = inner.sidecar.is_none();
        let prober = tokio::spawn(probe_loop(rep.clone(), port, spec.config.health.clone(), announce, self_probe));
        let sidecar = inner.sidecar.clone().map(|launcher| {
            tokio::spawn(run_sidecar(inner.clone(), run.clone(), rep.clone(), port, app_pid.unwrap_or(0), launcher))
        });

        let outcome = tokio::select! {
            status = child.wait() => Exit::Died(status.map(describe_exit).unwrap_or_else(|e| e.to_string())),
            _ = stop.changed() => Exit::Stopped,
            _ = rep.restart.notified() => Exit::Unhealthy,
        };
        prober.abort();
        if let Some(sc) = sidecar {
            // Dropping the sidecar's task kills its process group.
            sc.abort();
        }
        match outcome {
            Exit::Died(_) => sup.done(),
            _ => end(&mut child, &mut sup).await,
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        let tail: Vec<String> = out.tail().iter().map(|l| strip_ansi(l)).collect();
        let was_listening = rep.state.lock().map(|s| s.listening).unwrap_or(false);
        let how = match &outcome {
            Exit::Stopped => break,
            Exit::Died(how) => how.clone(),
            Exit::Unhealthy => "restarted after failing its health checks".to_string(),
        };
        update(&rep, |s| {
            s.listening = false;
            s.healthy = false;
            s.pid = None;
            s.restarts += 1;
            s.last_exit = Some(how.clone());
            s.tail = tail.clone();
            if !was_listening {
                s.exits_before_listening += 1;
            }
        });

        let now = Instant::now();
        crashes.push_back(now);
        while crashes.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
            crashes.pop_front();
        }
        // Back off, doubling (capped), reset after a run that lasted.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(250);
        }
        out.say(format!(
            "[bifrost] replica {} {how}; restarting in {}",
            rep.index,
            bifrost_core::config::Duration::from_millis(backoff.as_millis() as u64)
        ));
        if crashes.len() >= CRASH_LOOP && !run.failure_reported.swap(true, Ordering::Relaxed) {
            let _ = inner.events.send(RuntimeEvent::CrashLoop {
                deployment_id: spec.deployment_id.clone(),
                reason: format!(
                    "replica {} keeps crashing ({how}, {} times in {} min); last lines:\n{}",
                    rep.index,
                    crashes.len(),
                    CRASH_WINDOW.as_secs() / 60,
                    tail.join("\n")
                ),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    update(&rep, |s| {
        s.listening = false;
        s.healthy = false;
        s.pid = None;
    });
}

/// Keeps one replica's health sidecar running for as long as this
/// incarnation of the replica lives (the caller aborts the task). The
/// sidecar is the platform's own code: it runs outside the app's sandbox
/// (it reads the app's /proc entries) with only its token in its
/// environment. A sidecar that cannot start or keeps exiting is reported
/// on the replica (the verify function's reason says so) and restarted
/// with backoff.
async fn run_sidecar(inner: Arc<Inner>, run: Arc<Running>, rep: Arc<Replica>, port: u16, pid: u32, l: SidecarLauncher) {
    let spec = &run.spec;
    let health = &spec.config.health;
    let token = bifrost_core::auth::sidecar_token(&l.key, &spec.deployment_id, rep.index);
    let stream = format!("replica-{}", rep.index);
    let out = Output::new(inner.log.clone(), &spec.deployment_id, &spec.project, &stream, Arc::new(Masker::default()));
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut cmd = tokio::process::Command::new(&l.program);
        cmd.args(["--target", &format!("127.0.0.1:{port}"), "--health-path", &health.path])
            .args(["--interval", &format!("{}ms", health.interval.as_std().as_millis())])
            .args(["--timeout", &format!("{}ms", health.timeout.as_std().as_millis())])
            .args(["--pid", &pid.to_string(), "--endpoint", &l.endpoint, "--deployment", &spec.deployment_id])
            .args(["--replica", &rep.index.to_string()])
            .env_clear()
            .env("BIFROST_SIDECAR_TOKEN", &token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let started = Instant::now();
        let how = match cmd.spawn() {
            Err(e) => format!("cannot start: {e}"),
            Ok(mut child) => {
                let _guard = GroupGuard::new(&child);
                let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
                let (status, _) = tokio::join!(child.wait(), pump_pair(stdout, stderr, &out));
                status.map(describe_exit).unwrap_or_else(|e| e.to_string())
            }
        };
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        let problem = format!("health sidecar {} {how}", l.program.display());
        out.say(format!("[bifrost] {problem}; restarting it in {}s", backoff.as_secs()));
        update(&rep, |s| s.sidecar_problem = Some(problem.clone()));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Exit {
    Died(String),
    Stopped,
    Unhealthy,
}

/// Where a replica says it is listening, and how long that took.
struct Announce {
    out: Output,
    started: Instant,
}

/// Waits for the port, then probes `[health]` every interval for as long as
/// this incarnation of the replica lives.
async fn probe_loop(rep: Arc<Replica>, port: u16, health: Health, announce: Announce, self_probe: bool) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            update(&rep, |s| s.listening = true);
            let ms = announce.started.elapsed().as_secs_f64() * 1000.0;
            announce.out.say(format!("[bifrost] listening on port {port} after {ms:.1} ms"));
            break;
        }
        // A refused loopback connect costs microseconds; polling often keeps
        // the time to `running` close to the app's own start time.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !self_probe {
        // The sidecar probes; its reports arrive through `observe`.
        return;
    }
    let mut tick = tokio::time::interval(health.interval.as_std());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (ok, description) = match probe_http(addr, &health.path, health.timeout.as_std()).await {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        let mut restart = false;
        update(&rep, |s| restart = s.record_probe(ok, description, &health));
        if restart {
            rep.restart.notify_one();
            return;
        }
    }
}

/// One HTTP health probe on a fresh connection. `Ok` for 2xx/3xx; either way
/// the text says what the probe saw.
pub async fn probe_http(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    use http_body_util::Empty;
    let started = Instant::now();
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => format!("cannot connect: {e}"),
        })?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP handshake failed: {e}"))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::USER_AGENT, "bifrost-probe")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("bad probe request: {e}"))?;
        let resp = sender.send_request(req).await.map_err(|e| format!("no HTTP answer: {e}"))?;
        Ok::<_, String>(resp.status())
    };
    let ms = || started.elapsed().as_millis();
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(format!(
            "GET {path}: timed out after {}",
            bifrost_core::config::Duration::from_millis(timeout.as_millis() as u64)
        )),
        Ok(Err(e)) => Err(format!("GET {path}: {e}")),
        Ok(Ok(status)) => {
            let text =
                format!("GET {path} → {} {} in {} ms", status.as_u16(), status.canonical_reason().unwrap_or(""), ms());
            if status.is_success() || status.is_redirection() { Ok(text) } else { Err(text) }
        }
    }
}
