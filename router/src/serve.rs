//! Serving client connections, with the timeouts a public listener needs.
//!
//! `axum::serve` starts hyper without a timer, so hyper's header timeout
//! never runs: a client that opens a connection and sends a request head
//! one byte at a time (slowloris), or never sends one, or sits idle on a
//! keep-alive connection, holds a task, a descriptor and the upstream
//! connections it was given, for ever; a client that stops reading a
//! response holds them too. Every listener that faces clients (`bifrost
//! up`'s, `--apps-listen`, the router node) is served here instead:
//!
//! - [`ClientTimeouts::header`]: the whole request head must arrive within
//!   it, counted from the connection's start or from the end of the
//!   previous response — so it is also the keep-alive idle timeout
//!   (hyper's `header_read_timeout`; nginx's `client_header_timeout` and
//!   `keepalive_timeout`).
//! - [`ClientTimeouts::send`]: a response write the client does not take
//!   for this long ends the connection (nginx's `send_timeout`). Armed only
//!   while a write is blocked, so it costs nothing on the fast path.
//!
//! A request body the client trickles to an app is bounded by the proxy's
//! upstream timeout, as is a slow app; one sent to the platform itself, by
//! the body timeout `bifrost up` puts on its own routes. Connections speak HTTP/1.1 (TLS and
//! HTTP/2 end at the load balancer in front).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use crate::upstream::Downstream;

/// How long a client may keep the router waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request head must be complete within this, from the connection's
    /// start or the previous response's end (so: the idle timeout too).
    pub header: Duration,
    /// A response write blocked this long (the client stopped reading)
    /// ends the connection.
    pub send: Duration,
    /// On shutdown, how long requests in flight may take to finish (a
    /// stream that never ends must not keep the process up for ever).
    pub drain: Duration,
}

impl Default for ClientTimeouts {
    /// hyper's default header timeout; nginx's `send_timeout`; a drain
    /// inside Kubernetes' default 30 s grace period.
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(30),
            send: Duration::from_secs(60),
            drain: Duration::from_secs(20),
        }
    }
}

/// A client timeout as given on a command line ("30s", "2m"; not zero).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = bifrost_core::config::values::parse_duration(text).map_err(String::from)?.as_std();
    if d.is_zero() {
        return Err("a client timeout of zero would close every connection at once".into());
    }
    Ok(d)
}

/// Serves `service` on every connection `listener` accepts until
/// `shutdown` resolves; then stops accepting, lets each connection finish
/// its request in flight, and returns when all have closed or
/// [`ClientTimeouts::drain`] has passed (the rest are dropped). Each request
/// carries a `ConnectInfo<Downstream>` (its peer, and the upstream
/// connections its client connection holds).
pub async fn serve<L, S>(
    mut listener: L,
    service: S,
    timeouts: ClientTimeouts,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Connections hold a receiver: the sender closes once all are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(io, peer, service.clone(), timeouts, stop_rx.clone()));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(timeouts.drain, stop_tx.closed()).await.is_err() {
        let open = stop_tx.receiver_count();
        tracing::warn!(open, "shutting down with requests still in flight after {:?}", timeouts.drain);
    }
    Ok(())
}

async fn connection<I, S>(
    io: I,
    peer: SocketAddr,
    service: S,
    timeouts: ClientTimeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let downstream = ConnectInfo(Downstream::new(peer));
    let hyper_service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(downstream.clone());
        service.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(TokioIo::new(SendGuard::new(io, timeouts.send)), hyper_service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return log_end(r),
        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    log_end(conn.await);
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        // A client's own failure (a timeout, a reset, a malformed head):
        // not the operator's business beyond debug.
        tracing::debug!(error = %e, "client connection ended");
    }
}

/// A connection whose writes may stay blocked at most `limit`.
struct SendGuard<I> {
    io: I,
    limit: Duration,
    /// Armed while a write is blocked; kept (and reset) across stalls.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    blocked: bool,
}

impl<I> SendGuard<I> {
    fn new(io: I, limit: Duration) -> Self {
        SendGuard { io, limit, deadline: None, blocked: false }
    }

