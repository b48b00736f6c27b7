//! Bifrost's functions as Cloud Run services, one binary each
//! (`bifrost-gateway`, `bifrost-validate`, `bifrost-build`, `bifrost-deploy`,
//! `bifrost-verify`, `bifrost-analytics`; the dashboard is `bifrost-web`).
//! The same function code `bifrost up` calls in-process, here over
//! Firestore and Pub/Sub, on Cloud Run's contract: listen on `$PORT`,
//! `/healthz`, drain and exit within 10 s of SIGTERM, and JSON logs in
//! Cloud Logging's shape when `K_SERVICE` is set.
//!
//! Configuration is the environment terraform/ sets: `BIFROST_GCP_PROJECT`,
//! `BIFROST_API_URL`, `BIFROST_APPS_DOMAIN`; optionally
//! `BIFROST_COLLECTION_PREFIX` and `BIFROST_TOPIC_PREFIX` (tests share one
//! emulator), `FIRESTORE_EMULATOR_HOST`, `PUBSUB_EMULATOR_HOST`.

mod logging;
mod unconfigured;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use bifrost_functions::{Ctx, Functions, Settings};
use bifrost_shared::embedded::{GitSources, LogLimits, LogWriter};
use bifrost_shared::events::{Outcome, PushEnvelope};
use bifrost_shared::gcp::pubsub::PubSubBus;
use bifrost_shared::gcp::{FirestoreConfig, FirestoreStore};
use bifrost_shared::ports::{PushHandler, Store};
use tracing::Instrument;

/// Cloud Run sends SIGTERM, then SIGKILL 10 s later: stop accepting at once,
/// give in-flight requests what is left.
const DRAIN: Duration = Duration::from_secs(9);

/// The functions this crate serves.
pub const FUNCTIONS: [&str; 6] = ["gateway", "validate", "build", "deploy", "verify", "analytics"];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The entry point of every binary.
pub fn main(function: &'static str) -> ExitCode {
    let gcp_project = env("BIFROST_GCP_PROJECT").unwrap_or_else(|| "bifrost-local".into());
    logging::init(env("K_SERVICE").is_some(), &gcp_project);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bifrost-{function}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(function, gcp_project)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bifrost-{function} stopped");
            ExitCode::FAILURE
        }
    }
}

/// One function's service, answering pushes for it alone.
struct Only {
    function: &'static str,
    inner: Functions,
}

#[async_trait::async_trait]
impl PushHandler for Only {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome {
        if function != self.function {
            return Outcome::Reject(format!("this is the {} service; {function} pushes go elsewhere", self.function));
        }
        self.inner.push(function, envelope).await
    }
}

async fn context(gcp_project: &str) -> anyhow::Result<Ctx> {
    let prefix = env("BIFROST_COLLECTION_PREFIX").unwrap_or_default();
    let topic_prefix = env("BIFROST_TOPIC_PREFIX").unwrap_or_else(|| "bifrost-".into());
    let pubsub_endpoint = env("PUBSUB_EMULATOR_HOST").map(|h| format!("http://{h}"));
    let bus =
        PubSubBus::connect(gcp_project, &topic_prefix, pubsub_endpoint.as_deref()).await.map_err(anyhow::Error::msg)?;
    let config = FirestoreConfig { collection_prefix: prefix, ..FirestoreConfig::new(gcp_project) };
    let store = FirestoreStore::connect(config).await.context("connecting to Firestore")?.with_publisher(Arc::new(bus));
    let store: Arc<dyn Store> = Arc::new(store);
    let (logs, _task) = LogWriter::start(store.clone(), LogLimits::default());
    // Cloud Run's only writable disk is memory-backed /tmp: git mirrors for
    // reading deploy.toml live there for the instance's life.
    let scratch = std::env::temp_dir().join("bifrost");
    Ok(Ctx {
        health: tokio::sync::broadcast::channel(1024).0,
        store,
        dead_letters: Arc::new(unconfigured::Unconfigured("dead letters (Pub/Sub dead-letter subscriptions)")),
        sources: Arc::new(GitSources::new(&scratch)),
        builder: Arc::new(unconfigured::Unconfigured("the Cloud Build builder")),
        runtime: Arc::new(unconfigured::Unconfigured("the GKE runtime")),
        logs,
        settings: Settings {
            public_url: env("BIFROST_API_URL").unwrap_or_default(),
            app_domain: env("BIFROST_APPS_DOMAIN").unwrap_or_else(|| "apps.example.com".into()),
            ..Settings::default()
        },
    })
}

/// The routes of one function's service.
pub fn router(function: &'static str, ctx: Ctx) -> Router {
    let app = if function == "gateway" {
        bifrost_functions::gateway::router(ctx)
    } else {
        let handler = Arc::new(Only { function, inner: Functions { ctx: ctx.clone() } });
        let mut r = bifrost_functions::push::router(handler).route("/healthz", get(|| async { "ok" }));
        if function == "analytics" {
            r = r.route("/run", post(move || analytics(ctx.clone())));
        }
        r
    };
    app.layer(axum::middleware::from_fn(traced))
}

/// Cloud Scheduler's call: fold health reports older than an hour into
/// one-minute buckets.
async fn analytics(ctx: Ctx) -> Result<String, (axum::http::StatusCode, String)> {
    let before = bifrost_shared::domain::now() - chrono::Duration::hours(1);
    match ctx.store.downsample_health(before).await {
        Ok(n) => {
            tracing::info!(folded = n, "health downsampled");
            Ok(format!("folded {n} reports\n"))
        }
        Err(e) => Err((axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// Every request runs in a span carrying Cloud Trace's id from
/// `X-Cloud-Trace-Context` (`TRACE_ID/SPAN_ID;o=1`), which the JSON logs
/// turn into `logging.googleapis.com/trace`, so a request's lines group
/// under it in the console.
async fn traced(req: Request, next: Next) -> Response {
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

async fn serve(function: &'static str, gcp_project: String) -> anyhow::Result<()> {
    anyhow::ensure!(FUNCTIONS.contains(&function), "no function named {function:?}");
    let port: u16 = match env("PORT") {
        Some(p) => p.parse().with_context(|| format!("PORT={p:?} is not a port number"))?,
        None => 8080,
    };
    let ctx = context(&gcp_project).await?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on port {port}"))?;
    tracing::info!(port, function, "bifrost-{function} listening");

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
    let server = axum::serve(listener, router(function, ctx))
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
