//! `bifrost up`: the whole embedded platform in one process — API, webhook,
//! outbox dispatcher and functions — on one listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bifrost_core::auth::{generate_token, hash_token};
use bifrost_core::domain::Role;
use bifrost_core::ports::{LogSink, Store};
use bifrost_functions::logs::{LogLimits, LogWriter};
use bifrost_functions::{Ctx, Functions, Settings};
use bifrost_gateway as gateway;
use bifrost_local::sandbox::{self, Sandbox, SandboxConfig};
use bifrost_local::{LocalBuilder, ProcessRuntime, RuntimeEvent, SidecarLauncher, process};
use bifrost_router::RouterConfig;
use bifrost_sources::{GitSources, archive};
use bifrost_sqlite::{Dispatcher, DispatcherConfig, SqliteStore};
use tokio::sync::watch;

use crate::routes::EmbeddedRoutes;

use crate::client::save_token;

/// `--analytics-every` and `--retention`: a length, or `off` (a newtype:
/// clap reads a bare `Option` as "the flag may be absent").
#[derive(Clone, Copy, Debug)]
pub struct Every(pub Option<chrono::Duration>);

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
    /// Apps answer at <name>.<app-domain> (default: localhost).
    #[arg(long, env = "BIFROST_APP_DOMAIN", default_value = "localhost")]
    pub app_domain: String,
    /// Longest a build may take, in seconds.
    #[arg(long, env = "BIFROST_BUILD_TIMEOUT", default_value_t = 1200)]
    pub build_timeout: u64,
    /// How long replicas get to start listening on $PORT, in seconds.
    #[arg(long, env = "BIFROST_START_TIMEOUT", default_value_t = 60)]
    pub start_timeout: u64,
    /// Address of the gRPC ingest the replicas' health sidecars report to
    /// (port 0 picks a free one).
    #[arg(long, env = "BIFROST_INGEST_LISTEN", default_value = "127.0.0.1:7071")]
    pub ingest_listen: SocketAddr,
    /// The `bifrost-sidecar` binary (default: next to this one). Without it
    /// the platform probes replicas itself. A relative path is resolved
    /// against the directory `bifrost up` starts in.
    #[arg(long, env = "BIFROST_SIDECAR_BIN")]
    pub sidecar_bin: Option<PathBuf>,
    /// Where apps' trees and build caches live. When the platform runs as
    /// root, apps run as users of their own, so this must be reachable by
    /// other users (default then: /var/lib/bifrost-apps/<data dir id>;
    /// otherwise <data dir>/apps).
    #[arg(long, env = "BIFROST_APPS_DIR")]
    pub apps_dir: Option<PathBuf>,
    /// Run apps and builds without Landlock where the kernel has none. They
    /// can then read the platform's data, tokens and other apps: for
    /// development machines only.
    #[arg(long, env = "BIFROST_INSECURE_NO_SANDBOX", value_parser = clap::builder::FalseyValueParser::new())]
    pub insecure_no_sandbox: bool,
    /// First uid handed to a project's processes (when running as root).
    #[arg(long, env = "BIFROST_APP_UID_BASE", default_value_t = sandbox::DEFAULT_UID_BASE)]
    pub app_uid_base: u32,
    /// Also serve apps by path (`/apps/<app>/…`) on this address, for
    /// clients that cannot send `Host: <app>.localhost`. Off by default: it
    /// is never the dashboard's origin.
    #[arg(long, env = "BIFROST_APPS_LISTEN")]
    pub apps_listen: Option<SocketAddr>,
    /// Serve `GET /metrics` without a token (for a Prometheus on a trusted
    /// network). Otherwise it takes an API token of any role that is not
    /// limited to a project.
    #[arg(long, env = "BIFROST_METRICS_PUBLIC", value_parser = clap::builder::FalseyValueParser::new())]
    pub metrics_public: bool,
    /// The analytics schedule: every this long, each project's last window
    /// of this length is analysed (cost, anomalies), and windows missed
    /// while the platform was down are caught up (up to 7 days). `off`
    /// turns it off.
    #[arg(long, env = "BIFROST_ANALYTICS_EVERY", default_value = "5m",
        value_parser = |s: &str| bifrost_core::analytics::window::parse_every(s).map(Every))]
    pub analytics_every: Every,
    /// A client connection must send a complete request head within this,
    /// from its start or from the end of its previous response: so it is
    /// also how long an idle keep-alive connection stays open. A body sent
    /// to the platform itself may not pause longer either.
    #[arg(long, env = "BIFROST_CLIENT_HEADER_TIMEOUT", default_value = "30s",
        value_parser = bifrost_router::serve::parse_timeout)]
    pub client_header_timeout: Duration,
    /// A client that takes none of a response for this long is
    /// disconnected.
    #[arg(long, env = "BIFROST_CLIENT_SEND_TIMEOUT", default_value = "60s",
        value_parser = bifrost_router::serve::parse_timeout)]
    pub client_send_timeout: Duration,
    /// How long health reports, traffic minutes and analytics results are
    /// kept (at least 15d), or `off` to keep them for ever.
    #[arg(long, env = "BIFROST_RETENTION", default_value = "30d",
        value_parser = |s: &str| bifrost_core::analytics::window::parse_retention(s).map(Every))]
    pub retention: Every,
    /// Open files each process of an app or a build may hold (its soft
    /// and hard limit, which it cannot raise; the host's hard limit if lower).
    #[arg(long, env = "BIFROST_APP_OPEN_FILES", default_value_t = bifrost_local::sandbox::DEFAULT_OPEN_FILES,
        value_parser = clap::value_parser!(u64).range(64..))]
    pub app_open_files: u64,
    /// Largest upload (`bifrost deploy DIR`), in bytes.
    #[arg(long, env = "BIFROST_MAX_UPLOAD_BYTES", default_value_t = 100 << 20)]
    pub max_upload_bytes: usize,
    /// Largest unpacked source tree (upload or checkout), in bytes.
    #[arg(long, env = "BIFROST_MAX_UNPACKED_BYTES", default_value_t = 1 << 30)]
    pub max_unpacked_bytes: u64,
    /// Folder holding the dashboard's client bundle, pkg/ (default: beside
    /// this binary, `target/site` in a checkout; `cargo xtask web` builds it).
    #[arg(long, env = "BIFROST_WEB_SITE_ROOT")]
    pub web_root: Option<PathBuf>,
    /// Deliver every event twice: `sequential` or `concurrent` (proves
    /// handler idempotency; for tests).
    #[arg(long, env = "BIFROST_DUPLICATE_DELIVERIES", hide = true, default_value = "off")]
    pub duplicate_deliveries: bifrost_sqlite::Duplicates,
}

