//! Ports: the traits functions are given their world through. The embedded
//! home implements them on SQLite, git and local processes; the GCP home on
//! Firestore, Pub/Sub, Cloud Storage, Cloud Build and GKE.

use std::path::Path;

use async_trait::async_trait;

use crate::analytics::run::{AnalyticsResult, TrafficMinute, UsageMinute};
use crate::config::ConfigError;
use crate::domain::{
    Actor, ApiToken, AuditRecord, ConfigSnapshot, Deployment, FeedItem, HealthSample, LogLine, NewDeployment,
    NewProject, Project, Role, SecretInfo, Source, Timestamp, TrafficChange,
};
use crate::error::{StoreError, StoreResult};
use crate::events::{DeadLetter, Event, Outcome, PushEnvelope};
use crate::policies::{NewPolicyVersion, PolicyVersion};
use crate::status::{Status, TransitionKind, allowed};

/// One requested status change. The store applies it atomically: check the
/// transition table, compare-and-set status (and version when given), apply
/// the patch, append the audit record, enqueue `deployment.<to>`.
#[derive(Clone, Debug)]
pub struct Transition {
    pub deployment_id: String,
    pub from: Status,
    pub to: Status,
    pub reason: String,
    pub actor: Actor,
    /// When set, the deployment must also still be at this version.
    pub expected_version: Option<u64>,
    pub patch: Patch,
}

impl Transition {
    pub fn new(deployment_id: &str, from: Status, to: Status, reason: impl Into<String>, actor: Actor) -> Self {
        Transition {
            deployment_id: deployment_id.to_string(),
            from,
            to,
            reason: reason.into(),
            actor,
            expected_version: None,
            patch: Patch::default(),
        }
    }

    pub fn at_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    pub fn with_patch(mut self, patch: Patch) -> Self {
        self.patch = patch;
        self
    }

    /// The audit record this transition appends, from `cur` (the status
    /// it found), at `at` — the same in every store.
    pub fn audit_entry<'a>(&'a self, cur: Status, at: &'a Timestamp) -> crate::domain::AuditEntry<'a> {
        crate::domain::AuditEntry {
            at,
            actor: &self.actor,
            from: Some(cur),
            to: self.to,
            reason: &self.reason,
            evidence: self.patch.evidence.as_deref(),
        }
    }

    /// What the transition table says of `from → to`.
    pub fn check(&self) -> StoreResult<TransitionKind> {
        allowed(self.from, self.to).ok_or(StoreError::InvalidTransition { from: self.from, to: self.to })
    }

    /// The typed refusal when `cur` is not where this transition starts.
    pub fn conflict(&self, cur: &Deployment) -> StoreError {
        StoreError::Conflict {
            id: cur.id.clone(),
            expected: self.from,
            actual: cur.status,
            expected_version: self.expected_version,
            actual_version: cur.version,
        }
    }

    /// The deployment after this transition, as every store writes it:
    /// table and compare-and-set checked against `cur`; status, version,
    /// reason and time moved on; a retry starts a new attempt with no
    /// config errors; the patch applied.
    pub fn apply_to(&self, cur: &Deployment, at: Timestamp) -> StoreResult<Deployment> {
        let kind = self.check()?;
        if cur.status != self.from || self.expected_version.is_some_and(|v| v != cur.version) {
            return Err(self.conflict(cur));
        }
        let mut next = cur.clone();
        next.status = self.to;
        next.version = cur.version + 1;
        next.reason = Some(self.reason.clone());
        next.updated_at = at;
        if kind == TransitionKind::Retry {
            next.attempt += 1;
            next.config_errors.clear();
        }
        if let Some(c) = &self.patch.config {
            next.config = Some(c.clone());
        }
        if let Some(e) = &self.patch.config_errors {
            next.config_errors = e.clone();
        }
        if let Some(a) = &self.patch.artifact {
            next.artifact = Some(a.clone());
        }
        Ok(next)
    }
}

