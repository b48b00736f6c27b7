//! Cloud Run's service contract, shared by every Bifrost service binary
//! (the function services and `bifrost-web`): logs as Cloud Logging JSON
//! when `K_SERVICE` is set (plain text elsewhere), each request in a span
//! carrying its Cloud Trace id, and a SIGTERM drain that ends within
//! Cloud Run's 10 s grace period even when streams (SSE) stay open.

mod access_line;
pub mod batched;
mod logging;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Cloud Run sends SIGTERM, then SIGKILL 10 s later: stop accepting at once,
/// give in-flight requests what is left.
pub const DRAIN: Duration = Duration::from_secs(9);

/// Logging for a service: Cloud Logging JSON on Cloud Run (`K_SERVICE`
/// set), traces attributed to `gcp_project`; tracing's text otherwise.
/// `BIFROST_LOG` filters (default `info`). Lines are written in batches
/// ([`batched`]): hold the guard until the process ends.
pub fn init_logging(gcp_project: &str) -> batched::Flush {
    logging::init(std::env::var_os("K_SERVICE").is_some(), gcp_project)
}

pub use logging::init_cli as init_cli_logging;

/// Every request runs in a span carrying Cloud Trace's id from
/// `X-Cloud-Trace-Context` (`TRACE_ID/SPAN_ID;o=1`), which the JSON logs
/// turn into `logging.googleapis.com/trace`, so a request's lines group
/// under it in the console.
pub async fn traced(req: Request, next: Next) -> Response {
    let trace = req
        .headers()
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('/').next())
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .unwrap_or_default();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let span = tracing::info_span!("request", trace = %trace, method = %method, path = %path);
    let started = std::time::Instant::now();
    async move {
        let response = next.run(req).await;
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            "{method} {path}"
        );
        response
    }
    .instrument(span)
    .await
}

/// Serves `app` until SIGTERM (or Ctrl-C), then stops accepting, lets
/// in-flight requests finish and returns; after [`DRAIN`] it returns anyway.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("SIGTERM: not accepting new requests, draining");
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|s| *s).await;
        })
        .into_future();
    let mut deadline = stop_rx;
    tokio::select! {
        r = server => r.context("serving")?,
        _ = async move {
            let _ = deadline.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        } => tracing::warn!("requests still running after {}s; exiting anyway", DRAIN.as_secs()),
    }
    tracing::info!("stopped");
    Ok(())
}