    /// The write was not taken: arm the deadline on the first refusal,
    /// and fail the write once it has passed.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.blocked {
            self.blocked = true;
            // (The clock is read once per stall, not per refused write.)
            let at = tokio::time::Instant::now() + self.limit;
            match &mut self.deadline {
                Some(d) => d.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {:?}", self.limit),
            ))),
            _ => Poll::Pending,
        }
    }

    fn written<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.blocked(cx),
            ready => {
                self.blocked = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendGuard<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendGuard<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(r, cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(r, cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.written(r, cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A plain TCP listener whose sockets skip Nagle's delay (small proxied
/// responses must not wait for the client's delayed ACK).
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = SocketAddr, Io = tokio::net::TcpStream> {
    axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const SHORT: ClientTimeouts = ClientTimeouts {
        header: Duration::from_millis(300),
        send: Duration::from_millis(300),
        drain: Duration::from_millis(300),
    };
    /// A test's guard: far beyond any timeout here, so only a connection
    /// that is never closed reaches it.
    const NEVER: Duration = Duration::from_secs(20);

    async fn hello(_: Request<Body>) -> Result<Response<Body>, Infallible> {
        Ok(Response::new(Body::from("hello")))
    }

    async fn start<S>(service: S) -> SocketAddr
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(nodelay(listener), service, SHORT, std::future::pending()));
        addr
    }

    /// Reads until the server closes the connection; what was read.
    async fn until_closed(tcp: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        tokio::time::timeout(NEVER, async {
            let mut buf = [0u8; 4096];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the server never closed the connection");
        all
    }

    #[test]
    fn client_timeouts_parse_like_deploy_toml_durations_and_never_zero() {
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_timeout("0s").expect_err("zero").contains("zero"));
        assert!(parse_timeout("soon").expect_err("words").contains("30s"));
    }

    #[tokio::test]
    async fn a_client_trickling_its_request_head_is_disconnected() {
        let addr = start(tower::service_fn(hello)).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.expect("write");
        // One header byte at a time, faster than the timeout: each byte is
        // progress, but the head never ends.
        let trickle = async {
            for _ in 0..1000 {
                if tcp.write_all(b"X").await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        assert!(tokio::time::timeout(NEVER, trickle).await.unwrap_or(false), "the trickled head was never cut off");
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_a_request_is_closed() {
        let addr = start(tower::service_fn(hello)).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let got = until_closed(&mut tcp).await;
        assert!(!String::from_utf8_lossy(&got).contains("hello"));
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
        let addr = start(tower::service_fn(hello)).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
        let got = String::from_utf8_lossy(&until_closed(&mut tcp).await).into_owned();
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("hello"), "{got}");
    }

    #[tokio::test]
    async fn a_connection_kept_busy_outlives_its_header_timeout() {
        let addr = start(tower::service_fn(hello)).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 1024];
        // Ten requests, each after a pause shorter than the timeout: the
        // timeout counts from each response, not from the connection.
        for i in 0..10 {
            tokio::time::sleep(SHORT.header / 3).await;
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
            let n = tcp.read(&mut buf).await.expect("write");
            assert!(n > 0, "request {i}: the connection was closed");
            assert!(String::from_utf8_lossy(&buf[..n]).ends_with("hello"), "request {i}");
        }
    }

    /// An endless response body that records when the server dropped it.
    #[derive(Clone)]
    struct Endless {
        sent: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_its_response_is_disconnected() {
        let endless = Endless { sent: Arc::default(), dropped: Arc::default() };
        let e = endless.clone();
        let addr = start(tower::service_fn(move |_: Request<Body>| {
            let e = e.clone();
            async move {
                let flag = Flag(e.dropped.clone());
                let chunks = futures::stream::repeat_with(move || {
                    let _keep = &flag;
                    e.sent.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(bytes::Bytes::from(vec![b'x'; 64 * 1024]))
                });
                Ok::<_, Infallible>(Response::new(Body::from_stream(chunks)))
            }
        }))
        .await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
        // Read nothing: the socket buffers fill, the server's write blocks.
        tokio::time::timeout(NEVER, async {
            while !endless.dropped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the server kept the connection of a client that read nothing");
        assert!(endless.sent.load(Ordering::SeqCst) > 0);
        drop(tcp);
    }

    #[tokio::test]
    async fn shutting_down_does_not_wait_for_ever_on_a_request_that_never_ends() {
        let service = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from_stream(futures::stream::pending::<
                Result<bytes::Bytes, Infallible>,
            >())))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(nodelay(listener), service, SHORT, async {
            let _ = stop_rx.await;
        }));
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        stop_tx.send(()).expect("stop");
        tokio::time::timeout(NEVER, server).await.expect("the server waited for ever").expect("join").expect("serve");
    }

    #[tokio::test]
    async fn shutting_down_lets_the_request_in_flight_finish() {
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
        let service = tower::service_fn(move |_: Request<Body>| {
            let rx = release_rx.clone();
            async move {
                if let Some(rx) = rx.lock().await.take() {
                    let _ = rx.await;
                }
                Ok::<_, Infallible>(Response::new(Body::from("finished")))
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(nodelay(listener), service, ClientTimeouts::default(), async {
            let _ = stop_rx.await;
        }));
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_tx.send(()).expect("stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!server.is_finished(), "the server returned with a request in flight");
        release_tx.send(()).expect("release");
        let got = String::from_utf8_lossy(&until_closed(&mut tcp).await).into_owned();
        assert!(got.ends_with("finished"), "{got}");
        tokio::time::timeout(NEVER, server).await.expect("the server never returned").expect("join").expect("serve");
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
    }
}
