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
//! emulator), `FIRESTORE_EMULATOR_HOST`, `PUBSUB_EMULATOR_HOST`,
//! `STORAGE_EMULATOR_HOST`; `BIFROST_SOURCES_BUCKET` (uploads and build
//! contexts in Cloud Storage); for `build`, `BIFROST_REGION`,
//! `BIFROST_BUILD_LOGS_BUCKET`, `BIFROST_ARTIFACT_REPOSITORY`,
//! `BIFROST_BUILD_SERVICE_ACCOUNT` and (tests) `BIFROST_CLOUD_BUILD_API`;
//! for deploy, verify and the gateway, the apps' cluster: `BIFROST_GKE_*`
//! (see `gke`).

mod unconfigured;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::{Builder, PushHandler, Sources, Store};
use bifrost_core::scripts::Blobs;
use bifrost_functions::driver::{DEAD_LETTER_PUSH, Function, drive_dead_letter};
use bifrost_functions::logs::{LogLimits, LogWriter};
use bifrost_functions::{Ctx, Functions, Settings};
use bifrost_gcp::cloud_build::{CloudBuildBuilder, CloudBuildConfig, GoogleCredentials, NoCredentials, TokenSource};
use bifrost_gcp::gke_runtime::{GkeRuntime, GkeSettings};
use bifrost_gcp::pubsub::PubSubBus;
use bifrost_gcp::storage::{Gcs, GcsBlobs, GcsSources};
use bifrost_gcp::{FirestoreConfig, FirestoreStore};
use bifrost_sources::GitSources;

/// The functions this crate serves.
pub const FUNCTIONS: [&str; 6] = ["gateway", "validate", "build", "deploy", "verify", "analytics"];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The entry point of every binary.
pub fn main(function: &'static str) -> ExitCode {
    let gcp_project = env("BIFROST_GCP_PROJECT").unwrap_or_else(|| "bifrost-local".into());
    // reqwest (Cloud Build calls) is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _log = bifrost_service::init_logging(&gcp_project);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bifrost-{function}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `bifrost-analytics --window=START/LENGTH`: the Cloud Run job's
    // backfill — one window, then exit.
    let window = std::env::args().find_map(|a| a.strip_prefix("--window=").map(str::to_string));
    if let (Some(w), "analytics") = (window, function) {
        return match runtime.block_on(backfill(&gcp_project, &w)) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "bifrost-analytics --window={w} failed");
                eprintln!("bifrost-analytics: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(serve(function, gcp_project)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bifrost-{function} stopped");
            ExitCode::FAILURE
        }
    }
}

/// Analyses every project over one window (`gcloud run jobs execute
/// bifrost-analytics --args=--window=…`).
async fn backfill(gcp_project: &str, window: &str) -> anyhow::Result<String> {
    let w = bifrost_core::analytics::window::Window::parse(window, bifrost_core::domain::now())
        .map_err(anyhow::Error::msg)?;
    let ctx = context("analytics", gcp_project).await?;
    let summary = bifrost_functions::analytics::run_window(&ctx, w).await.map_err(anyhow::Error::msg)?;
    Ok(serde_json::to_string(&summary)?)
}

/// One function's service, answering pushes for it alone (and, if it
/// takes them, the dead-letter topics' pushes).
struct Only {
    function: &'static dyn Function,
    inner: Functions,
}

#[async_trait::async_trait]
impl PushHandler for Only {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome {
        if function == DEAD_LETTER_PUSH && self.function.takes_dead_letters() {
            return drive_dead_letter(self.function, &self.inner.ctx, envelope).await;
        }
        if function != self.function.name() {
            return Outcome::Reject(format!(
                "this is the {} service; {function} pushes go elsewhere",
                self.function.name()
            ));
        }
        self.inner.push(function, envelope).await
    }
}

