//! Domain types: what a project and a deployment are, who acts on them, and
//! what the audit trail records. No storage or wire concerns live here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, DeployConfig};
use crate::error::StoreError;
use crate::status::Status;

pub type Timestamp = chrono::DateTime<chrono::Utc>;

pub fn now() -> Timestamp {
    // Millisecond precision: what SQLite and Firestore both keep exactly.
    let t = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A project: one app, fed from one git repository (or from uploads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    /// DNS label, unique; the app's URL is `<name>.<domain>`.
    pub name: String,
    /// Git URL or local path; `None` for upload-only projects.
    pub repo: Option<String>,
    /// Pushes to this branch deploy.
    pub branch: String,
    /// HMAC key for GitHub webhooks. Never serialized to API clients except
    /// once, on creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    pub created_at: Timestamp,
    /// The deployment currently serving traffic, if any.
    pub live_deployment_id: Option<String>,
    /// Faults the router injects into the app's traffic (`bifrost chaos`),
    /// until they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
    /// A second deployment taking a share of the app's clients (`bifrost
    /// traffic split`; a canary's steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<TrafficSplit>,
    /// A canary rollout in progress: which step, its analysis window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutState>,
}

/// Where a canary rollout is: durable, so a restart resumes at the same
/// step and window. Each change bumps `generation` (compare-and-set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The canary deployment.
    pub deployment: String,
    /// The live deployment it is compared against.
    pub stable: String,
    /// Index into `[rollout] steps` of the current step.
    pub step: usize,
    /// The canary's share now (0-100).
    pub weight: u8,
    /// When the current analysis window began.
    pub window_started: Timestamp,
    /// Inconclusive windows in a row at this step.
    pub inconclusive: u32,
    /// Metrics-source errors in a row.
    pub errors: u32,
    /// Set when the rollout waits for `bifrost rollout promote` / `abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// `bifrost rollout promote`: take the next step without asking the gate.
    #[serde(default)]
    pub promote_requested: bool,
    /// The last decision, in a line (`[PASS] …`, `[DENY] …`, `inconclusive: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    pub generation: u64,
}

/// A second deployment of an app and the share (0–100) of clients it gets,
/// sticky per client (the router's `bifrost_variant` cookie, else the IP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSplit {
    pub deployment: String,
    pub weight: u8,
    pub set_by: Actor,
    pub at: Timestamp,
}

/// A change to how the router treats a project's traffic, recorded in an
/// audit trail: a rollout's on its canary's, anything else on the live
/// deployment's.
#[derive(Clone, Debug, PartialEq)]
pub enum TrafficChange {
    /// Fault injection on (`Some`) or off.
    Chaos(Option<Chaos>),
    /// A split set (`Some`) or ended.
    Split(Option<TrafficSplit>),
    /// A canary rollout's state and the split it implies, set together;
    /// refused unless the rollout is still at `expected_generation`
    /// (`None`: there must be none).
    Rollout { rollout: Option<RolloutState>, split: Option<TrafficSplit>, expected_generation: Option<u64> },
}

impl TrafficChange {
    /// Applies the change to the project as read. Returns the deployment
    /// whose audit trail records it (none when nothing is live and no
    /// rollout is concerned).
    pub fn apply(self, project: &mut Project) -> Result<Option<String>, StoreError> {
        let canary = match &self {
            TrafficChange::Rollout { rollout, .. } => {
                rollout.as_ref().or(project.rollout.as_ref()).map(|r| r.deployment.clone())
            }
            _ => None,
        };
        match self {
            TrafficChange::Chaos(c) => project.chaos = c,
            TrafficChange::Split(s) => project.split = s,
            TrafficChange::Rollout { rollout, split, expected_generation } => {
                let now_at = project.rollout.as_ref().map(|r| r.generation);
                if now_at != expected_generation {
                    return Err(StoreError::AlreadyExists {
                        kind: "rollout change",
                        id: format!(
                            "{} (the rollout moved on: generation {now_at:?}, not {expected_generation:?})",
                            project.name
                        ),
                    });
                }
                project.rollout = rollout;
                project.split = split;
            }
        }
        Ok(canary.or_else(|| project.live_deployment_id.clone()))
    }
}

/// Fault injection at the router (seed 003's chaos), for one app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chaos {
    /// Only this deployment's traffic (default: whatever serves the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    pub fault: Fault,
    /// It ends by itself then.
    pub until: Timestamp,
    pub set_by: Actor,
    pub at: Timestamp,
}

/// What the router does to a share (`rate`, 0–1) of the app's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with `status` instead of asking the app.
    Error { rate: f64, status: u16 },
    /// Wait `delay_ms` before asking the app.
    Delay { rate: f64, delay_ms: u64 },
}

