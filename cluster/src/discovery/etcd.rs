//! etcd: this node is registered at `/services/{service_name}/{node_id}`
//! (its gossip address) under a 30 s lease kept alive every 10 s, and the
//! prefix is watched; every change (a node joining, leaving, or its lease
//! expiring after a crash) is read at once.
//!
//! Spoken over etcd's own JSON gateway (`/v3/...`, etcd ≥ 3.4), not gRPC:
//! the `etcd-client` crate generates its gRPC code with `protoc` at build
//! time, which every machine building Bifrost would then need; these six
//! calls are all discovery uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

const LEASE_TTL_S: i64 = 30;
const KEEPALIVE: Duration = Duration::from_secs(10);

pub struct Etcd {
    client: Client,
    prefix: String,
    key: String,
    lease: Arc<tokio::sync::Mutex<String>>,
    changed: Arc<Notify>,
    wait: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
}

impl Client {
    /// One call, to the first endpoint that answers.
    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let mut last = String::new();
        for e in self.endpoints.iter() {
            let url = format!("{}/v3/{path}", e.trim_end_matches('/'));
            match self.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) => {
                    let status = r.status();
                    last = format!("{url}: {status} {}", r.text().await.unwrap_or_default().trim());
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        anyhow::bail!("no etcd endpoint answered ({last})")
    }

    async fn grant(&self) -> anyhow::Result<String> {
        let r = self.call("lease/grant", json!({"TTL": LEASE_TTL_S})).await?;
        r["ID"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("etcd granted no lease: {r}"))
    }

    async fn put(&self, key: &str, value: &str, lease: &str) -> anyhow::Result<()> {
        self.call("kv/put", json!({"key": B64.encode(key), "value": B64.encode(value), "lease": lease})).await?;
        Ok(())
    }
}

/// The key just after every key that starts with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl Etcd {
    pub async fn start(endpoints: Vec<String>, me: &super::Me, dial_timeout: Duration) -> anyhow::Result<Etcd> {
        let http = reqwest::Client::builder().connect_timeout(dial_timeout).build()?;
        let client = Client { http, endpoints: Arc::new(endpoints) };
        let prefix = format!("/services/{}/", me.service);
        let key = format!("{prefix}{}", me.node_id);
        let value = me.gossip.to_string();
        let lease = client.grant().await?;
        client.put(&key, &value, &lease).await?;
        tracing::info!(key = %key, "etcd: registered");
        let lease = Arc::new(tokio::sync::Mutex::new(lease));
        let changed = Arc::new(Notify::new());
        let keepalive = tokio::spawn(keep_alive(client.clone(), lease.clone(), key.clone(), value));
        let watcher = tokio::spawn(watch(client.clone(), prefix.clone(), changed.clone()));
        Ok(Etcd {
            client,
            prefix,
            key,
            lease,
            changed,
            wait: (dial_timeout / 2).min(Duration::from_secs(5)),
            tasks: vec![keepalive, watcher],
        })
    }
}

/// Keeps the lease alive; a lease that expired (etcd was away longer than
/// its TTL) is granted again and the key put back under it.
async fn keep_alive(client: Client, lease: Arc<tokio::sync::Mutex<String>>, key: String, value: String) {
    loop {
        tokio::time::sleep(KEEPALIVE).await;
        let id = lease.lock().await.clone();
        let alive = match client.call("lease/keepalive", json!({"ID": id})).await {
            Ok(r) => r["result"]["TTL"].as_str().and_then(|t| t.parse::<i64>().ok()).unwrap_or(0) > 0,
            Err(e) => {
                tracing::warn!(error = %e, "etcd: keeping the lease alive failed");
                continue;
            }
        };
        if !alive {
            match client.grant().await {
                Ok(new) => match client.put(&key, &value, &new).await {
                    Ok(()) => {
                        tracing::info!(key = %key, "etcd: lease expired; registered again");
                        *lease.lock().await = new;
                    }
                    Err(e) => tracing::warn!(error = %e, "etcd: registering again failed"),
                },
                Err(e) => tracing::warn!(error = %e, "etcd: a new lease was refused"),
            }
        }
    }
}

/// Watches the prefix; wakes the finder on every event (reconnecting as
/// the stream breaks).
async fn watch(client: Client, prefix: String, changed: Arc<Notify>) {
    let body = json!({"create_request": {"key": B64.encode(&prefix), "range_end": B64.encode(range_end(&prefix))}});
    loop {
        for e in client.endpoints.iter() {
            let url = format!("{}/v3/watch", e.trim_end_matches('/'));
            let Ok(resp) = client.http.post(&url).json(&body).send().await else { continue };
            let mut stream = resp.bytes_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                // Each chunk is one JSON message; any event means "read again".
                if String::from_utf8_lossy(&chunk).contains("\"events\"") {
                    changed.notify_one();
                }
            }
        }
        changed.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait::async_trait]
impl super::Finder for Etcd {
    async fn find(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        // Until something changes (or a while passes): the watch wakes us.
        let _ = tokio::time::timeout(self.wait, self.changed.notified()).await;
        let r = self
            .client
            .call(
                "kv/range",
                json!({"key": B64.encode(&self.prefix), "range_end": B64.encode(range_end(&self.prefix))}),
            )
            .await?;
        let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
        Ok(kvs
            .iter()
            .filter_map(|kv| B64.decode(kv["value"].as_str()?).ok())
            .filter_map(|v| String::from_utf8(v).ok()?.parse().ok())
            .collect())
    }

    fn every(&self) -> Duration {
        Duration::ZERO
    }

    async fn leave(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let lease = self.lease.lock().await.clone();
        // Revoking the lease deletes the key: the others see this node go now.
        match self.client.call("lease/revoke", json!({"ID": lease})).await {
            Ok(_) => tracing::info!(key = %self.key, "etcd: deregistered"),
            Err(e) => tracing::warn!(error = %e, "etcd: deregistering failed (the lease expires in 30 s)"),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
