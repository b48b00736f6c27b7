//! The routing table as the gateway publishes it to `bifrost-router`
//! nodes (`GET /api/v1/routes`, and changes over SSE): for each app with a
//! live deployment, where its healthy replicas are and what the router
//! applies to its traffic. Plain data, the same in both homes.
//!
//! *Versions* are content hashes, not counters: every gateway instance
//! (several on Cloud Run) names the same table the same way, so a router
//! can resume against any of them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Traffic;
use crate::domain::{Fault, Timestamp};

/// One app's route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub app: String,
    /// The live deployment.
    pub deployment: String,
    /// Its healthy replicas, `host:port`; empty: the app is down (503).
    pub endpoints: Vec<String>,
    /// The live deployment's `[traffic]`, as snapshotted at deploy.
    pub traffic: Traffic,
    /// The routing script that runs: a pushed version, else the live
    /// deployment's own `[traffic] script`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<RouteScript>,
    /// A second deployment taking a share of clients (canary, A/B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<RouteSplit>,
    /// Faults injected until `until` (`bifrost chaos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<RouteChaos>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteScript {
    /// For errors: `app@v3`, or the path in the repo.
    pub name: String,
    pub sha256: String,
    pub source: String,
}

impl RouteScript {
    pub fn new(name: &str, source: &str) -> RouteScript {
        RouteScript { name: name.into(), sha256: hex::encode(Sha256::digest(source.as_bytes())), source: source.into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteSplit {
    pub deployment: String,
    /// Share of clients, 0–100.
    pub weight: u8,
    pub endpoints: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteChaos {
    /// Only this deployment's traffic (default: whatever serves the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    pub fault: Fault,
    pub until: Timestamp,
}

/// Every route, sorted by app, and the version naming exactly this content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    pub version: String,
    pub routes: Vec<RouteEntry>,
}

/// What changed from the table `base` to the table `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteChange {
    pub base: String,
    pub version: String,
    /// Routes added or changed, whole.
    pub set: Vec<RouteEntry>,
    /// Apps that no longer route.
    pub removed: Vec<String>,
}

/// A change that does not start from the table it is applied to: the
/// router asks for the whole table again.
#[derive(Debug, PartialEq, Eq)]
pub struct WrongBase {
    pub have: String,
    pub base: String,
}

impl RouteTable {
    /// The table of these routes (in any order; duplicates of an app keep the first).
    pub fn new(mut routes: Vec<RouteEntry>) -> RouteTable {
        routes.sort_by(|a, b| a.app.cmp(&b.app));
        routes.dedup_by(|b, a| a.app == b.app);
        let version = version_of(&routes);
        RouteTable { version, routes }
    }

    pub fn empty() -> RouteTable {
        RouteTable::new(vec![])
    }

    pub fn get(&self, app: &str) -> Option<&RouteEntry> {
        self.routes.binary_search_by(|r| r.app.as_str().cmp(app)).ok().map(|i| &self.routes[i])
    }

    /// What turns `older` into this table.
    pub fn since(&self, older: &RouteTable) -> RouteChange {
        let set = self.routes.iter().filter(|r| older.get(&r.app) != Some(*r)).cloned().collect();
        let removed = older.routes.iter().filter(|r| self.get(&r.app).is_none()).map(|r| r.app.clone()).collect();
        RouteChange { base: older.version.clone(), version: self.version.clone(), set, removed }
    }

    /// This table with `change` applied; refused unless the change starts
    /// here. The result's version is recomputed, so a change that does not
    /// produce the table it names is caught by the caller comparing them.
    pub fn apply(&self, change: &RouteChange) -> Result<RouteTable, WrongBase> {
        if change.base != self.version {
            return Err(WrongBase { have: self.version.clone(), base: change.base.clone() });
        }
        let mut routes: Vec<RouteEntry> = self
            .routes
            .iter()
            .filter(|r| !change.removed.contains(&r.app) && !change.set.iter().any(|s| s.app == r.app))
            .cloned()
            .collect();
        routes.extend(change.set.iter().cloned());
        Ok(RouteTable::new(routes))
    }
}

/// The first 16 hex digits of the SHA-256 of the routes' JSON.
fn version_of(routes: &[RouteEntry]) -> String {
    let json = serde_json::to_vec(routes).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(app: &str, deployment: &str, endpoints: &[&str]) -> RouteEntry {
        RouteEntry {
            app: app.into(),
            deployment: deployment.into(),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            traffic: Traffic::default(),
            script: None,
            split: None,
            chaos: None,
        }
    }

    #[test]
    fn the_version_names_the_content_not_the_order() {
        let a = RouteTable::new(vec![route("b", "d2", &["127.0.0.1:2"]), route("a", "d1", &["127.0.0.1:1"])]);
        let b = RouteTable::new(vec![route("a", "d1", &["127.0.0.1:1"]), route("b", "d2", &["127.0.0.1:2"])]);
        assert_eq!(a.version, b.version);
        let c = RouteTable::new(vec![route("a", "d1", &["127.0.0.1:1"]), route("b", "d2", &["127.0.0.1:3"])]);
        assert_ne!(a.version, c.version, "a replica moving is a new version");
        assert_eq!(a.get("b").map(|r| r.deployment.as_str()), Some("d2"));
        assert_eq!(a.get("c"), None);
    }

    #[test]
    fn a_table_read_back_from_json_has_the_version_it_was_sent_with() {
        // A router recomputes versions after applying a change: every field
        // must survive the wire unchanged.
        let config = crate::config::parse(
            "[app]\nname = \"a\"\nruntime = \"python\"\n[run]\ncommand = \"python3 app.py\"\n[traffic]\n\
             rate_limit = \"6000/m\"\nrate_limit_key = \"header:X-Api-Key\"\nrate_limit_burst = 7\n\
             headers.set = { X-A = \"1\" }\nheaders.remove = [\"X-B\"]\nresponse_headers.set = { X-C = \"2\" }\n",
        )
        .expect("deploy.toml");
        let mut r = route("a", "d1", &["h:1"]);
        r.traffic = config.traffic;
        r.script = Some(RouteScript::new("a@v2", "function handle(r) end"));
        r.split = Some(RouteSplit { deployment: "d2".into(), weight: 37, endpoints: vec!["h:2".into()] });
        r.chaos = Some(RouteChaos {
            deployment: None,
            fault: Fault::Error { rate: 0.1, status: 503 },
            until: chrono::DateTime::from_timestamp_millis(1_790_000_000_123).expect("time"),
        });
        let sent = RouteTable::new(vec![r, route("b", "d3", &[])]);
        let back: RouteTable = serde_json::from_str(&serde_json::to_string(&sent).expect("json")).expect("parse");
        assert_eq!(RouteTable::new(back.routes.clone()).version, sent.version);
        assert_eq!(back, sent);
    }

    #[test]
    fn a_change_carries_only_what_moved_and_rebuilds_the_same_table() {
        let old = RouteTable::new(vec![route("a", "d1", &["h:1"]), route("b", "d2", &["h:2"]), route("c", "d3", &[])]);
        let new = RouteTable::new(vec![route("a", "d1", &["h:1"]), route("b", "d4", &["h:4"]), route("e", "d5", &[])]);
        let change = new.since(&old);
        assert_eq!(change.set.iter().map(|r| r.app.as_str()).collect::<Vec<_>>(), ["b", "e"]);
        assert_eq!(change.removed, ["c"]);
        assert_eq!(old.apply(&change), Ok(new.clone()));
        // Applied to any other table, it is refused.
        assert_eq!(new.apply(&change), Err(WrongBase { have: new.version.clone(), base: old.version.clone() }));
        assert!(new.since(&new).set.is_empty() && new.since(&new).removed.is_empty());
    }
}