impl Chaos {
    pub fn active(&self, at: Timestamp) -> bool {
        at < self.until
    }
}

impl std::fmt::Display for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fault {
            Fault::Error { rate, status } => write!(f, "{:.0}% of requests answered {status}", rate * 100.0)?,
            Fault::Delay { rate, delay_ms } => write!(f, "{:.0}% of requests delayed {delay_ms} ms", rate * 100.0)?,
        }
        if let Some(d) = &self.deployment {
            write!(f, " (deployment {d})")?;
        }
        write!(f, " until {}", self.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewProject {
    pub name: String,
    pub repo: Option<String>,
    pub branch: String,
    pub webhook_secret: Option<String>,
}

impl Project {
    /// The deployments taking its traffic now: the live one, and the
    /// second side of a split.
    pub fn serving(&self) -> impl Iterator<Item = &str> {
        self.live_deployment_id.as_deref().into_iter().chain(self.split.as_ref().map(|s| s.deployment.as_str()))
    }

    /// A new project, its name checked: it becomes the app's URL.
    pub fn create(p: NewProject) -> Result<Project, StoreError> {
        if !is_dns_label(&p.name) {
            return Err(StoreError::Invalid(format!(
                "project name {:?} must be a DNS label (1-63 lowercase letters, digits or '-')",
                p.name
            )));
        }
        Ok(Project {
            id: new_id("p"),
            name: p.name,
            repo: p.repo,
            branch: p.branch,
            webhook_secret: p.webhook_secret,
            created_at: now(),
            live_deployment_id: None,
            chaos: None,
            split: None,
            rollout: None,
        })
    }
}

/// Where a deployment's source comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A commit of the project's git repository.
    Git {
        repo: String,
        #[serde(rename = "ref")]
        git_ref: String,
        commit: String,
        /// When the commit was made, as the push said (GitHub's
        /// `head_commit.timestamp`); `None`: read from git when needed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        committed_at: Option<Timestamp>,
    },
    /// An uploaded archive (tar.gz), stored by the platform.
    Archive { uri: String, sha256: String },
}

impl Source {
    /// A short human label: the commit or the archive digest.
    pub fn short(&self) -> String {
        match self {
            Source::Git { git_ref, commit, .. } => {
                format!("{}@{}", git_ref, &commit[..commit.len().min(10)])
            }
            Source::Archive { sha256, .. } => format!("upload:{}", &sha256[..sha256.len().min(10)]),
        }
    }
}

impl Deployment {
    /// A new `queued` deployment of `project`, created at `at`, with the
    /// reason its first audit record and event carry.
    pub fn queued(new: &NewDeployment, project: &Project, at: Timestamp) -> Deployment {
        let source = new.source.clone();
        let reason = match &new.rollback_of {
            Some(of) => format!("rollback to {of}"),
            None => format!("deploy {}", source.short()),
        };
        Deployment {
            id: new_id("d"),
            project_id: project.id.clone(),
            project: project.name.clone(),
            status: Status::Queued,
            version: 1,
            attempt: 1,
            source,
            config: None,
            config_errors: vec![],
            reason: Some(reason),
            artifact: new.artifact.clone(),
            rollback_of: new.rollback_of.clone(),
            created_by: new.actor.clone(),
            created_at: at,
            updated_at: at,
        }
    }
}

/// A deployment: one attempt to run one version of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub project_id: String,
    pub project: String,
    pub status: Status,
    /// Bumped on every write; the compare-and-set token.
    pub version: u64,
    /// 1 for the first run, +1 per retry.
    pub attempt: u32,
    pub source: Source,
    /// The validated deploy.toml, snapshotted when validation passes.
    pub config: Option<ConfigSnapshot>,
    /// Structured deploy.toml errors when validation fails.
    pub config_errors: Vec<ConfigError>,
    /// Why it is in its current state (the last transition's reason).
    pub reason: Option<String>,
    /// What the build produced (runtime-specific; opaque to the store).
    pub artifact: Option<serde_json::Value>,
    /// Set when this deployment rolls back to an earlier one's artifact.
    pub rollback_of: Option<String>,
    pub created_by: Actor,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A valid deploy.toml as it was at the deployment's commit: the source text
/// (so the dashboard can show it) and the typed config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    pub source: String,
    pub config: DeployConfig,
    /// The text of `[traffic] script` at that commit (compiled when read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDeployment {
    pub project: String,
    pub source: Source,
    pub actor: Actor,
    /// A webhook delivery id: creating twice with the same id yields the first.
    pub dedupe_key: Option<String>,
    pub rollback_of: Option<String>,
    pub artifact: Option<serde_json::Value>,
}

