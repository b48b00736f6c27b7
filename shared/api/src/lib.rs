//! The REST API's wire types: what `/api/v1` and its SSE streams send and
//! accept. The gateway serves them, the CLI and the dashboard read them —
//! one definition for all three.
//!
//! *Boundary*: this is the public contract (pinned by `docs/openapi.json`).
//! Domain types never go on the wire; they convert into these (feature
//! `domain`), so renaming a field in the store changes nothing here.
//!
//! Features: `openapi` derives the OpenAPI schemas (utoipa); `domain` adds
//! the conversions from `bifrost-core`. Without either it builds for wasm.

use serde::{Deserialize, Serialize};

#[cfg(feature = "domain")]
mod from_domain;
pub mod sse;
#[cfg(feature = "domain")]
pub use from_domain::rfc3339;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ProjectOut {
    pub id: String,
    pub name: String,
    /// Git URL or local path; null for upload-only projects.
    pub repo: Option<String>,
    pub branch: String,
    pub live_deployment_id: Option<String>,
    pub created_at: String,
    /// Where GitHub should send push events.
    pub webhook_url: String,
    /// Where the app answers once it is live.
    pub url: String,
    /// Only in the answer that creates the project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Fault injection set with `bifrost chaos` (shown until it is ended;
    /// `active` is false once it expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosOut>,
    /// A second deployment taking a sticky share of the app's clients
    /// (`bifrost traffic split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitOut>,
    /// A canary rolling out (`[rollout] strategy = "canary"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutOut>,
}

/// Where a canary rollout is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RolloutOut {
    /// The canary deployment.
    pub deployment: String,
    /// The live deployment it is compared with.
    pub stable: String,
    /// 1-based.
    pub step: usize,
    pub weight: u8,
    pub window_started: String,
    pub inconclusive: u32,
    pub errors: u32,
    /// Why it waits for `bifrost rollout promote` / `abort`, when it does.
    pub paused: Option<String>,
    pub promote_requested: bool,
    pub last_decision: Option<String>,
}

/// `PUT /api/v1/projects/{name}/split`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SplitIn {
    /// The second deployment: healthy once (its build is kept), or a
    /// running canary. Its replicas are started if they do not run.
    pub to: String,
    /// Share of clients (0–100) it gets; a client keeps its side as it rises.
    pub weight: u8,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SplitOut {
    pub deployment: String,
    pub weight: u8,
    pub set_by: String,
    pub at: String,
}