/// Which `Host` headers are an app's (`<app>.<domain>`), as the router decides.
fn app_host(domain: String) -> gateway::listener::IsAppHost {
    Arc::new(move |host| {
        let probe = axum::http::Request::builder()
            .uri("/")
            .header(axum::http::header::HOST, host)
            .body(axum::body::Body::empty());
        probe.is_ok_and(|r| bifrost_router::app_by_host(&r, &domain).is_some())
    })
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("bifrost")
}

/// A path from the command line, resolved against where `bifrost up` was
/// started: children run in directories of their own.
fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    let joined = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) };
    Ok(joined.canonicalize().unwrap_or(joined))
}

/// The health sidecar to run, checked now: a missing or unrunnable binary
/// is a start-up error naming it, never a restart loop later.
fn sidecar_program(given: Option<&std::path::Path>, exe: &std::path::Path) -> anyhow::Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let program = match given {
        Some(p) => absolute(p)?,
        None => {
            let sibling = exe.with_file_name("bifrost-sidecar");
            if !sibling.exists() {
                return Ok(None);
            }
            sibling
        }
    };
    let meta = std::fs::metadata(&program)
        .with_context(|| format!("--sidecar-bin {}: health sidecar not found", program.display()))?;
    anyhow::ensure!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "--sidecar-bin {}: the health sidecar is not an executable file",
        program.display()
    );
    Ok(Some(program))
}

/// Where apps' trees live when not told (see `--apps-dir`).
fn default_apps_dir(data_dir: &std::path::Path, owner: &str) -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/bifrost-apps").join(owner)
    } else {
        data_dir.join("apps")
    }
}

