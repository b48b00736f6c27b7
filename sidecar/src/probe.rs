//! The probes: a TCP connect to the app, then `GET <health path>` over
//! HTTP/1.1 on that connection, each timed. Hand-written on purpose: one
//! request line and one status line are all a health probe needs, and an
//! HTTP client library would double the sidecar's size.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proto::Probe;

/// Probes `target` once; never fails, the answer says what happened.
pub async fn probe(target: SocketAddr, path: &str, timeout: Duration) -> Probe {
    let mut out = Probe::default();
    let start = Instant::now();
    let mut conn = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            out.error = connect_error(&e);
            return out;
        }
        Err(_) => {
            out.error = format!("connect timed out after {}", human(timeout));
            return out;
        }
    };
    out.tcp_ok = true;
    out.tcp_connect_ms = ms(start.elapsed());
    let _ = conn.set_nodelay(true);
    let http_start = Instant::now();
    let left = timeout.saturating_sub(start.elapsed());
    match tokio::time::timeout(left, get(&mut conn, target, path)).await {
        Ok(Ok(status)) => {
            out.http_status = u32::from(status);
            out.http_latency_ms = ms(http_start.elapsed());
            out.http_ok = (200..400).contains(&status);
            if !out.http_ok {
                out.error = format!("GET {path} → {status}");
            }
        }
        Ok(Err(e)) => out.error = format!("GET {path}: {e}"),
        Err(_) => out.error = format!("GET {path}: no HTTP answer within {}", human(timeout)),
    }
    out
}

async fn get(conn: &mut TcpStream, target: SocketAddr, path: &str) -> Result<u16, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: bifrost-sidecar\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.map_err(|e| format!("sending the request failed: {e}"))?;
    // Only the status line matters: read until its end.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 8192 {
        let n = conn.read(&mut chunk).await.map_err(|e| format!("reading the answer failed: {e}"))?;
        if n == 0 {
            return Err("the connection closed without an HTTP answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status(&buf).ok_or_else(|| {
        let line = String::from_utf8_lossy(&buf);
        format!("not an HTTP answer: {:?}", line.lines().next().unwrap_or("").chars().take(60).collect::<String>())
    })
}

/// `HTTP/1.x NNN ...` → NNN.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => format!("connect failed: {e}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable\r\nx"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK\r\n"), None);
    }

    #[tokio::test]
    async fn refused_and_answered() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr");
        drop(free);
        let p = probe(addr, "/", Duration::from_secs(1)).await;
        assert!(!p.tcp_ok && !p.http_ok);
        assert_eq!(p.error, "connection refused");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut c, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let n = c.read(&mut buf).await.expect("read");
                assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
                c.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await.expect("w");
            }
            // The third connection never answers.
            let (_c, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let ok = probe(addr, "/healthz", Duration::from_secs(1)).await;
        assert!(ok.tcp_ok && ok.http_ok && ok.http_status == 200, "{ok:?}");
        let bad = probe(addr, "/healthz", Duration::from_secs(1)).await;
        assert!(bad.tcp_ok && !bad.http_ok && bad.http_status == 500 && bad.error == "GET /healthz → 500", "{bad:?}");
        let slow = probe(addr, "/healthz", Duration::from_millis(300)).await;
        assert!(slow.tcp_ok && !slow.http_ok, "{slow:?}");
        assert_eq!(slow.error, "GET /healthz: no HTTP answer within 300ms");
    }
}
