//! Discovery, each method against its real peer where one can run here:
//! routers in network namespaces of their own (one address each, joined by
//! a bridge) find each other by DNS (dnsmasq: A and SRV records), etcd
//! (Debian's etcd-server), UDP broadcast beacons and mDNS; consul and the
//! Kubernetes API, which cannot run here, are fakes that check the exact
//! requests. Every method ends in the same place: three nodes, all alive.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_e2e::router::{Lan, RouterProc, all_healthy, state_of};
use serde_json::{Value, json};

const KEY: &str = "discovery-test-key-of-32-bytes!!";
const GOSSIP_PORT: u16 = 10101;

fn free_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The `cluster_config` of node `id` with this `discovery` section.
fn config(id: &str, discovery: Value) -> String {
    json!({"cluster_config": {
        "enabled": true,
        "node_id": id,
        "discovery": discovery,
        "gossip": {"port": GOSSIP_PORT, "config": {"timeout_seconds": 2, "success_threshold": 3, "failure_threshold": 3}},
    }})
    .to_string()
}

/// Router `i` of the LAN, in its namespace, advertising its address.
fn start_in(lan: &Lan, i: usize, discovery: Value, env: &[(&str, &str)]) -> RouterProc {
    let id = format!("router-{i}");
    let listen = format!("{}:8080", lan.ip(i));
    let ip = lan.ip(i);
    let mut env = env.to_vec();
    env.push(("BIFROST_GOSSIP_KEY", KEY));
    RouterProc::spawn(
        &id,
        Some(&config(&id, discovery)),
        &["--listen", &listen, "--advertise", &ip],
        &env,
        Some(&lan.ns(i)),
    )
}

async fn all_three_alive(routers: &[&RouterProc]) {
    for r in routers {
        r.until("three alive members", |s| all_healthy(s, 3)).await;
    }
}

/// A child process killed on drop (dnsmasq, etcd).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_a_and_srv_records_from_a_real_dns_server_join_three_routers() {
    let lan = Lan::new("dns", "10.77.11", 3);
    let port = free_port();
    // Two nodes by name (A records at bind_port), the third named only by
    // an SRV record (its target and port).
    let dnsmasq = Command::new("dnsmasq")
        .args(["--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=10.77.11.254"])
        .arg(format!("--port={port}"))
        .args(["--host-record=routers.test,10.77.11.1", "--host-record=routers.test,10.77.11.2"])
        .arg("--host-record=node3.routers.test,10.77.11.3")
        .arg(format!("--srv-host=_gossip._udp.routers.test,node3.routers.test,{GOSSIP_PORT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq (apt: dnsmasq-base)");
    let _dns = Daemon(dnsmasq);
    let server = format!("10.77.11.254:{port}");
    let discovery = json!({"enabled": true, "type": "dns", "dns_names": ["routers.test", "_gossip._udp.routers.test"],
                           "dial_timeout": "2s", "allowed_address_space": ["10.77.11.0/24"]});
    let env = [("BIFROST_DNS_SERVER", server.as_str())];
    let routers: Vec<RouterProc> = (1..=3).map(|i| start_in(&lan, i, discovery.clone(), &env)).collect();
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registers_each_router_under_a_lease_and_a_sigterm_removes_its_key() {
    let lan = Lan::new("etcd", "10.77.12", 3);
    let data = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://10.77.12.254:{client}");
    let etcd = Command::new("etcd")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--name", "discovery-test"])
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=discovery-test=http://127.0.0.1:{peer}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd (apt: etcd-server)");
    let _etcd = Daemon(etcd);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{client_url}/health")).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let discovery = json!({"enabled": true, "type": "etcd", "service_name": "edge", "etcd_endpoints": [client_url],
                           "dial_timeout": "2s"});
    let mut routers: Vec<RouterProc> = (1..=3).map(|i| start_in(&lan, i, discovery.clone(), &[])).collect();
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;

    // The registrations, as etcd holds them.
    let keys = |http: reqwest::Client, url: String| async move {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let r: Value = http
            .post(format!("{url}/v3/kv/range"))
            .json(&json!({"key": b64("/services/edge/"), "range_end": b64("/services/edge0")}))
            .send()
            .await
            .expect("etcd range")
            .json()
            .await
            .expect("json");
        let decode = |v: &Value| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).unwrap_or_default(),
            )
            .unwrap_or_default()
        };
        r["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(|kv| (decode(&kv["key"]), decode(&kv["value"]))).collect::<BTreeMap<_, _>>())
            .unwrap_or_default()
    };
    let registered = keys(http.clone(), client_url.clone()).await;
    assert_eq!(
        registered,
        (1..=3).map(|i| (format!("/services/edge/router-{i}"), format!("10.77.12.{i}:{GOSSIP_PORT}"))).collect(),
    );
    // A graceful stop revokes the lease: the key goes at once.
    routers[2].sigterm();
    assert_eq!(routers[2].exit_code().await, Some(0));
    let after = keys(http, client_url).await;
    assert!(!after.contains_key("/services/edge/router-3") && after.len() == 2, "{after:?}");
    routers[0].until("router-3 left", |s| state_of(s, "router-3").as_deref() == Some("left")).await;
}

