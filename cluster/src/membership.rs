//! A node's membership: chitchat (Scuttlebutt gossip, phi-accrual failure
//! detection) over the authenticated transport, and the states users read
//! in `/cluster/status` — **alive, suspect, dead, left** — which chitchat
//! does not have (it knows live and dead): they are kept here from what
//! gossip shows.
//!
//! The seeds' words hold literally, measured on each node's heartbeat
//! (which moves every time it gossips): a *check* is
//! `timeout_seconds / failure_threshold`; a node silent for one check is
//! **suspect**, silent for `failure_threshold` checks (`timeout_seconds`) is
//! **dead**; a node coming back (or joining) is **alive** after
//! `success_threshold` heartbeats in a row. Nodes gossip four times per
//! check (between every 50 ms and 1 s). chitchat's own phi-accrual
//! detector is set looser (twice the timeout) so that it only decides whom
//! to keep gossiping with and when a dead node is forgotten. A node whose generation (its
//! start time) is newer replaces the older one of the same id: a restart is
//! not a duplicate (chitchat#94). Dead nodes are forgotten after
//! `max(60 s, 6 × timeout_seconds)`. A node that stops gracefully says so
//! first (`leaving`): it is **left**, and no longer counts as a member.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use serde::Serialize;

use crate::config::{ClusterSettings, GossipSettings};
use crate::transport::{AuthUdp, GossipCounters};

/// The gossip key a node publishes when it stops gracefully.
const LEAVING: &str = "leaving";

/// How the seeds' gossip settings drive membership.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub gossip_interval: Duration,
    /// Silence after which a node is suspect (one check).
    pub suspect_after: Duration,
    /// Silence after which a node is dead (`timeout_seconds`).
    pub dead_after: Duration,
    /// chitchat's phi threshold: twice the timeout, in gossip intervals.
    pub phi_threshold: f64,
    /// How long a dead node is remembered.
    pub dead_grace: Duration,
    pub success_threshold: u32,
}

