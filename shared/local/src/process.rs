//! Output of the processes the platform starts (builds, replicas, sidecars):
//! streamed line by line into the log sink, each line cut at
//! [`MAX_LINE_BYTES`] and secret values masked before anything is stored.
//! Also the few helpers every process launcher shares.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;

use bifrost_core::ports::LogSink;

/// A line longer than this is cut, with a visible marker: one app printing
/// a 200 MiB line without a newline must not cost the platform 200 MiB.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// How many of the last lines are kept for failure reasons.
pub const TAIL_LINES: usize = 12;

/// Kills a child's whole process group when dropped (what the platform
/// starts outside the sandbox: health sidecars).
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

/// Replaces secret values by `***` in what a process prints.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    /// Values shorter than 4 bytes are not masked: they would hide every
    /// `1` or `on` in the output and protect nothing.
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= 4).collect();
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker { values }
    }

    pub fn mask(&self, line: String) -> String {
        if self.values.iter().all(|v| !line.contains(v.as_str())) {
            return line;
        }
        let mut out = line;
        for v in &self.values {
            out = out.replace(v.as_str(), "***");
        }
        out
    }
}

/// Where a process's lines go.
#[derive(Clone)]
pub struct Output {
    pub log: Arc<dyn LogSink>,
    pub deployment_id: String,
    pub project: String,
    pub stream: String,
    pub masker: Arc<Masker>,
    /// The last lines (masked, cut), for failure reasons.
    pub tail: Arc<Mutex<VecDeque<String>>>,
}

impl Output {
    pub fn new(log: Arc<dyn LogSink>, deployment_id: &str, project: &str, stream: &str, masker: Arc<Masker>) -> Self {
        Output {
            log,
            deployment_id: deployment_id.to_string(),
            project: project.to_string(),
            stream: stream.to_string(),
            masker,
            tail: Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES))),
        }
    }

    /// The platform's own line about this process (not masked: it says what
    /// the platform did).
    pub fn say(&self, text: String) {
        self.log.line(&self.deployment_id, &self.project, &self.stream, text);
    }

    fn emit(&self, raw: &[u8], cut: u64) {
        let mut raw = raw;
        while raw.last().is_some_and(|b| *b == b'\r') {
            raw = &raw[..raw.len() - 1];
        }
        // Progress bars redraw with \r: keep the last frame.
        let frame = raw.rsplit(|b| *b == b'\r').next().unwrap_or(raw);
        let mut text = String::from_utf8_lossy(frame).into_owned();
        if cut > 0 {
            text.push_str(&format!(
                " … [bifrost: line cut at {} KiB, {cut} more bytes dropped]",
                MAX_LINE_BYTES / 1024
            ));
        }
        let text = self.masker.mask(text);
        if let Ok(mut t) = self.tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text.clone());
        }
        self.log.line(&self.deployment_id, &self.project, &self.stream, text);
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Streams both pipes of a child until they close.
pub async fn pump_child(child: &mut Child, out: &Output) {
    pump_pair(child.stdout.take(), child.stderr.take(), out).await;
}

pub async fn pump_pair(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    out: &Output,
) {
    tokio::join!(pump(stdout, out), pump(stderr, out));
}

/// Reads lines without ever holding more than [`MAX_LINE_BYTES`] of one:
/// the rest of a long line is counted and dropped.
async fn pump(reader: Option<impl AsyncRead + Unpin>, out: &Output) {
    let Some(reader) = reader else { return };
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut: u64 = 0;
    loop {
        let (consumed, newline) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => {
                let (chunk, newline) = match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => (&buf[..i], true),
                    None => (buf, false),
                };
                let room = MAX_LINE_BYTES.saturating_sub(line.len());
                if chunk.len() <= room {
                    line.extend_from_slice(chunk);
                } else {
                    line.extend_from_slice(&chunk[..room]);
                    cut += (chunk.len() - room) as u64;
                }
                (chunk.len() + usize::from(newline), newline)
            }
        };
        reader.consume(consumed);
        if newline {
            out.emit(&line, cut);
            line.clear();
            cut = 0;
        }
    }
    if !line.is_empty() || cut > 0 {
        out.emit(&line, cut);
    }
}

/// The owner id of the platform whose data lives in `data_dir`: stable
/// across restarts, so a new start finds what the last one left running.
pub fn owner_id(data_dir: &Path) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(data_dir.to_string_lossy().as_bytes())[..8])
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
        (Some(127), _) => "exited with 127 (command not found)".into(),
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(s)) => match Signal::try_from(s) {
            Ok(sig) => format!("killed by {sig}"),
            Err(_) => format!("killed by signal {s}"),
        },
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl LogSink for Lines {
        fn line(&self, _: &str, _: &str, _: &str, line: String) {
            self.0.lock().expect("lock").push(line);
        }
    }

    async fn pumped(input: Vec<u8>, secrets: &[&str]) -> Vec<String> {
        let sink = Arc::new(Lines::default());
        let masker = Arc::new(Masker::new(secrets.iter().map(|s| s.to_string())));
        let out = Output::new(sink.clone(), "d", "p", "replica-0", masker);
        pump(Some(std::io::Cursor::new(input)), &out).await;
        sink.0.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn a_line_without_a_newline_is_cut_with_a_marker() {
        let mut input = vec![b'x'; 3 * MAX_LINE_BYTES];
        input.extend_from_slice(b"\nnext\n");
        let lines = pumped(input, &[]).await;
        assert_eq!(lines.len(), 2, "{:?}", lines.iter().map(String::len).collect::<Vec<_>>());
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE_BYTES)));
        assert!(lines[0].ends_with(&format!("line cut at 16 KiB, {} more bytes dropped]", 2 * MAX_LINE_BYTES)));
        assert_eq!(lines[1], "next");
    }

    #[tokio::test]
    async fn secret_values_are_masked_before_they_are_stored() {
        let lines = pumped(b"token=hunter2-secret and key=abc\n".to_vec(), &["hunter2-secret", "abc"]).await;
        // `abc` is too short to mask (it would hide every "abc" in the output).
        assert_eq!(lines, ["token=*** and key=abc"]);
    }

    #[tokio::test]
    async fn progress_bars_keep_their_last_frame() {
        assert_eq!(pumped(b"10%\r50%\r100%\r\ndone".to_vec(), &[]).await, ["100%", "done"]);
    }
}
