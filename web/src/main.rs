//! `bifrost-web`: the dashboard on its own (Cloud Run's `web` service),
//! talking to a gateway over HTTP. `bifrost up` serves the same router
//! in-process instead.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "bifrost-web", version, about = "Bifrost's dashboard, served on its own")]
struct Args {
    /// Address to serve on; Cloud Run sets $PORT.
    #[arg(long, env = "BIFROST_WEB_LISTEN")]
    listen: Option<SocketAddr>,
    /// The gateway's base URL (its REST API under /api/v1).
    #[arg(long, env = "BIFROST_API_URL", default_value = "http://127.0.0.1:7070")]
    api_url: String,
    /// Folder holding pkg/ with the client wasm (default: beside the binary).
    #[arg(long, env = "BIFROST_WEB_SITE_ROOT")]
    site_root: Option<PathBuf>,
    /// Mark the session cookie Secure (serve behind https). Always on when
    /// running on Cloud Run.
    #[arg(long, env = "BIFROST_WEB_SECURE_COOKIES", value_parser = clap::builder::FalseyValueParser::new())]
    secure_cookies: bool,
    /// Seals session cookies: 64 hex digits or base64 of 32 bytes. Required
    /// on Cloud Run (every instance must open every session); elsewhere a
    /// per-process key is made and sessions end on restart.
    #[arg(long, env = "BIFROST_SESSION_KEY", hide_env_values = true)]
    session_key: Option<String>,
    /// The dashboard's public URL; state-changing requests must come from it.
    #[arg(long, env = "BIFROST_WEB_PUBLIC_URL")]
    public_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Cloud Logging JSON on Cloud Run, like the function services.
    let gcp_project = std::env::var("BIFROST_GCP_PROJECT").unwrap_or_else(|_| "bifrost-local".into());
    let _log = bifrost_service::init_logging(&gcp_project);
    let args = Args::parse();
    let listen = match args.listen {
        Some(a) => a,
        None => {
            let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);
            SocketAddr::from(([0, 0, 0, 0], port))
        }
    };
    let site_root = args.site_root.unwrap_or_else(bifrost_web::server::routes::default_site_root);
    if !bifrost_web::server::routes::client_built(&site_root) {
        tracing::warn!(site_root = %site_root.display(), "no client bundle: pages render but stay static (run `cargo xtask web`)");
    }
    let on_cloud_run = std::env::var_os("K_SERVICE").is_some();
    let session_key = match args.session_key.as_deref().filter(|k| !k.trim().is_empty()) {
        Some(k) => {
            bifrost_web::server::SessionKey::parse(k).map_err(|e| anyhow::anyhow!("BIFROST_SESSION_KEY: {e}"))?
        }
        None if on_cloud_run => anyhow::bail!("BIFROST_SESSION_KEY is not set: every instance must open every session"),
        None => {
            tracing::warn!(
                "no BIFROST_SESSION_KEY: sessions are sealed with a key of this process and end when it stops"
            );
            bifrost_web::server::SessionKey::random()
        }
    };
    let app = bifrost_web::server::router(bifrost_web::server::WebConfig {
        backend: bifrost_web::server::Backend::http(&args.api_url),
        site_root,
        secure_cookies: args.secure_cookies || on_cloud_run,
        session_key,
        public_origin: args.public_url,
    })
    .route("/healthz", axum::routing::get(|| async { "ok" }))
    .layer(axum::middleware::from_fn(bifrost_service::traced));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(url = %format!("http://{}", listener.local_addr()?), "bifrost-web listening");
    // SIGTERM: stop accepting, drain, and exit within Cloud Run's 10 s
    // even with dashboards' SSE streams still open.
    bifrost_service::serve(listener, app).await
}