/// The functions' world on GCP.
async fn context(function: &str, gcp_project: &str) -> anyhow::Result<Ctx> {
    let prefix = env("BIFROST_COLLECTION_PREFIX").unwrap_or_default();
    let topic_prefix = env("BIFROST_TOPIC_PREFIX").unwrap_or_else(|| "bifrost-".into());
    let pubsub_endpoint = env("PUBSUB_EMULATOR_HOST").map(|h| format!("http://{h}"));
    let bus =
        PubSubBus::connect(gcp_project, &topic_prefix, pubsub_endpoint.as_deref()).await.map_err(anyhow::Error::msg)?;
    let config = FirestoreConfig { collection_prefix: prefix, ..FirestoreConfig::new(gcp_project) };
    let firestore = Arc::new(
        FirestoreStore::connect(config).await.context("connecting to Firestore")?.with_publisher(Arc::new(bus)),
    );
    let store: Arc<dyn Store> = firestore.clone();
    let (logs, _task) = LogWriter::start(store.clone(), LogLimits::default());
    // Cloud Run's only writable disk is memory-backed /tmp: git mirrors for
    // reading deploy.toml, and build contexts, live there.
    let scratch = std::env::temp_dir().join("bifrost");
    // Uploaded sources live in Cloud Storage when the bucket is configured
    // (always, from terraform/); without it, git repositories only.
    let gcs = match env("BIFROST_SOURCES_BUCKET") {
        Some(bucket) => {
            let endpoint = env("STORAGE_EMULATOR_HOST").map(|h| format!("http://{h}"));
            Some((Gcs::connect(endpoint.as_deref()).await.map_err(anyhow::Error::msg)?, bucket))
        }
        None => None,
    };
    let sources: Arc<dyn Sources> = match &gcs {
        Some((gcs, bucket)) => Arc::new(GcsSources::new(&scratch, gcs.clone(), bucket)),
        None => Arc::new(GitSources::new(&scratch)),
    };
    let builder: Arc<dyn Builder> = match (function, &gcs) {
        ("build", Some((gcs, bucket))) => Arc::new(cloud_build(gcp_project, gcs, bucket, sources.clone(), &scratch)?),
        _ => Arc::new(unconfigured::Unconfigured("the Cloud Build builder (BIFROST_SOURCES_BUCKET)")),
    };
    let app_domain = env("BIFROST_APPS_DOMAIN").unwrap_or_else(|| "apps.example.com".into());
    // The gateway seals secrets and opens webhook secrets; deploy opens
    // secrets. For them a missing or empty key is an error at start, never
    // an empty key.
    let keys = match function {
        "gateway" | "deploy" => {
            let text = env("BIFROST_ENCRYPTION_KEY")
                .context("BIFROST_ENCRYPTION_KEY is not set (Secret Manager secret bifrost-encryption-key)")?;
            let master = bifrost_core::seal::parse_key(&text).context("BIFROST_ENCRYPTION_KEY")?;
            Some(bifrost_core::seal::Keys::from_master(&master)?)
        }
        _ => None,
    };
    // Routing scripts pushed live: the scripts bucket (the gateway writes).
    let scripts = match (env("BIFROST_SCRIPTS_BUCKET"), &gcs) {
        (Some(bucket), Some((gcs, _))) => Arc::new(GcsBlobs::new(gcs.clone(), &bucket)) as Arc<dyn Blobs>,
        _ => Arc::new(unconfigured::Unconfigured("routing scripts (BIFROST_SCRIPTS_BUCKET)")) as Arc<dyn Blobs>,
    };
    let ctx = Ctx {
        metrics: Default::default(),
        scripts: Arc::new(bifrost_core::scripts::Scripts::new(scripts)),
        // What the router cluster reports to the gateway (the routers run
        // apart, on GKE): a canary's analysis and the dashboard's numbers.
        export: bigquery(gcp_project)?,
        points: Default::default(),
        traffic: Some(Arc::new(bifrost_functions::traffic::TrafficRecorder::new(Arc::new(
            bifrost_functions::traffic::StoreTallies(store.clone()),
        )))),
        keys,
        health: tokio::sync::broadcast::channel(1024).0,
        store,
        dead_letters: firestore.clone(),
        sources,
        builder,
        runtime: match env("BIFROST_GKE_ENDPOINT") {
            Some(endpoint) => Arc::new(gke(&endpoint, &app_domain)?),
            None => Arc::new(unconfigured::Unconfigured("the GKE runtime (BIFROST_GKE_ENDPOINT)")),
        },
        logs,
        settings: Settings {
            public_url: env("BIFROST_API_URL").unwrap_or_default(),
            app_domain,
            analytics_every: match env("BIFROST_ANALYTICS_EVERY") {
                Some(e) => bifrost_core::analytics::window::parse_every(&e)
                    .map_err(|e| anyhow::anyhow!("BIFROST_ANALYTICS_EVERY: {e}"))?,
                None => Settings::default().analytics_every,
            },
            retention: match env("BIFROST_RETENTION") {
                Some(r) => bifrost_core::analytics::window::parse_retention(&r)
                    .map_err(|e| anyhow::anyhow!("BIFROST_RETENTION: {e}"))?,
                None => Settings::default().retention,
            },
            ..Settings::default()
        },
    };
    Ok(ctx)
}

