//! consul: this node registers with the local agent as an instance of
//! `service_name` (ID = node id, at its gossip address) with a TCP check on
//! the gossip port — the node listens there on TCP too, for the check only
//! — and each round reads the instances whose checks pass. Deregistered on
//! leave; an instance that crashed is removed by the agent one minute after
//! its check turns critical.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

pub struct Consul {
    http: reqwest::Client,
    base: String,
    id: String,
    service: String,
    every: Duration,
    /// Answers the agent's TCP check.
    check: tokio::task::JoinHandle<()>,
}

impl Consul {
    pub async fn start(address: &str, me: &super::Me, dial_timeout: Duration) -> anyhow::Result<Consul> {
        let base = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
        let base = base.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder().connect_timeout(dial_timeout).timeout(dial_timeout).build()?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::new([0, 0, 0, 0].into(), me.gossip.port()))
            .await
            .map_err(|e| anyhow::anyhow!("listening on TCP {} for consul's check: {e}", me.gossip.port()))?;
        let check = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let registration = json!({
            "ID": me.node_id,
            "Name": me.service,
            "Address": me.gossip.ip().to_string(),
            "Port": me.gossip.port(),
            "Tags": ["bifrost-router"],
            "Check": {
                "Name": "gossip port",
                "TCP": me.gossip.to_string(),
                "Interval": "10s",
                "Timeout": "2s",
                "DeregisterCriticalServiceAfter": "1m",
            },
        });
        let url = format!("{base}/v1/agent/service/register");
        let r = http.put(&url).json(&registration).send().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        if !r.status().is_success() {
            let status = r.status();
            anyhow::bail!("{url}: {status} {}", r.text().await.unwrap_or_default().trim());
        }
        tracing::info!(service = %me.service, id = %me.node_id, "consul: registered");
        Ok(Consul { http, base, id: me.node_id.clone(), service: me.service.clone(), every: dial_timeout, check })
    }
}

#[async_trait::async_trait]
impl super::Finder for Consul {
    async fn find(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        let url = format!("{}/v1/health/service/{}?passing=true", self.base, self.service);
        let r = self.http.get(&url).send().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        if !r.status().is_success() {
            anyhow::bail!("{url}: {}", r.status());
        }
        let entries: Vec<Value> = r.json().await?;
        Ok(entries
            .iter()
            .filter_map(|e| {
                let s = &e["Service"];
                // An instance without an address of its own is at its node's.
                let host = s["Address"].as_str().filter(|a| !a.is_empty()).or(e["Node"]["Address"].as_str())?;
                let port = u16::try_from(s["Port"].as_u64()?).ok()?;
                Some(SocketAddr::new(host.parse().ok()?, port))
            })
            .collect())
    }

    fn every(&self) -> Duration {
        self.every
    }

    async fn leave(&mut self) {
        self.check.abort();
        let url = format!("{}/v1/agent/service/deregister/{}", self.base, self.id);
        match self.http.put(&url).send().await {
            Ok(r) if r.status().is_success() => tracing::info!(id = %self.id, "consul: deregistered"),
            Ok(r) => tracing::warn!(status = %r.status(), "consul: deregistering failed"),
            Err(e) => tracing::warn!(error = %e, "consul: deregistering failed"),
        }
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        self.check.abort();
    }
}
