//! API answers (JSON) → page models. Lenient on purpose: a field the API
//! adds later is ignored, a missing optional one is `None`.

use serde_json::Value;

use crate::model::*;

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn opt_s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or_default()
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

pub fn me(v: &Value) -> Me {
    Me { name: s(v, "name"), role: s(v, "role") }
}

pub fn source(v: &Value) -> Source {
    match v.get("kind").and_then(Value::as_str) {
        Some("archive") => {
            let sha = s(v, "sha256");
            Source { label: format!("upload {}", sha.get(..7).unwrap_or(&sha)), commit: None }
        }
        _ => {
            let commit = s(v, "commit");
            Source { label: format!("{}@{}", s(v, "ref"), commit.get(..7).unwrap_or(&commit)), commit: Some(commit) }
        }
    }
}

pub fn deployment(v: &Value) -> Deployment {
    Deployment {
        id: s(v, "id"),
        project: s(v, "project"),
        status: s(v, "status"),
        attempt: u(v, "attempt") as u32,
        source: v.get("source").map(source).unwrap_or(Source { label: String::new(), commit: None }),
        reason: opt_s(v, "reason"),
        rollback_of: opt_s(v, "rollback_of"),
        created_by: s(v, "created_by"),
        created_at: s(v, "created_at"),
        updated_at: s(v, "updated_at"),
    }
}

pub fn config_error(v: &Value) -> ConfigError {
    ConfigError {
        line: u(v, "line") as u32,
        column: u(v, "column") as u32,
        path: s(v, "path"),
        message: s(v, "message"),
        suggestion: opt_s(v, "suggestion"),
        source_line: opt_s(v, "source_line"),
    }
}

pub fn transition(v: &Value) -> Transition {
    Transition {
        seq: u(v, "seq"),
        at: s(v, "at"),
        actor: s(v, "actor"),
        from: opt_s(v, "from"),
        to: s(v, "to"),
        reason: s(v, "reason"),
    }
}

pub fn health(v: &Value) -> Option<HealthPoint> {
    Some(HealthPoint {
        replica: u(v, "replica") as u32,
        at_ms: epoch_ms(v.get("at")?.as_str()?)?,
        probe_ok: f(v, "probe_ok").unwrap_or_default(),
        latency_ms: f(v, "latency_ms"),
        cpu_percent: f(v, "cpu_percent"),
        rss_bytes: v.get("rss_bytes").and_then(Value::as_u64),
    })
}

pub fn replica(v: &Value) -> Replica {
    Replica {
        index: u(v, "index") as u32,
        address: opt_s(v, "address"),
        pid: v.get("pid").and_then(Value::as_u64).map(|p| p as u32),
        healthy: v.get("healthy").and_then(Value::as_bool).unwrap_or_default(),
        restarts: u(v, "restarts") as u32,
        cpu_percent: f(v, "cpu_percent"),
        rss_bytes: v.get("rss_bytes").and_then(Value::as_u64),
    }
}

pub fn array<T>(v: &Value, each: impl Fn(&Value) -> T) -> Vec<T> {
    v.as_array().map(|a| a.iter().map(each).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_deployment_answer() {
        let v = serde_json::json!({
            "id": "d01", "project": "hello", "status": "building", "attempt": 2,
            "source": {"kind": "git", "repo": "/r", "ref": "main", "commit": "0123456789abcdef"},
            "reason": "building", "created_by": "token:admin", "created_at": "t0", "updated_at": "t1"
        });
        let d = deployment(&v);
        assert_eq!((d.status.as_str(), d.attempt, d.source.label.as_str()), ("building", 2, "main@0123456"));
        let up = source(&serde_json::json!({"kind": "archive", "sha256": "abcdef0123"}));
        assert_eq!(up.label, "upload abcdef0");
    }
}