/// Who did something. Rendered as `kind:name`, e.g. `token:alice`,
/// `function:validate`, `github:octocat`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Actor {
    pub kind: ActorKind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// A person or automation holding an API token.
    Token,
    /// One of the platform's functions.
    Function,
    /// A GitHub webhook (name is the pusher's login).
    Github,
    /// The platform itself (start-up repair, supervisors).
    System,
}

impl Actor {
    pub fn function(name: &str) -> Self {
        Actor { kind: ActorKind::Function, name: name.to_string() }
    }
    pub fn token(name: &str) -> Self {
        Actor { kind: ActorKind::Token, name: name.to_string() }
    }
    pub fn github(login: &str) -> Self {
        Actor { kind: ActorKind::Github, name: login.to_string() }
    }
    pub fn system(name: &str) -> Self {
        Actor { kind: ActorKind::System, name: name.to_string() }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ActorKind::Token => "token",
            ActorKind::Function => "function",
            ActorKind::Github => "github",
            ActorKind::System => "system",
        };
        write!(f, "{kind}:{}", self.name)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Actor {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Actor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) = s.split_once(':').ok_or_else(|| format!("actor {s:?} must look like kind:name"))?;
        let kind = match kind {
            "token" => ActorKind::Token,
            "function" => ActorKind::Function,
            "github" => ActorKind::Github,
            "system" => ActorKind::System,
            other => return Err(format!("unknown actor kind {other:?} in {s:?}")),
        };
        Ok(Actor { kind, name: name.to_string() })
    }
}

/// API roles, ordered: each role can do everything the ones before it can
/// — except `router`, first so that it reaches nothing the others do: a
/// `bifrost-router` node's token, which can only read the routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Router,
    Viewer,
    Deployer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "router" => Ok(Role::Router),
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (expected viewer, deployer, admin or router)")),
        }
    }
}

/// An API token as stored: only the SHA-256 of the secret is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    /// When set, the token reaches only this project (its id): other
    /// projects do not exist for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

impl ApiToken {
    /// A new token record, its name checked (1-64 characters, no `/`:
    /// Firestore keys tokens by name). Admin tokens cannot be limited to
    /// a project: administering the platform is not a project's business.
    pub fn create(name: &str, role: Role, project_id: Option<&str>) -> Result<ApiToken, StoreError> {
        if name.is_empty() || name.len() > 64 || name.contains('/') {
            return Err(StoreError::Invalid("token name must be 1-64 characters, without '/'".into()));
        }
        if role == Role::Router && project_id.is_some() {
            return Err(StoreError::Invalid(
                "a router token cannot be limited to a project: a router serves every app".into(),
            ));
        }
        if role == Role::Admin && project_id.is_some() {
            return Err(StoreError::Invalid(
                "an admin token cannot be limited to a project (use --role deployer or viewer)".into(),
            ));
        }
        Ok(ApiToken {
            id: new_id("t"),
            name: name.to_string(),
            role,
            created_at: now(),
            last_used_at: None,
            project_id: project_id.map(str::to_string),
        })
    }

    /// May this token see or act on the project with this id?
    pub fn reaches(&self, project_id: &str) -> bool {
        self.project_id.as_deref().is_none_or(|p| p == project_id)
    }
}

/// A secret as listed: never its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The owning project's id; `None` for a secret kept from before
    /// secrets belonged to projects (never resolved by a deployment).
    pub project_id: Option<String>,
    pub name: String,
    pub updated_at: Timestamp,
}

/// One line of output from a build or a replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub deployment_id: String,
    pub project: String,
    pub at: Timestamp,
    /// `build`, `replica-0`, `replica-1`, ... or `platform`.
    pub stream: String,
    /// The text as printed (ANSI escapes kept), without the newline.
    pub line: String,
}

/// What a user watching a deployment sees, in order: status changes and log
/// lines share one sequence (the SSE `id:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedItem {
    pub seq: u64,
    pub deployment_id: String,
    pub project: String,
    pub at: Timestamp,
    #[serde(flatten)]
    pub kind: FeedKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedKind {
    Status { from: Option<Status>, status: Status, version: u64, attempt: u32, reason: String, actor: Actor },
    Log { stream: String, line: String },
}

/// One entry of the append-only, hash-chained audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub deployment_id: String,
    pub project_id: String,
    pub at: Timestamp,
    pub actor: Actor,
    /// `None` for the record of a deployment's creation.
    pub from: Option<Status>,
    pub to: Status,
    pub reason: String,
    /// What the step was decided on, as JSON (a policy decision: allow,
    /// reasons, input, policy and data sha256); covered by the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Hash of the previous record of the same deployment ("" for the first).
    pub prev_hash: String,
    pub hash: String,
    /// The global anchor: SHA-256 of the anchor before it (append order)
    /// and `hash` ([`crate::audit`]). `None` on records written before
    /// anchors existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
}

