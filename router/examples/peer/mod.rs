//! What the bench's peer proxies share (`hyper_floor`, `tcp_relay`): the
//! router's allocator, the upstream address from the command line, a
//! listener on loopback that prints `listening on ADDR` (the bench reads
//! the port from it), and for each client connection one upstream
//! connection of its own, both with `TCP_NODELAY`, as the router holds.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpStream;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves until killed: `handle(client, upstream)` per client connection.
pub async fn serve<F, Fut>(handle: F)
where
    F: Fn(TcpStream, TcpStream) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let upstream: SocketAddr = std::env::args().nth(1).and_then(|a| a.parse().ok()).expect("UPSTREAM address");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("addr"));
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(up) = TcpStream::connect(upstream).await else { return };
            let _ = up.set_nodelay(true);
            handle(client, up).await;
        });
    }
}