/// `PUT /api/v1/projects/{name}/chaos`: exactly one of `error_rate` and `delay_ms`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ChaosIn {
    /// Only this deployment's traffic (default: whatever serves the app).
    #[serde(default)]
    pub deployment: Option<String>,
    /// Share of requests (0–1] answered with `status` instead of the app.
    #[serde(default)]
    pub error_rate: Option<f64>,
    /// The injected answer's status (400–599, default 500).
    #[serde(default)]
    pub status: Option<u16>,
    /// Delay (1–60,000 ms) before a request reaches the app.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Share of requests (0–1] delayed (default 1).
    #[serde(default)]
    pub rate: Option<f64>,
    /// How long until it ends by itself, in seconds (1–86,400, default 900).
    #[serde(default)]
    pub for_s: Option<u64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ChaosOut {
    /// `error` or `delay`.
    pub kind: String,
    pub rate: f64,
    pub status: Option<u16>,
    pub delay_ms: Option<u64>,
    pub deployment: Option<String>,
    pub until: String,
    pub set_by: String,
    pub active: bool,
    /// In words: "50% of requests answered 500 until …".
    pub summary: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct CreateProject {
    /// DNS label; also the app's URL and its deploy.toml `app.name`.
    pub name: String,
    /// Git URL (https, ssh) or a local path to a git repository. Omit for
    /// upload-only projects.
    #[serde(default)]
    pub repo: Option<String>,
    /// Pushes to this branch deploy. Default `main`.
    #[serde(default)]
    pub branch: Option<String>,
    /// HMAC secret for the GitHub webhook; generated when omitted.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceOut {
    Git {
        repo: String,
        #[serde(rename = "ref")]
        git_ref: String,
        commit: String,
        /// When the commit was made, as the webhook's push said (RFC 3339;
        /// absent for deploys from the CLI, whose commit time git holds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        committed_at: Option<String>,
    },
    Archive {
        sha256: String,
    },
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ConfigErrorOut {
    pub line: u32,
    pub column: u32,
    /// Dotted key path, e.g. `scaling.max_replicas`.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// The text of the offending line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_line: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DeploymentOut {
    pub id: String,
    pub project: String,
    /// queued, validating, building, built, deploying, running, healthy,
    /// failed, cancelled or superseded.
    pub status: String,
    pub version: u64,
    pub attempt: u32,
    pub source: SourceOut,
    /// Why it is in its current state.
    pub reason: Option<String>,
    /// deploy.toml errors when validation failed.
    pub config_errors: Vec<ConfigErrorOut>,
    /// The validated deploy.toml (typed), once validation passed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub config: Option<serde_json::Value>,
    /// The deploy.toml text as it was at the commit.
    pub config_source: Option<String>,
    pub rollback_of: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TransitionOut {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    /// Null for the record of creation.
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    /// What the step was decided on: a policy decision (`gate`, `allow`,
    /// `deny` reasons, `input`, `policy_sha256`, `data_sha256`,
    /// `policy_version`). Covered by the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub evidence: Option<serde_json::Value>,
    /// Hash chain: SHA-256 over the previous hash and this record.
    pub hash: String,
    pub prev_hash: String,
}

/// One record of the global audit trail.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AuditOut {
    pub deployment_id: String,
    pub project_id: String,
    #[serde(flatten)]
    pub transition: TransitionOut,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DeploymentDetail {
    #[serde(flatten)]
    pub deployment: DeploymentOut,
    /// Every transition, oldest first.
    pub history: Vec<TransitionOut>,
    /// Set when the deployment is live but some replicas are not healthy
    /// (crashing, failing probes): what each one last did. It keeps being
    /// restarted; roll back or deploy a fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<Vec<String>>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct CreateDeployment {
    /// Branch, tag or commit to deploy. Default: the project's branch.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CreatedDeployment {
    pub deployment: DeploymentOut,
    /// In-flight deployments of the project this one superseded.
    pub superseded: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct EventOut {
    pub seq: u64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub deployment_id: String,
    pub project: String,
    pub from: Option<String>,
    pub status: String,
    pub version: u64,
    pub attempt: u32,
    pub reason: String,
    pub actor: String,
    pub at: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DeadLetterOut {
    /// `<event seq>/<subscription>`: pass it to redrive.
    pub id: String,
    pub subscription: String,
    pub attempts: u32,
    pub last_error: String,
    pub dead_at: String,
    pub event: EventOut,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Redrive {
    /// Dead letter ids; omit to redrive all.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct Redriven {
    pub redriven: usize,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TokenOut {
    pub id: String,
    pub name: String,
    /// viewer, deployer or admin.
    pub role: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// The only project this token reaches (its name), when it is limited to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The secret: only in the answer that creates the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct CreateToken {
    pub name: String,
    /// viewer, deployer or admin.
    pub role: String,
    /// Limit the token to this project (name or id); deployer and viewer only.
    #[serde(default)]
    pub project: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct ValidationOut {
    pub valid: bool,
    pub errors: Vec<ConfigErrorOut>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct WebhookOut {
    /// pong, queued, duplicate or ignored.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentOut>,
    /// Why nothing was deployed, for `ignored`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

/// One feed item: `{"seq", "deployment_id", "project", "at", "kind": "status", "status", "from", "reason", ...}`
/// or `{"seq", ..., "kind": "log", "stream", "line"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
#[cfg_attr(feature = "openapi", schema(value_type = Object))]
pub struct FeedItemOut(pub serde_json::Value);

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Rollback {
    /// The deployment to make live again; default: the newest earlier one that was healthy.
    #[serde(default)]
    pub to: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ReplicaOut {
    pub index: u32,
    pub address: Option<String>,
    pub pid: Option<u32>,
    pub listening: bool,
    pub healthy: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub last_probe: Option<String>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// From the health sidecar: the app's CPU (% of one core) since its last report.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub threads: Option<u32>,
    pub open_fds: Option<u32>,
    /// Why the replica's health sidecar is not reporting, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<String>,
}

/// One sidecar report (or, for older data, a one-minute bucket).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct HealthSampleOut {
    pub replica: u32,
    pub at: String,
    /// 0 for one report; 60 for a one-minute bucket of older reports.
    pub span_s: u32,
    /// Share of good probes (0 or 1 for one report).
    pub probe_ok: f64,
    pub http_status: Option<u16>,
    pub latency_ms: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub threads: Option<u32>,
    pub open_fds: Option<u32>,
    pub error: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct SetSecret {
    pub value: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug)]
pub struct SecretOut {
    pub name: String,
    /// The owning project's name; absent for a secret kept from before
    /// secrets belonged to projects (no deployment resolves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub updated_at: String,
}

/// `POST /api/v1/projects/{name}/scripts`: a routing script to run now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ScriptIn {
    /// The Lua text (defines `function handle(req)`; see docs/scripts.md).
    pub source: String,
}

/// `POST /api/v1/projects/{name}/scripts/rollback`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ScriptRollbackIn {
    /// The version to run; 0: none pushed (the deployment's own script).
    /// Default: the version before the running one.
    #[serde(default)]
    pub to: Option<u32>,
}

/// How a script fares in the router: failed runs and the last one's error.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ScriptHealthOut {
    pub errors: u64,
    pub last_error: Option<String>,
    /// The script's line of the last error, when Lua knew it.
    pub line: Option<u32>,
    pub last_error_at: Option<String>,
}

/// One pushed version.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ScriptVersionOut {
    pub version: u32,
    pub sha256: String,
    pub bytes: usize,
    pub pushed_by: String,
    pub at: String,
    /// `running` or `kept`.
    pub state: String,
    pub health: ScriptHealthOut,
}

/// The script of the live deployment's `[traffic] script`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DeploymentScriptOut {
    pub deployment_id: String,
    pub path: String,
    pub sha256: String,
    /// `running`, or `overridden` while a pushed version runs.
    pub state: String,
    pub health: ScriptHealthOut,
}

/// `GET /api/v1/projects/{name}/scripts`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ScriptsOut {
    pub project: String,
    /// The pushed version that runs; null: the deployment's own, if any.
    pub running: Option<u32>,
    pub deployment_script: Option<DeploymentScriptOut>,
    /// Oldest first.
    pub versions: Vec<ScriptVersionOut>,
}

/// One interval of a deployment's traffic at the router.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TrafficPointOut {
    /// The interval's end.
    pub at: String,
    pub requests_per_s: f64,
    /// 5xx / requests (0 with none).
    pub error_rate: f64,
    /// The 99th percentile, interpolated within its histogram bucket; null with no requests.
    pub p99_ms: Option<f64>,
}

/// A deployment that serves the app, and its last minute.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServingOut {
    pub deployment_id: String,
    /// `live`, or `split` (the split's second deployment).
    pub role: String,
    /// Share of clients (0–100) it gets.
    pub share: u8,
    pub recent: Option<TrafficPointOut>,
}

/// `GET /api/v1/projects/{name}/traffic`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ProjectTrafficOut {
    pub project: String,
    /// False where no metrics source is configured: no numbers.
    pub recorded: bool,
    pub serving: Vec<ServingOut>,
    pub split: Option<SplitOut>,
    pub chaos: Option<ChaosOut>,
}

/// A gate's policy: the version in force (0: the one Bifrost ships).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PolicyOut {
    /// The gate: `deploy` or `promote`.
    pub name: String,
    pub version: u64,
    /// True while no version was stored: Bifrost's own policy is in force.
    pub shipped: bool,
    pub rego: String,
    /// The thresholds, at `data.<name>`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
    /// Per-project values over `data`: project name → object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub projects: serde_json::Value,
    pub policy_sha256: String,
    pub data_sha256: String,
    pub set_by: Option<String>,
    pub at: Option<String>,
    /// Every stored version, oldest first (who changed what, when).
    pub history: Vec<PolicyVersionOut>,
    /// An input shaped as the gate's real ones, to try the policy on
    /// (`POST …/test`; the dashboard's editor starts from it).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub sample_input: serde_json::Value,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PolicyVersionOut {
    pub version: u64,
    pub set_by: String,
    pub at: String,
    pub reason: String,
    pub hash: String,
}

