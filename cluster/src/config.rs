//! `cluster_config`, in the shape of the seeds users copy from (001's
//! JSON, snake_case; 002's camelCase names are accepted too): read from the
//! file `--config` / `BIFROST_CONFIG` names, overridden by `BIFROST_*`
//! variables, then checked with every rule the seeds state. Every problem
//! is reported at once, each naming its field; nothing starts on any.

use std::net::IpAddr;

use bifrost_core::config::values::{Duration, parse_duration};
use ipnet::IpNet;
use serde::Deserialize;

/// The gossip port when none is given (seed 001).
pub const DEFAULT_GOSSIP_PORT: u16 = 10101;
/// mDNS service type when none is given.
pub const DEFAULT_MDNS_SERVICE: &str = "_bifrost._tcp";
/// The shortest gossip key accepted.
pub const MIN_KEY_BYTES: usize = 16;

/// The configuration file: `cluster_config` is Bifrost's; anything else
/// at the top (a seed's `config_store`, say) is reported and ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub cluster_config: RawCluster,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `cluster_config` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default, alias = "nodeId")]
    pub node_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub discovery: RawDiscovery,
    #[serde(default)]
    pub gossip: RawGossip,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, alias = "serviceName")]
    pub service_name: Option<String>,
    #[serde(default, alias = "bindPort")]
    pub bind_port: Option<u16>,
    #[serde(default, alias = "dialTimeout")]
    pub dial_timeout: Option<String>,
    #[serde(default, alias = "allowedAddressSpace")]
    pub allowed_address_space: Vec<String>,
    #[serde(default, alias = "k8sNamespace")]
    pub k8s_namespace: Option<String>,
    #[serde(default, alias = "k8sLabelSelector")]
    pub k8s_label_selector: Option<String>,
    #[serde(default, alias = "consulAddress")]
    pub consul_address: Option<String>,
    #[serde(default, alias = "etcdEndpoints")]
    pub etcd_endpoints: Vec<String>,
    #[serde(default, alias = "dnsNames")]
    pub dns_names: Vec<String>,
    #[serde(default, alias = "udpBroadcastPort")]
    pub udp_broadcast_port: Option<u16>,
    #[serde(default, alias = "mdnsService")]
    pub mdns_service: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGossip {
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub config: RawGossipTiming,
    /// The cluster key every gossip packet is authenticated with.
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGossipTiming {
    #[serde(default, alias = "timeoutSeconds")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, alias = "successThreshold")]
    pub success_threshold: Option<u32>,
    #[serde(default, alias = "failureThreshold")]
    pub failure_threshold: Option<u32>,
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    /// Off: the router runs alone (it still serves `/cluster/status`).
    pub enabled: bool,
    /// `<hostname>-<gossip port>` unless given.
    pub node_id: String,
    pub region: Option<String>,
    /// `host:port` of static peers.
    pub peers: Vec<String>,
    pub discovery: Option<DiscoverySettings>,
    pub gossip: GossipSettings,
    /// Gossip from (and discovered nodes at) other addresses is dropped;
    /// empty: any.
    pub allowed_address_space: Vec<IpNet>,
}

impl ClusterSettings {
    /// Whether gossip from `ip` may be heard (and a node there joined).
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed_address_space.is_empty() || self.allowed_address_space.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DiscoverySettings {
    pub method: Method,
    pub service_name: Option<String>,
    /// The port discovered nodes gossip on (default: this node's gossip port).
    pub bind_port: u16,
    /// How long one discovery round may take; DNS re-resolves this often.
    pub dial_timeout: Duration,
}

/// A discovery method with what it needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Kubernetes { namespace: String, label_selector: String },
    Consul { address: String },
    Etcd { endpoints: Vec<String> },
    Dns { names: Vec<String> },
    Udp { broadcast_port: u16 },
    Mdns { service_type: String },
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Kubernetes { .. } => "kubernetes",
            Method::Consul { .. } => "consul",
            Method::Etcd { .. } => "etcd",
            Method::Dns { .. } => "dns",
            Method::Udp { .. } => "udp",
            Method::Mdns { .. } => "mdns",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GossipSettings {
    pub port: u16,
    /// `timeout_seconds`: how long a silent node is given.
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// `None` only when clustering is off.
    pub key: Option<Vec<u8>>,
}

/// Reads a configuration file's text (JSON). Returns the raw section and
/// the names of top-level keys that are not Bifrost's (to warn about).
pub fn parse(text: &str) -> Result<(RawCluster, Vec<String>), Vec<String>> {
    let file: ConfigFile =
        serde_json::from_str(text).map_err(|e| vec![format!("the configuration is not valid: {e}")])?;
    Ok((file.cluster_config, file.other.keys().cloned().collect()))
}

impl RawCluster {
    /// `BIFROST_CLUSTER_ENABLED`, `BIFROST_CLUSTER_PEERS` (comma-separated),
    /// `BIFROST_NODE_ID`, `BIFROST_GOSSIP_PORT`, `BIFROST_GOSSIP_KEY` win
    /// over the file. `env` reads a variable (the process's, in the binary).
    pub fn override_from(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), Vec<String>> {
        let mut errors = vec![];
        if let Some(v) = env("BIFROST_CLUSTER_ENABLED") {
            match v.as_str() {
                "true" | "1" => self.enabled = true,
                "false" | "0" => self.enabled = false,
                _ => errors.push(format!("BIFROST_CLUSTER_ENABLED: {v:?} is not true or false")),
            }
        }
        if let Some(v) = env("BIFROST_CLUSTER_PEERS") {
            self.peers = v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
        }
        if let Some(v) = env("BIFROST_NODE_ID") {
            self.node_id = Some(v);
        }
        if let Some(v) = env("BIFROST_GOSSIP_PORT") {
            match v.parse::<u16>() {
                Ok(p) => self.gossip.port = Some(p),
                Err(_) => errors.push(format!("BIFROST_GOSSIP_PORT: {v:?} is not a port number")),
            }
        }
        if let Some(v) = env("BIFROST_GOSSIP_KEY") {
            self.gossip.key = Some(v);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Every rule, every problem named by its field. `hostname` makes the
    /// default node id.
    pub fn check(&self, hostname: &str) -> Result<ClusterSettings, Vec<String>> {
        let mut errors: Vec<String> = vec![];
        let d = &self.discovery;
        let port = self.gossip.port.unwrap_or(DEFAULT_GOSSIP_PORT);

        for (i, p) in self.peers.iter().enumerate() {
            if !is_host_port(p) {
                errors.push(format!("peers[{i}]: {p:?} is not host:port (e.g. \"router-1:{DEFAULT_GOSSIP_PORT}\")"));
            }
        }
        let mut allowed = vec![];
        for (i, c) in d.allowed_address_space.iter().enumerate() {
            match c.trim().parse::<IpNet>() {
                Ok(n) => allowed.push(n),
                Err(_) => errors.push(format!(
                    "discovery.allowed_address_space[{i}]: {c:?} is not a CIDR range (e.g. \"10.0.0.0/8\")"
                )),
            }
        }
        let dial_timeout = match &d.dial_timeout {
            None => Duration::from_secs(10),
            Some(t) => parse_duration(t).unwrap_or_else(|expected| {
                errors.push(format!("discovery.dial_timeout: {t:?} is not {expected}"));
                Duration::from_secs(10)
            }),
        };
        let timing = &self.gossip.config;
        let timeout_seconds = timing.timeout_seconds.unwrap_or(10);
        if timeout_seconds == 0 {
            errors.push("gossip.config.timeout_seconds must be at least 1".into());
        }
        let success_threshold = timing.success_threshold.unwrap_or(3);
        let failure_threshold = timing.failure_threshold.unwrap_or(3);
        for (name, v) in [("success_threshold", success_threshold), ("failure_threshold", failure_threshold)] {
            if v == 0 {
                errors.push(format!("gossip.config.{name} must be at least 1"));
            }
        }

        let discovery = if d.enabled { self.check_discovery(port, dial_timeout, &allowed, &mut errors) } else { None };
        if self.enabled && self.peers.is_empty() && !d.enabled {
            errors.push(
                "cluster mode needs peers: list them in \"peers\" or set \"discovery\": {\"enabled\": true, \"type\": …}"
                    .into(),
            );
        }
        let key = match &self.gossip.key {
            Some(k) if k.len() < MIN_KEY_BYTES => {
                errors.push(format!(
                    "gossip.key: {} bytes is too short; at least {MIN_KEY_BYTES} (32 random bytes, e.g. `openssl rand -base64 32`)",
                    k.len()
                ));
                None
            }
            Some(k) => Some(k.as_bytes().to_vec()),
            None if self.enabled => {
                errors.push(
                    "gossip.key (or BIFROST_GOSSIP_KEY) is required in cluster mode: every gossip packet is authenticated with it"
                        .into(),
                );
                None
            }
            None => None,
        };
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            errors.push(format!("node_id: {id:?} must be 1–128 characters without spaces"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ClusterSettings {
            enabled: self.enabled,
            node_id: self.node_id.clone().unwrap_or_else(|| format!("{hostname}-{port}")),
            region: self.region.clone(),
            peers: self.peers.clone(),
            discovery,
            gossip: GossipSettings {
                port,
                timeout: Duration::from_secs(timeout_seconds),
                success_threshold,
                failure_threshold,
                key,
            },
            allowed_address_space: allowed,
        })
    }

    fn check_discovery(
        &self,
        port: u16,
        dial_timeout: Duration,
        allowed: &[IpNet],
        errors: &mut Vec<String>,
    ) -> Option<DiscoverySettings> {
        let d = &self.discovery;
        const TYPES: &str = "kubernetes, consul, etcd, dns, udp or mdns";
        let Some(kind) = d.kind.as_deref() else {
            errors.push(format!("discovery.type is required when discovery is enabled: {TYPES}"));
            return None;
        };
        let service = d.service_name.clone().filter(|s| !s.trim().is_empty());
        if matches!(kind, "consul" | "etcd" | "udp") && service.is_none() {
            errors.push(format!("discovery.service_name is required for {kind} discovery"));
        }
        let method = match kind {
            "kubernetes" => match d.k8s_label_selector.clone().filter(|s| !s.trim().is_empty()) {
                Some(label_selector) => Some(Method::Kubernetes {
                    namespace: d.k8s_namespace.clone().unwrap_or_else(|| "default".into()),
                    label_selector,
                }),
                None => {
                    errors.push(
                        "discovery.k8s_label_selector is required for kubernetes discovery (e.g. \"app=bifrost-router\")"
                            .into(),
                    );
                    None
                }
            },
            "consul" => {
                let address = d.consul_address.clone().unwrap_or_else(|| "localhost:8500".into());
                if !is_host_port(&address) {
                    errors.push(format!("discovery.consul_address: {address:?} is not host:port"));
                }
                Some(Method::Consul { address })
            }
            "etcd" => {
                if d.etcd_endpoints.is_empty() {
                    errors.push(
                        "discovery.etcd_endpoints is required for etcd discovery (e.g. [\"http://etcd-1:2379\"])"
                            .into(),
                    );
                }
                for (i, e) in d.etcd_endpoints.iter().enumerate() {
                    let rest = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
                    if !rest.is_some_and(|r| is_host_port(r.trim_end_matches('/'))) {
                        errors.push(format!("discovery.etcd_endpoints[{i}]: {e:?} is not http(s)://host:port"));
                    }
                }
                Some(Method::Etcd { endpoints: d.etcd_endpoints.clone() })
            }
            "dns" => {
                if d.dns_names.is_empty() {
                    errors.push(
                        "discovery.dns_names is required for dns discovery (e.g. [\"bifrost-router-gossip.apps.svc.cluster.local\"])"
                            .into(),
                    );
                }
                Some(Method::Dns { names: d.dns_names.clone() })
            }
            "udp" => {
                if allowed.is_empty() && d.allowed_address_space.is_empty() {
                    errors.push(
                        "discovery.allowed_address_space is required for udp discovery: broadcast beacons are only \
                         answered inside it (e.g. [\"192.168.1.0/24\"])"
                            .into(),
                    );
                }
                match d.udp_broadcast_port {
                    Some(p) if p != 0 => Some(Method::Udp { broadcast_port: p }),
                    _ => {
                        errors.push("discovery.udp_broadcast_port is required for udp discovery (e.g. 9999)".into());
                        None
                    }
                }
            }
            "mdns" => Some(Method::Mdns {
                service_type: d.mdns_service.clone().unwrap_or_else(|| DEFAULT_MDNS_SERVICE.into()),
            }),
            other => {
                errors.push(format!("discovery.type: {other:?} is not a discovery method; one of {TYPES}"));
                None
            }
        };
        method.map(|method| DiscoverySettings {
            method,
            service_name: service,
            bind_port: d.bind_port.unwrap_or(port),
            dial_timeout,
        })
    }
}

/// `host:port` with a non-empty host and a port number (`[v6]:port` too).
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn check(json: &str) -> Result<ClusterSettings, Vec<String>> {
        let (raw, _) = parse(json)?;
        raw.check("host-a")
    }

    fn errors(json: &str) -> Vec<String> {
        check(json).err().unwrap_or_default()
    }

    #[test]
    fn seed_001s_kubernetes_example_reads_with_its_defaults() {
        let s = check(&format!(
            r#"{{"cluster_config": {{"enabled": true, "discovery": {{"enabled": true, "type": "kubernetes",
                "service_name": "bifrost-cluster", "k8s_namespace": "default", "k8s_label_selector": "app=bifrost"}},
                "gossip": {{"port": 10101, "key": "{KEY}", "config": {{"timeout_seconds": 10, "success_threshold": 3,
                "failure_threshold": 3}}}}}}}}"#
        ))
        .expect("valid");
        assert_eq!(s.node_id, "host-a-10101");
        assert_eq!(
            s.discovery.as_ref().map(|d| (&d.method, d.bind_port, d.dial_timeout)),
            Some((
                &Method::Kubernetes { namespace: "default".into(), label_selector: "app=bifrost".into() },
                10101,
                Duration::from_secs(10)
            ))
        );
        assert_eq!(
            (s.gossip.timeout, s.gossip.success_threshold, s.gossip.failure_threshold),
            (Duration::from_secs(10), 3, 3)
        );
    }

    #[test]
    fn seed_002s_camel_case_names_are_understood() {
        let s = check(&format!(
            r#"{{"cluster_config": {{"enabled": true, "discovery": {{"enabled": true, "type": "kubernetes",
                "k8sNamespace": "apps", "k8sLabelSelector": "app.kubernetes.io/name=bifrost",
                "allowedAddressSpace": ["10.0.0.0/8"]}}, "gossip": {{"port": 7946, "key": "{KEY}",
                "config": {{"timeoutSeconds": 2}}}}}}}}"#
        ))
        .expect("valid");
        assert_eq!(s.gossip.port, 7946);
        assert_eq!(s.gossip.timeout, Duration::from_secs(2));
        assert!(s.allows("10.1.2.3".parse().expect("ip")) && !s.allows("192.168.0.1".parse().expect("ip")));
    }

    #[test]
    fn cluster_mode_needs_peers_or_discovery_and_a_key() {
        let e = errors(r#"{"cluster_config": {"enabled": true}}"#);
        assert!(e.iter().any(|m| m.starts_with("cluster mode needs peers")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("gossip.key (or BIFROST_GOSSIP_KEY) is required")), "{e:?}");
        let e = errors(r#"{"cluster_config": {"enabled": true, "peers": ["a:1"], "gossip": {"key": "short"}}}"#);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("5 bytes is too short"), "{e:?}");
        // Off (the default), nothing is required.
        assert!(check(r#"{}"#).is_ok_and(|s| !s.enabled && s.gossip.key.is_none()));
    }

    #[test]
    fn each_discovery_method_names_what_it_lacks() {
        let cases = [
            ("udp", "discovery.udp_broadcast_port is required"),
            ("udp", "discovery.allowed_address_space is required for udp"),
            ("udp", "discovery.service_name is required for udp"),
            ("kubernetes", "discovery.k8s_label_selector is required"),
            ("etcd", "discovery.etcd_endpoints is required"),
            ("etcd", "discovery.service_name is required for etcd"),
            ("consul", "discovery.service_name is required for consul"),
            ("dns", "discovery.dns_names is required"),
            ("zookeeper", "discovery.type: \"zookeeper\" is not a discovery method"),
        ];
        for (kind, want) in cases {
            let e = errors(&format!(
                r#"{{"cluster_config": {{"enabled": true, "discovery": {{"enabled": true, "type": "{kind}"}},
                    "gossip": {{"key": "{KEY}"}}}}}}"#
            ));
            assert!(e.iter().any(|m| m.starts_with(want)), "{kind}: want {want:?} in {e:?}");
        }
        let e = errors(r#"{"cluster_config": {"discovery": {"enabled": true}}}"#);
        assert!(e.iter().any(|m| m.starts_with("discovery.type is required")), "{e:?}");
        // mdns needs nothing more: its service type has a default.
        let s = check(&format!(
            r#"{{"cluster_config": {{"enabled": true, "discovery": {{"enabled": true, "type": "mdns"}},
                "gossip": {{"key": "{KEY}"}}}}}}"#
        ))
        .expect("valid");
        assert_eq!(s.discovery.map(|d| d.method), Some(Method::Mdns { service_type: "_bifrost._tcp".into() }));
    }

    #[test]
    fn bad_values_name_themselves() {
        let e = errors(&format!(
            r#"{{"cluster_config": {{"enabled": true, "peers": ["router-1:10101", "router-2"],
                "discovery": {{"enabled": true, "type": "etcd", "service_name": "r", "dial_timeout": "soon",
                "etcd_endpoints": ["etcd-1:2379"], "allowed_address_space": ["10.0.0.0/8", "10.0.0.0/33"]}},
                "gossip": {{"key": "{KEY}", "config": {{"failure_threshold": 0}}}}}}}}"#
        ));
        for want in [
            "peers[1]: \"router-2\" is not host:port",
            "discovery.allowed_address_space[1]: \"10.0.0.0/33\" is not a CIDR range",
            "discovery.dial_timeout: \"soon\" is not a duration",
            "discovery.etcd_endpoints[0]: \"etcd-1:2379\" is not http(s)://host:port",
            "gossip.config.failure_threshold must be at least 1",
        ] {
            assert!(e.iter().any(|m| m.starts_with(want)), "want {want:?} in {e:#?}");
        }
        assert_eq!(e.len(), 5, "{e:#?}");
        let typo = errors(r#"{"cluster_config": {"peer": ["a:1"]}}"#);
        assert!(typo.iter().any(|m| m.contains("unknown field `peer`")), "{typo:?}");
    }

    #[test]
    fn variables_override_the_file_and_bad_ones_say_so() {
        let (mut raw, other) =
            parse(r#"{"cluster_config": {"gossip": {"port": 1}}, "config_store": {}}"#).expect("json");
        assert_eq!(other, ["config_store"]);
        let env = |k: &str| match k {
            "BIFROST_CLUSTER_ENABLED" => Some("true".to_string()),
            "BIFROST_CLUSTER_PEERS" => Some("a:10101, b:10101".to_string()),
            "BIFROST_GOSSIP_PORT" => Some("10102".to_string()),
            "BIFROST_GOSSIP_KEY" => Some(KEY.to_string()),
            _ => None,
        };
        raw.override_from(env).expect("overrides");
        let s = raw.check("h").expect("valid");
        assert_eq!((s.enabled, s.peers.len(), s.gossip.port, s.node_id.as_str()), (true, 2, 10102, "h-10102"));
        let bad = raw.override_from(|k| (k == "BIFROST_GOSSIP_PORT").then(|| "http".to_string()));
        assert_eq!(bad.err(), Some(vec!["BIFROST_GOSSIP_PORT: \"http\" is not a port number".to_string()]));
    }
}
