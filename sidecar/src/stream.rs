//! The reporting loop. Every `interval`: probe the app, read its process,
//! append the report to the buffer and send it if a stream is up. The
//! platform acknowledges what it stored; acknowledged reports leave the
//! buffer. A broken stream is re-opened with exponential backoff, and
//! everything still unacknowledged is sent again first.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::buffer::Buffer;
use crate::probe::probe;
use crate::procstat::{ProcError, ProcReader, find_pid};
use crate::proto::ingest_client::IngestClient;
use crate::proto::{Ack, HealthReport, Process};

/// How the sidecar finds the app's process.
#[derive(Clone, Debug)]
pub enum Target {
    Pid(u32),
    /// The newest process whose command line contains this.
    Match(String),
    None,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: SocketAddr,
    pub health_path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub process: Target,
    pub endpoint: String,
    pub deployment: String,
    pub replica: u32,
    pub token: String,
    /// Most reports kept while the platform is unreachable.
    pub buffer: usize,
}

type Connecting = Pin<Box<dyn Future<Output = Result<Streaming<Ack>, String>> + Send>>;

enum Link {
    Down { retry_at: Instant, backoff: Duration },
    Connecting { tx: mpsc::Sender<HealthReport>, fut: Connecting, backoff: Duration },
    Up { tx: mpsc::Sender<HealthReport>, acks: Streaming<Ack> },
}

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `shutdown` resolves. Prints one line per connection change
/// on stderr (the platform stores it with the replica's logs).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) {
    let run_id = format!(
        "{:x}-{:x}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
    );
    let mut buffer = Buffer::new(config.buffer);
    let mut reader = None::<ProcReader>;
    let mut seq = 0u64;
    let mut link = Link::Down { retry_at: Instant::now(), backoff: MIN_BACKOFF };
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_drops = 0;
    tokio::pin!(shutdown);
    loop {
        // Start connecting when it is time.
        if let Link::Down { retry_at, backoff } = &link
            && Instant::now() >= *retry_at
        {
            let backoff = *backoff;
            let (tx, rx) = mpsc::channel(config.buffer + 16);
            for r in buffer.after(0) {
                let _ = tx.try_send(r.clone());
            }
            let fut = Box::pin(open(config.clone(), rx));
            link = Link::Connecting { tx, fut, backoff };
        }
        let retry_at = match &link {
            Link::Down { retry_at, .. } => *retry_at,
            _ => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                seq += 1;
                let report = take(&config, &mut reader, seq, &run_id).await;
                match &link {
                    Link::Connecting { tx, .. } | Link::Up { tx, .. } => { let _ = tx.try_send(report.clone()); }
                    Link::Down { .. } => {}
                }
                buffer.push(report);
                if buffer.dropped() > reported_drops {
                    if reported_drops == 0 {
                        eprintln!("[sidecar] buffer full ({} reports): dropping the oldest", config.buffer);
                    }
                    reported_drops = buffer.dropped();
                }
            }
            _ = tokio::time::sleep_until(retry_at) => {}
            event = async {
                match &mut link {
                    Link::Connecting { fut, .. } => LinkEvent::Opened(Box::new(fut.as_mut().await)),
                    Link::Up { acks, .. } => LinkEvent::Acked(acks.message().await),
                    Link::Down { .. } => std::future::pending().await,
                }
            } => match event {
                LinkEvent::Opened(result) => {
                    let Link::Connecting { tx, backoff, .. } =
                        std::mem::replace(&mut link, Link::Down { retry_at: Instant::now(), backoff: MIN_BACKOFF })
                    else {
                        continue;
                    };
                    link = match *result {
                        Ok(acks) => {
                            eprintln!("[sidecar] connected to {} ({} buffered)", config.endpoint, buffer.len());
                            Link::Up { tx, acks }
                        }
                        Err(e) => {
                            eprintln!("[sidecar] cannot reach {}: {e}; retrying in {backoff:?}", config.endpoint);
                            Link::Down { retry_at: Instant::now() + backoff, backoff: (backoff * 2).min(MAX_BACKOFF) }
                        }
                    };
                }
                LinkEvent::Acked(ack) => {
                match ack {
                    Ok(Some(a)) => buffer.ack(a.stored_through),
                    Ok(None) | Err(_) => {
                        let why = match ack { Err(e) => e.message().to_string(), _ => "stream ended".into() };
                        eprintln!("[sidecar] lost {}: {why}; reconnecting", config.endpoint);
                        link = Link::Down { retry_at: Instant::now() + MIN_BACKOFF, backoff: MIN_BACKOFF };
                    }
                }
                }
            }
        }
    }
}

enum LinkEvent {
    Opened(Box<Result<Streaming<Ack>, String>>),
    Acked(Result<Option<Ack>, tonic::Status>),
}

/// Opens the stream: connect, authenticate, wait for the platform's answer.
async fn open(config: Config, rx: mpsc::Receiver<HealthReport>) -> Result<Streaming<Ack>, String> {
    let origin: http::Uri = config.endpoint.parse().map_err(|e| format!("bad endpoint {:?}: {e}", config.endpoint))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    // gRPC is HTTP/2 without TLS here (loopback, or the pod's network).
    let http = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
    let mut client = IngestClient::with_origin(http, origin);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let bearer =
        format!("Bearer {}", config.token).parse().map_err(|_| "the token is not a valid header value".to_string())?;
    request.metadata_mut().insert("authorization", bearer);
    let response = client.report(request).await.map_err(|s| match s.code() {
        // Transport errors arrive as Unknown/Unavailable with the cause in the message.
        tonic::Code::Unknown | tonic::Code::Unavailable => s.message().to_string(),
        c => format!("{}: {}", code_name(c), s.message()),
    })?;
    Ok(response.into_inner())
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

/// One report: probe, then read the process.
async fn take(config: &Config, reader: &mut Option<ProcReader>, seq: u64, run_id: &str) -> HealthReport {
    let at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
    let p = probe(config.target, &config.health_path, config.timeout).await;
    if reader.is_none() {
        *reader = match &config.process {
            Target::Pid(pid) => Some(ProcReader::new(*pid)),
            Target::Match(needle) => find_pid(needle).map(ProcReader::new),
            Target::None => None,
        };
    }
    let process = match reader.as_mut().map(ProcReader::sample) {
        Some(Ok(s)) => Some(Process {
            pid: s.pid,
            cpu_percent: s.cpu_percent.unwrap_or(0.0),
            rss_bytes: s.rss_bytes,
            threads: s.threads,
            open_fds: s.open_fds,
        }),
        Some(Err(ProcError::Gone(_) | ProcError::Malformed(..))) => {
            // Found again next time (a matched process may have restarted).
            if matches!(config.process, Target::Match(_)) {
                *reader = None;
            }
            None
        }
        None => None,
    };
    HealthReport {
        deployment_id: config.deployment.clone(),
        replica: config.replica,
        seq,
        run_id: run_id.to_string(),
        at_unix_ms,
        probe: Some(p),
        process,
    }
}
