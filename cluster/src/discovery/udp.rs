//! udp: every second each node broadcasts a beacon — its node id and gossip
//! address, sealed with the cluster key like gossip — to the broadcast
//! address of each of its IPv4 interfaces at `udp_broadcast_port`, and
//! listens there for the others'. A beacon that is not sealed with the key,
//! names another cluster, or comes from outside `allowed_address_space` is
//! dropped (the config requires `allowed_address_space` for udp). A node
//! unheard for 10 s is no longer offered.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const EVERY: Duration = Duration::from_secs(1);
const FORGET: Duration = Duration::from_secs(10);
const MAGIC: &[u8] = b"bifrost-beacon/1";

#[derive(Serialize, Deserialize)]
struct Beacon {
    service: String,
    node_id: String,
    gossip: SocketAddr,
}

type Heard = Arc<Mutex<HashMap<String, (SocketAddr, Instant)>>>;

pub struct Beacons {
    heard: Heard,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn socket(port: u16) -> anyhow::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Every node on a host shares the beacon port.
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(|e| anyhow::anyhow!("udp discovery: cannot bind 0.0.0.0:{port}: {e}"))?;
    Ok(tokio::net::UdpSocket::from_std(s.into())?)
}

/// Where beacons go: each up, non-loopback IPv4 interface's broadcast address.
fn broadcast_addresses(port: u16) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => v4.broadcast.map(|b| SocketAddr::new(IpAddr::V4(b), port)),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Beacons {
    pub async fn start(port: u16, me: &super::Me) -> anyhow::Result<Beacons> {
        let socket = Arc::new(socket(port)?);
        let heard: Heard = Arc::default();
        let beacon = serde_json::to_vec(&Beacon {
            service: me.service.clone(),
            node_id: me.node_id.clone(),
            gossip: me.gossip,
        })?;
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&beacon);
        let sealed = crate::transport::seal(&me.key, &body);
        let (tx, key, service, my_id) = (socket.clone(), me.key.clone(), me.service.clone(), me.node_id.clone());
        let send = tokio::spawn(async move {
            loop {
                for to in broadcast_addresses(port) {
                    if let Err(e) = tx.send_to(&sealed, to).await {
                        tracing::debug!(%to, error = %e, "udp discovery: a beacon was not sent");
                    }
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        let h = heard.clone();
        let receive = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut unauthenticated = 0u64;
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
                let Some(body) = crate::transport::open(&key, &buf[..len]) else {
                    unauthenticated += 1;
                    if unauthenticated.is_power_of_two() {
                        tracing::warn!(%from, dropped = unauthenticated, "udp beacon from {from} dropped: not authenticated with the cluster key");
                    }
                    continue;
                };
                let Some(b) = body.strip_prefix(MAGIC).and_then(|b| serde_json::from_slice::<Beacon>(b).ok()) else {
                    continue;
                };
                if b.service != service || b.node_id == my_id {
                    continue;
                }
                if let Ok(mut m) = h.lock() {
                    m.insert(b.node_id, (b.gossip, Instant::now()));
                }
            }
        });
        Ok(Beacons { heard, tasks: vec![send, receive] })
    }
}

#[async_trait::async_trait]
impl super::Finder for Beacons {
    async fn find(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        let mut m = self.heard.lock().map_err(|_| anyhow::anyhow!("udp discovery: state poisoned"))?;
        m.retain(|_, (_, at)| at.elapsed() < FORGET);
        Ok(m.values().map(|(a, _)| *a).collect())
    }

    fn every(&self) -> Duration {
        EVERY
    }

    async fn leave(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Beacons {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
