//! `bifrost-router` as users run it: real processes clustering over
//! authenticated gossip on loopback with static peers. Three agree they
//! are healthy; a kill -9 leaves two that say so and mark the third dead;
//! it comes back as the same node (a newer generation, not a duplicate); a
//! SIGTERM is "left". Every configuration mistake the seeds name stops the
//! process with exit 2 and its message.

use std::net::UdpSocket;
use std::process::Command;

use bifrost_e2e::router::{RouterProc, state_of};
use bifrost_e2e::{bifrost_bin, router_bin};
use serde_json::Value;

const KEY: &str = "router-cluster-test-key-32-bytes";

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("a free port")
}

fn start(id: &str, port: u16, peers: &[u16]) -> RouterProc {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let config = format!(
        r#"{{"cluster_config": {{"enabled": true, "node_id": "{id}", "peers": [{}],
            "gossip": {{"port": {port}, "config": {{"timeout_seconds": 2, "success_threshold": 3, "failure_threshold": 3}}}}}}}}"#,
        peers.join(",")
    );
    RouterProc::spawn(
        id,
        Some(&config),
        &["--listen", "127.0.0.1:0", "--advertise", "127.0.0.1"],
        &[("BIFROST_GOSSIP_KEY", KEY)],
        None,
    )
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(url).header("host", "web.localhost").send().await.expect("router answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_cluster_survive_a_kill_9_take_back_a_restart_and_see_a_sigterm_as_left() {
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let a = start("router-a", pa, &[pb, pc]);
    let b = start("router-b", pb, &[pa, pc]);
    let mut c = start("router-c", pc, &[pa, pb]);
    for r in [&a, &b, &c] {
        let s = r.until("three healthy members", |s| s["members"] == 3 && s["healthy_members"] == 3).await;
        assert_eq!(s["cluster_health"], "HEALTHY", "{s:#}");
    }
    assert_eq!(a.status().await["local_node"], "router-a");
    let (code, body) = get(&format!("{}/health", a.url)).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let (code, _) = get(&format!("{}/ready", a.url)).await;
    assert_eq!(code, 200, "a joined node is ready");
    // No routes are learned yet: an app is the platform's JSON 404.
    let (code, body) = get(&format!("{}/", a.url)).await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("no_such_app")), "{body}");
    let metrics = reqwest::get(format!("{}/metrics", a.url)).await.expect("metrics").text().await.unwrap_or_default();
    assert!(metrics.contains("bifrost_cluster_healthy_members 3"), "{metrics}");
    let (code, out) = cluster_status_cli(&a);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("cluster of router-a") && out.contains("3 members, 3 healthy  HEALTHY"), "{out}");

    // kill -9: dead to the others, who stay healthy with two of three.
    c.kill9();
    let first_generation = a.status().await["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == "router-c").map(|n| n["generation"].clone()));
    for r in [&a, &b] {
        let s = r.until("router-c dead", |s| state_of(s, "router-c").as_deref() == Some("dead")).await;
        assert_eq!((s["members"].as_u64(), s["healthy_members"].as_u64()), (Some(3), Some(2)), "{s:#}");
        assert_eq!(s["cluster_health"], "HEALTHY", "{s:#}");
    }

    // Back as the same node: one row, a newer generation, alive.
    c = start("router-c", pc, &[pa, pb]);
    let s = a.until("router-c alive again", |s| state_of(s, "router-c").as_deref() == Some("alive")).await;
    let rows: Vec<&Value> = s["nodes"].as_array().expect("nodes").iter().filter(|n| n["id"] == "router-c").collect();
    assert_eq!(rows.len(), 1, "a restart is not a second node: {s:#}");
    assert!(rows[0]["generation"].as_u64() > first_generation.and_then(|g| g.as_u64()), "{s:#}");
    a.until("three healthy again", |s| s["healthy_members"] == 3).await;

    // SIGTERM: it says it is leaving, then exits 0; the others show it left.
    let mut b = b;
    b.sigterm();
    let s = a.until("router-b left", |s| state_of(s, "router-b").as_deref() == Some("left")).await;
    assert_eq!(s["members"], 2, "a node that left is no longer a member: {s:#}");
    assert_eq!(b.exit_code().await, Some(0), "a SIGTERM is a clean exit");

    // One of the two members left is not a majority: `bifrost cluster
    // status` says so and exits 1.
    drop(c);
    a.until("not healthy", |s| s["cluster_health"] == "NOT HEALTHY").await;
    let (code, out) = cluster_status_cli(&a);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("2 members, 1 healthy  NOT HEALTHY"), "{out}");
}