/// What one audit record says happened (both stores chain it the same way).
pub struct AuditEntry<'a> {
    pub at: &'a Timestamp,
    pub actor: &'a Actor,
    pub from: Option<Status>,
    pub to: Status,
    pub reason: &'a str,
    pub evidence: Option<&'a str>,
}

impl AuditEntry<'_> {
    /// Its chain hash after `prev_hash`.
    pub fn hash(&self, prev_hash: &str, deployment_id: &str) -> String {
        AuditRecord::compute_hash(
            prev_hash,
            deployment_id,
            self.at,
            self.actor,
            self.from,
            self.to,
            self.reason,
            self.evidence,
        )
    }
}

impl AuditRecord {
    /// The chain hash: SHA-256 over the previous hash and the record's
    /// fields (evidence only when present, so records from before it
    /// existed keep their hashes).
    #[allow(clippy::too_many_arguments)]
    pub fn compute_hash(
        prev_hash: &str,
        deployment_id: &str,
        at: &Timestamp,
        actor: &Actor,
        from: Option<Status>,
        to: Status,
        reason: &str,
        evidence: Option<&str>,
    ) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            prev_hash,
            deployment_id,
            &at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            &actor.to_string(),
            from.map(Status::as_str).unwrap_or(""),
            to.as_str(),
            reason,
        ]
        .into_iter()
        .chain(evidence)
        {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Does this record's hash match its content?
    pub fn verify(&self) -> bool {
        self.hash
            == Self::compute_hash(
                &self.prev_hash,
                &self.deployment_id,
                &self.at,
                &self.actor,
                self.from,
                self.to,
                &self.reason,
                self.evidence.as_deref(),
            )
    }
}

/// Checks a deployment's audit chain: each record's hash is right and links
/// to the one before.
pub fn verify_chain(records: &[AuditRecord]) -> Result<(), String> {
    let mut prev = "";
    for r in records {
        if r.prev_hash != prev {
            return Err(format!("audit record {} does not link to the one before it", r.seq));
        }
        if !r.verify() {
            return Err(format!("audit record {} has been altered (hash mismatch)", r.seq));
        }
        prev = &r.hash;
    }
    Ok(())
}

/// DNS label (RFC 1123): 1-63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_round_trip_through_strings() {
        for a in [Actor::token("alice"), Actor::function("validate"), Actor::github("octo:cat")] {
            let s = a.to_string();
            assert_eq!(s.parse::<Actor>(), Ok(a));
        }
        assert!("nobody".parse::<Actor>().is_err());
        assert!("robot:x".parse::<Actor>().is_err());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Deployer && Role::Deployer < Role::Admin);
        assert!(Role::Router < Role::Viewer, "a router's token reaches nothing a viewer's does");
        assert_eq!("deployer".parse::<Role>(), Ok(Role::Deployer));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "hello-python", "x1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Hello", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn audit_chain_detects_tampering() {
        let at = now();
        let actor = Actor::system("test");
        let h1 = AuditRecord::compute_hash("", "d1", &at, &actor, None, Status::Queued, "created", None);
        let r1 = AuditRecord {
            seq: 1,
            deployment_id: "d1".into(),
            project_id: "p".into(),
            at,
            actor: actor.clone(),
            from: None,
            to: Status::Queued,
            reason: "created".into(),
            evidence: None,
            prev_hash: String::new(),
            hash: h1.clone(),
            anchor: None,
        };
        let h2 =
            AuditRecord::compute_hash(&h1, "d1", &at, &actor, Some(Status::Queued), Status::Validating, "go", None);
        let mut r2 = AuditRecord {
            seq: 2,
            from: Some(Status::Queued),
            to: Status::Validating,
            reason: "go".into(),
            prev_hash: h1,
            hash: h2,
            ..r1.clone()
        };
        assert_eq!(verify_chain(&[r1.clone(), r2.clone()]), Ok(()));
        r2.reason = "tampered".into();
        assert!(verify_chain(&[r1.clone(), r2.clone()]).is_err());
        // Evidence is under the hash too: added or edited, it is found.
        r2.reason = "go".into();
        r2.evidence = Some("{\"allow\":true}".into());
        assert!(verify_chain(&[r1, r2]).is_err());
    }
}

/// What a replica's health sidecar reported: one report (`span_s` = 0), or
/// after downsampling a bucket of reports (`span_s` = 60: averages, the
/// share of good probes in `probe_ok`, the highest RSS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthSample {
    pub deployment_id: String,
    pub replica: u32,
    pub at: Timestamp,
    pub span_s: u32,
    /// Share of good probes: 0 or 1 for one report.
    pub probe_ok: f64,
    pub http_status: Option<u16>,
    pub latency_ms: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub threads: Option<u32>,
    pub open_fds: Option<u32>,
    /// What went wrong, when it did.
    pub error: Option<String>,
}