/// `GET /api/v1/policies`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PoliciesOut {
    pub policies: Vec<PolicyOut>,
}

/// `PUT /api/v1/policies/{name}`: replace the policy text and/or its data.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// The Rego text (`package <name>`); unchanged when absent.
    #[serde(default)]
    pub rego: Option<String>,
    /// The whole data document (an object); unchanged when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<serde_json::Value>,
    /// The version this change was made on; refused (409) if another
    /// change came first. Default: whatever is in force.
    #[serde(default)]
    pub base_version: Option<u64>,
}

/// `PATCH /api/v1/policies/{name}/data`: change some thresholds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyDataIn {
    /// key → new value (JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub set: serde_json::Map<String, serde_json::Value>,
    /// Keys to remove (for a project: back to the policy's own value).
    #[serde(default)]
    pub unset: Vec<String>,
    /// Only for this project (its values override the policy's).
    #[serde(default)]
    pub project: Option<String>,
}

/// `POST /api/v1/policies/{name}/test`: evaluate without acting.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct PolicyTestIn {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input: serde_json::Value,
    /// Evaluate with this project's data values.
    #[serde(default)]
    pub project: Option<String>,
    /// A draft Rego text to evaluate instead of the one in force (admins;
    /// compile-checked as a change would be, nothing stored).
    #[serde(default)]
    pub rego: Option<String>,
    /// A draft data document to evaluate with instead (admins).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<serde_json::Value>,
}

/// A gate's decision: never a bare boolean.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DecisionOut {
    pub gate: String,
    pub allow: bool,
    /// The rules' messages (or the evaluation error: a policy that fails denies).
    pub deny: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input: serde_json::Value,
    pub policy_version: u64,
    pub policy_sha256: String,
    pub data_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Decided by a draft (`rego` / `data` in the request) made on
    /// `policy_version`, not by what is in force.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
}

/// `GET /api/v1/audit/verify`: every hash chain and the global anchor.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AuditVerifyOut {
    /// No problem found.
    pub ok: bool,
    pub records: usize,
    pub deployments: usize,
    pub policy_versions: usize,
    /// The newest global anchor: keep it elsewhere and pass it back as
    /// `head` later to detect a cut of the newest records.
    pub head: Option<String>,
    /// What broke, each naming the record or chain.
    pub problems: Vec<String>,
}

/// `GET /api/v1/audit/report`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AuditReportOut {
    pub since: String,
    pub project: Option<String>,
    /// Audit records the report covers.
    pub records: usize,
    /// The report, GitHub-flavoured Markdown.
    pub markdown: String,
}
