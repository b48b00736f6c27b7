//! The embedded builder: checks out the exact commit into the deployment's
//! own directory and builds it there with the machine's toolchains (or the
//! `[build] command`), every step confined by the [`Sandbox`] as the
//! project's own user. The directory then is the artifact.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::process::{Masker, Output, describe_exit, pump_child};
use crate::sandbox::{Jail, Limits, Sandbox, Supervised};
use bifrost_core::config::plan::{no_start_command, read_json, rust_binary, start_command, static_root};
use bifrost_core::config::{DeployConfig, Runtime};
use bifrost_core::ports::{BuildError, BuildRequest, Builder, LogSink, Sources};

/// What a local build produced; stored (as JSON) on the deployment and read
/// back by the process runtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalArtifact {
    /// Where replicas run.
    pub dir: PathBuf,
    /// Shell command that starts one replica (reads `$PORT`). For static
    /// sites the platform's own file server is started instead.
    pub command: Option<String>,
    /// For `runtime = "static"`: the folder served.
    pub static_root: Option<PathBuf>,
    /// Prepended to `PATH` (e.g. the virtualenv's `bin`).
    pub path_prepend: Vec<PathBuf>,
}

pub struct LocalBuilder {
    sandbox: Sandbox,
    sources: Arc<dyn Sources>,
    timeout: Duration,
    /// Deployments being built here now: a second delivery of the same
    /// build event (Pub/Sub delivers at least once) must not build into the
    /// same directory at the same time.
    running: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Holds a deployment's place in [`LocalBuilder::running`] while it builds.
struct Building(Arc<std::sync::Mutex<std::collections::HashSet<String>>>, String);

impl Drop for Building {
    fn drop(&mut self) {
        if let Ok(mut running) = self.0.lock() {
            running.remove(&self.1);
        }
    }
}

/// Processes one build may have (a fork bomb stops there).
const BUILD_PIDS: u32 = 1024;

impl LocalBuilder {
    pub fn new(sandbox: Sandbox, sources: Arc<dyn Sources>, timeout: Duration) -> Self {
        LocalBuilder { sandbox, sources, timeout, running: Arc::default() }
    }

