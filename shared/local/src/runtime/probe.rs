//! Health probing when no sidecar does it: wait for the announced port,
//! then probe `[health]` every interval.

use super::*;

/// Where a replica says it is listening, and how long that took.
pub(super) struct Announce {
    pub(super) out: Output,
    pub(super) started: Instant,
}

/// Waits for the port, then probes `[health]` every interval for as long as
/// this incarnation of the replica lives.
pub(super) async fn probe_loop(rep: Arc<Replica>, port: u16, health: Health, announce: Announce, self_probe: bool) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            update(&rep, |s| s.listening = true);
            let ms = announce.started.elapsed().as_secs_f64() * 1000.0;
            announce.out.say(format!("[bifrost] listening on port {port} after {ms:.1} ms"));
            break;
        }
        // A refused loopback connect costs microseconds; polling often keeps
        // the time to `running` close to the app's own start time.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !self_probe {
        // The sidecar probes; its reports arrive through `observe`.
        return;
    }
    let mut tick = tokio::time::interval(health.interval.as_std());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (ok, description) = match probe_http(addr, &health.path, health.timeout.as_std()).await {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        let mut restart = false;
        update(&rep, |s| restart = s.record_probe(ok, description, &health));
        if restart {
            rep.restart.notify_one();
            return;
        }
    }
}

/// One HTTP health probe on a fresh connection. `Ok` for 2xx/3xx; either way
/// the text says what the probe saw.
pub async fn probe_http(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    use http_body_util::Empty;
    let started = Instant::now();
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => format!("cannot connect: {e}"),
        })?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP handshake failed: {e}"))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::USER_AGENT, "bifrost-probe")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("bad probe request: {e}"))?;
        let resp = sender.send_request(req).await.map_err(|e| format!("no HTTP answer: {e}"))?;
        Ok::<_, String>(resp.status())
    };
    let ms = || started.elapsed().as_millis();
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(format!(
            "GET {path}: timed out after {}",
            bifrost_core::config::Duration::from_millis(timeout.as_millis() as u64)
        )),
        Ok(Err(e)) => Err(format!("GET {path}: {e}")),
        Ok(Ok(status)) => {
            let text =
                format!("GET {path} → {} {} in {} ms", status.as_u16(), status.canonical_reason().unwrap_or(""), ms());
            if status.is_success() || status.is_redirection() { Ok(text) } else { Err(text) }
        }
    }
}