fn record(a: &Arc<Mutex<Agent>>, method: &str, path: String, body: Value) {
    a.lock().expect("agent").requests.push((method.into(), path, body));
}

/// What the fake consul agent saw and holds.
#[derive(Default)]
struct Agent {
    requests: Vec<(String, String, Value)>,
    services: BTreeMap<String, Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_discovery_registers_with_a_tcp_check_reads_healthy_instances_and_deregisters() {
    use axum::extract::{Path, RawQuery, State};
    use axum::routing::{get, put};
    let lan = Lan::new("csl", "10.77.13", 3);
    let agent: Arc<Mutex<Agent>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/agent/service/register",
            put(|State(a): State<Arc<Mutex<Agent>>>, axum::Json(body): axum::Json<Value>| async move {
                record(&a, "PUT", "/v1/agent/service/register".into(), body.clone());
                let id = body["ID"].as_str().unwrap_or_default().to_string();
                a.lock().expect("agent").services.insert(id, body);
                "ok"
            }),
        )
        .route(
            "/v1/agent/service/deregister/{id}",
            put(|State(a): State<Arc<Mutex<Agent>>>, Path(id): Path<String>| async move {
                record(&a, "PUT", format!("/v1/agent/service/deregister/{id}"), Value::Null);
                a.lock().expect("agent").services.remove(&id);
                "ok"
            }),
        )
        .route(
            "/v1/health/service/{name}",
            get(|State(a): State<Arc<Mutex<Agent>>>, Path(name): Path<String>, RawQuery(q): RawQuery| async move {
                record(&a, "GET", format!("/v1/health/service/{name}?{}", q.unwrap_or_default()), Value::Null);
                let services: Vec<Value> = a.lock().expect("agent").services.values().cloned().collect();
                // A real agent runs each instance's check: the fake does too
                // (TCP connect to the address registered), and lists only
                // the passing ones.
                let mut passing = vec![];
                for s in services.into_iter().filter(|s| s["Name"] == name.as_str()) {
                    let tcp = s["Check"]["TCP"].as_str().unwrap_or_default().to_string();
                    let ok = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(tcp))
                        .await
                        .is_ok_and(|c| c.is_ok());
                    if ok {
                        passing.push(json!({"Node": {"Address": "10.77.13.254"}, "Service": s, "Checks": []}));
                    }
                }
                axum::Json(Value::Array(passing))
            }),
        )
        .with_state(agent.clone());
    let listener = tokio::net::TcpListener::bind("10.77.13.254:0").await.expect("bind the fake agent");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let discovery = json!({"enabled": true, "type": "consul", "service_name": "edge", "consul_address": address,
                           "dial_timeout": "2s"});
    let mut routers: Vec<RouterProc> = (1..=3).map(|i| start_in(&lan, i, discovery.clone(), &[])).collect();
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;

    // Each registration, exactly.
    let registrations: Vec<Value> = agent
        .lock()
        .expect("agent")
        .requests
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p == "/v1/agent/service/register")
        .map(|(_, _, b)| b.clone())
        .collect();
    assert_eq!(registrations.len(), 3, "{registrations:#?}");
    let first = registrations.iter().find(|r| r["ID"] == "router-1").expect("router-1 registered");
    assert_eq!(
        *first,
        json!({"ID": "router-1", "Name": "edge", "Address": "10.77.13.1", "Port": GOSSIP_PORT, "Tags": ["bifrost-router"],
               "Check": {"Name": "gossip port", "TCP": format!("10.77.13.1:{GOSSIP_PORT}"), "Interval": "10s",
                         "Timeout": "2s", "DeregisterCriticalServiceAfter": "1m"}})
    );
    assert!(
        agent
            .lock()
            .expect("agent")
            .requests
            .iter()
            .any(|(m, p, _)| m == "GET" && p == "/v1/health/service/edge?passing=true"),
        "healthy instances are asked for with ?passing=true"
    );
    // A graceful stop deregisters.
    routers[1].sigterm();
    assert_eq!(routers[1].exit_code().await, Some(0));
    let deregistered = agent
        .lock()
        .expect("agent")
        .requests
        .iter()
        .any(|(m, p, _)| m == "PUT" && p == "/v1/agent/service/deregister/router-2");
    assert!(deregistered, "router-2 did not deregister");
}

