//! The bench's ceiling peer: a TCP relay that copies bytes between each
//! client connection and a connection of its own to the upstream, with no
//! HTTP at all (no parsing, no headers, no framing). Any HTTP proxy makes
//! at least these socket calls per request, so no proxy can use less CPU
//! per request than this on the same machine (`bench/router-cpu.sh` runs
//! it beside nginx, hyper and the router). Prints `listening on ADDR`.
//!
//! `cargo run --release -p bifrost-router --example tcp_relay -- UPSTREAM`

mod peer;

#[tokio::main]
async fn main() {
    peer::serve(|mut client, mut up| async move {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    })
    .await;
}
