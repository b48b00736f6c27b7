//! The router alone with N apps configured (`bench/router-rss.sh` runs it):
//! each app has a rate limit keyed by client IP, a request and a response
//! header rule and a routing script, all routed to one upstream. Prints
//! `listening on ADDR` and serves until killed.
//!
//! `cargo run --release -p bifrost-router --example many_apps -- APPS UPSTREAM [plain|script]`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bifrost_router::traffic::{HeaderRules, LimitKey, RateRule, TrafficSpec};
use bifrost_router::{Route, RouterConfig, Routes, TrafficRules};
use bifrost_scripts::{Limits, Script};

// As `bifrost up` and the router node run.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Table(HashMap<String, Route>);

impl Routes for Table {
    fn route(&self, app: &str) -> Option<Route> {
        self.0.get(app).cloned()
    }
}

const SCRIPT: &str = r#"
function handle(req)
  if req.path:find("^/admin") then return { status = 403, body = "forbidden" } end
  return { response_headers = { ["x-served-by"] = "lua" } }
end
"#;

fn main() {
    // BIFROST_LOG set: the access log as `bifrost up` writes it (tracing's
    // text lines on stderr, in batches); BIFROST_BENCH_LOG=direct: one
    // write per line instead, as before batching (the bench's peer row).
    let _log = std::env::var("BIFROST_LOG").ok().map(|filter| {
        let filter = tracing_subscriber::EnvFilter::new(filter);
        if std::env::var("BIFROST_BENCH_LOG").as_deref() == Ok("direct") {
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).init();
            None
        } else {
            Some(bifrost_service::init_cli_logging(filter, false))
        }
    });
    // BIFROST_BENCH_PER_CORE=N: N threads, each a current-thread runtime
    // with its own SO_REUSEPORT listener and upstream pool (no cross-thread
    // wake-ups); otherwise one multi-thread runtime, as `bifrost up` runs.
    match std::env::var("BIFROST_BENCH_PER_CORE").ok().and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => per_core(n),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime").block_on(run(None)),
    }
}

fn per_core(n: usize) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(run(Some(port)))
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

async fn run(port: Option<u16>) {
    let mut args = std::env::args().skip(1);
    let apps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let upstream: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect("UPSTREAM address");
    // `plain`: no rules, no script (the proxy alone); `script`: the script only.
    let mode = args.next().unwrap_or_default();
    let (plain, script_only) = (mode == "plain" || mode == "script", mode == "script");
    let table = (0..apps)
        .map(|i| {
            let spec = if plain {
                TrafficSpec::default()
            } else {
                TrafficSpec {
                    rate: Some(RateRule {
                        requests: 1_000_000,
                        per: std::time::Duration::from_secs(1),
                        burst: None,
                        key: LimitKey::ClientIp,
                        text: "1000000/s".into(),
                    }),
                    request_headers: HeaderRules::from_pairs([("X-Served-By", "bifrost")], []),
                    response_headers: HeaderRules::from_pairs([("Cache-Control", "no-store")], []),
                }
            };
            let route = Route {
                deployment_id: Arc::from(format!("d{i:05}").as_str()),
                endpoints: vec![upstream].into(),
                traffic: Arc::new(TrafficRules::new(spec)),
                split: None,
                chaos: None,
                script: (!plain || script_only)
                    .then(|| Arc::new(Script::new(&format!("app{i}.lua"), SCRIPT, Limits::default()))),
            };
            (format!("app{i}"), route)
        })
        .collect();
    let svc = bifrost_router::service(Arc::new(Table(table)), RouterConfig::default());
    let listener = match port {
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        Some(port) => {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseport(true).expect("reuseport");
            socket.bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind");
            socket.listen(1024).expect("listen")
        }
    };
    println!("listening on {}", listener.local_addr().expect("addr"));
    let listener = bifrost_router::serve::nodelay(listener);
    bifrost_router::serve(listener, svc, bifrost_router::ClientTimeouts::default(), std::future::pending())
        .await
        .expect("serve");
}
