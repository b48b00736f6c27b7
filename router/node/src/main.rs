//! `bifrost-router`: the data plane as its own process — the same tower
//! stack `bifrost up` serves — clustered with its peers by authenticated
//! gossip (`bifrost-cluster`).
//!
//! Configuration: the seeds' `cluster_config` (a JSON file named by
//! `--config` / `BIFROST_CONFIG`), `BIFROST_*` variables over it; every
//! problem is printed and the process exits 2 before it listens. Serves
//! `/health`, `/ready`, `/cluster/status`, `/metrics`, and apps at
//! `<app>.<domain>`. It does not learn routes yet (the gateway's route
//! feed is the next step): every app answers the platform's JSON 404.
//! On SIGTERM it says it is leaving in gossip, stops accepting, lets
//! in-flight requests finish and exits.

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
    /// else this host's address toward its first peer, else 127.0.0.1).
    #[arg(long, env = "BIFROST_ADVERTISE_HOST")]
    advertise: Option<IpAddr>,
}

/// No routing table yet: every app is unknown (JSON 404).
struct NoRoutes;

impl bifrost_router::Routes for NoRoutes {
    fn route(&self, _app: &str) -> Option<bifrost_router::Route> {
        None
    }
}

#[derive(Clone)]
struct App {
    node: Option<Arc<Node>>,
    settings: Arc<ClusterSettings>,
    metrics: Arc<bifrost_router::RouterMetrics>,
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
                    routes_version: None,
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

/// Ready: clustered nodes once they have joined a peer (or were given none
/// to join); not clustered, at once.
async fn ready(State(app): State<App>) -> Response {
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    bifrost_service::init_logging("");
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
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let gossip = SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.gossip.port));
        let node = Node::start(&settings, gossip, SocketAddr::new(host, settings.gossip.port)).await?;
        println!("bifrost-router: gossip on {host}:{} as {}", settings.gossip.port, settings.node_id);
        Some(Arc::new(node))
    } else {
        None
    };
    let metrics = Arc::new(bifrost_router::RouterMetrics::default());
    let state = App { node: node.clone(), settings: Arc::new(settings), metrics: metrics.clone() };
    let apps = bifrost_router::service(
        Arc::new(NoRoutes),
        bifrost_router::RouterConfig { domain: args.domain.clone(), metrics, ..Default::default() },
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
        if let Some(node) = &node {
            node.leave().await;
        }
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(stop).await?;
    Ok(())
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