impl Timing {
    pub fn of(g: &GossipSettings) -> Timing {
        let timeout = g.timeout.as_std().as_secs_f64().max(0.1);
        let check = timeout / f64::from(g.failure_threshold.max(1));
        // At most 100 ms: rate-limit counts ride on gossip and must reach
        // the other nodes within a fraction of a second.
        let interval = (check / 4.0).clamp(0.05, 0.1);
        Timing {
            gossip_interval: Duration::from_secs_f64(interval),
            suspect_after: Duration::from_secs_f64(check),
            dead_after: Duration::from_secs_f64(timeout),
            phi_threshold: 2.0 * timeout / interval,
            dead_grace: Duration::from_secs_f64((timeout * 6.0).max(60.0)),
            success_threshold: g.success_threshold.max(1),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// One node as `/cluster/status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeStatus {
    pub id: String,
    pub address: String,
    pub generation: u64,
    pub state: State,
    /// The routing table version the node serves (it publishes it).
    pub routes_version: Option<String>,
    /// What the node says of its load (`cpu`, `in_flight`).
    pub load: Option<serde_json::Value>,
    /// Since its heartbeat last moved (0 for this node).
    pub last_seen_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dropped {
    pub unauthenticated: u64,
    pub outside_address_space: u64,
    pub malformed: u64,
}

/// `GET /cluster/status`: seed 001's answer plus every node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterStatus {
    pub local_node: String,
    /// Known nodes that have not left (this one included).
    pub members: usize,
    pub healthy_members: usize,
    /// `HEALTHY` when a majority of the members are alive.
    pub cluster_health: String,
    pub nodes: Vec<NodeStatus>,
    /// Gossip datagrams dropped on arrival.
    pub dropped: Dropped,
}

/// What is tracked of one generation of a node.
struct Seen {
    heartbeat: u64,
    /// When its heartbeat last moved.
    changed: Instant,
    state: State,
    /// Heartbeat moves in a row since it was last not alive.
    streak: u32,
    address: SocketAddr,
    routes_version: Option<String>,
    load: Option<String>,
    /// Its rate-limit counts: app → (window start ms, admitted).
    limits: HashMap<String, (u64, u64)>,
}

#[derive(Default)]
struct View {
    nodes: HashMap<ChitchatId, Seen>,
    health: Option<bool>,
    known: usize,
    joined_said: bool,
    /// This node's counts not yet in its gossiped state.
    pending: HashMap<String, (u64, u64)>,
}

/// The gossip key of an app's rate-limit count.
const LIMIT_PREFIX: &str = "rl:";

fn parse_count(v: &str) -> Option<(u64, u64)> {
    let (w, n) = v.split_once(':')?;
    Some((w.parse().ok()?, n.parse().ok()?))
}

/// A running cluster node.
pub struct Node {
    handle: Option<ChitchatHandle>,
    id: ChitchatId,
    view: Arc<Mutex<View>>,
    counters: Arc<GossipCounters>,
    tracker: tokio::task::JoinHandle<()>,
    timing: Timing,
}

impl Node {
    /// Starts gossiping on `listen` (advertised to others as `advertise`),
    /// joining the settings' static `peers`.
    pub async fn start(settings: &ClusterSettings, listen: SocketAddr, advertise: SocketAddr) -> anyhow::Result<Node> {
        let timing = Timing::of(&settings.gossip);
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default();
        let id = ChitchatId::new(settings.node_id.clone(), generation, advertise);
        let key = settings
            .gossip
            .key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("gossip needs the cluster key (gossip.key or BIFROST_GOSSIP_KEY)"))?;
        let counters = Arc::new(GossipCounters::default());
        let transport = AuthUdp {
            key: Arc::new(key),
            allowed: Arc::new(settings.allowed_address_space.clone()),
            counters: counters.clone(),
        };
        let config = ChitchatConfig {
            chitchat_id: id.clone(),
            cluster_id: settings
                .discovery
                .as_ref()
                .and_then(|d| d.service_name.clone())
                .unwrap_or_else(|| "bifrost-router".into()),
            gossip_interval: timing.gossip_interval,
            listen_addr: listen,
            seed_nodes: settings.peers.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: timing.phi_threshold,
                sampling_window_size: 100,
                max_interval: settings.gossip.timeout.as_std().max(Duration::from_secs(1)),
                initial_interval: timing.gossip_interval,
                dead_node_grace_period: timing.dead_grace,
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let handle = spawn_chitchat(config, vec![], &transport).await?;
        let view = Arc::new(Mutex::new(View::default()));
        let tracker = tokio::spawn(track(handle.chitchat(), id.clone(), view.clone(), timing));
        tracing::info!(node = %id.node_id, gossip = %listen, peers = settings.peers.len(), "cluster: gossiping");
        Ok(Node { handle: Some(handle), id, view, counters, tracker, timing })
    }

    pub fn node_id(&self) -> &str {
        &self.id.node_id
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Gossip bytes (sent, received) since the node started.
    pub fn gossip_bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.counters.bytes_sent.load(Relaxed), self.counters.bytes_received.load(Relaxed))
    }

    /// Publishes a value of this node (`routes_version`, `load`, …).
    pub async fn publish(&self, key: &str, value: &str) {
        if let Some(h) = &self.handle {
            let (k, v) = (key.to_string(), value.to_string());
            h.with_chitchat(move |c| c.self_node_state().set(k.clone(), v.clone())).await;
        }
    }

    /// This node's admitted count of `app` in the window starting at
    /// `window_ms`; gossiped at the tracker's next tick.
    pub fn count(&self, app: &str, window_ms: u64, count: u64) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.pending.insert(app.to_string(), (window_ms, count));
    }

    /// The other live nodes' counts of `app` in that window.
    pub fn others(&self, app: &str, window_ms: u64) -> u64 {
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.nodes
            .iter()
            .filter(|(id, seen)| **id != self.id && matches!(seen.state, State::Alive | State::Suspect))
            .filter_map(|(_, seen)| seen.limits.get(app).filter(|(w, _)| *w == window_ms).map(|(_, n)| n))
            .sum()
    }

    /// Tells a discovered node's gossip address to chitchat.
    pub fn introduce(&self, addr: SocketAddr) {
        if let Some(h) = &self.handle {
            let _ = h.gossip(addr);
        }
    }

    pub fn status(&self) -> ClusterStatus {
        let (unauthenticated, outside_address_space, malformed) = self.counters.drops();
        let dropped = Dropped { unauthenticated, outside_address_space, malformed };
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = newest_generations(&view.nodes, &self.id);
        let (members, healthy) = counts(&nodes);
        ClusterStatus {
            local_node: self.id.node_id.clone(),
            members,
            healthy_members: healthy,
            cluster_health: health_word(members, healthy).into(),
            nodes,
            dropped,
        }
    }