/// Fields written in the same transaction as a transition.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    pub config: Option<ConfigSnapshot>,
    pub config_errors: Option<Vec<ConfigError>>,
    pub artifact: Option<serde_json::Value>,
    /// On `→ healthy`: make this the project's live deployment and supersede
    /// the one it replaces.
    pub make_live: bool,
    /// What the step was decided on (a policy decision, JSON): kept in the
    /// audit record, under its hash.
    pub evidence: Option<String>,
}

/// The result of creating a deployment.
#[derive(Clone, Debug)]
pub struct Created {
    pub deployment: Deployment,
    /// The dedupe key was seen before: `deployment` is the earlier one.
    pub duplicate: bool,
    /// In-flight deployments of the project this one superseded.
    pub superseded: Vec<String>,
}

/// The state store. The only writer of `status`.
#[async_trait]
pub trait Store: Send + Sync {
    async fn create_project(&self, project: NewProject) -> StoreResult<Project>;
    /// By name or id.
    async fn get_project(&self, name_or_id: &str) -> StoreResult<Project>;
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    /// Removes the project; its in-flight deployments are cancelled first and
    /// the audit trail is kept.
    async fn delete_project(&self, name_or_id: &str, actor: Actor) -> StoreResult<Project>;
    /// Sets or ends the project's fault injection, traffic split or
    /// rollout. An audit trail records it (`reason`; the deployment's status
    /// unchanged): a rollout's on its canary's, anything else on the live
    /// deployment's (`TrafficChange::apply`).
    /// `evidence` (a policy decision, JSON) goes into that record too.
    async fn set_traffic(
        &self,
        name_or_id: &str,
        change: TrafficChange,
        reason: &str,
        actor: Actor,
        evidence: Option<String>,
    ) -> StoreResult<Project>;

    /// Creates a `queued` deployment (and its `deployment.queued` event), and
    /// supersedes the project's in-flight deployments, in one transaction.
    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Created>;
    async fn get_deployment(&self, id: &str) -> StoreResult<Deployment>;
    /// Newest first. `project` by name or id; `None` lists all.
    async fn list_deployments(&self, project: Option<&str>, limit: usize) -> StoreResult<Vec<Deployment>>;
    async fn transition(&self, t: Transition) -> StoreResult<Deployment>;
    /// The deployment's audit trail, oldest first.
    async fn history(&self, deployment_id: &str) -> StoreResult<Vec<AuditRecord>>;
    /// The audit trail of every deployment, newest first: records with a
    /// sequence number below `before` (all when `None`), at most `limit`.
    async fn audit(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<AuditRecord>>;
    /// Events after `after_seq` (oldest first), of one deployment or all.
    async fn events(&self, deployment_id: Option<&str>, after_seq: u64, limit: usize) -> StoreResult<Vec<Event>>;

    /// Deployments currently in any of `statuses` (start-up reconciliation).
    async fn deployments_in(&self, statuses: &[Status]) -> StoreResult<Vec<Deployment>>;

    /// Appends log lines to their deployments' feeds.
    async fn append_logs(&self, lines: Vec<LogLine>) -> StoreResult<()>;
    /// Keeps the newest of a deployment's log lines of one kind (its build
    /// log, or everything else) within `keep_bytes`, dropping the oldest:
    /// past its cap a log is a rolling window. Returns how many lines went.
    async fn trim_logs(&self, deployment_id: &str, build: bool, keep_bytes: usize) -> StoreResult<usize>;
    /// Feed items (status changes and log lines) after `after_seq`, oldest
    /// first, of one deployment or all.
    async fn feed(&self, deployment_id: Option<&str>, after_seq: u64, limit: usize) -> StoreResult<Vec<FeedItem>>;
    /// Feed items as they are committed. A receiver that lags re-reads with
    /// [`Store::feed`] from the last sequence it saw.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<FeedItem>;
    /// The sequence number of the newest feed item (0 when empty): where a
    /// "from now on" subscriber starts.
    async fn feed_head(&self) -> StoreResult<u64>;

    /// Stores sidecar reports.
    async fn record_health(&self, samples: Vec<HealthSample>) -> StoreResult<()>;
    /// A deployment's health series since `since`, oldest first.
    async fn health(&self, deployment_id: &str, since: Timestamp, limit: usize) -> StoreResult<Vec<HealthSample>>;
    /// Replaces single reports older than `before` by one-minute buckets;
    /// returns how many reports were folded.
    async fn downsample_health(&self, before: Timestamp) -> StoreResult<usize>;
    /// Removes the time series older than `before`: health reports and
    /// buckets, traffic minutes, and analytics results whose window starts
    /// before it (the retention, `--retention`). Returns how many went.
    async fn prune_series(&self, before: Timestamp) -> StoreResult<usize>;

    /// A project's secrets, for `[env]` entries written `{ secret = "name" }`.
    /// Values arrive sealed ([`crate::seal`]) and leave sealed: no store
    /// ever holds a plaintext secret.
    async fn set_secret(&self, project_id: &str, name: &str, sealed: &str) -> StoreResult<()>;
    async fn delete_secret(&self, project_id: &str, name: &str) -> StoreResult<()>;
    /// Names and last update times, of one project or all; values never
    /// leave through this.
    async fn list_secrets(&self, project_id: Option<&str>) -> StoreResult<Vec<SecretInfo>>;
    /// The sealed values of a project's named secrets; one it does not
    /// have is `NotFound` (whatever other projects hold).
    async fn secret_values(
        &self,
        project_id: &str,
        names: &[String],
    ) -> StoreResult<std::collections::BTreeMap<String, String>>;

    /// A token; with `project_id` it reaches only that project.
    async fn create_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        project_id: Option<&str>,
    ) -> StoreResult<ApiToken>;
    /// The token with this hash, if it exists and is not revoked.
    async fn authenticate(&self, token_hash: &str) -> StoreResult<Option<ApiToken>>;
    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    async fn revoke_token(&self, id_or_name: &str) -> StoreResult<ApiToken>;

