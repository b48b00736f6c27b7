//! API answers (`bifrost-api`'s wire types) → page models: only what the
//! pages show, shaped for them (labels, epoch milliseconds).

use bifrost_api::{
    ConfigErrorOut, DeploymentOut, HealthSampleOut, ProjectOut, ReplicaOut, SourceOut, TokenOut, TransitionOut,
};

use crate::model::*;

pub fn me(t: &TokenOut) -> Me {
    Me { name: t.name.clone(), role: t.role.clone() }
}

pub fn source(v: &SourceOut) -> Source {
    match v {
        SourceOut::Archive { sha256 } => {
            Source { label: format!("upload {}", sha256.get(..7).unwrap_or(sha256)), commit: None }
        }
        SourceOut::Git { git_ref, commit, .. } => {
            Source { label: format!("{git_ref}@{}", commit.get(..7).unwrap_or(commit)), commit: Some(commit.clone()) }
        }
    }
}

pub fn deployment(v: &DeploymentOut) -> Deployment {
    Deployment {
        id: v.id.clone(),
        project: v.project.clone(),
        status: v.status.clone(),
        attempt: v.attempt,
        source: source(&v.source),
        reason: v.reason.clone(),
        rollback_of: v.rollback_of.clone(),
        created_by: v.created_by.clone(),
        created_at: v.created_at.clone(),
        updated_at: v.updated_at.clone(),
    }
}

/// A project card; `live` and `latest` are the caller's to fill.
pub fn project(p: &ProjectOut) -> Project {
    Project {
        name: p.name.clone(),
        repo: p.repo.clone(),
        branch: p.branch.clone(),
        url: p.url.clone(),
        live: None,
        latest: None,
    }
}

pub fn config_error(v: &ConfigErrorOut) -> ConfigError {
    ConfigError {
        line: v.line,
        column: v.column,
        path: v.path.clone(),
        message: v.message.clone(),
        suggestion: v.suggestion.clone(),
        source_line: v.source_line.clone(),
    }
}

pub fn transition(v: &TransitionOut) -> Transition {
    Transition {
        seq: v.seq,
        at: v.at.clone(),
        actor: v.actor.clone(),
        from: v.from.clone(),
        to: v.to.clone(),
        reason: v.reason.clone(),
    }
}

pub fn health(v: &HealthSampleOut) -> Option<HealthPoint> {
    Some(HealthPoint {
        replica: v.replica,
        at_ms: epoch_ms(&v.at)?,
        probe_ok: v.probe_ok,
        latency_ms: v.latency_ms,
        cpu_percent: v.cpu_percent,
        rss_bytes: v.rss_bytes,
    })
}

pub fn replica(v: &ReplicaOut) -> Replica {
    Replica {
        index: v.index,
        address: v.address.clone(),
        pid: v.pid,
        healthy: v.healthy,
        restarts: v.restarts,
        cpu_percent: v.cpu_percent,
        rss_bytes: v.rss_bytes,
    }
}

pub fn traffic_point(v: &bifrost_api::TrafficPointOut) -> Option<crate::model::TrafficPoint> {
    Some(crate::model::TrafficPoint {
        at_ms: epoch_ms(&v.at)?,
        requests_per_s: v.requests_per_s,
        error_pct: v.error_rate * 100.0,
        p99_ms: v.p99_ms,
    })
}

/// The anomalies of an analytics answer as chart markers.
pub fn markers(answer: &serde_json::Value) -> Vec<crate::model::Marker> {
    let list = answer["anomalies"].as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .filter_map(|a| {
            let series = a["series"].as_str()?.to_string();
            let at_ms = chrono::DateTime::parse_from_rfc3339(a["at"].as_str()?).ok()?.timestamp_millis();
            let (value, baseline, score) = (a["value"].as_f64()?, a["baseline"].as_f64()?, a["score"].as_f64()?);
            let label =
                format!("anomaly in {series}: {value:.3} against a baseline of {baseline:.3} (score {score:.1})");
            Some(crate::model::Marker { series, at_ms, label })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_deployment_answer() {
        let v: DeploymentOut = serde_json::from_value(serde_json::json!({
            "id": "d01", "project": "hello", "status": "building", "version": 3, "attempt": 2,
            "source": {"kind": "git", "repo": "/r", "ref": "main", "commit": "0123456789abcdef"},
            "reason": "building", "config_errors": [], "config": null, "config_source": null,
            "rollback_of": null, "created_by": "token:admin", "created_at": "t0", "updated_at": "t1"
        }))
        .expect("a deployment answer");
        let d = deployment(&v);
        assert_eq!((d.status.as_str(), d.attempt, d.source.label.as_str()), ("building", 2, "main@0123456"));
        let up = source(&SourceOut::Archive { sha256: "abcdef0123".into() });
        assert_eq!(up.label, "upload abcdef0");
    }

    #[test]
    fn an_analytics_answers_anomalies_become_markers_and_garbage_is_skipped() {
        let answer = serde_json::json!({"anomalies": [
            {"series": "requests_per_s", "at": "2026-11-29T10:05:00+00:00", "value": 100.0, "baseline": 10.0, "score": 42.0},
            {"series": "p99_ms", "at": "not a time", "value": 1.0, "baseline": 1.0, "score": 9.0},
        ]});
        let m = markers(&answer);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].series.as_str(), m[0].at_ms), ("requests_per_s", 1_795_946_700_000));
        assert!(m[0].label.contains("100.000") && m[0].label.contains("score 42.0"), "{}", m[0].label);
        assert!(markers(&serde_json::json!({})).is_empty());
    }
}