    /// Says it is leaving and lets a few gossip rounds carry that; the
    /// node is then shown "left" by its peers, and stops when dropped.
    pub async fn leave(&self) {
        self.publish(LEAVING, "true").await;
        tokio::time::sleep(self.timing.gossip_interval * 4).await;
    }

    /// Stops at once, as a crash would (tests; a killed process).
    pub fn abort(mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        self.tracker.abort();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        self.tracker.abort();
    }
}

fn health_word(members: usize, healthy: usize) -> &'static str {
    if healthy * 2 > members { "HEALTHY" } else { "NOT HEALTHY" }
}

fn counts(nodes: &[NodeStatus]) -> (usize, usize) {
    let members = nodes.iter().filter(|n| n.state != State::Left).count();
    let healthy = nodes.iter().filter(|n| n.state == State::Alive).count();
    (members, healthy)
}

/// One row per node id: its newest generation (an older one is a restart's
/// past, not another member).
fn newest_generations(nodes: &HashMap<ChitchatId, Seen>, me: &ChitchatId) -> Vec<NodeStatus> {
    let mut newest: BTreeMap<&str, (&ChitchatId, &Seen)> = BTreeMap::new();
    for (id, seen) in nodes {
        let slot = newest.entry(id.node_id.as_str()).or_insert((id, seen));
        if id.generation_id > slot.0.generation_id {
            *slot = (id, seen);
        }
    }
    newest
        .into_values()
        .map(|(id, s)| NodeStatus {
            id: id.node_id.clone(),
            address: s.address.to_string(),
            generation: id.generation_id,
            state: s.state,
            routes_version: s.routes_version.clone(),
            load: s.load.as_deref().and_then(|l| serde_json::from_str(l).ok()),
            last_seen_ms: if id == me { 0 } else { s.changed.elapsed().as_millis() as u64 },
        })
        .collect()
}

