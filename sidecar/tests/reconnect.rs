//! The real `bifrost-sidecar` binary against a real app (a tiny HTTP
//! server) and a real gRPC ingest (tonic, in this test): reports flow and
//! are acknowledged; while the ingest is down they are buffered, the oldest
//! dropped beyond `--buffer`, and the rest delivered after the reconnect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_sidecar::proto::ingest_server::{Ingest, IngestServer};
use bifrost_sidecar::proto::{Ack, HealthReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
struct Recorder {
    reports: Arc<Mutex<Vec<HealthReport>>>,
    tokens: Arc<Mutex<Vec<String>>>,
    /// Set: open streams are cut and the server shuts down (an outage).
    down: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            reports: Arc::default(),
            tokens: Arc::default(),
            down: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

type Acks = std::pin::Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for Recorder {
    type ReportStream = Acks;
    async fn report(&self, req: Request<Streaming<HealthReport>>) -> Result<Response<Acks>, Status> {
        let token = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        self.tokens.lock().expect("lock").push(token);
        if *self.down.borrow() {
            return Err(Status::unavailable("down"));
        }
        let reports = self.reports.clone();
        let stream = futures_lite(req.into_inner(), reports, self.down.subscribe());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Acknowledges each report after recording it.
fn futures_lite(
    mut input: Streaming<HealthReport>,
    reports: Arc<Mutex<Vec<HealthReport>>>,
    mut down: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = Result<Ack, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let r = tokio::select! {
                m = input.message() => match m { Ok(Some(r)) => r, _ => break },
                _ = async { let _ = down.wait_for(|d| *d).await; } => {
                    let _ = tx.send(Err(Status::unavailable("ingest going down"))).await;
                    break;
                }
            };
            let seq = r.seq;
            reports.lock().expect("lock").push(r);
            if tx.send(Ok(Ack { stored_through: seq })).await.is_err() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves the ingest on `addr` until the returned sender is dropped.
async fn serve(addr: SocketAddr, rec: Recorder) -> tokio::sync::oneshot::Sender<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind ingest");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(IngestServer::new(rec))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    });
    tx
}

/// A one-route HTTP app: 200 on every request.
async fn app() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            });
        }
    });
    addr
}

fn seqs(rec: &Recorder) -> Vec<u64> {
    rec.reports.lock().expect("lock").iter().map(|r| r.seq).collect()
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_survive_an_ingest_outage_up_to_the_buffer() {
    let app = app().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    let rec = Recorder::default();
    let stop = serve(port, rec.clone()).await;
    let mut sidecar = tokio::process::Command::new(env!("CARGO_BIN_EXE_bifrost-sidecar"))
        .args(["--target", &app.to_string(), "--health-path", "/healthz", "--interval", "100ms"])
        .args(["--endpoint", &format!("http://{port}"), "--deployment", "d-test", "--replica", "1"])
        .args(["--pid", &std::process::id().to_string(), "--buffer", "10"])
        .env("BIFROST_SIDECAR_TOKEN", "t0ken")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sidecar");

    wait_for("5 reports", || seqs(&rec).len() >= 5).await;
    {
        let reports = rec.reports.lock().expect("lock");
        let r = &reports[0];
        assert_eq!((r.deployment_id.as_str(), r.replica), ("d-test", 1));
        let probe = r.probe.clone().expect("probe");
        assert!(probe.tcp_ok && probe.http_ok && probe.http_status == 200, "{probe:?}");
        let process = r.process.expect("process");
        assert_eq!(process.pid, std::process::id());
        assert!(process.rss_bytes > 0 && process.threads >= 2 && process.open_fds > 0, "{process:?}");
    }
    assert_eq!(rec.tokens.lock().expect("lock")[0], "Bearer t0ken");

    // Ingest down for 2.5 s: ~25 reports are taken, at most 10 kept.
    rec.down.send_replace(true);
    drop(stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = *seqs(&rec).last().expect("some");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    rec.down.send_replace(false);
    let stop = serve(port, rec.clone()).await;
    wait_for("delivery after the reconnect", || seqs(&rec).iter().any(|s| *s > before + 25)).await;
    drop(stop);
    sidecar.start_kill().expect("kill");
    let out = sidecar.wait_with_output().await.expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);

    let all = seqs(&rec);
    let after: Vec<u64> = all.iter().copied().filter(|s| *s > before).collect();
    // Every seq arrives once at most (the ingest acknowledged what it stored).
    let mut sorted = after.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), after.len(), "a report was delivered twice: {after:?}");
    // The first after the outage is not before+1: the oldest were dropped…
    let first = after[0];
    assert!(first > before + 1, "nothing was dropped: {after:?} (before {before})");
    // …and from there on, nothing is missing: the buffer's 10 then live ones.
    for w in after.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap after the reconnect: {after:?}");
    }
    assert!(stderr.contains("dropping the oldest"), "{stderr}");
    assert!(stderr.contains("cannot reach") || stderr.contains("lost"), "{stderr}");
}
