//! `bench/cluster.sh`: how long a crashed node takes to be seen suspect and
//! dead by a peer (3 nodes on loopback, static peers), at the seeds'
//! defaults (`timeout_seconds = 10`) and at 2, and the gossip bytes each
//! node sends per second in a steady 3-node cluster.

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: u32 = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
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