    /// Appends a version of a gate's policy, numbered and hash-chained after
    /// the newest; refused (`AlreadyExists`) when the newest is not
    /// `new.base_version` (someone changed it meanwhile).
    async fn put_policy(&self, new: NewPolicyVersion) -> StoreResult<PolicyVersion>;
    /// A policy's versions, oldest first (none: the shipped one is in force).
    async fn policy_versions(&self, name: &str) -> StoreResult<Vec<PolicyVersion>>;

    /// Keeps routers' reported counts: one tally per (router, started_ms,
    /// deployment), replaced by a newer report, never by one with fewer
    /// requests (reports can arrive out of order).
    async fn record_tallies(&self, tallies: Vec<RouterTally>) -> StoreResult<()>;
    /// Every router's tally of a deployment.
    async fn tallies(&self, deployment_id: &str) -> StoreResult<Vec<RouterTally>>;
    /// Removes the tallies no router has reported since `before` (routers
    /// long gone, deployments long retired), except those of `serving`:
    /// a quiet router's tally of a deployment still taking traffic is the
    /// only record of its counts, and dropping it would make its next
    /// report look like a jump. Returns how many went.
    async fn prune_tallies(&self, before: Timestamp, serving: &[String]) -> StoreResult<usize>;

    // Analytics (`bifrost_core::analytics`).
    /// Per-minute traffic of serving deployments (the gateway's sampler);
    /// a minute written again is replaced.
    async fn record_traffic_minutes(&self, minutes: Vec<TrafficMinute>) -> StoreResult<()>;
    /// A deployment's health reports in `[from, to)` as one mean CPU and
    /// RSS per (replica, minute), by minute then replica
    /// (`analytics::run::usage_minutes` says how).
    async fn usage_minutes(&self, deployment_id: &str, from: Timestamp, to: Timestamp)
    -> StoreResult<Vec<UsageMinute>>;
    /// A project's traffic minutes in `[from, to)`, oldest first.
    async fn traffic_minutes(
        &self,
        project_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<TrafficMinute>>;
    /// Keeps `result` unless a result of the same project and window is
    /// kept already; returns the one kept and whether it is this one.
    async fn put_analytics(&self, result: AnalyticsResult) -> StoreResult<(AnalyticsResult, bool)>;
    /// A project's results whose windows start in `[from, to)`, by start.
    async fn analytics(&self, project_id: &str, from: Timestamp, to: Timestamp) -> StoreResult<Vec<AnalyticsResult>>;
    /// A setting of the analytics (the price table, the schedule's
    /// progress) as JSON text.
    async fn analytics_setting(&self, key: &str) -> StoreResult<Option<String>>;
    async fn set_analytics_setting(&self, key: &str, value: &str) -> StoreResult<()>;
}

/// Events that did not reach their function: dead letters (delivery gave
/// up) and re-driving them; on a home whose bus is outside the store, the
/// dead letters the bus pushes back and the outbox events it never
/// confirmed. (What the analytics function works on.)
#[async_trait]
pub trait DeadLetters: Send + Sync {
    async fn dead_letters(&self) -> StoreResult<Vec<DeadLetter>>;
    /// Delivers the given dead letters (all when `None`) again. Returns how many.
    async fn redrive(&self, ids: Option<Vec<String>>) -> StoreResult<usize>;
    /// Keeps a message the bus dead-lettered, as its dead-letter topic pushes
    /// it back; recording the same one twice keeps one. `Invalid` when the
    /// envelope is not a Bifrost event (or this home's bus records its own).
    async fn record(&self, envelope: &crate::events::PushEnvelope) -> StoreResult<DeadLetter>;
    /// Publishes again the outbox events committed before `older_than` ago
    /// that the bus never confirmed. Returns how many.
    async fn republish_unconfirmed(&self, older_than: std::time::Duration) -> StoreResult<usize>;
    /// Events on their way: deliveries not yet acknowledged (embedded), or
    /// events the bus has not confirmed (GCP).
    async fn backlog(&self) -> StoreResult<Backlog>;
}

/// How far behind delivery is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    pub pending: u64,
    /// Since the oldest of them was committed.
    pub oldest_age: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// The ref, commit or repository does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Could not reach the repository (worth retrying).
    #[error("{0}")]
    Unavailable(String),
    /// Bad input: not a repository, archive too large or malformed.
    #[error("{0}")]
    Invalid(String),
}

