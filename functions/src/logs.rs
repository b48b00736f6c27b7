//! The embedded log sink: lines from builds and replicas go through a
//! bounded channel to a task that writes them to the store's feed in
//! batches (one transaction per batch, not per line).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use bifrost_core::domain::{LogLine, now};
use bifrost_core::ports::{LogSink, Store};

/// Stored bytes per deployment and stream kind; past it the oldest lines
/// are dropped (a rolling window).
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    pub build_bytes: usize,
    pub runtime_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { build_bytes: 10 << 20, runtime_bytes: 50 << 20 }
    }
}

pub struct LogWriter {
    tx: mpsc::Sender<Msg>,
    dropped: AtomicU64,
}

enum Msg {
    Line(LogLine),
    /// Answered once everything before it is stored.
    Flush(tokio::sync::oneshot::Sender<()>),
}

const BATCH: usize = 2000;
const CHANNEL: usize = 65_536;

impl LogWriter {
    /// Starts the writer task; it ends (after a last flush) once every
    /// `Arc<LogWriter>` is dropped.
    pub fn start(store: Arc<dyn Store>, limits: LogLimits) -> (Arc<LogWriter>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let task = tokio::spawn(run(store, rx, limits));
        (Arc::new(LogWriter { tx, dropped: AtomicU64::new(0) }), task)
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl LogSink for LogWriter {
    async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn line(&self, deployment_id: &str, project: &str, stream: &str, line: String) {
        let l = LogLine {
            deployment_id: deployment_id.to_string(),
            project: project.to_string(),
            at: now(),
            stream: stream.to_string(),
            line,
        };
        if self.tx.try_send(Msg::Line(l)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>, limits: LogLimits) {
    // (deployment, is_build) → bytes stored so far in this process.
    let mut used: HashMap<(String, bool), usize> = HashMap::new();
    // (deployment, is_build) → lines dropped from the window so far.
    let mut dropped_lines: HashMap<(String, bool), usize> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = vec![];
    while let Some(first) = rx.recv().await {
        let mut take = |m: Msg, batch: &mut Vec<LogLine>| match m {
            Msg::Line(l) => batch.push(l),
            Msg::Flush(done) => flushes.push(done),
        };
        // Gather what arrives in the next few milliseconds into one write;
        // a flush request ends the wait at once (and one alone never waits:
        // a function is holding its next transition for it).
        let mut gather = !matches!(first, Msg::Flush(_));
        take(first, &mut batch);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        while gather && batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => {
                    let is_flush = matches!(m, Msg::Flush(_));
                    take(m, &mut batch);
                    if is_flush {
                        gather = false;
                    }
                }
                _ => break,
            }
        }
        let mut kept = Vec::with_capacity(batch.len());
        let mut over: Vec<(String, String, bool)> = vec![];
        for l in batch.drain(..) {
            let build = l.stream == "build";
            let cap = if build { limits.build_bytes } else { limits.runtime_bytes };
            let n = used.entry((l.deployment_id.clone(), build)).or_default();
            *n += l.line.len() + 1;
            if *n > cap && !over.iter().any(|(d, _, b)| *d == l.deployment_id && *b == build) {
                over.push((l.deployment_id.clone(), l.project.clone(), build));
            }
            kept.push(l);
        }
        if let Err(e) = store.append_logs(kept).await {
            tracing::error!(error = %e, "could not store log lines");
        }
        // Past its cap a log keeps its newest lines: the oldest quarter goes,
        // and a line says how many went.
        for (deployment_id, project, build) in over {
            let cap = if build { limits.build_bytes } else { limits.runtime_bytes };
            let keep = cap / 4 * 3;
            match store.trim_logs(&deployment_id, build, keep).await {
                Ok(dropped) => {
                    let total = dropped_lines.entry((deployment_id.clone(), build)).or_default();
                    *total += dropped;
                    used.insert((deployment_id.clone(), build), keep);
                    let note = LogLine {
                        deployment_id,
                        project,
                        at: now(),
                        stream: if build { "build".into() } else { "platform".into() },
                        line: format!(
                            "[bifrost] log limit ({} MiB per deployment {}): {total} older lines dropped so far; \
                             the newest are kept",
                            cap >> 20,
                            if build { "build" } else { "runtime" }
                        ),
                    };
                    if let Err(e) = store.append_logs(vec![note]).await {
                        tracing::error!(error = %e, "could not store log lines");
                    }
                }
                Err(e) => tracing::error!(error = %e, deployment = %deployment_id, "could not trim a log"),
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