/// `bifrost cluster status --router <a>`: exit code and stdout.
fn cluster_status_cli(r: &RouterProc) -> (Option<i32>, String) {
    let out = Command::new(bifrost_bin()).args(["cluster", "status", "--router", &r.url]).output().expect("bifrost");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_configuration_mistake_stops_the_router_with_its_message() {
    // (configuration, variables, what stderr must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 7] = [
        (r#"{"cluster_config": {"enabled": true}}"#, &[("BIFROST_GOSSIP_KEY", KEY)], "cluster mode needs peers"),
        (
            r#"{"cluster_config": {"enabled": true, "peers": ["a:1"]}}"#,
            &[],
            "gossip.key (or BIFROST_GOSSIP_KEY) is required",
        ),
        (
            r#"{"cluster_config": {"enabled": true, "discovery": {"enabled": true, "type": "udp", "service_name": "r"}}}"#,
            &[("BIFROST_GOSSIP_KEY", KEY)],
            "discovery.udp_broadcast_port is required",
        ),
        (
            r#"{"cluster_config": {"enabled": true, "discovery": {"enabled": true, "type": "kubernetes"}}}"#,
            &[("BIFROST_GOSSIP_KEY", KEY)],
            "discovery.k8s_label_selector is required",
        ),
        (
            r#"{"cluster_config": {"enabled": true, "discovery": {"enabled": true, "type": "etcd", "service_name": "r"}}}"#,
            &[("BIFROST_GOSSIP_KEY", KEY)],
            "discovery.etcd_endpoints is required",
        ),
        (
            r#"{"cluster_config": {"enabled": true, "peers": ["a:1"], "discovery": {"allowed_address_space": ["10.0.0.0/33"]}}}"#,
            &[("BIFROST_GOSSIP_KEY", KEY)],
            "discovery.allowed_address_space[0]: \"10.0.0.0/33\" is not a CIDR range",
        ),
        (
            r#"{"cluster_config": {"peers": ["a:1"]}}"#,
            &[("BIFROST_GOSSIP_PORT", "gossip")],
            "BIFROST_GOSSIP_PORT: \"gossip\" is not a port number",
        ),
    ];
    for (json, env, want) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.json");
        std::fs::write(&config, json).expect("write");
        let out = Command::new(router_bin())
            .args(["--listen", "127.0.0.1:0"])
            .env("BIFROST_CONFIG", &config)
            .env_remove("BIFROST_GOSSIP_KEY")
            .envs(env.iter().copied())
            .output()
            .expect("run bifrost-router");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{json}: {stderr}");
        assert!(stderr.contains(want), "{json}: want {want:?} in {stderr}");
    }
    let tokenless = Command::new(router_bin())
        .args(["--listen", "127.0.0.1:0", "--gateway", "http://127.0.0.1:9"])
        .env_remove("BIFROST_CONFIG")
        .env_remove("BIFROST_ROUTER_TOKEN")
        .output()
        .expect("run");
    assert_eq!(tokenless.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&tokenless.stderr).contains("--gateway needs a router token"));
    let missing = Command::new(router_bin()).args(["--config", "/nonexistent/bifrost.json"]).output().expect("run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("reading /nonexistent/bifrost.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_routers_stay_healthy_losing_two_and_not_with_three_gone() {
    let ports: Vec<u16> = (0..5).map(|_| free_udp_port()).collect();
    let mut routers: Vec<RouterProc> = (0..5)
        .map(|i| {
            let peers: Vec<u16> = ports.iter().copied().filter(|p| *p != ports[i]).collect();
            start(&format!("router-{i}"), ports[i], &peers)
        })
        .collect();
    for r in &routers {
        r.until("five alive", |s| s["members"] == 5 && s["healthy_members"] == 5).await;
    }
    routers[4].kill9();
    routers[3].kill9();
    let s = routers[0]
        .until("two dead", |s| ["router-3", "router-4"].iter().all(|id| state_of(s, id).as_deref() == Some("dead")))
        .await;
    assert_eq!((s["healthy_members"].as_u64(), s["cluster_health"].as_str()), (Some(3), Some("HEALTHY")), "{s:#}");
    routers[2].kill9();
    let s = routers[0].until("not healthy", |s| s["cluster_health"] == "NOT HEALTHY").await;
    assert_eq!((s["members"].as_u64(), s["healthy_members"].as_u64()), (Some(5), Some(2)), "{s:#}");
}
