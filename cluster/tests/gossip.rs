//! Gossip membership between real nodes on loopback (UDP, static peers):
//! three nodes agree they are alive; a crashed one is suspect, then dead,
//! and the cluster stays healthy with two of three; it comes back as the
//! same id in a new generation, not a duplicate; a graceful stop is
//! "left"; a lone survivor is not healthy; gossip under a wrong key or from
//! outside the address space is dropped and counted, never joined; each
//! node's rate-limit counts reach the others, window by window.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bifrost_cluster::config::parse;
use bifrost_cluster::{ClusterSettings, Node, State};

const KEY: &str = "a-cluster-key-of-32-bytes-......";

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("a free port")
}

fn settings(id: &str, port: u16, peers: &[u16], key: &str, allowed: &[&str]) -> ClusterSettings {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    // timeout_seconds 1: a silent node is dead after about a second.
    let json = format!(
        r#"{{"cluster_config": {{"enabled": true, "node_id": "{id}", "peers": [{}],
            "discovery": {{"allowed_address_space": [{}]}},
            "gossip": {{"port": {port}, "key": "{key}", "config": {{"timeout_seconds": 1}}}}}}}}"#,
        peers.join(","),
        allowed.join(",")
    );
    let (raw, _) = parse(&json).expect("json");
    raw.check("test").expect("valid settings")
}

async fn start(id: &str, port: u16, peers: &[u16]) -> Node {
    start_with(id, port, peers, KEY, &[]).await
}

async fn start_with(id: &str, port: u16, peers: &[u16], key: &str, allowed: &[&str]) -> Node {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Node::start(&settings(id, port, peers, key, allowed), addr, addr).await.expect("node starts")
}

/// Waits until `check` holds for the node's status; fails with the status.
async fn until(node: &Node, what: &str, check: impl Fn(&bifrost_cluster::ClusterStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = node.status();
        if check(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "{} never saw {what}: {s:#?}", node.node_id());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_of(s: &bifrost_cluster::ClusterStatus, id: &str) -> Option<State> {
    s.nodes.iter().find(|n| n.id == id).map(|n| n.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_see_a_crash_as_suspect_then_dead_and_a_restart_as_the_same_node() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = start("a", pa, &[pb, pc]).await;
    let b = start("b", pb, &[pa, pc]).await;
    let c = start("c", pc, &[pa, pb]).await;
    for n in [&a, &b, &c] {
        until(n, "three alive members", |s| s.members == 3 && s.healthy_members == 3).await;
        assert_eq!(n.status().cluster_health, "HEALTHY");
    }
    // What a node publishes reaches the others.
    c.publish("routes_version", "42").await;
    until(&a, "c's routes version", |s| {
        s.nodes.iter().any(|n| n.id == "c" && n.routes_version.as_deref() == Some("42"))
    })
    .await;
    let first_generation = a.status().nodes.iter().find(|n| n.id == "c").map(|n| n.generation);

    // A crash: suspect first, then dead; two of three keep it healthy.
    c.abort();
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.last() != Some(&State::Dead) {
        let st = state_of(&a.status(), "c").expect("c is still known");
        if seen.last() != Some(&st) {
            seen.push(st);
        }
        assert!(Instant::now() < deadline, "c never died: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, [State::Alive, State::Suspect, State::Dead], "the states a crash goes through");
    let s = a.status();
    assert_eq!((s.members, s.healthy_members, s.cluster_health.as_str()), (3, 2, "HEALTHY"), "{s:#?}");

    // Back as the same id, a newer generation: one row, alive again.
    let c = start("c", pc, &[pa, pb]).await;
    until(&a, "c alive again", |s| state_of(s, "c") == Some(State::Alive)).await;
    let s = a.status();
    let rows: Vec<_> = s.nodes.iter().filter(|n| n.id == "c").collect();
    assert_eq!(rows.len(), 1, "a restart is not a second node: {s:#?}");
    assert!(Some(rows[0].generation) > first_generation, "{s:#?}");
    assert_eq!(s.members, 3);

    // A graceful stop is "left", and no longer a member.
    b.leave().await;
    until(&a, "b left", |s| state_of(s, "b") == Some(State::Left)).await;
    let s = a.status();
    assert_eq!((s.members, s.healthy_members, s.cluster_health.as_str()), (2, 2, "HEALTHY"), "{s:#?}");

    // Alone of the three it knew, a node is not healthy... (b left, so c
    // dying leaves a with one of two members.)
    c.abort();
    until(&a, "not healthy alone", |s| s.cluster_health == "NOT HEALTHY").await;
    let s = a.status();
    assert_eq!((s.members, s.healthy_members), (2, 1), "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_with_a_wrong_key_or_from_outside_the_address_space_is_dropped_and_counted() {
    let (pa, pb, px, py) = (free_port(), free_port(), free_port(), free_port());
    let a = start("a", pa, &[pb]).await;
    let b = start("b", pb, &[pa]).await;
    until(&a, "b alive", |s| state_of(s, "b") == Some(State::Alive)).await;

    // x knows the address but not the key.
    let x = start_with("x", px, &[pa, pb], "another-key-of-32-bytes-........", &[]).await;
    until(&a, "x's datagrams dropped", |s| s.dropped.unauthenticated > 0).await;
    // y only hears 10.0.0.0/8: everything from loopback is dropped.
    let y = start_with("y", py, &[pa, pb], KEY, &["10.0.0.0/8"]).await;
    until(&y, "loopback gossip dropped", |s| s.dropped.outside_address_space > 0).await;
    // Several gossip rounds later, neither joined anyone.
    tokio::time::sleep(a.timing().gossip_interval * 10).await;
    let s = a.status();
    assert!(state_of(&s, "x").is_none(), "a joined a node without the key: {s:#?}");
    let ys = y.status();
    assert_eq!((ys.members, ys.healthy_members), (1, 1), "y heard gossip from outside its space: {ys:#?}");
    assert!(x.status().nodes.iter().all(|n| n.id == "x"), "x learned of the cluster without the key");
    drop((b, x, y));
}

/// Waits until `node` sees `want` as the others' count of `app` in `window`.
async fn sees(node: &Node, app: &str, window: u64, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.others(app, window) != want {
        assert!(
            Instant::now() < deadline,
            "{} sees {} of {app}@{window}, not {want}",
            node.node_id(),
            node.others(app, window)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_counts_reach_the_other_nodes_for_their_window_only() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = start("count-a", pa, &[pb, pc]).await;
    let b = start("count-b", pb, &[pa, pc]).await;
    let c = start("count-c", pc, &[pa, pb]).await;
    until(&a, "three alive", |s| s.healthy_members == 3).await;
    until(&b, "three alive", |s| s.healthy_members == 3).await;
    b.count("web", 1_000, 7);
    c.count("web", 1_000, 5);
    c.count("api", 1_000, 9);
    sees(&a, "web", 1_000, 12).await;
    sees(&a, "api", 1_000, 9).await;
    // A node's own count is not among the others'.
    sees(&b, "web", 1_000, 5).await;
    assert_eq!(a.others("web", 2_000), 0, "another window's count is not this one's");
    // A newer window replaces the older.
    b.count("web", 2_000, 1);
    sees(&a, "web", 2_000, 1).await;
    assert_eq!(a.others("web", 1_000), 5);
}