/// The master key for secrets at rest: `BIFROST_SECRETS_KEY`, or a 0600
/// file made at first start. Plaintext secrets left by an older version
/// are sealed with it.
fn secrets_key(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use bifrost_core::seal;
    if let Ok(k) = std::env::var("BIFROST_SECRETS_KEY") {
        return seal::parse_key(&k).map_err(|e| anyhow::anyhow!("BIFROST_SECRETS_KEY: {e}"));
    }
    let path = data_dir.join("secrets.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => seal::parse_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = seal::generate_key();
            sandbox::write_private(&path, key.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            Ok(seal::parse_key(&key)?)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = absolute(&args.data_dir.clone().unwrap_or_else(default_data_dir))?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("resolving {}", data_dir.display()))?;
    // The platform's own: the database, keys, git mirrors, uploads.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", data_dir.display()))?;
    }

    // Clients hold descriptors: at the common soft limit of 1,024, a
    // thousand idle connections would leave the database, builds and
    // replicas none. Apps get a limit of their own (the sandbox sets it).
    if let Some(n) = bifrost_router::raise_open_files_limit() {
        tracing::info!(open_files = n, "open files limit");
    }

    // One platform per data dir: a second `bifrost up` would race the first.
    let lock = std::fs::File::create(data_dir.join("bifrost.lock")).context("creating the lock file")?;
    lock.try_lock()
        .map_err(|_| anyhow::anyhow!("another `bifrost up` is already using {} (stop it first)", data_dir.display()))?;

    let store = SqliteStore::open(&data_dir.join("bifrost.db"), bifrost_functions::subscriptions())
        .context("opening the store")?;
    let master = secrets_key(&data_dir)?;
    let keys = bifrost_core::seal::Keys::from_master(&master)?;
    let sealed =
        store.seal_plaintext(|context, plain| keys.seal_for(context, plain)).context("sealing plaintext secrets")?;
    if sealed > 0 {
        tracing::info!(count = sealed, "sealed secrets an older version stored in plaintext");
    }
    // The database file and its WAL: the platform's user only.
    for f in ["bifrost.db", "bifrost.db-wal", "bifrost.db-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(data_dir.join(f), std::fs::Permissions::from_mode(0o600));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is something else using it? try --listen)", args.listen))?;
    let addr = listener.local_addr()?;
    let public_url = args.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));

    let owner = process::owner_id(&data_dir);
    let exe = std::env::current_exe().context("locating the bifrost binary")?;
    let apps_dir = match &args.apps_dir {
        Some(d) => absolute(d)?,
        None => default_apps_dir(&data_dir, &owner),
    };
    let sandbox = Sandbox::new(SandboxConfig {
        helper: exe.clone(),
        owner: owner.clone(),
        data_dir: data_dir.clone(),
        apps_root: apps_dir.clone(),
        insecure: args.insecure_no_sandbox,
        uid_base: args.app_uid_base,
        open_files: args.app_open_files,
    })?;
    let isolation = sandbox.isolation();
    if let Some(w) = &isolation.warning {
        tracing::warn!("{w}");
    }
    // Supervisors of a platform that died end their trees themselves; this
    // catches what is left (a supervisor killed outright, cgroups).
    let orphans = tokio::task::spawn_blocking({
        let s = sandbox.clone();
        move || s.sweep()
    })
    .await
    .unwrap_or(0);
    if orphans > 0 {
        tracing::warn!(count = orphans, "stopped processes left behind by a previous run");
    }

    let store_dyn: Arc<dyn Store> = Arc::new(store.clone());
    let (log_writer, log_task) = LogWriter::start(store_dyn.clone(), LogLimits::default());
    let logs: Arc<dyn LogSink> = log_writer.clone();
    let limits = archive::Limits { unpacked_bytes: args.max_unpacked_bytes, ..archive::Limits::default() };
    let sources = Arc::new(GitSources::with_limits(&data_dir, limits));
    let ingest_listener = tokio::net::TcpListener::bind(args.ingest_listen).await.with_context(|| {
        format!("cannot listen on {} for the sidecar ingest (try --ingest-listen)", args.ingest_listen)
    })?;
    let ingest_addr = ingest_listener.local_addr()?;
    let ingest_key = ingest_key(&data_dir)?;
    let launcher = match sidecar_program(args.sidecar_bin.as_deref(), &exe)? {
        Some(program) => {
            Some(SidecarLauncher { program, endpoint: format!("http://{ingest_addr}"), key: ingest_key.clone() })
        }
        None => {
            tracing::warn!("bifrost-sidecar not found next to {}: replicas are probed in-process", exe.display());
            None
        }
    };
    let (runtime, runtime_events) = ProcessRuntime::new(logs.clone(), sandbox.clone(), launcher.clone());
    let builder = LocalBuilder::new(sandbox.clone(), sources.clone(), Duration::from_secs(args.build_timeout));
    let app_domain = match addr.port() {
        80 => args.app_domain.clone(),
        port => format!("{}:{port}", args.app_domain),
    };
    let metrics = Arc::new(bifrost_functions::metrics::Metrics::new());
    let router_metrics = Arc::new(bifrost_router::RouterMetrics::default());
    metrics.register(|r| router_metrics.register(r));
    // Routing scripts pushed live, kept in the data dir.
    let scripts =
        Arc::new(bifrost_core::scripts::Scripts::new(Arc::new(bifrost_local::DirBlobs::new(data_dir.join("scripts")))));
    let ctx = Ctx {
        health: tokio::sync::broadcast::channel(1024).0,
        store: store_dyn.clone(),
        dead_letters: Arc::new(store.clone()),
        sources,
        builder: Arc::new(builder),
        runtime: Arc::new(runtime.clone()),
        logs,
        keys: Some(keys.clone()),
        settings: Settings {
            public_url: public_url.clone(),
            app_domain: app_domain.clone(),
            start_timeout: Duration::from_secs(args.start_timeout),
            max_upload_bytes: args.max_upload_bytes,
            isolation: Some(isolation.clone()),
            metrics_public: args.metrics_public,
            analytics_every: args.analytics_every.0,
            retention: args.retention.0,
            ..Settings::default()
        },
        metrics: metrics.clone(),
        scripts: scripts.clone(),
        // This process's router, plus the `bifrost-router` nodes following the gateway.
        export: None,
        points: Default::default(),
        traffic: Some(Arc::new(bifrost_functions::traffic::TrafficRecorder::new(Arc::new(
            bifrost_functions::traffic::Summed(vec![
                router_metrics.clone(),
                Arc::new(bifrost_functions::traffic::StoreTallies(store_dyn.clone())),
            ]),
        )))),
    };
    metrics.seed(&store_dyn.deployments_in(&bifrost_core::Status::ALL).await?);
    follow_for_metrics(&ctx);
    if let Some(recorder) = ctx.traffic.clone() {
        bifrost_functions::traffic::run(ctx.clone(), recorder);
    }
    bootstrap_admin(&*ctx.store, &public_url).await?;

    // Replicas of deployments that were running or live start again.
    bifrost_functions::reconcile_runtime(&ctx).await;
    let (fail_tx, fail_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(forward_runtime_events(runtime_events, fail_tx));
    tokio::spawn(bifrost_functions::watch_runtime(ctx.clone(), fail_rx));

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
        let observed = ctx.metrics.clone();
        let d = Dispatcher::new(store.clone(), Arc::new(Functions { ctx: ctx.clone() }), config)
            .observe(Arc::new(move |function, latency| observed.delivered(function, latency)));
        Some(tokio::spawn(d.run(stop_rx, Duration::from_secs(10))))
    };

    // One gateway for the listener and the dashboard: they share its state
    // (the route feed, the routers' reports).
    let gw = gateway::router(ctx.clone());
    let api = gw.clone().layer(
        tower_http::trace::TraceLayer::new_for_http()
            .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::DEBUG))
            .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG)),
    );
    // The dashboard calls the API in-process, with the user's token.
    let site_root = args.web_root.clone().unwrap_or_else(bifrost_web::server::routes::default_site_root);
    let client_built = bifrost_web::server::routes::client_built(&site_root);
    let web = bifrost_web::server::router(bifrost_web::server::WebConfig {
        backend: bifrost_web::server::Backend::InProcess(gw),
        site_root: site_root.clone(),
        secure_cookies: public_url.starts_with("https://"),
        session_key: bifrost_web::server::SessionKey::new(bifrost_core::seal::derive_key(&master, "sessions")?),
        public_origin: Some(public_url.clone()),
    });
    // A request body the platform reads itself (uploads, webhooks, JSON)
    // that stalls as long as a request head may is cut off, like one.
    let api = api.merge(web).layer(tower_http::timeout::RequestBodyTimeoutLayer::new(args.client_header_timeout));
    let routes = EmbeddedRoutes::start(store_dyn.clone(), runtime.clone(), scripts.clone()).await?;
    let router_config = RouterConfig {
        domain: args.app_domain.clone(),
        metrics: router_metrics,
        script_reports: Some(Arc::new(crate::routes::Reports(scripts.clone()))),
        ..RouterConfig::default()
    };
    let apps = bifrost_router::service(routes.clone(), router_config.clone());
    // One listener: requests for <app>.<domain> go to the router, everything
    // else to the API and dashboard. Apps are never served on the
    // dashboard's own host (an app's page would share its origin).
    let domain = args.app_domain.clone();
    let service = tower::steer::Steer::new(
        vec![apps, tower::util::BoxCloneSyncService::new(api)],
        move |req: &axum::http::Request<axum::body::Body>, _: &[_]| {
            usize::from(bifrost_router::app_by_host(req, &domain).is_none())
        },
    );
    let timeouts = bifrost_router::ClientTimeouts {
        header: args.client_header_timeout,
        send: args.client_send_timeout,
        ..Default::default()
    };
    // `--apps-listen`: apps by Host or by path, on an origin of their own.
    let apps_listener = match args.apps_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for --apps-listen"))?;
            let by_path = bifrost_router::service(routes, RouterConfig { path_routing: true, ..router_config.clone() });
            let local = l.local_addr()?;
            tokio::spawn(async move {
                let l = bifrost_router::serve::nodelay(l);
                if let Err(e) = bifrost_router::serve(l, by_path, timeouts, std::future::pending()).await {
                    tracing::error!(error = %e, "the apps listener stopped");
                }
            });
            Some(local)
        }
        None => None,
    };
    // Health sidecars stream here (gRPC over HTTP/2).
    let ingest = gateway::ingest::service(Arc::new(ctx.clone()), ingest_key);
    let mut ingest_stop = stop_tx.subscribe();
    let ingest_task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(ingest_listener);
        let shutdown = async move {
            let _ = ingest_stop.wait_for(|stop| *stop).await;
        };
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(ingest)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(error = %e, "the sidecar ingest stopped");
        }
    });
    // Functions with periodic work (analytics: health folding, the
    // analytics schedule) run every five minutes (or the schedule's
    // period, if shorter), as Cloud Scheduler calls them on GCP.
    let scheduled_ctx = ctx.clone();
    let period = args
        .analytics_every
        .0
        .and_then(|e| e.to_std().ok())
        .map_or(Duration::from_secs(300), |e| e.min(Duration::from_secs(300)));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            for f in bifrost_functions::functions().into_iter().filter(|f| f.scheduled()) {
                if let Err(e) = f.run(&scheduled_ctx).await {
                    tracing::warn!(function = f.name(), error = %e, "periodic run failed");
                }
            }
        }
    });

    // Scripts and tests read this line to find the port.
    println!("bifrost: listening on http://{addr}");
    if client_built {
        println!("bifrost: dashboard on {public_url}/");
    } else {
        println!(
            "bifrost: dashboard on {public_url}/ (no client bundle in {}: pages render without live updates; \
             run `cargo xtask web` or scripts/up.sh)",
            site_root.display()
        );
    }
    println!("bifrost: data dir {}", data_dir.display());
    println!("bifrost: apps answer at http://<app>.{app_domain}/");
    if let Some(a) = apps_listener {
        println!("bifrost: apps by path at http://{a}/apps/<app>/");
    }
    match &isolation.warning {
        Some(w) => println!("bifrost: WARNING: {w}"),
        None => println!("bifrost: apps run sandboxed in {} ({})", apps_dir.display(), isolation.summary),
    }
    match &launcher {
        Some(l) => println!("bifrost: sidecar ingest on http://{ingest_addr} ({})", l.program.display()),
        None => println!("bifrost: sidecar ingest on http://{ingest_addr} (no sidecar binary: probing in-process)"),
    }
    tracing::info!(%addr, data_dir = %data_dir.display(), "bifrost is up");

    // SSE subscriptions are taken off the HTTP server at their first
    // request head (the fan-out keeps ~1 KiB per subscriber, hyper ~38).
    let fanout = gateway::fanout::Fanout::start(ctx.clone());
    let listener = gateway::listener::Sniffing::new(listener, fanout, app_host(args.app_domain.clone()))
        .context("serving HTTP")?;
    // (Each request carries a ConnectInfo<Downstream>: its peer, and the
    // upstream connections its connection holds when it reaches an app.)
    bifrost_router::serve(listener, service, timeouts, shutdown_signal()).await.context("serving HTTP")?;
    tracing::info!("shutting down: draining deliveries, stopping replicas");
    let _ = stop_tx.send(true);
    if let Some(d) = dispatcher {
        let _ = d.await;
    }
    runtime.stop_all().await;
    let _ = ingest_task.await;
    drop(ctx);
    // Every line logged so far is stored before the process ends (other
    // holders of the writer, like the SSE fan-out's encoder, live on until
    // exit, so waiting for the writer task to end would wait for nothing).
    let _ = tokio::time::timeout(Duration::from_secs(5), LogSink::flush(&*log_writer)).await;
    drop(log_writer);
    drop(log_task);
    drop(lock);
    Ok(())
}

