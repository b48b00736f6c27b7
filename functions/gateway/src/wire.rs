//! Wire types of the REST API (what clients see), converted from the domain
//! with `From`. They carry the OpenAPI schemas.

use bifrost_core::config::ConfigError;
use bifrost_core::domain::{ApiToken, AuditRecord, Deployment, Project, SecretInfo, Source};
use bifrost_core::events::{DeadLetter, Event};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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
}

impl ProjectOut {
    pub fn from_project(p: Project, public_url: &str, app_domain: &str, show_secret: bool) -> Self {
        ProjectOut {
            url: format!("http://{}.{app_domain}/", p.name),
            id: p.id,
            name: p.name,
            repo: p.repo,
            branch: p.branch,
            live_deployment_id: p.live_deployment_id,
            created_at: rfc3339(&p.created_at),
            webhook_url: format!("{}/api/v1/webhooks/github", public_url.trim_end_matches('/')),
            webhook_secret: if show_secret { p.webhook_secret } else { None },
        }
    }
}

#[derive(Deserialize, ToSchema, Debug)]
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

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceOut {
    Git {
        repo: String,
        #[serde(rename = "ref")]
        git_ref: String,
        commit: String,
    },
    Archive {
        sha256: String,
    },
}

impl From<Source> for SourceOut {
    fn from(s: Source) -> Self {
        match s {
            Source::Git { repo, git_ref, commit } => SourceOut::Git { repo, git_ref, commit },
            Source::Archive { sha256, .. } => SourceOut::Archive { sha256 },
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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

impl From<ConfigError> for ConfigErrorOut {
    fn from(e: ConfigError) -> Self {
        ConfigErrorOut {
            line: e.line,
            column: e.column,
            path: e.path,
            message: e.message,
            expected: e.expected,
            found: e.found,
            suggestion: e.suggestion,
            source_line: e.source_line,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// The deploy.toml text as it was at the commit.
    pub config_source: Option<String>,
    pub rollback_of: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Deployment> for DeploymentOut {
    fn from(d: Deployment) -> Self {
        let (config, config_source) = match d.config {
            Some(s) => (serde_json::to_value(&s.config).ok(), Some(s.source)),
            None => (None, None),
        };
        DeploymentOut {
            id: d.id,
            project: d.project,
            status: d.status.to_string(),
            version: d.version,
            attempt: d.attempt,
            source: d.source.into(),
            reason: d.reason,
            config_errors: d.config_errors.into_iter().map(Into::into).collect(),
            config,
            config_source,
            rollback_of: d.rollback_of,
            created_by: d.created_by.to_string(),
            created_at: rfc3339(&d.created_at),
            updated_at: rfc3339(&d.updated_at),
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct TransitionOut {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    /// Null for the record of creation.
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    /// Hash chain: SHA-256 over the previous hash and this record.
    pub hash: String,
    pub prev_hash: String,
}

impl From<AuditRecord> for TransitionOut {
    fn from(a: AuditRecord) -> Self {
        TransitionOut {
            seq: a.seq,
            at: rfc3339(&a.at),
            actor: a.actor.to_string(),
            from: a.from.map(|s| s.to_string()),
            to: a.to.to_string(),
            reason: a.reason,
            hash: a.hash,
            prev_hash: a.prev_hash,
        }
    }
}

/// One record of the global audit trail.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct AuditOut {
    pub deployment_id: String,
    pub project_id: String,
    #[serde(flatten)]
    pub transition: TransitionOut,
}

impl From<AuditRecord> for AuditOut {
    fn from(a: AuditRecord) -> Self {
        AuditOut { deployment_id: a.deployment_id.clone(), project_id: a.project_id.clone(), transition: a.into() }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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

#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct CreateDeployment {
    /// Branch, tag or commit to deploy. Default: the project's branch.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct CreatedDeployment {
    pub deployment: DeploymentOut,
    /// In-flight deployments of the project this one superseded.
    pub superseded: Vec<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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

impl From<Event> for EventOut {
    fn from(e: Event) -> Self {
        EventOut {
            seq: e.seq,
            id: e.id,
            kind: e.kind,
            deployment_id: e.deployment_id,
            project: e.project,
            from: e.from.map(|s| s.to_string()),
            status: e.status.to_string(),
            version: e.version,
            attempt: e.attempt,
            reason: e.reason,
            actor: e.actor.to_string(),
            at: rfc3339(&e.at),
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct DeadLetterOut {
    /// `<event seq>/<subscription>`: pass it to redrive.
    pub id: String,
    pub subscription: String,
    pub attempts: u32,
    pub last_error: String,
    pub dead_at: String,
    pub event: EventOut,
}

impl From<DeadLetter> for DeadLetterOut {
    fn from(d: DeadLetter) -> Self {
        DeadLetterOut {
            id: d.id,
            subscription: d.subscription,
            attempts: d.attempts,
            last_error: d.last_error,
            dead_at: rfc3339(&d.dead_at),
            event: d.event.into(),
        }
    }
}

#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct Redrive {
    /// Dead letter ids; omit to redrive all.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct Redriven {
    pub redriven: usize,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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

impl TokenOut {
    /// With the name of the project it is limited to, looked up in `projects`.
    pub fn with_project(t: ApiToken, projects: &[Project]) -> Self {
        let project = t
            .project_id
            .as_ref()
            .map(|id| projects.iter().find(|p| &p.id == id).map_or(id.clone(), |p| p.name.clone()));
        TokenOut { project, ..t.into() }
    }
}

impl From<ApiToken> for TokenOut {
    fn from(t: ApiToken) -> Self {
        TokenOut {
            id: t.id,
            name: t.name,
            role: t.role.to_string(),
            created_at: rfc3339(&t.created_at),
            last_used_at: t.last_used_at.as_ref().map(rfc3339),
            project: t.project_id,
            token: None,
        }
    }
}

#[derive(Deserialize, ToSchema, Debug)]
pub struct CreateToken {
    pub name: String,
    /// viewer, deployer or admin.
    pub role: String,
    /// Limit the token to this project (name or id); deployer and viewer only.
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct ValidationOut {
    pub valid: bool,
    pub errors: Vec<ConfigErrorOut>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
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

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

pub fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One feed item: `{"seq", "deployment_id", "project", "at", "kind": "status", "status", "from", "reason", ...}`
/// or `{"seq", ..., "kind": "log", "stream", "line"}`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
#[schema(value_type = Object)]
pub struct FeedItemOut(pub serde_json::Value);

impl From<bifrost_core::domain::FeedItem> for FeedItemOut {
    fn from(f: bifrost_core::domain::FeedItem) -> Self {
        FeedItemOut(serde_json::to_value(f).unwrap_or_default())
    }
}

#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct Rollback {
    /// The deployment to make live again; default: the newest earlier one that was healthy.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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

impl From<bifrost_core::domain::HealthSample> for HealthSampleOut {
    fn from(h: bifrost_core::domain::HealthSample) -> Self {
        HealthSampleOut {
            replica: h.replica,
            at: h.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            span_s: h.span_s,
            probe_ok: h.probe_ok,
            http_status: h.http_status,
            latency_ms: h.latency_ms,
            cpu_percent: h.cpu_percent,
            rss_bytes: h.rss_bytes,
            threads: h.threads,
            open_fds: h.open_fds,
            error: h.error,
        }
    }
}

impl From<bifrost_core::ports::ReplicaStatus> for ReplicaOut {
    fn from(r: bifrost_core::ports::ReplicaStatus) -> Self {
        ReplicaOut {
            index: r.index,
            address: r.address,
            pid: r.pid,
            listening: r.listening,
            healthy: r.healthy,
            consecutive_successes: r.consecutive_successes,
            consecutive_failures: r.consecutive_failures,
            last_probe: r.last_probe,
            restarts: r.restarts,
            last_exit: r.last_exit,
            cpu_percent: r.cpu_percent,
            rss_bytes: r.rss_bytes,
            threads: r.threads,
            open_fds: r.open_fds,
            sidecar: r.sidecar,
        }
    }
}

#[derive(Deserialize, ToSchema, Debug)]
pub struct SetSecret {
    pub value: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SecretOut {
    pub name: String,
    /// The owning project's name; absent for a secret kept from before
    /// secrets belonged to projects (no deployment resolves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub updated_at: String,
}

impl SecretOut {
    pub fn of(i: SecretInfo, projects: &[Project]) -> Self {
        let project =
            i.project_id.map(|id| projects.iter().find(|p| p.id == id).map_or(id.clone(), |p| p.name.clone()));
        SecretOut { name: i.name, project, updated_at: rfc3339(&i.updated_at) }
    }
}