/// A commit's time (the committer's, as GitHub's `head_commit.timestamp`)
/// and subject line.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitInfo {
    pub at: Timestamp,
    pub subject: String,
}

/// Where source code comes from: git repositories and uploaded archives.
#[async_trait]
pub trait Sources: Send + Sync {
    /// Checks that `repo` is a reachable git repository.
    async fn check_repo(&self, repo: &str) -> Result<(), SourceError>;
    /// The branch a repository's `HEAD` names (what `projects add`
    /// deploys when no branch is given).
    async fn default_branch(&self, repo: &str) -> Result<String, SourceError>;
    /// Resolves a branch, tag or commit to a full commit id.
    async fn resolve(&self, repo: &str, git_ref: &str) -> Result<String, SourceError>;
    /// The commit a branch points at in the repository right now, asked of
    /// the repository itself without fetching anything (the webhook's
    /// replay check, on its accept path).
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, SourceError>;
    /// One file of the source; `Ok(None)` if it does not exist there.
    async fn read_file(&self, source: &Source, path: &str) -> Result<Option<String>, SourceError>;
    /// Writes the whole source tree into `dest` (an empty directory).
    async fn checkout(&self, source: &Source, dest: &Path) -> Result<(), SourceError>;
    /// When a git source's commit was made and its subject line (lead
    /// time, fixes: analytics); `None` for uploads or when it cannot be read.
    async fn commit_info(&self, _source: &Source) -> Option<CommitInfo> {
        None
    }
    /// Keeps an uploaded `.tar.gz` and returns where it lives.
    async fn store_archive(&self, bytes: Vec<u8>) -> Result<Source, SourceError>;
}

