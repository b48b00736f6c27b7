//! Upstream connections, held by the client connection they serve.
//!
//! A client's keep-alive HTTP/1.1 connection sends one request at a time,
//! so it can keep its own connection to the replica and reuse it: no shared
//! pool, no pool lock, no checkout. Measured on 2 cores (BENCHMARKS.md,
//! "Where the router's time goes"): hyper_util's pooled client cost 15–25 µs
//! of CPU per request in pool checkout, channels and wake-ups between its
//! tasks; a held connection is what a bare hyper proxy costs.
//!
//! Each client connection holds at most [`HELD`] upstream connections (one
//! per replica it was balanced to, most recent kept); they close with it, or
//! when the app closes them (an idle keep-alive timeout), and are then made
//! again on the next request.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Upstream connections one client connection keeps.
pub const HELD: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the router knows of a client connection: its peer, and the
/// upstream connections it holds. [`crate::serve()`] gives every request
/// its connection's; a request without one (a service called directly)
/// gets a connection of its own.
#[derive(Clone, Debug)]
pub struct Downstream {
    pub peer: SocketAddr,
    upstreams: Arc<Upstreams>,
}

impl Downstream {
    pub fn new(peer: SocketAddr) -> Self {
        Downstream { peer, upstreams: Arc::default() }
    }

    pub(crate) fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }
}

/// Raises the soft limit on open files to the hard one, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: a client connection costs
/// the router two descriptors (its own and a held upstream one), and the
/// common soft default of 1,024 would refuse clients long before memory
/// runs out. Returns the limit now in force. Called by the router node and
/// `bifrost up` (whose sandbox gives apps a limit of their own).
pub fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Why a request did not reach a replica.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection (refused, unreachable, timed out): the request was
    /// not sent, another replica may take it.
    Connect(io::Error),
    /// The connection failed after the request went out.
    Failed(hyper::Error),
}

#[derive(Default)]
pub(crate) struct Upstreams {
    held: Mutex<Vec<(SocketAddr, SendRequest<Body>)>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Sends `req` to `addr` on the connection held for it, else on a new
    /// one (then held). A held connection the app closed meanwhile gives
    /// the request back unsent, and it goes on a new connection.
    pub(crate) async fn send(&self, addr: SocketAddr, mut req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        if let Some(mut sender) = self.take(addr)
            && sender.ready().await.is_ok()
        {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.keep(addr, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
        let mut sender = connect(addr).await.map_err(SendError::Connect)?;
        let resp = sender.send_request(req).await.map_err(SendError::Failed)?;
        self.keep(addr, sender);
        Ok(resp)
    }

    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let i = held.iter().position(|(a, _)| *a == addr)?;
        let (_, sender) = held.swap_remove(i);
        (!sender.is_closed()).then_some(sender)
    }

    fn keep(&self, addr: SocketAddr, sender: SendRequest<Body>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= HELD {
            held.remove(0);
        }
        held.push((addr, sender));
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }
}

async fn connect(addr: SocketAddr) -> io::Result<SendRequest<Body>> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no connection within {CONNECT_TIMEOUT:?}")))??;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(io::Error::other)?;
    // Ends when the app closes it or every sender is dropped (the client
    // connection closed).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP/1.1 upstream that answers each request with the number of
    /// the connection it came on, and closes a connection after `per_conn`
    /// answers (an app's keep-alive limit).
    async fn upstream(per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..per_conn {
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tcp.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => got.extend_from_slice(&buf[..k]),
                            }
                        }
                        let body = format!("conn {n}");
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if tcp.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    async fn get(upstreams: &Upstreams, addr: SocketAddr) -> String {
        let req = Request::builder().uri("/").header("host", "a.localhost").body(Body::empty()).expect("request");
        let resp = upstreams.send(addr, req).await.expect("answer");
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn a_client_connection_reuses_its_upstream_connection() {
        let (addr, conns) = upstream(usize::MAX).await;
        let held = Upstreams::default();
        for _ in 0..5 {
            assert_eq!(get(&held, addr).await, "conn 1");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        // Another client connection gets its own.
        assert_eq!(get(&Upstreams::default(), addr).await, "conn 2");
    }

    #[tokio::test]
    async fn a_connection_the_app_closed_is_replaced_without_failing_the_request() {
        let (addr, conns) = upstream(2).await;
        let held = Upstreams::default();
        assert_eq!(get(&held, addr).await, "conn 1");
        assert_eq!(get(&held, addr).await, "conn 1");
        // The app closed conn 1 after two answers (its keep-alive limit):
        // the next request goes on a new connection instead of failing.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get(&held, addr).await, "conn 2");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_and_nothing_is_held() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        // (the listener is dropped: nothing listens there now)
        let held = Upstreams::default();
        let req = Request::builder().uri("/").header("host", "a").body(Body::empty()).expect("request");
        assert!(matches!(held.send(addr, req).await, Err(SendError::Connect(_))));
        assert_eq!(held.held(), 0);
    }

    #[test]
    fn the_open_files_soft_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
        // One below (not lower: other tests in this process open files).
        setrlimit(Resource::RLIMIT_NOFILE, hard - 1, hard).expect("lower the soft limit");
        assert_eq!(raise_open_files_limit(), Some(hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).expect("limit"), (hard, hard));
    }

    #[tokio::test]
    async fn at_most_held_connections_are_kept() {
        let mut addrs = Vec::new();
        for _ in 0..HELD + 2 {
            addrs.push(upstream(usize::MAX).await.0);
        }
        let held = Upstreams::default();
        for &a in &addrs {
            get(&held, a).await;
        }
        assert_eq!(held.held(), HELD);
    }
}
