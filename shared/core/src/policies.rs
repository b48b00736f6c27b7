//! Stored policies: every change to a gate's Rego text or its data is a new
//! version, appended, hash-chained to the one before (the policy's own
//! audit trail); the newest is in force. What a policy *decides* is the
//! `bifrost-policy` crate's business; this is what the store keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Actor, Timestamp};

/// One version of a gate's policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The gate: `deploy` or `promote`.
    pub name: String,
    /// 1, 2, … (0 is the shipped policy, never stored).
    pub version: u64,
    pub rego: String,
    /// The thresholds, at `data.<name>` (an object).
    pub data: Value,
    /// Per-project values that replace keys of `data` for that project.
    #[serde(default)]
    pub projects: BTreeMap<String, Value>,
    pub set_by: Actor,
    pub at: Timestamp,
    /// What changed, in a line (`policy text replaced`, `data min_disk_gb=100`).
    pub reason: String,
    /// The previous version's hash ("" for version 1).
    pub prev_hash: String,
    pub hash: String,
}

/// A version to append: the store numbers and chains it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPolicyVersion {
    pub name: String,
    pub rego: String,
    pub data: Value,
    pub projects: BTreeMap<String, Value>,
    pub set_by: Actor,
    pub reason: String,
    /// The version the change was made on (0: the shipped policy). If the
    /// newest stored version is another, the store refuses (someone else
    /// changed the policy meanwhile).
    pub base_version: u64,
}

impl NewPolicyVersion {
    /// The stored version after `prev` (hash-chained to it).
    pub fn seal(self, prev: Option<&PolicyVersion>, at: Timestamp) -> PolicyVersion {
        let (version, prev_hash) = prev.map_or((1, String::new()), |p| (p.version + 1, p.hash.clone()));
        let mut v = PolicyVersion {
            name: self.name,
            version,
            rego: self.rego,
            data: self.data,
            projects: self.projects,
            set_by: self.set_by,
            at,
            reason: self.reason,
            prev_hash,
            hash: String::new(),
        };
        v.hash = v.compute_hash();
        v
    }
}

impl PolicyVersion {
    /// The data this version applies to `project`: its per-project values
    /// over the policy's own.
    pub fn data_for(&self, project: Option<&str>) -> Value {
        let mut data = self.data.clone();
        if let (Some(p), Some(obj)) = (project, data.as_object_mut())
            && let Some(Value::Object(over)) = self.projects.get(p)
        {
            for (k, v) in over {
                obj.insert(k.clone(), v.clone());
            }
        }
        data
    }

    /// SHA-256 over the previous hash and every field (length-prefixed).
    pub fn compute_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let data = serde_json::to_string(&self.data).unwrap_or_default();
        let projects = serde_json::to_string(&self.projects).unwrap_or_default();
        for part in [
            self.prev_hash.as_str(),
            &self.name,
            &self.version.to_string(),
            &self.rego,
            &data,
            &projects,
            &self.set_by.to_string(),
            &self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            &self.reason,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Checks a policy's versions (oldest first): numbered 1, 2, … without a
/// gap, each hash right and linked to the one before.
pub fn verify_policy_chain(versions: &[PolicyVersion]) -> Result<(), String> {
    let mut prev = "";
    for (i, v) in versions.iter().enumerate() {
        let name = &v.name;
        if v.version != i as u64 + 1 {
            return Err(format!("policy {name}: version {} is missing", i + 1));
        }
        if v.prev_hash != prev {
            return Err(format!("policy {name} v{} does not link to the version before it", v.version));
        }
        if v.hash != v.compute_hash() {
            return Err(format!("policy {name} v{} has been altered (hash mismatch)", v.version));
        }
        prev = &v.hash;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(base: u64, data: Value) -> NewPolicyVersion {
        NewPolicyVersion {
            name: "deploy".into(),
            rego: "package deploy".into(),
            data,
            projects: BTreeMap::new(),
            set_by: Actor::token("admin"),
            reason: "test".into(),
            base_version: base,
        }
    }

    #[test]
    fn versions_chain_and_an_edit_or_a_gap_is_found() {
        let v1 = new(0, serde_json::json!({"min_disk_gb": 5})).seal(None, crate::domain::now());
        let v2 = new(1, serde_json::json!({"min_disk_gb": 9})).seal(Some(&v1), crate::domain::now());
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(v2.prev_hash, v1.hash);
        assert_eq!(verify_policy_chain(&[v1.clone(), v2.clone()]), Ok(()));
        let mut edited = v2.clone();
        edited.data = serde_json::json!({"min_disk_gb": 0});
        assert_eq!(
            verify_policy_chain(&[v1.clone(), edited]),
            Err("policy deploy v2 has been altered (hash mismatch)".into())
        );
        assert_eq!(verify_policy_chain(&[v2]), Err("policy deploy: version 1 is missing".into()));
    }

    #[test]
    fn a_projects_values_replace_the_policys_own_for_it_only() {
        let mut v = new(0, serde_json::json!({"min_disk_gb": 5, "max_cpu_load": 4})).seal(None, crate::domain::now());
        v.projects.insert("web".into(), serde_json::json!({"min_disk_gb": 1}));
        assert_eq!(v.data_for(Some("web")), serde_json::json!({"min_disk_gb": 1, "max_cpu_load": 4}));
        assert_eq!(v.data_for(Some("api")), serde_json::json!({"min_disk_gb": 5, "max_cpu_load": 4}));
        assert_eq!(v.data_for(None), v.data);
    }
}