async fn forward_runtime_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<RuntimeEvent>,
    to: tokio::sync::mpsc::UnboundedSender<bifrost_functions::RuntimeTrouble>,
) {
    use bifrost_functions::RuntimeTrouble;
    while let Some(e) = events.recv().await {
        let _ = to.send(match e {
            RuntimeEvent::CrashLoop { deployment_id, reason } => RuntimeTrouble::CrashLoop { deployment_id, reason },
            RuntimeEvent::ReplicaDown { deployment_id, reason } => {
                RuntimeTrouble::ReplicaDown { deployment_id, reason }
            }
        });
    }
}

/// Ensures an admin token exists: `BIFROST_ADMIN_TOKEN` when set, else a
/// new one printed once (and saved for this machine's CLI).
async fn bootstrap_admin(store: &dyn Store, public_url: &str) -> anyhow::Result<()> {
    if let Some(token) = std::env::var("BIFROST_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
        let hash = hash_token(&token);
        if store.authenticate(&hash).await?.is_none() {
            let name = if store.list_tokens().await?.iter().any(|t| t.name == "admin") { "admin-env" } else { "admin" };
            let _ = store.revoke_token("admin-env").await;
            store.create_token(name, Role::Admin, &hash, None).await?;
            tracing::info!(token = name, "admin token taken from BIFROST_ADMIN_TOKEN");
        }
        return Ok(());
    }
    if !store.list_tokens().await?.is_empty() {
        return Ok(());
    }
    let token = generate_token();
    store.create_token("admin", Role::Admin, &hash_token(&token), None).await?;
    let saved = save_token(public_url, Some(&token));
    eprintln!();
    eprintln!("  First start: an admin API token was created. It is shown only this once:");
    eprintln!();
    eprintln!("      {token}");
    eprintln!();
    match saved {
        Ok(path) => eprintln!("  The bifrost CLI on this machine will use it (saved to {}).", path.display()),
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

/// The key sidecar tokens are derived from: made once per data dir and
/// kept (mode 0600), so a token stays valid across restarts.
fn ingest_key(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("ingest.key");
    if let Ok(hexed) = std::fs::read_to_string(&path)
        && let Ok(key) = hex::decode(hexed.trim())
        && key.len() >= 32
    {
        return Ok(key);
    }
    let key = bifrost_core::auth::generate_secret().into_bytes();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(hex::encode(&key).as_bytes())?;
    Ok(key)
}

/// Keeps the platform's metrics in step with the feed (transitions,
/// deployments by status, build durations) and the sidecars' reports.
fn follow_for_metrics(ctx: &Ctx) {
    let (metrics, mut feed, mut health) = (ctx.metrics.clone(), ctx.store.subscribe(), ctx.health.subscribe());
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            tokio::select! {
                item = feed.recv() => match item {
                    Ok(item) => metrics.on_feed(&item),
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "metrics fell behind the feed"),
                    Err(RecvError::Closed) => return,
                },
                sample = health.recv() => match sample {
                    Ok(h) => metrics.on_health(&h),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
}
