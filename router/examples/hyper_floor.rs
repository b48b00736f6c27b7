//! The bench's floor peer: a bare hyper proxy, what hyper itself costs per
//! proxied request on this machine (`bench/router-cpu.sh` runs it beside
//! the router and nginx). No routing, no layers, no header work: each
//! client connection holds one upstream connection, as the router's do, on
//! the same multi-thread runtime. Prints `listening on ADDR`.
//!
//! `cargo run --release -p bifrost-router --example hyper_floor -- UPSTREAM`

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

mod peer;

#[tokio::main]
async fn main() {
    peer::serve(|client, up| async move {
        let Ok((sender, conn)) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(up)).await else {
            return;
        };
        tokio::spawn(conn);
        // One request at a time on an HTTP/1.1 connection: the lock is
        // never contended, it only satisfies the service's `Fn`.
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        let proxy = service_fn(move |req: Request<Incoming>| {
            let sender = sender.clone();
            async move {
                let resp = sender.lock().await.send_request(req).await?;
                Ok::<_, hyper::Error>(resp.map(|b| b.boxed()))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), proxy).await;
    })
    .await;
}
