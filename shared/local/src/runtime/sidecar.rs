//! Replicas' health sidecars: the platform's own process beside each
//! replica, started with only its token, restarted with backoff.

use super::*;

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

/// Keeps one replica's health sidecar running for as long as this
/// incarnation of the replica lives (the caller aborts the task). The
/// sidecar is the platform's own code: it runs outside the app's sandbox
/// (it reads the app's /proc entries) with only its token in its
/// environment. A sidecar that cannot start or keeps exiting is reported
/// on the replica (the verify function's reason says so) and restarted
/// with backoff.
pub(super) async fn run_sidecar(
    inner: Arc<Inner>,
    run: Arc<Running>,
    rep: Arc<Replica>,
    port: u16,
    pid: u32,
    l: SidecarLauncher,
) {
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
