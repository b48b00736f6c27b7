//! The documents: one per domain object, its JSON in `data` beside the
//! fields queries filter or sort on; and the collection names.

use super::*;

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn fs(e: FirestoreError) -> StoreError {
    backend(format!("firestore: {e}"))
}

pub(super) fn to_data<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(backend)
}

pub(super) fn from_data<T: DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| backend(format!("a stored document does not decode: {e}")))
}

/// Sequence-numbered documents are named by their zero-padded number, so the
/// console lists them in order.
pub(super) fn seq_id(seq: u64) -> String {
    format!("{seq:020}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ProjectDoc {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) data: String,
}

/// `project_names/{name}` → id: makes names unique inside a transaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct NameDoc {
    pub(super) id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct DeploymentDoc {
    pub(super) id: String,
    pub(super) project_id: String,
    pub(super) status: String,
    pub(super) created_ms: i64,
    /// Hash of the newest audit record: the next one chains to it.
    pub(super) audit_head: String,
    pub(super) data: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SeqDoc {
    pub(super) last: i64,
}

/// An audit record, an outbox event or a feed item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SeqItemDoc {
    pub(super) seq: i64,
    pub(super) deployment_id: String,
    pub(super) data: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct DedupeDoc {
    pub(super) deployment_id: String,
}

/// `tokens/{name}`: the name is the document id, so names are unique.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TokenDoc {
    pub(super) id: String,
    pub(super) hash: String,
    pub(super) revoked: bool,
    pub(super) data: String,
}

/// `meta/audit_anchor`: the audit trail's newest global anchor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct AnchorDoc {
    pub(super) head: String,
}

/// `policies/<name>~<version, 8 digits>`: one version of a gate's policy
/// (the whole [`PolicyVersion`] as JSON in `data`); `meta/policy~<name>`
/// holds the newest version number, which a change compares and sets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PolicyDoc {
    pub(super) name: String,
    pub(super) version: i64,
    pub(super) data: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PolicyHeadDoc {
    pub(super) version: i64,
}

pub(super) fn policy_doc_id(name: &str, version: u64) -> String {
    format!("{name}~{version:08}")
}

/// `secrets/<project id>~<name>`; documents written before secrets
/// belonged to projects have no `project_id` (listed, never resolved).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SecretDoc {
    pub(super) value: String,
    pub(super) updated_ms: i64,
    #[serde(default)]
    pub(super) project_id: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
}

pub(super) fn secret_doc_id(project_id: &str, name: &str) -> String {
    format!("{project_id}~{name}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct HealthDoc {
    pub(super) deployment_id: String,
    pub(super) at_ms: i64,
    pub(super) span_s: i64,
    pub(super) data: String,
}

/// `tallies/<deployment>~<hex router>~<started_ms>`: a router's counts of
/// a deployment (hex: node ids may hold any character).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TallyDoc {
    pub(super) deployment_id: String,
    pub(super) requests: i64,
    pub(super) data: String,
    /// When it was last reported: what the retention prunes by. (Tallies
    /// written before this field have none; the next report adds it.)
    #[serde(default)]
    pub(super) at_ms: Option<i64>,
}

pub(super) fn tally_doc_id(t: &bifrost_core::ports::RouterTally) -> String {
    format!("{}~{}~{}", t.deployment_id, hex::encode(&t.router), t.started_ms)
}

/// `traffic_minutes/<project>~<minute_ms>~<deployment>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TrafficMinuteDoc {
    pub(super) project_id: String,
    pub(super) minute_ms: i64,
    pub(super) data: String,
}

/// `analytics/<project>~<start_ms>~<end_ms>`: one result per window; the
/// id is what keeps a second run of the window from storing again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct AnalyticsDoc {
    pub(super) project_id: String,
    pub(super) start_ms: i64,
    pub(super) data: String,
}

/// `meta/analytics~<key>`: a setting of the analytics, as JSON text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SettingDoc {
    pub(super) value: String,
}

/// Collection names, under an optional prefix (tests share one emulator).
#[derive(Clone, Debug)]
pub(super) struct Cols {
    pub(super) projects: String,
    pub(super) names: String,
    pub(super) deployments: String,
    pub(super) meta: String,
    pub(super) audit: String,
    pub(super) events: String,
    /// Markers of committed events not yet confirmed published.
    pub(super) unpublished: String,
    /// Events Pub/Sub gave up delivering (from the dead-letter topics).
    pub(super) dead_letters: String,
    pub(super) feed: String,
    pub(super) dedupe: String,
    pub(super) tokens: String,
    pub(super) secrets: String,
    pub(super) health: String,
    pub(super) policies: String,
    pub(super) tallies: String,
    pub(super) traffic_minutes: String,
    pub(super) analytics: String,
}

impl Cols {
    pub(super) fn new(prefix: &str) -> Self {
        let c = |n: &str| format!("{prefix}{n}");
        Cols {
            projects: c("projects"),
            names: c("project_names"),
            deployments: c("deployments"),
            meta: c("meta"),
            audit: c("audit"),
            events: c("events"),
            unpublished: c("unpublished"),
            dead_letters: c("dead_letters"),
            feed: c("feed"),
            dedupe: c("dedupe"),
            tokens: c("tokens"),
            secrets: c("secrets"),
            health: c("health"),
            policies: c("policies"),
            tallies: c("tallies"),
            traffic_minutes: c("traffic_minutes"),
            analytics: c("analytics"),
        }
    }
}

pub(super) fn deployment_of(doc: &DeploymentDoc) -> StoreResult<Deployment> {
    from_data(&doc.data)
}

pub(super) fn deployment_doc(d: &Deployment, audit_head: &str) -> StoreResult<DeploymentDoc> {
    Ok(DeploymentDoc {
        id: d.id.clone(),
        project_id: d.project_id.clone(),
        status: d.status.as_str().to_string(),
        created_ms: d.created_at.timestamp_millis(),
        audit_head: audit_head.to_string(),
        data: to_data(d)?,
    })
}
