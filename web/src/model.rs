//! What the pages show, shared by the server (which fills it from the API)
//! and the browser (which patches it from live events). Only the fields the
//! dashboard uses; the API's wire types are `bifrost-api`'s, converted in
//! `server/convert.rs`.

use serde::{Deserialize, Serialize};

/// The signed-in token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Me {
    pub name: String,
    /// viewer, deployer or admin.
    pub role: String,
}

impl Me {
    pub fn can_deploy(&self) -> bool {
        matches!(self.role.as_str(), "deployer" | "admin")
    }
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// `main@1a2b3c4` or `upload 9f8e7d6`.
    pub label: String,
    pub commit: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub project: String,
    pub status: String,
    pub attempt: u32,
    pub source: Source,
    pub reason: Option<String>,
    pub rollback_of: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Deployment {
    pub fn in_flight(&self) -> bool {
        !matches!(self.status.as_str(), "healthy" | "failed" | "cancelled" | "superseded")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub repo: Option<String>,
    pub branch: String,
    pub url: String,
    pub live: Option<Deployment>,
    /// The newest deployment, when it is not the live one.
    pub latest: Option<Deployment>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigError {
    pub line: u32,
    pub column: u32,
    pub path: String,
    pub message: String,
    pub suggestion: Option<String>,
    pub source_line: Option<String>,
}

/// One state change of a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub stream: String,
    pub line: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthPoint {
    pub replica: u32,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub probe_ok: f64,
    pub latency_ms: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    pub index: u32,
    pub address: Option<String>,
    pub pid: Option<u32>,
    pub healthy: bool,
    pub restarts: u32,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
}

/// Everything the deployment page needs, in one answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentPage {
    pub me: Me,
    pub deployment: Deployment,
    pub url: String,
    pub config_errors: Vec<ConfigError>,
    pub config_source: Option<String>,
    pub history: Vec<Transition>,
    pub logs: Vec<LogLine>,
    /// The feed position the page was rendered at: live events resume here.
    pub last_seq: u64,
    pub health: Vec<HealthPoint>,
    /// The router's 5-second intervals of this deployment (while it serves).
    #[serde(default)]
    pub traffic: Vec<TrafficPoint>,
    pub replicas: Vec<Replica>,
    /// Live, but some replicas are not healthy: what each last did (they
    /// keep being restarted).
    #[serde(default)]
    pub degraded: Vec<String>,
    /// `Some(still rolling out)` when this deployment is or was a canary
    /// (the rollout view is built on the server).
    #[serde(default)]
    pub rollout: Option<bool>,
    /// The project's anomalies of the last day (the charts' markers).
    #[serde(default)]
    pub anomalies: Vec<Marker>,
}

/// An anomaly an analytics run found, as a chart marks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// `cpu_cores`, `rss_mib`, `requests_per_s`, `error_rate`, `p99_ms` or
    /// `cost_per_hour`.
    pub series: String,
    /// The start of its 5-minute point (ms since the Unix epoch).
    pub at_ms: i64,
    /// What a hover says: value, baseline and score.
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectPage {
    pub me: Me,
    pub project: Project,
    pub deployments: Vec<Deployment>,
    pub webhook_url: String,
}

/// One interval of a deployment's traffic at the router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficPoint {
    /// Milliseconds since the Unix epoch (the interval's end).
    pub at_ms: i64,
    pub requests_per_s: f64,
    /// 0–100.
    pub error_pct: f64,
    pub p99_ms: Option<f64>,
}

/// A deployment serving the app, with its last minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Serving {
    pub deployment_id: String,
    /// `live` or `split`.
    pub role: String,
    pub share: u8,
    pub recent: Option<TrafficPoint>,
}

/// A routing script, the deployment's own or a pushed version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptRow {
    pub name: String,
    pub state: String,
    pub sha256: String,
    pub by: String,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// A project's traffic panel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectTraffic {
    pub recorded: bool,
    pub serving: Vec<Serving>,
    /// In words, e.g. "50% of requests answered 503 until …".
    pub chaos: Option<String>,
    pub split: Option<String>,
    pub scripts: Vec<ScriptRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub deployment_id: String,
    pub project: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub subscription: String,
    pub attempts: u32,
    pub last_error: String,
    pub dead_at: String,
    pub deployment_id: String,
    pub project: String,
    pub event: String,
}

/// A live event from the feed (`status`, `log`) or a sidecar report (`health`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FeedEvent {
    #[serde(default)]
    pub seq: u64,
    pub deployment_id: String,
    #[serde(default)]
    pub project: String,
    pub at: String,
    #[serde(default)]
    pub kind: Option<String>,
    // status
    pub from: Option<String>,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub actor: Option<String>,
    pub attempt: Option<u32>,
    // log
    pub stream: Option<String>,
    pub line: Option<String>,
    // health
    pub replica: Option<u32>,
    pub probe_ok: Option<f64>,
    pub latency_ms: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
}

/// The pipeline's steps in order; `failed` and the other ends are shown apart.
pub const PIPELINE: [&str; 7] = ["queued", "validating", "building", "built", "deploying", "running", "healthy"];

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time
/// (`2026-11-23T10:00:00.123Z` or `+00:00`), without a date library: the
/// browser build stays small.
pub fn epoch_ms(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ms = 0;
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        rest = &frac[digits.len()..];
        let padded = format!("{:0<3}", &digits[..digits.len().min(3)]);
        ms = padded.parse::<i64>().ok()?;
    }
    let offset_min = match rest {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 60 + o.get(4..6)?.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60) * 1000) + ms)
}

/// `850 ms`, `12.4 s`, `3 min 05 s`, `2 h 10 min`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// `2026-11-23 10:00:00` from an RFC 3339 time (UTC, as stored).
pub fn clock(t: &str) -> String {
    match (t.get(0..10), t.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}"),
        _ => t.to_string(),
    }
}

/// A path segment from a user, percent-escaped before it reaches a URL.
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn short_id(id: &str) -> &str {
    id.get(..id.len().min(12)).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ms_matches_known_instants() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_ms("2000-03-01T00:00:00.5Z"), Some(951_868_800_500));
        assert_eq!(epoch_ms("2026-11-23T10:00:00.123+01:00"), Some(1_795_424_400_123));
        assert_eq!(epoch_ms("2026-11-23T10:00:00.123456789Z"), Some(1_795_428_000_123));
        assert_eq!(epoch_ms("yesterday"), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_400), "12.4 s");
        assert_eq!(duration(185_000), "3 min 05 s");
        assert_eq!(duration(7_800_000), "2 h 10 min");
    }
}