/// Something that takes Pub/Sub pushes: the functions. The embedded
/// dispatcher calls it in-process; on Cloud Run an HTTP endpoint does.
#[async_trait]
pub trait PushHandler: Send + Sync {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome;
}

/// Where build and replica output goes (non-blocking; the embedded sink
/// batches lines into the store's feed).
#[async_trait]
pub trait LogSink: Send + Sync {
    fn line(&self, deployment_id: &str, project: &str, stream: &str, line: String);
    /// Waits until every line sent so far is stored (so a status change
    /// written next comes after them in the feed).
    async fn flush(&self) {}
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub deployment_id: String,
    pub project_id: String,
    pub project: String,
    pub source: Source,
    pub config: crate::config::DeployConfig,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// The build itself failed (compiler error, missing toolchain, timeout):
    /// the deployment fails with this reason.
    #[error("{0}")]
    Failed(String),
    /// The platform could not run the build (disk, source unreachable): retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Turns a source into something a runtime can run. Dropping the future
/// stops the build (and every process it started).
#[async_trait]
pub trait Builder: Send + Sync {
    /// Returns the artifact, opaque to everyone but the runtime.
    async fn build(&self, req: BuildRequest, log: std::sync::Arc<dyn LogSink>)
    -> Result<serde_json::Value, BuildError>;
    /// Forgets an artifact that will never run again. Missing is fine.
    async fn discard(&self, project_id: &str, deployment_id: &str);
    /// Forgets everything of a deleted project (artifacts, caches).
    async fn discard_project(&self, _project_id: &str) {}
}

/// The desired state of one deployment's replicas.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    pub deployment_id: String,
    pub project_id: String,
    pub project: String,
    pub artifact: serde_json::Value,
    pub config: crate::config::DeployConfig,
    /// `[env]` with secrets resolved.
    pub env: std::collections::BTreeMap<String, String>,
    /// Secret values: masked as `***` wherever the replicas print them.
    pub masked: Vec<String>,
    pub replicas: u32,
}

/// What confines apps and builds where the platform runs (shown by
/// `/healthz` and at start).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Isolation {
    /// Landlock (or the cluster's pod security) is in force.
    pub enforced: bool,
    /// What confines them, e.g. `Landlock (filesystem, TCP bind, …), a uid per project`.
    pub summary: String,
    /// Set when apps are not confined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What the last health probe of a replica saw.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    pub index: u32,
    /// Where it listens (embedded: a loopback port).
    pub address: Option<String>,
    pub pid: Option<u32>,
    /// Accepting TCP connections on its port.
    pub listening: bool,
    /// Passed `success_threshold` probes in a row (and has not failed since).
    pub healthy: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// e.g. `GET /healthz → 200 OK in 3 ms`, `connection refused`, `timed out after 2s`.
    pub last_probe: Option<String>,
    pub restarts: u32,
    /// How the process last ended, if it did.
    pub last_exit: Option<String>,
    /// From the health sidecar, when one runs: the app's process now.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub threads: Option<u32>,
    pub open_fds: Option<u32>,
    /// Why the replica's health sidecar is not reporting, when it is not
    /// (e.g. `health sidecar /usr/bin/bifrost-sidecar exited with 127`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<String>,
}

/// One health observation of a replica, from outside the runtime (the
/// sidecar's report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    pub ok: bool,
    /// What the probe saw, for humans.
    pub description: String,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub threads: Option<u32>,
    pub open_fds: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    /// The replicas cannot run (crash loop, never listened): fail the deployment.
    #[error("{0}")]
    Failed(String),
    /// The runtime could not act now: retry.
    #[error("{0}")]
    Unavailable(String),
}

/// What the host that runs replicas can tell about itself: the deploy
/// policy's input. A fact it cannot tell is absent (`None`, and left out of
/// the policy's input, so no rule about it fires).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct HostFacts {
    /// Free space where apps' files live, GB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_free_gb: Option<f64>,
    /// The 1-minute load average per core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_load: Option<f64>,
    /// Memory available for new processes, MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_available_mb: Option<f64>,
}

