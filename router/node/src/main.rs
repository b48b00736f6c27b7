//! `bifrost-router`: the data plane as its own process — the same tower
//! stack `bifrost up` serves — clustered with its peers by authenticated
//! gossip (`bifrost-cluster`).
//!
//! Configuration: the seeds' `cluster_config` (a JSON file named by
//! `--config` / `BIFROST_CONFIG`), `BIFROST_*` variables over it; every
//! problem is printed and the process exits 2 before it listens. Serves
//! `/health`, `/ready`, `/cluster/status`, `/metrics`, and apps at
//! `<app>.<domain>`, routed by the table it follows from the gateway
//! (`--gateway`, [`feed`]); without one every app answers the platform's
//! JSON 404. Each node gossips the table version it serves and its load.
//! On SIGTERM it says it is leaving in gossip, stops accepting, lets
//! in-flight requests finish (for up to 20 s) and exits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bifrost_cluster::config::{ClusterSettings, parse};
use bifrost_cluster::{ClusterStatus, Node, NodeStatus, State as NodeState};
use clap::Parser;

mod feed;

#[derive(Parser, Debug)]
#[command(name = "bifrost-router", version, about = "Bifrost's router: apps' traffic, clustered by gossip")]
struct Args {
    /// The configuration file (JSON with `cluster_config`, as in the seeds).
    #[arg(long, env = "BIFROST_CONFIG")]
    config: Option<PathBuf>,
    /// Where requests are served (default `0.0.0.0:$PORT`, else `0.0.0.0:8080`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Apps answer at `<app>.<domain>`.
    #[arg(long, env = "BIFROST_APPS_DOMAIN", default_value = "localhost")]
    domain: String,
    /// The address peers reach this node's gossip at (default: `POD_IP`,
    /// else this host's address toward its first peer, else (discovering)
    /// its first non-loopback IPv4 address, else 127.0.0.1).
    #[arg(long, env = "BIFROST_ADVERTISE_HOST")]
    advertise: Option<IpAddr>,
    /// The gateway whose routing table this router serves (`bifrost up`'s
    /// address, or the gateway service's URL on GCP).
    #[arg(long, env = "BIFROST_GATEWAY")]
    gateway: Option<String>,
    /// A file holding a `router` token for the gateway (else
    /// `BIFROST_ROUTER_TOKEN`): `bifrost tokens create NAME --role router`.
    #[arg(long, env = "BIFROST_ROUTER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A client connection must send a complete request head within this,
    /// from its start or the end of its previous response (so: the
    /// keep-alive idle timeout too).
    #[arg(long, env = "BIFROST_CLIENT_HEADER_TIMEOUT", default_value = "30s",
        value_parser = bifrost_router::serve::parse_timeout)]
    client_header_timeout: std::time::Duration,
    /// A client that takes none of a response for this long is disconnected.
    #[arg(long, env = "BIFROST_CLIENT_SEND_TIMEOUT", default_value = "60s",
        value_parser = bifrost_router::serve::parse_timeout)]
    client_send_timeout: std::time::Duration,
}

#[derive(Clone)]
struct App {
    node: Option<Arc<Node>>,
    settings: Arc<ClusterSettings>,
    metrics: Arc<bifrost_router::RouterMetrics>,
    /// The table served; `None` without `--gateway`.
    routes: Option<Arc<feed::FeedRoutes>>,
}

