//! dns: the A/AAAA records of each of `dns_names` (at `bind_port`), or,
//! for a name starting with `_` (`_gossip._udp.routers.example.com`), its
//! SRV records (each target at its port), resolved again every
//! `dial_timeout`. The resolver is the system's (`/etc/resolv.conf`), or
//! `BIFROST_DNS_SERVER=ip[:port]` when set.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

pub struct Dns {
    resolver: TokioResolver,
    names: Vec<String>,
    port: u16,
    every: Duration,
}

/// `ip[:port]` (port 53 when absent).
fn server(text: &str) -> anyhow::Result<SocketAddr> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| anyhow::anyhow!("BIFROST_DNS_SERVER {text:?} is not ip[:port]"))
}

impl Dns {
    pub fn new(names: Vec<String>, port: u16, every: Duration) -> anyhow::Result<Dns> {
        let mut builder = match std::env::var("BIFROST_DNS_SERVER").ok().filter(|s| !s.is_empty()) {
            Some(s) => {
                let at = server(&s)?;
                let conn = |mut c: ConnectionConfig| {
                    c.port = at.port();
                    c
                };
                let ns = NameServerConfig::new(
                    at.ip(),
                    true,
                    vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                );
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| anyhow::anyhow!("reading the system's DNS configuration: {e}"))?,
        };
        // Every round asks afresh: nodes come and go faster than TTLs say.
        builder.options_mut().cache_size = 0;
        let resolver = builder.build().map_err(|e| anyhow::anyhow!("starting the DNS resolver: {e}"))?;
        Ok(Dns { resolver, names, port, every })
    }

    async fn addresses(&self, name: &str, port: u16, out: &mut Vec<SocketAddr>) -> anyhow::Result<()> {
        let found = self.resolver.lookup_ip(name).await.map_err(|e| anyhow::anyhow!("resolving {name}: {e}"))?;
        out.extend(found.iter().map(|ip| SocketAddr::new(ip, port)));
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::Finder for Dns {
    async fn find(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        let mut out = vec![];
        let mut errors = vec![];
        for name in &self.names {
            let result = if name.starts_with('_') {
                match self.resolver.srv_lookup(name.as_str()).await {
                    Ok(srv) => {
                        let mut r = Ok(());
                        for record in srv.answers() {
                            if let RData::SRV(s) = &record.data {
                                let target = s.target.to_string();
                                if let Err(e) = self.addresses(&target, s.port, &mut out).await {
                                    r = Err(e);
                                }
                            }
                        }
                        r
                    }
                    Err(e) => Err(anyhow::anyhow!("resolving SRV {name}: {e}")),
                }
            } else {
                self.addresses(name, self.port, &mut out).await
            };
            if let Err(e) = result {
                errors.push(e.to_string());
            }
        }
        // Some names answering is a round; none is a failure to say.
        if out.is_empty() && !errors.is_empty() {
            anyhow::bail!(errors.join("; "));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn every(&self) -> Duration {
        self.every
    }
}