/// The analytics results' BigQuery export, when `BIFROST_BIGQUERY_DATASET`
/// names a dataset (`BIFROST_BIGQUERY_API` points it elsewhere, without
/// credentials: tests).
fn bigquery(gcp_project: &str) -> anyhow::Result<Option<Arc<dyn bifrost_core::ports::ResultsExport>>> {
    use bifrost_gcp::bigquery::{BigQueryConfig, BigQueryExport};
    let Some(dataset) = env("BIFROST_BIGQUERY_DATASET") else { return Ok(None) };
    let (endpoint, auth): (String, Arc<dyn bifrost_gcp::cloud_build::TokenSource>) = match env("BIFROST_BIGQUERY_API") {
        Some(api) => (api, Arc::new(bifrost_gcp::cloud_build::NoCredentials)),
        None => (
            "https://bigquery.googleapis.com".into(),
            Arc::new(GoogleCredentials::from_environment().map_err(anyhow::Error::msg)?),
        ),
    };
    let cfg = BigQueryConfig { gcp_project: gcp_project.to_string(), dataset, endpoint };
    Ok(Some(Arc::new(BigQueryExport::new(cfg, auth))))
}

/// The build function's builder: Cloud Build in `BIFROST_REGION`, pushing
/// to `BIFROST_ARTIFACT_REPOSITORY`, logs from `BIFROST_BUILD_LOGS_BUCKET`.
/// `BIFROST_CLOUD_BUILD_API` points it elsewhere (tests), without credentials.
fn cloud_build(
    gcp_project: &str,
    gcs: &Gcs,
    sources_bucket: &str,
    sources: Arc<dyn Sources>,
    scratch: &std::path::Path,
) -> anyhow::Result<CloudBuildBuilder> {
    let region = env("BIFROST_REGION").context("BIFROST_REGION is not set (the region builds run in)")?;
    let defaults = CloudBuildConfig::new(gcp_project, &region);
    let (auth, api): (Arc<dyn TokenSource>, String) = match env("BIFROST_CLOUD_BUILD_API") {
        Some(api) => (Arc::new(NoCredentials), api),
        None => (Arc::new(GoogleCredentials::from_environment().map_err(anyhow::Error::msg)?), defaults.api.clone()),
    };
    let cfg = CloudBuildConfig {
        sources_bucket: sources_bucket.to_string(),
        logs_bucket: env("BIFROST_BUILD_LOGS_BUCKET").unwrap_or(defaults.logs_bucket.clone()),
        repository: env("BIFROST_ARTIFACT_REPOSITORY").unwrap_or(defaults.repository.clone()),
        service_account: env("BIFROST_BUILD_SERVICE_ACCOUNT"),
        api,
        ..defaults
    };
    CloudBuildBuilder::new(cfg, sources, gcs.clone(), auth, scratch).map_err(anyhow::Error::msg)
}

