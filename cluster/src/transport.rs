//! Authenticated gossip: chitchat's messages over UDP, each datagram
//! carrying an HMAC-SHA256 tag under the cluster key (chitchat itself, like
//! the seeds' clusters, has none). On the receive path — not only in
//! discovery — a datagram from outside `allowed_address_space` or without
//! a valid tag is dropped and counted before it is parsed.
//!
//! Datagram: `tag (32 bytes) ‖ chitchat message`. A replayed datagram is
//! accepted (gossip is versioned state, so applying it again changes
//! nothing newer); a forged or altered one is not.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chitchat::ChitchatMessage;
use chitchat::transport::{Socket, Transport};
use chitchat::{Deserializable, Serializable};
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

const TAG: usize = 32;
/// chitchat's own bound on a datagram (60 KB), plus the tag.
const MAX_DATAGRAM: usize = 65_507;

type Tag = Hmac<Sha256>;

/// What a node's gossip socket counts: datagrams dropped on arrival, by
/// why, and bytes each way (the gossip's cost).
#[derive(Debug, Default)]
pub struct GossipCounters {
    pub unauthenticated: AtomicU64,
    pub outside_address_space: AtomicU64,
    pub malformed: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl GossipCounters {
    /// (unauthenticated, outside_address_space, malformed) drops.
    pub fn drops(&self) -> (u64, u64, u64) {
        (
            self.unauthenticated.load(Ordering::Relaxed),
            self.outside_address_space.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
        )
    }
}

/// What a node's gossip socket is opened with.
#[derive(Clone)]
pub struct AuthUdp {
    pub key: Arc<Vec<u8>>,
    /// Empty: any address.
    pub allowed: Arc<Vec<IpNet>>,
    pub counters: Arc<GossipCounters>,
}

impl AuthUdp {
    fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allowed.is_empty() || self.allowed.iter().any(|n| n.contains(&ip))
    }
}

/// The tag of `body` under `key`.
fn tag(key: &[u8], body: &[u8]) -> [u8; TAG] {
    // HMAC takes a key of any length.
    let mut mac = <Tag as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_key());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// `tag ‖ body`: a datagram only holders of `key` can make (udp beacons).
pub fn seal(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = tag(key, body).to_vec();
    out.extend_from_slice(body);
    out
}

/// The body of a datagram made by [`seal`] under `key`; `None` if it was
/// not (checked in constant time).
pub fn open<'a>(key: &[u8], datagram: &'a [u8]) -> Option<&'a [u8]> {
    if datagram.len() <= TAG {
        return None;
    }
    let mut mac = <Tag as Mac>::new_from_slice(key).ok()?;
    mac.update(&datagram[TAG..]);
    mac.verify_slice(&datagram[..TAG]).ok().map(|()| &datagram[TAG..])
}

#[allow(clippy::panic)]
fn unreachable_key() -> Tag {
    panic!("HMAC-SHA256 accepts keys of every length")
}

#[async_trait]
impl Transport for AuthUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("gossip: cannot bind {listen_addr}/udp: {e}"))?;
        Ok(Box::new(AuthSocket { auth: self.clone(), socket, buf: vec![0; MAX_DATAGRAM], out: Vec::new() }))
    }
}

struct AuthSocket {
    auth: AuthUdp,
    socket: tokio::net::UdpSocket,
    buf: Vec<u8>,
    out: Vec<u8>,
}

#[async_trait]
impl Socket for AuthSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(&[0; TAG]);
        msg.serialize(&mut self.out);
        let t = tag(&self.auth.key, &self.out[TAG..]);
        self.out[..TAG].copy_from_slice(&t);
        // A peer that is down is not this socket's failure.
        match self.socket.send_to(&self.out, to).await {
            Ok(n) => {
                self.auth.counters.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(%to, error = %e, "gossip: send failed"),
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                // ICMP refusals of earlier sends surface here on Linux.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused) => continue,
                Err(e) => return Err(anyhow::anyhow!("gossip: receive failed: {e}")),
            };
            self.auth.counters.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
            if !self.auth.allows(from.ip()) {
                let n = self.auth.counters.outside_address_space.fetch_add(1, Ordering::Relaxed) + 1;
                // Said at 1, 2, 4, 8, … drops: a flood does not flood the log.
                if n.is_power_of_two() {
                    tracing::warn!(%from, dropped = n, "gossip from {from} dropped: not in allowed address space");
                }
                continue;
            }
            let Some(mut body) = open(&self.auth.key, &self.buf[..len]) else {
                let n = self.auth.counters.unauthenticated.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(%from, dropped = n, "gossip from {from} dropped: not authenticated with the cluster key");
                }
                continue;
            };
            match ChitchatMessage::deserialize(&mut body) {
                Ok(msg) => return Ok((from, msg)),
                Err(e) => {
                    self.auth.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, error = %e, "gossip: an authenticated but malformed message dropped");
                }
            }
        }
    }
}