/// Runs replicas. Shaped as a reconciler: `apply` makes reality match the
/// spec and is idempotent; `stop` treats "not found" as done.
#[async_trait]
pub trait Runtime: Send + Sync {
    async fn apply(&self, spec: ReplicaSpec) -> Result<(), RuntimeError>;
    /// Waits until every replica listens, or fails with what went wrong.
    async fn wait_listening(&self, deployment_id: &str, timeout: std::time::Duration) -> Result<(), RuntimeError>;
    /// Sends the app's traffic to this (healthy) deployment. Runtimes whose
    /// router follows the store's live pointer (embedded) do nothing here;
    /// GKE moves the app's Ingress. Idempotent.
    async fn promote(&self, _deployment_id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Drains (stops routing, waits `drain`) then stops the replicas. Only
    /// this deployment's own objects go; what the app shares stays.
    async fn stop(&self, deployment_id: &str, drain: std::time::Duration) -> Result<(), RuntimeError>;
    /// What the host can tell about itself (the deploy policy's input).
    async fn host_facts(&self) -> HostFacts {
        HostFacts::default()
    }
    /// The replicas and what their health probes see.
    async fn status(&self, deployment_id: &str) -> Vec<ReplicaStatus>;
    /// Where a router sends this deployment's traffic now (`host:port`):
    /// by default each healthy replica's address. Runtimes that put a
    /// balancer in front (GKE's Service) name that instead.
    async fn endpoints(&self, deployment_id: &str) -> Vec<String> {
        self.status(deployment_id).await.into_iter().filter(|r| r.healthy).filter_map(|r| r.address).collect()
    }
    /// A health observation of one replica from its sidecar. Runtimes that
    /// probe by themselves ignore it.
    async fn observe(&self, _deployment_id: &str, _replica: u32, _observation: Observation) {}
    /// The status once `done` holds for it, or after `timeout`, whichever is
    /// first. Runtimes that can tell when replicas change wake on the
    /// change; this default polls.
    async fn watch_status(
        &self,
        deployment_id: &str,
        timeout: std::time::Duration,
        done: &(dyn for<'s> Fn(&'s [ReplicaStatus]) -> bool + Send + Sync),
    ) -> Vec<ReplicaStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status(deployment_id).await;
            if done(&status) || tokio::time::Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + std::time::Duration::from_millis(250)))
                .await;
        }
    }
}

/// What the router answered for one deployment since it started counting:
/// cumulative, so a window is the difference of two readings.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrafficCounts {
    pub requests: u64,
    /// 5xx answers (the router's own 502/503/504 and injected faults included).
    pub errors: u64,
    /// (upper bound in seconds, requests at or under it), ascending; the
    /// last bound may be infinite (`null` in JSON, which has no infinity).
    #[serde(with = "bounds_json")]
    pub latency_buckets: Vec<(f64, u64)>,
}

/// `latency_buckets` in JSON: `[[0.1, 5], [null, 7]]`, `null` = +Inf.
mod bounds_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(b: &[(f64, u64)], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(Option<f64>, u64)> = b.iter().map(|(le, n)| (le.is_finite().then_some(*le), *n)).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, u64)>, D::Error> {
        let v: Vec<(Option<f64>, u64)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(le, n)| (le.unwrap_or(f64::INFINITY), n)).collect())
    }
}

/// The most latency buckets one reading may carry.
pub const MAX_LATENCY_BUCKETS: usize = 64;

