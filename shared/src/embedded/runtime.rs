//! The embedded runtime: supervised local processes, one per replica, each
//! on a free loopback port, in its own process group, with its own log
//! stream. A supervisor restarts a replica that exits (with backoff) and
//! reports one that keeps crashing; a prober checks `[health]` continuously
//! so the router only sends traffic to healthy replicas.
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
use nix::sys::signal::Signal;
use tokio::sync::{Notify, mpsc, watch};

use super::builder::{LocalArtifact, strip_ansi};
use super::process::{GroupGuard, OWNER_ENV, TAIL_LINES, describe_exit, free_port, pump_pair, shell};
use crate::config::Health;
use crate::ports::{LogSink, Observation, ReplicaSpec, ReplicaStatus, Runtime, RuntimeError};

/// What the runtime tells the platform on its own initiative.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    /// A deployment's replicas cannot stay up: fail it with this reason.
    Failed { deployment_id: String, reason: String },
}

/// Crashes within this window that make a crash loop.
const CRASH_WINDOW: Duration = Duration::from_secs(300);
const CRASH_LOOP: usize = 5;
/// How long a stopped replica gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    deployments: Mutex<HashMap<String, Arc<Running>>>,
    log: Arc<dyn LogSink>,
    owner: String,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    /// Program and leading arguments of the static file server.
    static_server: Vec<String>,
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
}

impl ProcessRuntime {
    /// `static_server`: the program (and leading args) serving static sites,
    /// normally `[<bifrost binary>, "serve-static"]`.
    pub fn new(
        log: Arc<dyn LogSink>,
        owner: &str,
        static_server: Vec<String>,
        sidecar: Option<SidecarLauncher>,
    ) -> (ProcessRuntime, mpsc::UnboundedReceiver<RuntimeEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            deployments: Mutex::new(HashMap::new()),
            log,
            owner: owner.to_string(),
            events: tx,
            static_server,
            sidecar,
        };
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

    /// Stops everything (platform shutdown).
    pub async fn stop_all(&self) {
        for id in self.running() {
            let _ = self.stop(&id, Duration::ZERO).await;
        }
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
            // Like the runtime's own probes, counting starts once the app listens.
            if !s.listening {
                return;
            }
            s.last_probe = Some(o.description.clone());
            if o.ok {
                s.successes += 1;
                s.failures = 0;
                if s.successes >= health.success_threshold {
                    s.healthy = true;
                    s.ever_healthy = true;
                }
            } else {
                s.failures += 1;
                s.successes = 0;
                if s.failures >= health.failure_threshold {
                    s.healthy = false;
                    restart = s.ever_healthy;
                }
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
                })
            })
            .collect()
    }
}

fn update(rep: &Replica, f: impl FnOnce(&mut ReplicaState)) {
    if let Ok(mut s) = rep.state.lock() {
        f(&mut s);
    }
    rep.changes.send_modify(|g| *g = g.wrapping_add(1));
}

/// Keeps one replica running until the deployment is stopped.
async fn supervise(inner: Arc<Inner>, run: Arc<Running>, rep: Arc<Replica>) {
    let mut stop = run.stop.subscribe();
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut backoff = Duration::from_millis(250);
    let spec = &run.spec;
    let stream = format!("replica-{}", rep.index);
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
        let mut cmd = match (&run.artifact.static_root, &run.artifact.command) {
            (Some(root), _) => {
                let (program, args) =
                    inner.static_server.split_first().map(|(p, a)| (p.clone(), a.to_vec())).unwrap_or_default();
                let mut c = shell("exec \"$0\" \"$@\"", &run.artifact.dir, &inner.owner);
                c.arg(program).args(args).arg("--root").arg(root).arg("--port").arg(port.to_string());
                c
            }
            (None, Some(command)) => shell(&format!("exec {command}"), &run.artifact.dir, &inner.owner),
            (None, None) => shell("echo 'no start command' >&2; exit 1", &run.artifact.dir, &inner.owner),
        };
        let mut path: Vec<PathBuf> = run.artifact.path_prepend.clone();
        if let Some(p) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&p));
        }
        cmd.envs(&spec.env)
            .env("PORT", port.to_string())
            .env("BIFROST_APP", &spec.project)
            .env("BIFROST_DEPLOYMENT", &spec.deployment_id)
            .env("BIFROST_REPLICA", rep.index.to_string())
            .env(OWNER_ENV, &inner.owner);
        if let Ok(joined) = std::env::join_paths(path) {
            cmd.env("PATH", joined);
        }
        if run.artifact.path_prepend.iter().any(|p| p.ends_with(".venv/bin")) {
            cmd.env("VIRTUAL_ENV", run.artifact.dir.join(".venv"));
        }
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                update(&rep, |s| s.last_exit = Some(format!("could not start: {e}")));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let guard = GroupGuard::new(&child);
        update(&rep, |s| {
            s.port = Some(port);
            s.pid = child.id();
            s.listening = false;
            s.healthy = false;
            s.successes = 0;
            s.failures = 0;
        });
        inner.log.line(
            &spec.deployment_id,
            &spec.project,
            &stream,
            format!("[bifrost] started pid {} on port {port}", child.id().unwrap_or(0)),
        );
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let pump = tokio::spawn(pump_pair(
            child.stdout.take(),
            child.stderr.take(),
            inner.log.clone(),
            spec.deployment_id.clone(),
            spec.project.clone(),
            stream.clone(),
            tail.clone(),
        ));
        let announce = Announce {
            log: inner.log.clone(),
            deployment_id: spec.deployment_id.clone(),
            project: spec.project.clone(),
            stream: stream.clone(),
            started,
        };
        let self_probe = inner.sidecar.is_none();
        let prober = tokio::spawn(probe_loop(rep.clone(), port, spec.config.health.clone(), announce, self_probe));
        let sidecar = inner.sidecar.clone().map(|launcher| {
            tokio::spawn(run_sidecar(inner.clone(), run.clone(), rep.index, port, child.id().unwrap_or(0), launcher))
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
        if !matches!(outcome, Exit::Died(_)) {
            // SIGTERM, then SIGKILL after the grace period.
            guard.signal(Signal::SIGTERM);
            if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
                guard.signal(Signal::SIGKILL);
                let _ = child.wait().await;
            }
        }
        drop(guard);
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        let tail: Vec<String> = tail.lock().map(|t| t.iter().map(|l| strip_ansi(l)).collect()).unwrap_or_default();
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
        inner.log.line(
            &spec.deployment_id,
            &spec.project,
            &stream,
            format!("[bifrost] replica {} {how}; restarting", rep.index),
        );

        let now = Instant::now();
        crashes.push_back(now);
        while crashes.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
            crashes.pop_front();
        }
        if crashes.len() >= CRASH_LOOP && !run.failure_reported.swap(true, Ordering::Relaxed) {
            let _ = inner.events.send(RuntimeEvent::Failed {
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
        // Back off, doubling, reset after a run that lasted.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(250);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    update(&rep, |s| {
        s.listening = false;
        s.healthy = false;
        s.pid = None;
    });
}

