//! `bench/cluster.sh`: how long a crashed node takes to be seen suspect and
//! dead by a peer (3 nodes on loopback, static peers), at the seeds'
//! defaults (`timeout_seconds = 10`) and at 2, and the gossip bytes each
//! node sends per second in a steady 3-node cluster; how long a rate-limit
//! count takes to reach every other node of 5; and the cluster-wide limit's
//! overshoot at 3 nodes against its bound (N−1)·min(L, λ·D).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bifrost_cluster::config::parse;
use bifrost_cluster::{Node, State};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or(0)
}

async fn node(id: &str, port: u16, peers: &[u16], timeout_s: u64) -> anyhow::Result<Node> {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let json = format!(
        r#"{{"cluster_config": {{"enabled": true, "node_id": "{id}", "peers": [{}],
            "gossip": {{"port": {port}, "key": "bench-key-of-at-least-16-bytes", "config": {{"timeout_seconds": {timeout_s}}}}}}}}}"#,
        peers.join(",")
    );
    let (raw, _) = parse(&json).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let settings = raw.check("bench").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Node::start(&settings, addr, addr).await
}

fn state(n: &Node, id: &str) -> Option<State> {
    n.status().nodes.iter().find(|x| x.id == id).map(|x| x.state)
}

async fn wait(what: &str, limit: Duration, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    while !check() {
        anyhow::ensure!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The q-quantile (nearest rank) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().unwrap_or_default()
}

/// 5 nodes: node 0 publishes a new count every 200 ms; the time until each
/// other node's view holds it. Returns the sorted samples.
async fn propagation(samples: usize) -> anyhow::Result<Vec<Duration>> {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut nodes = vec![];
    for (i, p) in ports.iter().enumerate() {
        let peers: Vec<u16> = ports.iter().copied().filter(|q| q != p).collect();
        nodes.push(node(&format!("n{i}"), *p, &peers, 10).await?);
    }
    for n in &nodes {
        wait("5 alive", Duration::from_secs(60), || n.status().healthy_members == 5).await?;
    }
    let mut out = vec![];
    let window = 1_000;
    for count in 1..=(samples as u64).div_ceil(4) {
        let sent = Instant::now();
        nodes[0].count("app", window, count);
        let mut pending: Vec<usize> = (1..5).collect();
        let until = Instant::now() + Duration::from_secs(10);
        while !pending.is_empty() && Instant::now() < until {
            pending.retain(|i| {
                let arrived = nodes[*i].others("app", window) >= count;
                if arrived {
                    out.push(sent.elapsed());
                }
                !arrived
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        anyhow::ensure!(pending.is_empty(), "a count never arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out.sort();
    Ok(out)
}

/// The router's limiter over a node's gossip.
struct Counts<'a>(&'a Node);

impl bifrost_router::PeerCounts for Counts<'static> {
    fn others(&self, app: &str, window_ms: u64) -> u64 {
        self.0.others(app, window_ms)
    }
    fn publish(&self, app: &str, window_ms: u64, count: u64) {
        self.0.count(app, window_ms, count);
    }
}

/// 3 nodes, each with the router's limiter for `limit`/s and `lambda`
/// requests/s arriving, for `windows` whole seconds: the requests admitted
/// in each window, all nodes together.
async fn overshoot(limit: u32, lambda: u32, windows: u64) -> anyhow::Result<Vec<u64>> {
    use bifrost_router::traffic::{LimitKey, RateRule, TrafficSpec, Verdict};
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<&'static Node> = vec![];
    for (i, p) in ports.iter().enumerate() {
        let peers: Vec<u16> = ports.iter().copied().filter(|q| q != p).collect();
        nodes.push(Box::leak(Box::new(node(&format!("o{i}"), *p, &peers, 10).await?)));
    }
    for n in &nodes {
        wait("3 alive", Duration::from_secs(60), || n.status().healthy_members == 3).await?;
    }
    let spec = TrafficSpec {
        rate: Some(RateRule {
            requests: limit,
            per: Duration::from_secs(1),
            burst: None,
            key: LimitKey::App,
            text: String::new(),
        }),
        ..TrafficSpec::default()
    };
    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    // Start on a window boundary, run whole windows.
    tokio::time::sleep(Duration::from_millis(1000 - now_ms() % 1000)).await;
    let first = now_ms() / 1000;
    let admitted = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u64, u64>::new()));
    let mut tasks = vec![];
    for n in &nodes {
        let (n, spec, admitted) = (*n, spec.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            let rules = bifrost_router::TrafficRules::new(spec);
            let peers = Counts(n);
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(lambda)));
            while now_ms() / 1000 < first + windows {
                pace.tick().await;
                if let Verdict::Allowed { .. } = rules.check_shared("app", &peers)
                    && now_ms() / 1000 < first + windows
                {
                    *admitted.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.entry(now_ms() / 1000).or_default() += 1;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let per_window = admitted.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.values().copied().collect();
    Ok(per_window)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: u32 = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    println!("Counter propagation, 5 nodes (a count published by one node, seen by each of the other four):\n");
    let samples = propagation(100).await?;
    println!(
        "samples {}, p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms\n",
        samples.len(),
        quantile(&samples, 0.5).as_secs_f64() * 1000.0,
        quantile(&samples, 0.9).as_secs_f64() * 1000.0,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    let (d90, dmax) =
        (quantile(&samples, 0.9).as_secs_f64(), samples.last().copied().unwrap_or_default().as_secs_f64());
    println!(
        "Cluster-wide limit, 3 nodes, L = 100/s, 5 windows each; bound (N-1)·min(L, λ·D), D = the p90 and the max above:\n"
    );
    println!(
        "| λ per node | offered per window | admitted per window (each) | worst overshoot | bound (D = p90) | bound (D = max) |"
    );
    println!("|---:|---:|---|---:|---:|---:|");
    for lambda in [20u32, 50, 100, 400] {
        let w = overshoot(100, lambda, 5).await?;
        let worst = w.iter().map(|n| n.saturating_sub(100)).max().unwrap_or(0);
        let bound = |d: f64| 2.0 * (100f64).min(f64::from(lambda) * d);
        println!(
            "| {lambda} | {} | {} | {worst} | {:.0} | {:.0} |",
            3 * lambda,
            w.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            bound(d90),
            bound(dmax)
        );
    }
    println!();
    println!("| timeout_seconds | gossip every | round | to suspect | to dead | gossip sent per node |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for timeout_s in [2u64, 10] {
        for round in 1..=rounds {
            let (pa, pb, pc) = (free_port(), free_port(), free_port());
            let a = node("a", pa, &[pb, pc], timeout_s).await?;
            let b = node("b", pb, &[pa, pc], timeout_s).await?;
            let c = node("c", pc, &[pa, pb], timeout_s).await?;
            wait("3 alive", Duration::from_secs(60), || a.status().healthy_members == 3).await?;
            // Steady state: the bytes a node sends per second.
            let (sent0, _) = a.gossip_bytes();
            let steady = Instant::now();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rate = (a.gossip_bytes().0 - sent0) as f64 / steady.elapsed().as_secs_f64();
            let interval = a.timing().gossip_interval;
            let crashed = Instant::now();
            c.abort();
            wait("suspect", Duration::from_secs(120), || state(&a, "c") != Some(State::Alive)).await?;
            let suspect = crashed.elapsed();
            wait("dead", Duration::from_secs(120), || state(&a, "c") == Some(State::Dead)).await?;
            let dead = crashed.elapsed();
            println!(
                "| {timeout_s} | {:.0} ms | {round} | {:.2} s | {:.2} s | {:.0} B/s |",
                interval.as_secs_f64() * 1000.0,
                suspect.as_secs_f64(),
                dead.as_secs_f64(),
                rate
            );
            drop((a, b));
        }
    }
    Ok(())
}
