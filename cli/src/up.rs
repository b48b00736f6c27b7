//! `bifrost up`: the whole embedded platform in one process — API, webhook,
//! outbox dispatcher and functions — on one listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bifrost_functions::{Ctx, Functions, Settings, gateway};
use bifrost_shared::auth::{generate_token, hash_token};
use bifrost_shared::domain::Role;
use bifrost_shared::embedded::{Dispatcher, DispatcherConfig, GitSources, SqliteStore};
use bifrost_shared::ports::Store;
use tokio::sync::watch;

use crate::client::save_token;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Address for the API, webhook and dashboard (port 0 picks a free one).
    #[arg(long, env = "BIFROST_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Where state lives (SQLite database, git mirrors, uploads).
    #[arg(long, env = "BIFROST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The URL users and GitHub reach this platform at (default: http://<listen>).
    #[arg(long, env = "BIFROST_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Accept API calls and webhooks but do not run the pipeline (maintenance).
    #[arg(long, env = "BIFROST_PAUSED", value_parser = clap::builder::FalseyValueParser::new())]
    pub paused: bool,
    /// Delivery attempts before an event is dead-lettered.
    #[arg(long, env = "BIFROST_MAX_DELIVERY_ATTEMPTS", default_value_t = 5)]
    pub max_delivery_attempts: u32,
    /// Deliver every event twice (proves handler idempotency; for tests).
    #[arg(long, env = "BIFROST_DUPLICATE_DELIVERIES", hide = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub duplicate_deliveries: bool,
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("bifrost")
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", data_dir.display()))?;

    // One platform per data dir: a second `bifrost up` would race the first.
    let lock =
        std::fs::File::create(data_dir.join("bifrost.lock")).context("creating the lock file")?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another `bifrost up` is already using {} (stop it first)",
            data_dir.display()
        )
    })?;

    let store = SqliteStore::open(
        &data_dir.join("bifrost.db"),
        bifrost_functions::subscriptions(),
    )
    .context("opening the store")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is something else using it? try --listen)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    let ctx = Ctx {
        store: Arc::new(store.clone()),
        dead_letters: Arc::new(store.clone()),
        sources: Arc::new(GitSources::new(&data_dir)),
        settings: Settings {
            public_url: public_url.clone(),
            ..Settings::default()
        },
    };
    bootstrap_admin(&*ctx.store, &public_url).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let dispatcher = if args.paused {
        tracing::warn!("paused: webhooks and API calls are accepted, the pipeline does not run");
        None
    } else {
        let config = DispatcherConfig {
            max_attempts: args.max_delivery_attempts.max(1),
            duplicate_deliveries: args.duplicate_deliveries,
            ..DispatcherConfig::default()
        };
        let d = Dispatcher::new(
            store.clone(),
            Arc::new(Functions { ctx: ctx.clone() }),
            config,
        );
        Some(tokio::spawn(d.run(stop_rx, Duration::from_secs(10))))
    };

    let app = gateway::router(ctx.clone()).layer(
        tower_http::trace::TraceLayer::new_for_http()
            .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::DEBUG))
            .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG)),
    );
    // Scripts and tests read this line to find the port.
    println!("bifrost: listening on http://{addr}");
    println!("bifrost: data dir {}", data_dir.display());
    tracing::info!(%addr, data_dir = %data_dir.display(), "bifrost is up");

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("shutting down: draining deliveries");
    let _ = stop_tx.send(true);
    if let Some(d) = dispatcher {
        let _ = d.await;
    }
    drop(lock);
    Ok(())
}

/// Ensures an admin token exists: `BIFROST_ADMIN_TOKEN` when set, else a
/// new one printed once (and saved for this machine's CLI).
async fn bootstrap_admin(store: &dyn Store, public_url: &str) -> anyhow::Result<()> {
    if let Some(token) = std::env::var("BIFROST_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        let hash = hash_token(&token);
        if store.authenticate(&hash).await?.is_none() {
            let name = if store.list_tokens().await?.iter().any(|t| t.name == "admin") {
                "admin-env"
            } else {
                "admin"
            };
            let _ = store.revoke_token("admin-env").await;
            store.create_token(name, Role::Admin, &hash).await?;
            tracing::info!(token = name, "admin token taken from BIFROST_ADMIN_TOKEN");
        }
        return Ok(());
    }
    if !store.list_tokens().await?.is_empty() {
        return Ok(());
    }
    let token = generate_token();
    store
        .create_token("admin", Role::Admin, &hash_token(&token))
        .await?;
    let saved = save_token(public_url, Some(&token));
    eprintln!();
    eprintln!("  First start: an admin API token was created. It is shown only this once:");
    eprintln!();
    eprintln!("      {token}");
    eprintln!();
    match saved {
        Ok(path) => eprintln!(
            "  The bifrost CLI on this machine will use it (saved to {}).",
            path.display()
        ),
        Err(e) => eprintln!("  (could not save it for the CLI: {e}; use --token or BIFROST_TOKEN)"),
    }
    eprintln!("  Create more with: bifrost tokens create NAME --role viewer|deployer|admin");
    eprintln!();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