impl TrafficCounts {
    /// Whether these could be a router's counts: at most
    /// [`MAX_LATENCY_BUCKETS`] strictly ascending positive bounds, cumulative
    /// counts never falling, none above `requests`, errors no more than
    /// requests. What a router reports is checked before it is kept.
    pub fn check(&self) -> Result<(), String> {
        if self.errors > self.requests {
            return Err(format!("{} errors of {} requests", self.errors, self.requests));
        }
        if self.latency_buckets.len() > MAX_LATENCY_BUCKETS {
            return Err(format!("{} latency buckets (at most {MAX_LATENCY_BUCKETS})", self.latency_buckets.len()));
        }
        let mut last: Option<(f64, u64)> = None;
        for &(le, n) in &self.latency_buckets {
            if le.is_nan() || le <= 0.0 {
                return Err(format!("a latency bound of {le}"));
            }
            if n > self.requests {
                return Err(format!("{n} requests under {le}s of {} in all", self.requests));
            }
            if let Some((ple, pn)) = last
                && (le <= ple || n < pn)
            {
                return Err(format!("latency buckets out of order at {le}s"));
            }
            last = Some((le, n));
        }
        Ok(())
    }

    /// Adds another reader's counts of the same deployment (another
    /// router's): buckets are matched by bound, a bound only one side has
    /// is kept as it is there.
    pub fn add(&mut self, other: &TrafficCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for &(le, n) in &other.latency_buckets {
            match self.latency_buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, m)) => *m += n,
                None => self.latency_buckets.push((le, n)),
            }
        }
        self.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

/// One router's cumulative counts of one deployment, as it last reported
/// them. A router is named by its node id and the start of its process
/// (`started_ms`): a restarted router counts from zero in a new tally, so
/// the sum over tallies never falls.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouterTally {
    pub router: String,
    pub started_ms: i64,
    pub deployment_id: String,
    pub counts: TrafficCounts,
    /// When the gateway received it.
    pub at: Timestamp,
}

/// One analysis window of a deployment's traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficWindow {
    pub requests: u64,
    /// errors / requests; 0 with no requests.
    pub error_rate: f64,
    /// The median of the window's latency, as `p99_ms`.
    pub p50_ms: Option<f64>,
    /// The 99th percentile of the window's latency, interpolated within its
    /// histogram bucket as Prometheus' `histogram_quantile` does (`None`
    /// with no requests; past the last finite bound, that bound).
    pub p99_ms: Option<f64>,
}

/// The `q` quantile in ms of cumulative `(upper bound s, count)` buckets:
/// as Prometheus' histogram_quantile, linear within the bucket it falls
/// in; past the last finite bound, that bound. `None` when empty.
fn quantile_ms(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last().map_or(0, |(_, n)| *n);
    if total == 0 {
        return None;
    }
    let want = (total as f64 * q).ceil();
    let i = buckets.iter().position(|(_, n)| *n as f64 >= want)?;
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { (buckets[i - 1].0, buckets[i - 1].1 as f64) };
    let (upper, upto) = (buckets[i].0, buckets[i].1 as f64);
    if upper.is_infinite() {
        return Some(lower * 1000.0);
    }
    let share = if upto > below { (want - below) / (upto - below) } else { 1.0 };
    Some((lower + (upper - lower) * share) * 1000.0)
}

impl TrafficCounts {
    /// What happened between `earlier` and `self` (both of one deployment).
    pub fn since(&self, earlier: &TrafficCounts) -> TrafficWindow {
        let requests = self.requests.saturating_sub(earlier.requests);
        let errors = self.errors.saturating_sub(earlier.errors);
        let error_rate = if requests == 0 { 0.0 } else { errors as f64 / requests as f64 };
        let in_window: Vec<(f64, u64)> = self
            .latency_buckets
            .iter()
            .map(|(le, n)| {
                let before = earlier.latency_buckets.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
                (*le, n.saturating_sub(before))
            })
            .collect();
        TrafficWindow {
            requests,
            error_rate,
            p50_ms: quantile_ms(&in_window, 0.5),
            p99_ms: quantile_ms(&in_window, 0.99),
        }
    }
}

/// Where analytics results are copied beside the store (BigQuery on GCP).
/// The same results may be exported again (a window re-run): the export
/// keys its rows so they can be told apart.
#[async_trait]
pub trait ResultsExport: Send + Sync {
    async fn export(&self, results: &[AnalyticsResult]) -> Result<(), String>;
}

