//! The platform's listener: reads each new connection's first request head
//! and hands SSE subscriptions to the fan-out (which serves them without
//! hyper's per-connection buffers); every other connection goes to the HTTP
//! server with the bytes already read put back in front.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::fanout::{Fanout, parse_head};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A request head longer than this is not an SSE subscription.
const MAX_HEAD: usize = 8192;
/// How long a new connection may take to send its head before it is
/// handed to the HTTP server as it is (which has its own timeouts).
const HEAD_WAIT: Duration = Duration::from_secs(5);

pub struct Sniffing {
    rx: mpsc::Receiver<(Rewind, SocketAddr)>,
    local: SocketAddr,
}

/// Whether a `Host` header names an app (the router's business): such
/// requests are never the platform's subscriptions. Given by the caller,
/// so the gateway does not depend on the router.
pub type IsAppHost = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl Sniffing {
    pub fn new(listener: TcpListener, fanout: Arc<Fanout>, is_app_host: IsAppHost) -> io::Result<Sniffing> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            while !tx.is_closed() {
                match listener.accept().await {
                    Ok((tcp, addr)) => {
                        // Small API and proxied responses must not wait for delayed ACKs.
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(sniff(tcp, addr, tx.clone(), fanout.clone(), is_app_host.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, as axum does.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Sniffing { rx, local })
    }
}

/// Reads until the end of the first request head (or `MAX_HEAD`, or EOF).
async fn read_head(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 1024];
    while buf.len() < MAX_HEAD {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn sniff(
    mut tcp: TcpStream,
    addr: SocketAddr,
    tx: mpsc::Sender<(Rewind, SocketAddr)>,
    fanout: Arc<Fanout>,
    is_app_host: IsAppHost,
) {
    let mut head = Vec::new();
    let complete = matches!(tokio::time::timeout(HEAD_WAIT, read_head(&mut tcp, &mut head)).await, Ok(Ok(true)));
    if complete
        && let Some(sub) = parse_head(&head)
        && !is_app_host(&sub.host)
    {
        match fanout.take(tcp, sub).await {
            Ok(()) => return,
            Err(back) => tcp = back,
        }
    }
    let _ = tx.send((Rewind { prefix: head, pos: 0, inner: tcp }, addr)).await;
}

impl axum::serve::Listener for Sniffing {
    type Io = Rewind;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Rewind, SocketAddr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection whose first bytes were already read: they are read again
/// first.
pub struct Rewind {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            buf.put_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