/// Keeps one replica's health sidecar running for as long as this
/// incarnation of the replica lives (the caller aborts the task).
async fn run_sidecar(inner: Arc<Inner>, run: Arc<Running>, replica: u32, port: u16, pid: u32, l: SidecarLauncher) {
    let spec = &run.spec;
    let health = &spec.config.health;
    let token = crate::auth::sidecar_token(&l.key, &spec.deployment_id, replica);
    let stream = format!("replica-{replica}");
    loop {
        let mut cmd = shell("exec \"$0\" \"$@\"", &run.artifact.dir, &inner.owner);
        cmd.arg(&l.program)
            .args(["--target", &format!("127.0.0.1:{port}"), "--health-path", &health.path])
            .args(["--interval", &format!("{}ms", health.interval.as_std().as_millis())])
            .args(["--timeout", &format!("{}ms", health.timeout.as_std().as_millis())])
            .args(["--pid", &pid.to_string(), "--endpoint", &l.endpoint, "--deployment", &spec.deployment_id])
            .args(["--replica", &replica.to_string()])
            .env("BIFROST_SIDECAR_TOKEN", &token);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                inner.log.line(
                    &spec.deployment_id,
                    &spec.project,
                    &stream,
                    format!("[bifrost] cannot start the health sidecar {}: {e}", l.program.display()),
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let _guard = GroupGuard::new(&child);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let pump = pump_pair(
            child.stdout.take(),
            child.stderr.take(),
            inner.log.clone(),
            spec.deployment_id.clone(),
            spec.project.clone(),
            stream.clone(),
            tail,
        );
        let (status, _) = tokio::join!(child.wait(), pump);
        let how = status.map(describe_exit).unwrap_or_else(|e| e.to_string());
        inner.log.line(
            &spec.deployment_id,
            &spec.project,
            &stream,
            format!("[bifrost] health sidecar {how}; restarting it"),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

enum Exit {
    Died(String),
    Stopped,
    Unhealthy,
}

/// Where a replica says it is listening, and how long that took.
struct Announce {
    log: Arc<dyn LogSink>,
    deployment_id: String,
    project: String,
    stream: String,
    started: Instant,
}

/// Waits for the port, then probes `[health]` every interval for as long as
/// this incarnation of the replica lives.
async fn probe_loop(rep: Arc<Replica>, port: u16, health: Health, announce: Announce, self_probe: bool) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            update(&rep, |s| s.listening = true);
            let a = announce;
            let ms = a.started.elapsed().as_secs_f64() * 1000.0;
            a.log.line(
                &a.deployment_id,
                &a.project,
                &a.stream,
                format!("[bifrost] listening on port {port} after {ms:.1} ms"),
            );
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
        let result = probe_http(addr, &health.path, health.timeout.as_std()).await;
        let mut restart = false;
        update(&rep, |s| {
            match &result {
                Ok(desc) => {
                    s.successes += 1;
                    s.failures = 0;
                    s.last_probe = Some(desc.clone());
                    if s.successes >= health.success_threshold {
                        s.healthy = true;
                        s.ever_healthy = true;
                    }
                }
                Err(desc) => {
                    s.failures += 1;
                    s.successes = 0;
                    s.last_probe = Some(desc.clone());
                    if s.failures >= health.failure_threshold {
                        s.healthy = false;
                        // Liveness: a replica that was healthy and stopped answering is restarted.
                        restart = s.ever_healthy;
                    }
                }
            }
        });
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
            crate::config::Duration::from_millis(timeout.as_millis() as u64)
        )),
        Ok(Err(e)) => Err(format!("GET {path}: {e}")),
        Ok(Ok(status)) => {
            let text =
                format!("GET {path} → {} {} in {} ms", status.as_u16(), status.canonical_reason().unwrap_or(""), ms());
            if status.is_success() || status.is_redirection() { Ok(text) } else { Err(text) }
        }
    }
}
