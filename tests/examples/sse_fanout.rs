//! Load client for bench/sse.sh: holds N Server-Sent-Events subscriptions
//! to `GET /api/v1/events` open and records when each receives its first
//! `status` event. Raw HTTP/1.1 over tokio sockets, so the client costs
//! little next to the server it measures. Loopback only; stops by itself.
//!
//!   sse_fanout ADDR TOKEN N READY_FILE OUT_FILE
//!
//! Writes READY_FILE once all N answered `200` (or gave up), then waits up
//! to 30 s for the event and writes one line per subscriber to OUT_FILE:
//! the wall-clock millisecond it got the event, or `-` if it never did.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

fn epoch_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

async fn subscribe(
    addr: String,
    token: Arc<String>,
    connected: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
) -> Option<u128> {
    let permit = gate.acquire().await.ok()?;
    let mut s = TcpStream::connect(&addr).await.ok()?;
    let req = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 2048];
    let mut seen = Vec::new();
    // Headers first: a 200 means subscribed.
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            if !seen.starts_with(b"HTTP/1.1 200") {
                return None;
            }
            seen.drain(..end + 4);
            break;
        }
    }
    connected.fetch_add(1, Ordering::SeqCst);
    drop(permit);
    loop {
        if seen.windows(13).any(|w| w == b"event: status") {
            return Some(epoch_ms());
        }
        // Keep only a tail: the marker can straddle two reads.
        if seen.len() > 64 {
            seen.drain(..seen.len() - 16);
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, n, ready, out] = &args[..] else {
        eprintln!("usage: sse_fanout ADDR TOKEN N READY_FILE OUT_FILE");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N");
    let token = Arc::new(token.clone());
    let connected = Arc::new(AtomicUsize::new(0));
    // A few hundred handshakes at a time keep the accept backlog from overflowing.
    let gate = Arc::new(Semaphore::new(256));
    let tasks: Vec<_> =
        (0..n).map(|_| tokio::spawn(subscribe(addr.clone(), token.clone(), connected.clone(), gate.clone()))).collect();
    let started = std::time::Instant::now();
    while connected.load(Ordering::SeqCst) < n && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok = connected.load(Ordering::SeqCst);
    std::fs::write(ready, format!("{ok}\n")).expect("ready file");
    let mut lines = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for t in tasks {
        let got = tokio::time::timeout_at(deadline, t).await.ok().and_then(Result::ok).flatten();
        lines.push(got.map_or_else(|| "-".to_string(), |ms| ms.to_string()));
    }
    std::fs::write(out, lines.join("\n") + "\n").expect("out file");
}
