//! Conversions from the domain (feature `domain`): the only place domain
//! types meet the wire.

use bifrost_core::config::ConfigError;
use bifrost_core::domain::{ApiToken, AuditRecord, Deployment, Project, SecretInfo, Source};
use bifrost_core::events::{DeadLetter, Event};

use crate::*;

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
            chaos: p.chaos.map(ChaosOut::from),
            split: p.split.map(|s| SplitOut {
                deployment: s.deployment,
                weight: s.weight,
                set_by: s.set_by.to_string(),
                at: rfc3339(&s.at),
            }),
            rollout: p.rollout.map(|r| RolloutOut {
                deployment: r.deployment,
                stable: r.stable,
                step: r.step + 1,
                weight: r.weight,
                window_started: rfc3339(&r.window_started),
                inconclusive: r.inconclusive,
                errors: r.errors,
                paused: r.paused,
                promote_requested: r.promote_requested,
                last_decision: r.last_decision,
            }),
        }
    }
}

impl From<bifrost_core::domain::Chaos> for ChaosOut {
    fn from(c: bifrost_core::domain::Chaos) -> Self {
        use bifrost_core::domain::Fault;
        let (kind, rate, status, delay_ms) = match c.fault {
            Fault::Error { rate, status } => ("error", rate, Some(status), None),
            Fault::Delay { rate, delay_ms } => ("delay", rate, None, Some(delay_ms)),
        };
        ChaosOut {
            kind: kind.into(),
            rate,
            status,
            delay_ms,
            active: c.active(bifrost_core::domain::now()),
            summary: c.to_string(),
            deployment: c.deployment,
            until: rfc3339(&c.until),
            set_by: c.set_by.to_string(),
        }
    }
}

impl From<Source> for SourceOut {
    fn from(s: Source) -> Self {
        match s {
            Source::Git { repo, git_ref, commit, committed_at } => {
                SourceOut::Git { repo, git_ref, commit, committed_at: committed_at.as_ref().map(rfc3339) }
            }
            Source::Archive { sha256, .. } => SourceOut::Archive { sha256 },
        }
    }
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

impl From<AuditRecord> for TransitionOut {
    fn from(a: AuditRecord) -> Self {
        TransitionOut {
            seq: a.seq,
            at: rfc3339(&a.at),
            actor: a.actor.to_string(),
            from: a.from.map(|s| s.to_string()),
            to: a.to.to_string(),
            reason: a.reason,
            evidence: a.evidence.and_then(|e| serde_json::from_str(&e).ok()),
            hash: a.hash,
            prev_hash: a.prev_hash,
        }
    }
}

impl From<AuditRecord> for AuditOut {
    fn from(a: AuditRecord) -> Self {
        AuditOut { deployment_id: a.deployment_id.clone(), project_id: a.project_id.clone(), transition: a.into() }
    }
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

pub fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<bifrost_core::domain::FeedItem> for FeedItemOut {
    fn from(f: bifrost_core::domain::FeedItem) -> Self {
        FeedItemOut(serde_json::to_value(f).unwrap_or_default())
    }
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

impl SecretOut {
    pub fn of(i: SecretInfo, projects: &[Project]) -> Self {
        let project =
            i.project_id.map(|id| projects.iter().find(|p| p.id == id).map_or(id.clone(), |p| p.name.clone()));
        SecretOut { name: i.name, project, updated_at: rfc3339(&i.updated_at) }
    }
}