/// The apps' GKE cluster, reached with the service account's credentials:
/// `BIFROST_GKE_ENDPOINT` (`https://IP`), `BIFROST_GKE_CA_CERT` (base64 PEM,
/// as terraform reads it from the cluster), `BIFROST_APPS_NAMESPACE`,
/// `BIFROST_SIDECAR_IMAGE`, `BIFROST_INGEST_URL` (default: the in-cluster ingest).
fn gke(endpoint: &str, app_domain: &str) -> anyhow::Result<GkeRuntime> {
    use base64::Engine;
    let ca = match env("BIFROST_GKE_CA_CERT") {
        Some(b64) => {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context("BIFROST_GKE_CA_CERT is not base64")?;
            Some(String::from_utf8(pem).context("BIFROST_GKE_CA_CERT is not a PEM text")?)
        }
        None => None,
    };
    let settings = GkeSettings {
        namespace: env("BIFROST_APPS_NAMESPACE").unwrap_or_else(|| "apps".into()),
        sidecar_image: env("BIFROST_SIDECAR_IMAGE").context("BIFROST_SIDECAR_IMAGE is not set")?,
        domain: app_domain.to_string(),
        // Where sidecars report: an in-cluster ingest. Until one runs there,
        // they keep probing and buffer their reports (the pod stays ready).
        ingest_url: env("BIFROST_INGEST_URL").unwrap_or_else(|| "http://bifrost-ingest.bifrost.svc:7481".into()),
        // The ingest's key signs the sidecars' report tokens.
        sidecar_key: env("BIFROST_ENCRYPTION_KEY")
            .context("BIFROST_ENCRYPTION_KEY is not set: the sidecars' report tokens are signed with it")?
            .into_bytes(),
        poll: std::time::Duration::from_secs(2),
        // `true` once the router cluster fronts the apps (docs/router-cluster.md).
        routed: env("BIFROST_GKE_ROUTERS").is_some_and(|v| v == "true" || v == "1"),
    };
    let auth = Arc::new(GoogleCredentials::from_environment().map_err(anyhow::Error::msg)?);
    GkeRuntime::with_google_auth(endpoint, ca.as_deref(), auth, settings).map_err(anyhow::Error::msg)
}

/// The routes of one function's service: the gateway's, or a function's
/// push endpoint (and `/run`, Cloud Scheduler's call, if it has periodic work).
pub fn router(function: &'static str, ctx: Ctx) -> anyhow::Result<Router> {
    let app = if function == "gateway" {
        bifrost_gateway::router(ctx)
    } else {
        let f = bifrost_functions::function(function).with_context(|| format!("no function named {function:?}"))?;
        let handler = Arc::new(Only { function: f, inner: Functions { ctx: ctx.clone() } });
        let mut r = bifrost_functions::push::router(handler).route("/healthz", get(|| async { "ok" }));
        if f.scheduled() {
            r = r.route("/run", post(move || scheduled_run(f, ctx.clone())));
        }
        r
    };
    Ok(app.layer(axum::middleware::from_fn(bifrost_service::traced)))
}

/// Cloud Scheduler's call: the function's periodic work; a failure is a 503
/// (the scheduler retries).
async fn scheduled_run(f: &'static dyn Function, ctx: Ctx) -> Result<String, (axum::http::StatusCode, String)> {
    f.run(&ctx).await.map(|done| done + "\n").map_err(|e| (axum::http::StatusCode::SERVICE_UNAVAILABLE, e))
}

async fn serve(function: &'static str, gcp_project: String) -> anyhow::Result<()> {
    anyhow::ensure!(FUNCTIONS.contains(&function), "no function named {function:?}");
    let port: u16 = match env("PORT") {
        Some(p) => p.parse().with_context(|| format!("PORT={p:?} is not a port number"))?,
        None => 8080,
    };
    let ctx = context(function, &gcp_project).await?;
    // The dashboard's recent traffic: sampled where it is shown.
    if let (Some(recorder), "gateway") = (ctx.traffic.clone(), function) {
        bifrost_functions::traffic::run(ctx.clone(), recorder);
    }
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on port {port}"))?;
    tracing::info!(port, function, "bifrost-{function} listening");

    bifrost_service::serve(listener, router(function, ctx)?).await
}