    pub fn artifact_dir(&self, project_id: &str, deployment_id: &str) -> PathBuf {
        self.sandbox.deployment_dir(project_id, deployment_id)
    }
}

/// Removes a build's directory unless the build succeeded — also when the
/// build is dropped half-way (cancelled, superseded, platform shutdown).
struct Unfinished(Option<PathBuf>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One build step: what the log says, and the shell command.
struct Step {
    title: String,
    command: String,
    env: Vec<(String, String)>,
}

fn step(title: &str, command: &str) -> Step {
    Step { title: title.to_string(), command: command.to_string(), env: vec![] }
}

fn need(sandbox: &Sandbox, bin: &str, runtime: Runtime) -> Result<(), BuildError> {
    sandbox.find(bin).map(|_| ()).map_err(|why| BuildError::Failed(format!("runtime {runtime} needs {why}")))
}

/// The build steps and start command for a checkout.
fn plan(
    sandbox: &Sandbox,
    config: &DeployConfig,
    dir: &Path,
    cache: &Path,
) -> Result<(Vec<Step>, LocalArtifact), BuildError> {
    let need = |bin: &str, rt: Runtime| need(sandbox, bin, rt);
    let rt = config.app.runtime;
    let mut steps = vec![];
    let mut artifact = LocalArtifact { dir: dir.to_path_buf(), command: None, static_root: None, path_prepend: vec![] };
    let custom_build = config.build.command.clone();
    match rt {
        Runtime::Rust => {
            let target = cache.join("cargo-target");
            if custom_build.is_none() {
                need("cargo", rt)?;
                let locked = if dir.join("Cargo.lock").exists() { " --locked" } else { "" };
                let bin = rust_binary(dir)?;
                let mut s = step(
                    "cargo build --release",
                    &format!(
                        "cargo build --release{locked} --color always && mkdir -p .bifrost/bin && cp \"$CARGO_TARGET_DIR/release/{bin}\" .bifrost/bin/"
                    ),
                );
                s.env.push(("CARGO_TARGET_DIR".into(), target.display().to_string()));
                s.env.push(("CARGO_HOME".into(), cache.join("cargo-home").display().to_string()));
                steps.push(s);
                artifact.command = start_command(rt, dir)?;
            }
        }
        Runtime::Go => {
            if custom_build.is_none() {
                need("go", rt)?;
                let mut s = step("go build", "mkdir -p .bifrost/bin && go build -o .bifrost/bin/app .");
                s.env.push(("GOPATH".into(), cache.join("go").display().to_string()));
                s.env.push(("GOCACHE".into(), cache.join("go-build").display().to_string()));
                steps.push(s);
                artifact.command = start_command(rt, dir)?;
            }
        }
        Runtime::Python => {
            need("python3", rt)?;
            if custom_build.is_none() {
                if dir.join("requirements.txt").exists() {
                    steps.push(step("python3 -m venv .venv", "python3 -m venv .venv"));
                    let mut s = step(
                        "pip install -r requirements.txt",
                        ".venv/bin/pip install --disable-pip-version-check --no-input -r requirements.txt",
                    );
                    s.env.push(("PIP_CACHE_DIR".into(), cache.join("pip").display().to_string()));
                    steps.push(s);
                } else {
                    // No dependencies: a bare virtualenv, without pip (fast).
                    steps.push(step("python3 -m venv --without-pip .venv", "python3 -m venv --without-pip .venv"));
                }
            }
            artifact.path_prepend.push(dir.join(".venv/bin"));
            artifact.command = start_command(rt, dir)?;
        }
        Runtime::Node => {
            need("node", rt)?;
            let pkg = read_json(&dir.join("package.json"));
            if custom_build.is_none() {
                need("npm", rt)?;
                if pkg.is_some() {
                    let install = if dir.join("package-lock.json").exists() { "npm ci" } else { "npm install" };
                    let mut s = step(install, &format!("{install} --no-audit --no-fund"));
                    s.env.push(("npm_config_cache".into(), cache.join("npm").display().to_string()));
                    steps.push(s);
                    if pkg.as_ref().is_some_and(|p| p["scripts"]["build"].is_string()) {
                        steps.push(step("npm run build", "npm run build"));
                    }
                }
            }
            artifact.command = start_command(rt, dir)?;
        }
        Runtime::Static => {
            artifact.static_root = Some(dir.join(static_root(dir)));
        }
        Runtime::Docker => {
            return Err(BuildError::Failed(
                "runtime docker needs a container engine, and the embedded platform runs none; \
                 use rust, go, python, node or static here, or deploy to GKE"
                    .into(),
            ));
        }
    }
    if let Some(cmd) = custom_build {
        steps.push(step(&format!("[build] command: {cmd}"), &cmd));
    }
    if let Some(cmd) = &config.run.command {
        artifact.command = Some(cmd.clone());
    }
    if artifact.command.is_none() && artifact.static_root.is_none() {
        return Err(no_start_command(rt));
    }
    Ok((steps, artifact))
}

impl LocalBuilder {
    async fn run_steps(
        &self,
        req: &BuildRequest,
        dir: &Path,
        steps: Vec<Step>,
        log: &Arc<dyn LogSink>,
    ) -> Result<(), BuildError> {
        let out = Output::new(log.clone(), &req.deployment_id, &req.project, "build", Arc::new(Masker::default()));
        let cache = self.sandbox.cache_dir(&req.project_id);
        for s in steps {
            out.say(format!("\u{1b}[1m==> {}\u{1b}[0m", s.title));
            let started = std::time::Instant::now();
            let mut env = s.env.clone();
            env.push(("CI".into(), "true".into()));
            env.push(("BIFROST_DEPLOYMENT".into(), req.deployment_id.clone()));
            // Kept across the project's builds (and only its builds).
            env.push(("BIFROST_CACHE_DIR".into(), cache.display().to_string()));
            let jail = Jail {
                name: format!("{}-build", req.deployment_id),
                project_id: req.project_id.clone(),
                dir: dir.to_path_buf(),
                writable: vec![cache.clone()],
                // Test suites may listen on an ephemeral port; nothing else.
                bind: vec![0],
                env,
                limits: Limits { pids_max: Some(BUILD_PIDS), ..Limits::default() },
                command: vec!["sh".into(), "-c".into(), s.command.clone().into()],
            };
            let mut child = self
                .sandbox
                .command(&jail)
                .and_then(|mut c| c.spawn().map_err(|e| e.to_string()))
                .map_err(|e| BuildError::Unavailable(format!("cannot start `{}`: {e}", s.command)))?;
            // Dropping this (cancel, timeout, platform shutdown) ends the whole tree.
            let mut sup = Supervised::new(&child);
            pump_child(&mut child, &out).await;
            let status = child.wait().await.map_err(|e| BuildError::Unavailable(e.to_string()))?;
            sup.done();
            if !status.success() {
                let last = out.tail().iter().map(|l| strip_ansi(l)).collect::<Vec<_>>().join("\n");
                return Err(BuildError::Failed(format!(
                    "build step `{}` {}; last lines:\n{last}",
                    s.title,
                    describe_exit(status)
                )));
            }
            out.say(format!("\u{1b}[2m    {} took {:.3}s\u{1b}[0m", s.title, started.elapsed().as_secs_f64()));
        }
        Ok(())
    }
}

/// Removes ANSI escape sequences (for reasons shown as plain text).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Builder for LocalBuilder {
    async fn build(&self, req: BuildRequest, log: Arc<dyn LogSink>) -> Result<serde_json::Value, BuildError> {
        let claimed = self.running.lock().map(|mut r| r.insert(req.deployment_id.clone())).unwrap_or(false);
        if !claimed {
            // Retried later: by then this build has moved the deployment on,
            // and the retry finds nothing to do.
            return Err(BuildError::Unavailable(format!("{} is already being built", req.deployment_id)));
        }
        let _building = Building(self.running.clone(), req.deployment_id.clone());
        let dir = self.artifact_dir(&req.project_id, &req.deployment_id);
        let unavailable = |what: &str, e: std::io::Error| BuildError::Unavailable(format!("{what}: {e}"));
        // A redelivered build (after a crash) starts from a clean directory.
        if dir.exists() {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(d))
                .await
                .map_err(|e| BuildError::Unavailable(e.to_string()))?
                .map_err(|e| unavailable(&format!("cleaning {}", dir.display()), e))?;
        }
        let cache = self.sandbox.cache_dir(&req.project_id);
        for d in [&dir, &cache] {
            self.sandbox
                .own_dir(&req.project_id, d)
                .map_err(|e| unavailable(&format!("creating {}", d.display()), e))?;
        }
        let mut unfinished = Unfinished(Some(dir.clone()));
        log.line(
            &req.deployment_id,
            &req.project,
            "build",
            format!("\u{1b}[1m==> checkout {}\u{1b}[0m", req.source.short()),
        );
        self.sources.checkout(&req.source, &dir).await.map_err(|e| match e {
            bifrost_core::ports::SourceError::Unavailable(m) => BuildError::Unavailable(m),
            other => BuildError::Failed(format!("checkout failed: {other}")),
        })?;
        let (sandbox, project_id, d) = (self.sandbox.clone(), req.project_id.clone(), dir.clone());
        tokio::task::spawn_blocking(move || sandbox.hand_over(&project_id, &d))
            .await
            .map_err(|e| BuildError::Unavailable(e.to_string()))?
            .map_err(|e| unavailable("handing the checkout to the project's user", e))?;
        let (steps, artifact) = plan(&self.sandbox, &req.config, &dir, &cache)?;
        match tokio::time::timeout(self.timeout, self.run_steps(&req, &dir, steps, &log)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(BuildError::Failed(format!(
                    "build timed out after {}s (BIFROST_BUILD_TIMEOUT)",
                    self.timeout.as_secs()
                )));
            }
        }
        log.line(&req.deployment_id, &req.project, "build", "\u{1b}[1;32m==> build succeeded\u{1b}[0m".into());
        let artifact = serde_json::to_value(&artifact).map_err(|e| BuildError::Unavailable(e.to_string()))?;
        unfinished.0 = None;
        Ok(artifact)
    }

    async fn discard(&self, project_id: &str, deployment_id: &str) {
        let dir = self.artifact_dir(project_id, deployment_id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove an artifact");
        }
    }

    async fn discard_project(&self, project_id: &str) {
        let (sandbox, id) = (self.sandbox.clone(), project_id.to_string());
        match tokio::task::spawn_blocking(move || sandbox.remove_project(&id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(project = project_id, error = %e, "could not remove a deleted project's files")
            }
            Err(e) => tracing::warn!(project = project_id, error = %e, "could not remove a deleted project's files"),
        }
    }
}
