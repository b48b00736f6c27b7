//! A replica's life: its confined command, the supervisor that restarts it
//! with capped backoff and reports a crash loop, and how it is ended.

use super::*;

/// The command a replica runs, confined.
pub(super) fn replica_jail(inner: &Inner, run: &Running, index: u32, port: u16) -> Result<Jail, String> {
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
pub(super) async fn end(child: &mut tokio::process::Child, sup: &mut Supervised) {
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
pub(super) async fn supervise(inner: Arc<Inner>, run: Arc<Running>, rep: Arc<Replica>) {
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

        if was_listening {
            let _ = inner.events.send(RuntimeEvent::ReplicaDown {
                deployment_id: spec.deployment_id.clone(),
                reason: format!("replica {} {how}", rep.index),
            });
        }
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

pub(super) enum Exit {
    Died(String),
    Stopped,
    Unhealthy,
}
