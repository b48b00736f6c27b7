//! Child processes the platform starts (builds, replicas): each in its own
//! process group so one signal stops it and everything it spawned; output
//! streamed line by line; marked with the platform's owner id so a restart
//! after a crash can find and kill what the dead platform left behind.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::ports::LogSink;

/// Environment variable every child carries: `BIFROST_OWNER=<owner id>`.
pub const OWNER_ENV: &str = "BIFROST_OWNER";

/// A command run through `sh -c`, in `dir`, with the platform's environment
/// minus its own `BIFROST_*` settings (tokens must not leak into apps).
pub fn shell(command: &str, dir: &Path, owner: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BIFROST_") {
            cmd.env_remove(k);
        }
    }
    cmd.env(OWNER_ENV, owner)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: killpg reaches grandchildren too.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Kills a child's whole process group when dropped (cancelled builds,
/// platform shutdown).
pub struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    pub fn new(child: &Child) -> Self {
        GroupGuard { pgid: child.id().map(|p| p as i32) }
    }

    /// Sends `signal` to the whole group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Forwards a child's stdout and stderr, line by line, to the sink. Lines
/// are decoded lossily (build tools print what they like) and keep their
/// ANSI escapes. Returns when both streams end.
pub async fn stream_output(
    child: &mut Child,
    log: Arc<dyn LogSink>,
    deployment_id: String,
    project: String,
    stream: String,
    tail: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
) {
    pump_pair(child.stdout.take(), child.stderr.take(), log, deployment_id, project, stream, tail).await;
}

/// Streams both pipes of a child until they close.
pub async fn pump_pair(
    out: Option<tokio::process::ChildStdout>,
    err: Option<tokio::process::ChildStderr>,
    log: Arc<dyn LogSink>,
    deployment_id: String,
    project: String,
    stream: String,
    tail: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
) {
    let a = pump(out, log.clone(), deployment_id.clone(), project.clone(), stream.clone(), tail.clone());
    let b = pump(err, log, deployment_id, project, stream, tail);
    tokio::join!(a, b);
}

/// How many of the last lines are kept for failure reasons.
pub const TAIL_LINES: usize = 12;

async fn pump(
    reader: Option<impl AsyncRead + Unpin>,
    log: Arc<dyn LogSink>,
    deployment_id: String,
    project: String,
    stream: String,
    tail: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
) {
    let Some(reader) = reader else { return };
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                // Progress bars redraw with \r: keep the last frame.
                let text = String::from_utf8_lossy(buf.rsplit(|b| *b == b'\r').next().unwrap_or(&buf)).into_owned();
                if let Ok(mut t) = tail.lock() {
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(text.clone());
                }
                log.line(&deployment_id, &project, &stream, text);
            }
        }
    }
}

/// The owner id of the platform whose data lives in `data_dir`: stable
/// across restarts, so a new start finds what the last one left running.
pub fn owner_id(data_dir: &Path) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(data_dir.to_string_lossy().as_bytes())[..8])
}

/// Kills every process (and its group) that carries `BIFROST_OWNER=<owner>`
/// — what a platform that died without shutting down left running. Returns
/// how many it killed.
pub fn kill_orphans(owner: &str) -> usize {
    let me = std::process::id();
    let needle = format!("{OWNER_ENV}={owner}");
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let pid = Pid::from_raw(pid as i32);
            if let Ok(pgid) = nix::unistd::getpgid(Some(pid)) {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// A free loopback TCP port (the OS picks; there is a small window before
/// the app binds it, which a restart absorbs).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Describes how a process ended: `exited with 1`, `killed by SIGSEGV`.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(s)) => match Signal::try_from(s) {
            Ok(sig) => format!("killed by {sig}"),
            Err(_) => format!("killed by signal {s}"),
        },
        _ => "ended".into(),
    }
}