impl App {
    fn status(&self) -> ClusterStatus {
        match &self.node {
            Some(n) => n.status(),
            // Not clustered: a cluster of one.
            None => ClusterStatus {
                local_node: self.settings.node_id.clone(),
                members: 1,
                healthy_members: 1,
                cluster_health: "HEALTHY".into(),
                nodes: vec![NodeStatus {
                    id: self.settings.node_id.clone(),
                    address: String::new(),
                    generation: 0,
                    state: NodeState::Alive,
                    routes_version: self.routes.as_ref().and_then(|r| r.version()),
                    load: None,
                    last_seen_ms: 0,
                }],
                dropped: bifrost_cluster::membership::Dropped {
                    unauthenticated: 0,
                    outside_address_space: 0,
                    malformed: 0,
                },
            },
        }
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready: the routing table loaded (with `--gateway`), and clustered nodes
/// once they have joined a peer (or were given none to join).
async fn ready(State(app): State<App>) -> Response {
    if app.routes.as_ref().is_some_and(|r| !r.loaded()) {
        let body = serde_json::json!({"status": "not ready", "reason": "no routing table from the gateway yet"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let s = app.status();
    let joined = s.nodes.iter().any(|n| n.id != s.local_node && n.state == NodeState::Alive);
    let alone_by_config = app.settings.peers.is_empty() && app.settings.discovery.is_none();
    if app.node.is_none() || joined || alone_by_config {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let body = serde_json::json!({"status": "not ready", "reason": "no peer joined yet"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn cluster_status(State(app): State<App>) -> Json<ClusterStatus> {
    Json(app.status())
}

async fn metrics_text(State(app): State<App>) -> Response {
    use prometheus_client::metrics::gauge::Gauge;
    let mut registry = prometheus_client::registry::Registry::default();
    app.metrics.register(&mut registry);
    let s = app.status();
    let gauge = |v: usize| {
        let g: Gauge = Gauge::default();
        g.set(v as i64);
        g
    };
    registry.register("bifrost_cluster_members", "Known nodes that have not left", gauge(s.members));
    registry.register("bifrost_cluster_healthy_members", "Members alive", gauge(s.healthy_members));
    for (why, n) in [
        ("unauthenticated", s.dropped.unauthenticated),
        ("outside_address_space", s.dropped.outside_address_space),
        ("malformed", s.dropped.malformed),
    ] {
        registry.register(
            format!("bifrost_gossip_dropped_{why}"),
            format!("Gossip datagrams dropped on arrival: {why}"),
            gauge(n as usize),
        );
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => {
            ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "router".into())
}

/// This host's address toward `peer` (the interface the kernel would use).
fn address_toward(peer: &str) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let to = peer.to_socket_addrs().ok()?.next()?;
    let socket = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    socket.connect(to).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// The configuration, or every problem with it.
fn settings(args: &Args) -> Result<ClusterSettings, Vec<String>> {
    let (mut raw, other) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| vec![format!("reading {}: {e}", path.display())])?;
            parse(&text).map_err(|e| e.into_iter().map(|m| format!("{}: {m}", path.display())).collect::<Vec<_>>())?
        }
        None => (Default::default(), vec![]),
    };
    for key in other {
        tracing::warn!("configuration: {key:?} is not used by bifrost-router (only cluster_config is)");
    }
    raw.override_from(|k| std::env::var(k).ok())?;
    raw.check(&hostname())
}

// The allocator `bifrost up` serves apps with (glibc malloc was ~5 % of
// the router's CPU under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // TLS to the gateway (Cloud Run is https): rustls with ring, as the CLI.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _log = bifrost_service::init_logging("");
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("bifrost-router: {e}");
            }
            eprintln!(
                "bifrost-router: not started ({} problem{})",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            return std::process::ExitCode::from(2);
        }
    };
    // --gateway without a router token is a start-up error like the rest.
    if args.gateway.is_some()
        && let Err(e) = router_token(&args)
    {
        eprintln!("bifrost-router: {e:#}");
        eprintln!("bifrost-router: not started (1 problem)");
        return std::process::ExitCode::from(2);
    }
    match run(args, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bifrost-router: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, settings: ClusterSettings) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| {
        let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    });
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let node = if settings.enabled {
        let host = args
            .advertise
            .or_else(|| std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok()))
            .or_else(|| settings.peers.first().and_then(|p| address_toward(p)))
            .or_else(|| settings.discovery.as_ref().and_then(|_| bifrost_cluster::discovery::host_address()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let gossip = SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.gossip.port));
        let advertise = SocketAddr::new(host, settings.gossip.port);
        let node = Arc::new(Node::start(&settings, gossip, advertise).await?);
        println!("bifrost-router: gossip on {advertise} as {}", settings.node_id);
        let me = bifrost_cluster::discovery::Me {
            node_id: settings.node_id.clone(),
            gossip: advertise,
            service: settings
                .discovery
                .as_ref()
                .and_then(|d| d.service_name.clone())
                .unwrap_or_else(|| "bifrost-router".into()),
            key: Arc::new(settings.gossip.key.clone().unwrap_or_default()),
        };
        let discovery = bifrost_cluster::discovery::Discovery::start(&settings, node.clone(), me).await?;
        Some((node, discovery))
    } else {
        None
    };
    let (node, discovery) = match node {
        Some((n, d)) => (Some(n), d),
        None => (None, None),
    };
    let metrics = Arc::new(bifrost_router::RouterMetrics::default());
    let routes = match &args.gateway {
        Some(gateway) => {
            let token = router_token(&args)?;
            let routes = Arc::new(feed::FeedRoutes::default());
            let gossip = node.clone();
            tokio::spawn(feed::follow(routes.clone(), gateway.clone(), token, move |version| {
                if let Some(n) = gossip.clone() {
                    let version = version.to_string();
                    tokio::spawn(async move { n.publish("routes_version", &version).await });
                }
            }));
            Some(routes)
        }
        None => {
            tracing::warn!("no --gateway: routing nothing (every app answers 404)");
            None
        }
    };
    if let Some(n) = node.clone() {
        tokio::spawn(publish_load(n, metrics.clone()));
    }
    let state =
        App { node: node.clone(), settings: Arc::new(settings), metrics: metrics.clone(), routes: routes.clone() };
    // Scripts' failures go to the gateway with the reports.
    let script_failures = Arc::new(feed::ScriptFailures::default());
    if let (Some(gateway), Ok(token)) = (&args.gateway, router_token(&args)) {
        let reporting = state.clone();
        let failures = script_failures.clone();
        tokio::spawn(feed::report(gateway.clone(), token, state.metrics.clone(), failures, move || {
            serde_json::to_value(reporting.status()).unwrap_or_default()
        }));
    }
    let table: Arc<dyn bifrost_router::Routes> = match routes {
        Some(r) => r,
        None => Arc::new(feed::FeedRoutes::default()),
    };
    let peer_counts = node.clone().map(|n| Arc::new(GossipCounts(n)) as Arc<dyn bifrost_router::PeerCounts>);
    let apps = bifrost_router::service(
        table,
        bifrost_router::RouterConfig {
            domain: args.domain.clone(),
            metrics,
            peer_counts,
            script_reports: Some(script_failures),
            ..Default::default()
        },
    );
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/cluster/status", get(cluster_status))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .fallback_service(apps);
    println!("bifrost-router: listening on {}", listener.local_addr()?);
    let stop = async move {
        terminated().await;
        tracing::info!("SIGTERM: leaving the cluster, then draining");
        if let Some(d) = &discovery {
            d.leave().await;
        }
        if let Some(node) = &node {
            node.leave().await;
        }
    };
    if let Some(n) = bifrost_router::raise_open_files_limit() {
        tracing::info!(open_files = n, "open files limit");
    }
    let timeouts = bifrost_router::ClientTimeouts {
        header: args.client_header_timeout,
        send: args.client_send_timeout,
        ..Default::default()
    };
    bifrost_router::serve(bifrost_router::serve::nodelay(listener), app, timeouts, stop).await?;
    Ok(())
}

/// App-wide rate limits across the cluster: each node's admitted counts
/// ride on gossip (chitchat node state, not a reliable broadcast).
struct GossipCounts(Arc<Node>);

impl bifrost_router::PeerCounts for GossipCounts {
    fn others(&self, app: &str, window_ms: u64) -> u64 {
        self.0.others(app, window_ms)
    }

    fn publish(&self, app: &str, window_ms: u64, count: u64) {
        self.0.count(app, window_ms, count);
    }
}

/// The `router` token: from `--token-file`, else `BIFROST_ROUTER_TOKEN`.
fn router_token(args: &Args) -> anyhow::Result<String> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the router token {}: {e}", path.display()))?,
        None => std::env::var("BIFROST_ROUTER_TOKEN").map_err(|_| {
            anyhow::anyhow!(
                "--gateway needs a router token: BIFROST_ROUTER_TOKEN or --token-file \
                 (bifrost tokens create NAME --role router)"
            )
        })?,
    };
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "the router token is empty");
    Ok(token)
}

/// Gossips this node's load every 2 s: its CPU use (of one core, from
/// /proc/self/stat) and the requests it is answering.
async fn publish_load(node: Arc<Node>, metrics: Arc<bifrost_router::RouterMetrics>) {
    let every = std::time::Duration::from_secs(2);
    let mut last = (std::time::Instant::now(), cpu_ticks());
    loop {
        tokio::time::sleep(every).await;
        let now = (std::time::Instant::now(), cpu_ticks());
        let cpu = match (last.1, now.1) {
            (Some(a), Some(b)) => {
                let ticks_per_s = 100.0; // USER_HZ on Linux
                (b.saturating_sub(a) as f64 / ticks_per_s) / now.0.duration_since(last.0).as_secs_f64() * 100.0
            }
            _ => 0.0,
        };
        last = now;
        let load = serde_json::json!({"cpu_percent": (cpu * 10.0).round() / 10.0, "in_flight": metrics.in_flight()});
        node.publish("load", &load.to_string()).await;
    }
}

/// This process's user + system CPU time in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) closed by ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// SIGTERM or Ctrl-C.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
