//! Discovery: each method finds the other nodes' gossip addresses and
//! introduces them to chitchat, which does the rest (once two nodes have
//! gossiped, each learns every node the other knows). Addresses outside
//! `allowed_address_space` are ignored here and, should one gossip anyway,
//! dropped on arrival by the transport.
//!
//! Methods that register this node somewhere (consul, etcd, mdns, udp
//! beacons) do so when they start and undo it on [`Discovery::leave`].

mod consul;
mod dns;
mod etcd;
mod kubernetes;
mod mdns;
mod udp;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ClusterSettings, DiscoverySettings, Method};
use crate::membership::Node;

/// One discovery method.
#[async_trait::async_trait]
pub trait Finder: Send {
    /// The nodes' gossip addresses as this method knows them now (this
    /// node's own may be among them).
    async fn find(&mut self) -> anyhow::Result<Vec<SocketAddr>>;
    /// The pause between two rounds.
    fn every(&self) -> Duration;
    /// Undoes this node's registration (graceful stop).
    async fn leave(&mut self) {}
}

/// This host's first non-loopback IPv4 address (the address to advertise
/// when nothing names one and there is no peer to look toward).
pub fn host_address() -> Option<std::net::IpAddr> {
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| i.ip())
        .find(std::net::IpAddr::is_ipv4)
}

/// Who this node is, for the methods that register it.
#[derive(Clone, Debug)]
pub struct Me {
    pub node_id: String,
    /// Where the others reach this node's gossip.
    pub gossip: SocketAddr,
    /// The cluster's name (`service_name`, default `bifrost-router`).
    pub service: String,
    /// Authenticates udp beacons.
    pub key: Arc<Vec<u8>>,
}

/// Starts the configured method (registering this node where it does).
pub async fn finder(d: &DiscoverySettings, me: &Me) -> anyhow::Result<Box<dyn Finder>> {
    let timeout = d.dial_timeout.as_std();
    Ok(match &d.method {
        Method::Dns { names } => Box::new(dns::Dns::new(names.clone(), d.bind_port, timeout)?),
        Method::Etcd { endpoints } => Box::new(etcd::Etcd::start(endpoints.clone(), me, timeout).await?),
        Method::Consul { address } => Box::new(consul::Consul::start(address, me, timeout).await?),
        Method::Kubernetes { namespace, label_selector } => {
            Box::new(kubernetes::Kubernetes::start(namespace, label_selector, d.bind_port, timeout).await?)
        }
        Method::Udp { broadcast_port } => Box::new(udp::Beacons::start(*broadcast_port, me).await?),
        Method::Mdns { service_type } => Box::new(mdns::Mdns::start(service_type, me)?),
    })
}

/// Discovery running beside a node.
pub struct Discovery {
    finder: Arc<tokio::sync::Mutex<Box<dyn Finder>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Discovery {
    /// Starts `settings.discovery` for `node`; `None` when discovery is off.
    pub async fn start(settings: &ClusterSettings, node: Arc<Node>, me: Me) -> anyhow::Result<Option<Discovery>> {
        let Some(d) = &settings.discovery else { return Ok(None) };
        let finder = finder(d, &me)
            .await
            .map_err(|e| anyhow::anyhow!("discovery ({}) could not start: {e:#}", d.method.name()))?;
        tracing::info!(method = d.method.name(), "cluster: discovery started");
        let finder = Arc::new(tokio::sync::Mutex::new(finder));
        let task = tokio::spawn(rounds(finder.clone(), node, settings.clone(), me.gossip, d.dial_timeout.as_std()));
        Ok(Some(Discovery { finder, task }))
    }

    /// Stops looking and deregisters this node.
    pub async fn leave(&self) {
        self.task.abort();
        self.finder.lock().await.leave().await;
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Round after round: find, filter, introduce; say when the set changes.
async fn rounds(
    finder: Arc<tokio::sync::Mutex<Box<dyn Finder>>>,
    node: Arc<Node>,
    settings: ClusterSettings,
    me: SocketAddr,
    limit: Duration,
) {
    let mut known: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut refused: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut last_error = String::new();
    loop {
        let mut f = finder.lock().await;
        let every = f.every();
        let found = tokio::time::timeout(limit, f.find()).await;
        drop(f);
        match found {
            Ok(Ok(addrs)) => {
                last_error.clear();
                let mut now = BTreeSet::new();
                for a in addrs.into_iter().filter(|a| *a != me) {
                    if settings.allows(a.ip()) {
                        now.insert(a);
                    } else if refused.insert(a) {
                        tracing::warn!(node = %a, "discovered node at {a} is not in allowed address space; ignored");
                    }
                }
                // Introduced every round: a first datagram can be lost, and
                // a node that restarted needs to hear from us again.
                for a in &now {
                    node.introduce(*a);
                }
                if now != known {
                    tracing::info!(nodes = now.len(), "discovered {} nodes", now.len());
                    known = now;
                }
            }
            Ok(Err(e)) => {
                let e = format!("{e:#}");
                if e != last_error {
                    tracing::warn!(error = %e, "discovery round failed; retrying");
                    last_error = e;
                }
            }
            Err(_) => {
                let e = format!("a discovery round took longer than dial_timeout ({limit:?})");
                if e != last_error {
                    tracing::warn!("{e}; retrying");
                    last_error = e;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
