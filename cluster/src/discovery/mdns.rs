//! mdns: this node is announced as an instance of `mdns_service`
//! (`_bifrost._tcp` by default, in `.local.`) named by its node id, at its
//! gossip address and port, with the cluster's name in its TXT record; the
//! service is browsed and every instance of the same cluster offered.
//! Addresses the seed says to drop are dropped: 127.x (each host's own),
//! and IPv4 addresses ending in .0 or .255 (network and broadcast).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

pub struct Mdns {
    daemon: ServiceDaemon,
    fullname: String,
    found: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
    browse: tokio::task::JoinHandle<()>,
}

/// An address a discovered instance may be reached at.
pub fn usable(ip: Ipv4Addr) -> bool {
    let last = ip.octets()[3];
    !ip.is_loopback() && !ip.is_unspecified() && last != 0 && last != 255
}

impl Mdns {
    pub fn start(service_type: &str, me: &super::Me) -> anyhow::Result<Mdns> {
        let ty = format!("{}.local.", service_type.trim_end_matches('.').trim_end_matches(".local"));
        let daemon = ServiceDaemon::new().map_err(|e| anyhow::anyhow!("mdns: {e}"))?;
        let host = format!("{}.local.", me.node_id);
        let props = [("cluster", me.service.as_str()), ("node_id", me.node_id.as_str())];
        let info = ServiceInfo::new(&ty, &me.node_id, &host, me.gossip.ip(), me.gossip.port(), &props[..])
            .map_err(|e| anyhow::anyhow!("mdns: announcing {ty}: {e}"))?;
        let fullname = info.get_fullname().to_string();
        daemon.register(info).map_err(|e| anyhow::anyhow!("mdns: announcing {ty}: {e}"))?;
        let events = daemon.browse(&ty).map_err(|e| anyhow::anyhow!("mdns: browsing {ty}: {e}"))?;
        let found: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>> = Arc::default();
        let (f, cluster, mine) = (found.clone(), me.service.clone(), fullname.clone());
        let browse = tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                match event {
                    ServiceEvent::ServiceResolved(s) => {
                        let same_cluster = s.get_property_val_str("cluster") == Some(cluster.as_str());
                        if !same_cluster || s.get_fullname() == mine {
                            continue;
                        }
                        let addrs: Vec<SocketAddr> = s
                            .get_addresses_v4()
                            .into_iter()
                            .filter(|ip| usable(*ip))
                            .map(|ip| SocketAddr::new(IpAddr::V4(ip), s.get_port()))
                            .collect();
                        if let Ok(mut m) = f.lock() {
                            m.insert(s.get_fullname().to_string(), addrs);
                        }
                    }
                    ServiceEvent::ServiceRemoved(_, name) => {
                        if let Ok(mut m) = f.lock() {
                            m.remove(&name);
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Mdns { daemon, fullname, found, browse })
    }
}

#[async_trait::async_trait]
impl super::Finder for Mdns {
    async fn find(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        let m = self.found.lock().map_err(|_| anyhow::anyhow!("mdns: state poisoned"))?;
        Ok(m.values().flatten().copied().collect())
    }

    fn every(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn leave(&mut self) {
        self.browse.abort();
        // Says goodbye (TTL 0) so the others drop this node now.
        let _ = self.daemon.unregister(&self.fullname);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.daemon.shutdown();
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.browse.abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_network_and_broadcast_addresses_are_not_offered() {
        use super::usable;
        assert!(usable("10.1.2.3".parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)));
        for bad in ["127.0.0.1", "127.3.4.5", "10.1.2.0", "10.1.2.255", "0.0.0.0"] {
            assert!(!usable(bad.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST)), "{bad}");
        }
    }
}