/// Reads chitchat's view every half gossip interval and keeps the states.
async fn track(
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    me: ChitchatId,
    view: Arc<Mutex<View>>,
    timing: Timing,
) {
    let mut tick = tokio::time::interval(timing.gossip_interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    loop {
        tick.tick().await;
        struct Row {
            id: ChitchatId,
            heartbeat: u64,
            leaving: bool,
            routes_version: Option<String>,
            load: Option<String>,
            limits: HashMap<String, (u64, u64)>,
        }
        let pending = std::mem::take(&mut view.lock().unwrap_or_else(|p| p.into_inner()).pending);
        let rows = {
            let mut c = chitchat.lock().await;
            for (app, (w, n)) in pending {
                c.self_node_state().set(format!("{LIMIT_PREFIX}{app}"), format!("{w}:{n}"));
            }
            let rows: Vec<Row> = c
                .node_states()
                .iter()
                .map(|(id, ns)| Row {
                    id: id.clone(),
                    heartbeat: u64::from(ns.heartbeat()),
                    leaving: ns.get(LEAVING).is_some(),
                    routes_version: ns.get("routes_version").map(str::to_string),
                    load: ns.get("load").map(str::to_string),
                    limits: ns
                        .iter_prefix(LIMIT_PREFIX)
                        .filter_map(|(k, v)| Some((k.strip_prefix(LIMIT_PREFIX)?.to_string(), parse_count(&v.value)?)))
                        .collect(),
                })
                .collect();
            rows
        };
        let now = Instant::now();
        let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
        v.nodes.retain(|id, _| rows.iter().any(|r| &r.id == id));
        for r in rows {
            let seen = v.nodes.entry(r.id.clone()).or_insert_with(|| Seen {
                heartbeat: r.heartbeat,
                changed: now,
                state: State::Suspect,
                streak: 0,
                address: r.id.gossip_advertise_addr,
                routes_version: None,
                load: None,
                limits: HashMap::new(),
            });
            (seen.routes_version, seen.load, seen.limits) = (r.routes_version, r.load, r.limits);
            if r.heartbeat > seen.heartbeat {
                seen.heartbeat = r.heartbeat;
                seen.changed = now;
                seen.streak = seen.streak.saturating_add(1);
            }
            let silent = now.duration_since(seen.changed);
            let next = if r.leaving {
                State::Left
            } else if r.id == me {
                State::Alive
            // Only silence decides: chitchat's own detector, fed heartbeats
            // relayed by every peer, can call a node dead well before
            // timeout_seconds (measured: 8 s of 10 at 100 ms gossip).
            } else if silent >= timing.dead_after {
                State::Dead
            } else if silent >= timing.suspect_after
                // Back (or new): alive after success_threshold heartbeats.
                || (seen.state != State::Alive && seen.streak < timing.success_threshold)
            {
                State::Suspect
            } else {
                State::Alive
            };
            if next != State::Alive {
                // Counted again from its next heartbeat.
                if matches!(next, State::Dead) || (next == State::Suspect && seen.state == State::Alive) {
                    seen.streak = 0;
                }
            }
            if next != seen.state {
                match next {
                    State::Suspect if seen.state == State::Alive => {
                        tracing::warn!(node = %r.id.node_id, address = %seen.address, "node marked as suspect")
                    }
                    State::Dead => tracing::warn!(node = %r.id.node_id, address = %seen.address, "node marked as dead"),
                    State::Left => tracing::info!(node = %r.id.node_id, "node left the cluster"),
                    State::Alive => tracing::info!(node = %r.id.node_id, address = %seen.address, "node alive"),
                    State::Suspect => {}
                }
                seen.state = next;
            }
        }
        // The seed's log lines: what was found, and the health as it changes.
        let nodes = newest_generations(&v.nodes, &me);
        let known = nodes.len().saturating_sub(1);
        if known > v.known {
            tracing::info!("discovered {known} nodes");
        }
        v.known = known;
        let alive_peers = nodes.iter().filter(|n| n.id != me.node_id && n.state == State::Alive).count();
        if !v.joined_said && alive_peers > 0 {
            tracing::info!(
                after_ms = started.elapsed().as_millis() as u64,
                "successfully joined {alive_peers} peers on startup"
            );
            v.joined_said = true;
        }
        let (members, healthy) = counts(&nodes);
        let healthy_now = health_word(members, healthy) == "HEALTHY";
        if v.health != Some(healthy_now) {
            tracing::info!(members, healthy, "cluster health: {}", health_word(members, healthy));
            v.health = Some(healthy_now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost_core::config::values::Duration as Cfg;

    fn gossip(timeout_s: u64, failure: u32) -> GossipSettings {
        GossipSettings {
            port: 0,
            timeout: Cfg::from_secs(timeout_s),
            success_threshold: 3,
            failure_threshold: failure,
            key: None,
        }
    }

    #[test]
    fn the_seeds_defaults_make_a_node_suspect_after_one_check_and_dead_after_ten_silent_seconds() {
        let t = Timing::of(&gossip(10, 3));
        // A check is 10 s / 3; gossip every 100 ms (rate-limit counts ride
        // on it), at least four rounds per check.
        assert_eq!((t.suspect_after, t.dead_after), (Duration::from_secs_f64(10.0 / 3.0), Duration::from_secs(10)));
        assert_eq!(t.gossip_interval, Duration::from_millis(100));
        // chitchat's own detector decides later than ours: twice the timeout.
        assert!((t.phi_threshold * t.gossip_interval.as_secs_f64() - 20.0).abs() < 1e-6);
        assert_eq!(t.dead_grace, Duration::from_secs(60));
        // A very short check gossips faster still, down to 50 ms.
        let fast = Timing::of(&gossip(1, 3));
        assert_eq!(fast.gossip_interval, Duration::from_secs_f64(1.0 / 12.0));
        assert_eq!(Timing::of(&gossip(1, 10)).gossip_interval, Duration::from_millis(50));
        assert_eq!(Timing::of(&gossip(600, 1)).gossip_interval, Duration::from_millis(100));
    }

    #[test]
    fn a_majority_of_members_must_be_alive_and_left_nodes_do_not_count() {
        let n = |state| NodeStatus {
            id: String::new(),
            address: String::new(),
            generation: 0,
            state,
            routes_version: None,
            load: None,
            last_seen_ms: 0,
        };
        let three = [n(State::Alive), n(State::Alive), n(State::Dead)];
        assert_eq!(counts(&three), (3, 2));
        assert_eq!(health_word(3, 2), "HEALTHY");
        assert_eq!(health_word(3, 1), "NOT HEALTHY");
        assert_eq!(health_word(2, 1), "NOT HEALTHY");
        let with_left = [n(State::Alive), n(State::Left), n(State::Suspect)];
        assert_eq!(counts(&with_left), (2, 1));
    }
}
