//! The router cluster (issue "Router cluster"): `bifrost-router` nodes that
//! find each other, gossip their state and agree on who is alive.
//!
//! - `config`: `cluster_config` in the seeds' shape, checked with every
//!   rule at start-up;
//! - `transport`: chitchat's gossip over UDP with every datagram
//!   authenticated by the cluster key and filtered by address space;
//! - `membership`: a node — alive / suspect / dead / left, the seeds' log
//!   lines, and `/cluster/status`.

pub mod config;
pub mod discovery;
pub mod membership;
pub mod transport;

pub use config::{ClusterSettings, DiscoverySettings, GossipSettings, Method, RawCluster};
pub use membership::{ClusterStatus, Node, NodeStatus, State, Timing};