/// A pod as the API server shows it.
fn pod(name: &str, ip: &str, version: u64, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "edge", "resourceVersion": version.to_string(), "labels": {"app": "bifrost-router"}},
           "status": {"phase": "Running", "podIP": ip,
                      "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_discovery_lists_then_watches_ready_pods_by_label() {
    use axum::extract::{Query, State};
    use axum::routing::get;
    let lan = Lan::new("k8s", "10.77.14", 3);
    // Pod 1 and 2 are listed; pod 3 arrives by the watch (added not ready,
    // then ready), so only a router that watches learns of it.
    type Seen = Arc<Mutex<Vec<BTreeMap<String, String>>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/v1/namespaces/edge/pods",
            get(|State(seen): State<Seen>, Query(q): Query<BTreeMap<String, String>>| async move {
                seen.lock().expect("seen").push(q.clone());
                if q.get("watch").map(String::as_str) == Some("true") {
                    let lines = [
                        json!({"type": "ADDED", "object": pod("router-3", "10.77.14.3", 11, false)}),
                        json!({"type": "MODIFIED", "object": pod("router-3", "10.77.14.3", 12, true)}),
                    ];
                    let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
                    // The watch stays open after its events, as a real one does.
                    use futures::StreamExt;
                    let stream = futures::stream::iter([Ok::<_, std::io::Error>(body)])
                        .chain(futures::stream::pending());
                    return axum::response::Response::new(axum::body::Body::from_stream(stream));
                }
                let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "10"},
                                  "items": [pod("router-1", "10.77.14.1", 5, true), pod("router-2", "10.77.14.2", 6, true)]});
                axum::response::Response::new(axum::body::Body::from(list.to_string()))
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("10.77.14.254:0").await.expect("bind the fake API");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{api}\"}}}}]\n\
             users: [{{name: router, user: {{token: fake-token}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: router, namespace: edge}}}}]\ncurrent-context: fake\n"
        ),
    )
    .expect("kubeconfig");
    let discovery = json!({"enabled": true, "type": "kubernetes", "k8s_namespace": "edge",
                           "k8s_label_selector": "app=bifrost-router", "dial_timeout": "2s"});
    let kc = kubeconfig.display().to_string();
    let env = [("KUBECONFIG", kc.as_str())];
    // Router 3 lists too (it sees 1 and 2); routers 1 and 2 can only learn
    // of 3 by the watch: its pod is not in the list they got.
    let routers: Vec<RouterProc> = (1..=3).map(|i| start_in(&lan, i, discovery.clone(), &env)).collect();
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;
    let requests = seen.lock().expect("seen").clone();
    let lists = requests.iter().filter(|q| !q.contains_key("watch")).count();
    let watches: Vec<_> = requests.iter().filter(|q| q.get("watch").map(String::as_str) == Some("true")).collect();
    assert!(lists >= 3, "every router lists first: {requests:#?}");
    assert!(
        requests.iter().all(|q| q.get("labelSelector").map(String::as_str) == Some("app=bifrost-router")),
        "{requests:#?}"
    );
    assert!(
        watches.iter().any(|q| q.get("resourceVersion").map(String::as_str) == Some("10")),
        "the watch resumes from the list's version: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_beacons_join_routers_on_a_lan_and_a_node_with_another_key_stays_out() {
    let lan = Lan::new("udp", "10.77.15", 4);
    let beacon_port = free_port().to_string();
    let discovery = json!({"enabled": true, "type": "udp", "service_name": "edge", "udp_broadcast_port": beacon_port.parse::<u16>().ok(),
                           "allowed_address_space": ["10.77.15.0/24"], "dial_timeout": "2s"});
    let routers: Vec<RouterProc> = (1..=3).map(|i| start_in(&lan, i, discovery.clone(), &[])).collect();
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;
    // A fourth router with another key: its beacons and gossip are dropped.
    let id = "router-4";
    let intruder = RouterProc::spawn(
        id,
        Some(&config(id, discovery.clone())),
        &["--listen", "10.77.15.4:8080", "--advertise", "10.77.15.4"],
        &[("BIFROST_GOSSIP_KEY", "another-key-of-at-least-16-bytes")],
        Some(&lan.ns(4)),
    );
    intruder.until("its own cluster of one", |s| s["members"] == 1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let s = routers[0].status().await;
        assert_eq!(state_of(&s, "router-4"), None, "a node with another key joined: {s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_announces_and_browses_routers_on_a_lan() {
    let lan = Lan::new("mdns", "10.77.16", 3);
    let discovery = json!({"enabled": true, "type": "mdns", "service_name": "edge", "dial_timeout": "2s"});
    let routers: Vec<RouterProc> = (1..=3).map(|i| start_in(&lan, i, discovery.clone(), &[])).collect();
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leaves_the_minority_not_healthy_and_heals_when_the_link_returns() {
    let lan = Lan::new("part", "10.77.17", 3);
    let peers: Vec<String> = (1..=3).map(|i| format!("10.77.17.{i}:{GOSSIP_PORT}")).collect();
    let start = |i: usize| {
        let id = format!("router-{i}");
        let config = json!({"cluster_config": {"enabled": true, "node_id": id, "peers": peers,
            "gossip": {"port": GOSSIP_PORT, "config": {"timeout_seconds": 2, "success_threshold": 3, "failure_threshold": 3}}}});
        RouterProc::spawn(
            &id,
            Some(&config.to_string()),
            &["--listen", &format!("10.77.17.{i}:8080"), "--advertise", &lan.ip(i)],
            &[("BIFROST_GOSSIP_KEY", KEY)],
            Some(&lan.ns(i)),
        )
    };
    let routers: Vec<RouterProc> = (1..=3).map(start).collect();
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;
    // Router 3's link goes down: it is alone (1 of 3, no majority); the
    // other two still make a majority. The test reads router 3 over the
    // same link, so it asks again once the link is back.
    lan.link(3, false);
    for r in &routers[..2] {
        let s = r.until("router-3 dead", |s| state_of(s, "router-3").as_deref() == Some("dead")).await;
        assert_eq!(s["cluster_health"], "HEALTHY", "{s:#}");
    }
    // Router 3's view, read from inside its namespace.
    let inside = |ns: String| async move {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-s", "http://10.77.17.3:8080/cluster/status"])
            .output()
            .await
            .expect("curl in the namespace");
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = inside(lan.ns(3)).await;
        if s["cluster_health"] == "NOT HEALTHY" {
            assert_eq!(s["healthy_members"], 1, "{s:#}");
            break;
        }
        assert!(Instant::now() < deadline, "router-3 never saw it lacks a majority: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lan.link(3, true);
    all_three_alive(&routers.iter().collect::<Vec<_>>()).await;
}