/// Where analysis reads a deployment's traffic (the routers' own counts,
/// not scraped text). An error (the counts could not be read) is not "no
/// traffic": a canary treats them differently.
#[async_trait]
pub trait MetricsSource: Send + Sync {
    async fn counts(&self, deployment_id: &str) -> Result<TrafficCounts, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, errors: u64, buckets: &[(f64, u64)]) -> TrafficCounts {
        TrafficCounts { requests, errors, latency_buckets: buckets.to_vec() }
    }

    #[test]
    fn counts_keep_their_infinite_bucket_through_json() {
        let c = counts(7, 1, &[(0.1, 5), (f64::INFINITY, 7)]);
        let text = serde_json::to_string(&c).expect("serializes");
        assert!(text.contains("[null,7]"), "{text}");
        assert_eq!(serde_json::from_str::<TrafficCounts>(&text).expect("parses"), c);
    }

    #[test]
    fn impossible_counts_are_refused_by_check() {
        assert!(counts(7, 1, &[(0.1, 5), (f64::INFINITY, 7)]).check().is_ok());
        for (bad, why) in [
            (counts(1, 2, &[]), "errors"),
            (counts(7, 0, &[(0.1, 8)]), "requests under"),
            (counts(7, 0, &[(0.2, 5), (0.1, 6)]), "out of order"),
            (counts(7, 0, &[(0.1, 6), (0.2, 5)]), "out of order"),
            (counts(7, 0, &[(-1.0, 1)]), "bound"),
            (counts(7, 0, &[(f64::NAN, 1)]), "bound"),
            (counts(70, 0, &(1..=65).map(|i| (i as f64, i)).collect::<Vec<_>>()), "buckets"),
        ] {
            let e = bad.check().expect_err(why);
            assert!(e.contains(why), "{e} should say {why}");
        }
    }

    #[test]
    fn two_routers_counts_add_bucket_by_bucket() {
        let mut a = counts(10, 1, &[(0.1, 8), (f64::INFINITY, 10)]);
        a.add(&counts(5, 2, &[(0.05, 1), (0.1, 4), (f64::INFINITY, 5)]));
        assert_eq!(a, counts(15, 3, &[(0.05, 1), (0.1, 12), (f64::INFINITY, 15)]));
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let earlier = TrafficCounts {
            requests: 100,
            errors: 1,
            latency_buckets: vec![(0.01, 90), (0.1, 100), (f64::INFINITY, 100)],
        };
        let later = TrafficCounts {
            requests: 300,
            errors: 11,
            latency_buckets: vec![(0.01, 150), (0.1, 297), (f64::INFINITY, 300)],
        };
        let w = later.since(&earlier);
        assert_eq!(w.requests, 200);
        assert!((w.error_rate - 0.05).abs() < 1e-9, "{}", w.error_rate);
        // 200 in the window: 60 under 10 ms, 197 under 100 ms, 200 in all;
        // the 198th is over the last finite bound: that bound.
        assert_eq!(w.p99_ms, Some(100.0));
        // The 100th is 40 of the 137 in the (10, 100] bucket.
        let p50 = w.p50_ms.expect("p50");
        assert!((p50 - (10.0 + 90.0 * 40.0 / 137.0)).abs() < 1e-9, "{p50}");
        // 100 under 10 ms, all 200 under 100 ms: the 198th is 98 % of the way
        // through the (10, 100] bucket.
        let calm =
            TrafficCounts { latency_buckets: vec![(0.01, 190), (0.1, 300), (f64::INFINITY, 300)], ..later.clone() };
        let p99 = calm.since(&earlier).p99_ms.expect("p99");
        assert!((p99 - 98.2).abs() < 1e-9, "{p99}");
        // Exactly half under 10 ms: the median is that bound.
        assert_eq!(calm.since(&earlier).p50_ms, Some(10.0));
        assert_eq!(earlier.since(&earlier), TrafficWindow { requests: 0, error_rate: 0.0, p50_ms: None, p99_ms: None });
    }
}
