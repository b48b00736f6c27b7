//! Policy gates: the platform asks a Rego policy before it acts, and the
//! answer is never a bare boolean (seed 003): `allow` comes with the `deny`
//! messages the rules produced, the input they saw and the sha256 of the
//! policy and of its data, so a decision can be audited and replayed.
//!
//! Two gates exist ([`Gate`]): `deploy` (before a built deployment starts)
//! and `promote` (before each canary step). Each is one Rego package of the
//! same name whose thresholds live in a data document at `data.<gate>`,
//! never in the rules: changing a limit is a data change.
//!
//! Evaluation is in-process (regorus) and fails closed: a policy that does
//! not evaluate, or runs past [`EVAL_LIMIT`], denies with the error as its
//! reason.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The longest one evaluation may run (wall clock, checked cooperatively).
pub const EVAL_LIMIT: Duration = Duration::from_millis(100);
/// The largest policy text accepted.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// A question the platform asks before it acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Before a built deployment starts (`built → deploying`).
    Deploy,
    /// Before each canary step and before promotion.
    Promote,
}

impl Gate {
    pub const ALL: [Gate; 2] = [Gate::Deploy, Gate::Promote];

    pub fn name(self) -> &'static str {
        match self {
            Gate::Deploy => "deploy",
            Gate::Promote => "promote",
        }
    }

    /// The policy Bifrost ships for this gate: (rego, data).
    pub fn shipped(self) -> (&'static str, Value) {
        let (rego, data) = match self {
            Gate::Deploy => (include_str!("shipped/deploy.rego"), include_str!("shipped/deploy.json")),
            Gate::Promote => (include_str!("shipped/promote.rego"), include_str!("shipped/promote.json")),
        };
        // The shipped data is checked by a unit test; an empty object is the
        // safe reading should that ever fail.
        (rego, serde_json::from_str(data).unwrap_or_else(|_| Value::Object(Default::default())))
    }

    /// An input shaped as the gate's real ones (docs/policies.md), to try a
    /// policy on: the dashboard's editor starts from it.
    pub fn sample_input(self) -> Value {
        let window = |requests: u64, errors: u64, p50: f64, p99: f64| {
            serde_json::json!({"requests": requests, "errors": errors,
                "error_rate": errors as f64 / requests as f64, "p50_ms": p50, "p99_ms": p99})
        };
        match self {
            Gate::Deploy => serde_json::json!({
                "action": "deploy", "app": "web", "deployment": "d-example", "actor": "token:alice",
                "config": {"scaling": {"min_replicas": 1, "max_replicas": 2}},
                "host": {"disk_free_gb": 42, "cpu_load": 0.4, "memory_available_mb": 2048},
            }),
            Gate::Promote => serde_json::json!({
                "action": "promote", "app": "web", "deployment": "d-canary", "stable_deployment": "d-stable",
                "step": 1, "weight": 10, "window_s": 60,
                "overrides": {"max_error_rate": null, "max_p99_ms": null},
                "canary": window(120, 3, 8.0, 95.0), "stable": window(1080, 2, 7.5, 80.0),
            }),
        }
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Gate {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Gate::ALL.into_iter().find(|g| g.name() == s).ok_or_else(|| PolicyError {
            message: format!("unknown policy {s:?} (expected one of deploy, promote)"),
            line: None,
        })
    }
}

/// Why a policy or its data was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct PolicyError {
    pub message: String,
    /// The policy line the error is at, when it has one.
    pub line: Option<u32>,
}

impl PolicyError {
    fn plain(message: impl Into<String>) -> Self {
        PolicyError { message: message.into(), line: None }
    }
}

/// A gate's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub gate: Gate,
    pub allow: bool,
    /// The rules' messages (or, fail closed, the evaluation error).
    pub deny: Vec<String>,
    /// What the policy was asked about.
    pub input: Value,
    pub policy_sha256: String,
    pub data_sha256: String,
    /// The evaluation failed (the decision is a deny because of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Decision {
    /// `[PASS] policy deploy` or `[DENY] reason` lines, then
    /// `[BLOCKED] … denied by policy …` — seed 003's terminal output.
    pub fn lines(&self, what: &str) -> Vec<String> {
        if self.allow {
            return vec![format!("[PASS] policy {} allowed {what}", self.gate)];
        }
        let mut out: Vec<String> = self.deny.iter().map(|d| format!("[DENY] {d}")).collect();
        out.push(format!("[BLOCKED] {what} denied by policy {}", self.gate));
        out
    }

    /// One line for a status reason: `policy deploy: allowed` or
    /// `denied by policy deploy: A; B`.
    pub fn summary(&self) -> String {
        if self.allow {
            format!("policy {}: allowed", self.gate)
        } else {
            format!("denied by policy {}: {}", self.gate, self.deny.join("; "))
        }
    }
}

/// SHA-256 of a policy's text, hex.
pub fn sha256_text(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// SHA-256 of a data document in its canonical form (serde_json's maps are
/// sorted), hex.
pub fn sha256_data(data: &Value) -> String {
    sha256_text(&serde_json::to_string(data).unwrap_or_default())
}

/// Checks a policy for `gate` before it is stored: it must compile and
/// declare `package <gate>`. The error names the line when regorus gives one.
pub fn check(gate: Gate, rego: &str) -> Result<(), PolicyError> {
    if rego.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::plain(format!(
            "policy {gate} is {} bytes; the limit is {MAX_POLICY_BYTES}",
            rego.len()
        )));
    }
    let mut engine = regorus::Engine::new();
    engine.add_policy(format!("{gate}.rego"), rego.to_string()).map_err(|e| compile_error(gate, &e))?;
    let packages = engine.get_packages().map_err(|e| compile_error(gate, &e))?;
    let want = format!("data.{gate}");
    if !packages.contains(&want) {
        let found = packages.first().map(|p| p.trim_start_matches("data.").to_string()).unwrap_or_default();
        return Err(PolicyError {
            message: format!("policy {gate} must declare `package {gate}` (found `package {found}`)"),
            line: rego.lines().position(|l| l.trim_start().starts_with("package ")).map(|i| i as u32 + 1),
        });
    }
    // A policy whose rules cannot evaluate at all (a bad reference) fails
    // here too, on the shipped data and an empty input.
    let (_, data) = gate.shipped();
    let mut engine = prepared(gate, rego, &data).map_err(PolicyError::plain)?;
    engine.set_input(regorus::Value::new_object());
    engine.eval_rule(format!("data.{gate}.deny")).map_err(|e| compile_error(gate, &e))?;
    Ok(())
}

/// Checks a data document: an object of thresholds.
pub fn check_data(gate: Gate, data: &Value) -> Result<(), PolicyError> {
    if !data.is_object() {
        return Err(PolicyError::plain(format!("the data of policy {gate} must be a JSON object, not {data}")));
    }
    Ok(())
}

fn compile_error(gate: Gate, e: &impl std::fmt::Display) -> PolicyError {
    let text = e.to_string();
    // regorus: "<file>:<line>:<col>: error: …" followed by the source line.
    let prefix = format!("{gate}.rego:");
    let line = text
        .find(&prefix)
        .and_then(|i| text[i + prefix.len()..].split(':').next().and_then(|n| n.trim().parse::<u32>().ok()));
    // The message is the `error: …` line; the rest is the source excerpt.
    let what = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or(&text)
        .trim();
    let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
    PolicyError { message: format!("policy {gate} does not compile: {what}{at}"), line }
}

/// An engine with the policy and its data loaded, bounded in time.
fn prepared(gate: Gate, rego: &str, data: &Value) -> Result<regorus::Engine, String> {
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: EVAL_LIMIT,
        check_interval: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
    });
    engine.add_policy(format!("{gate}.rego"), rego.to_string()).map_err(|e| e.to_string())?;
    let doc = serde_json::json!({ gate.name(): data });
    engine.add_data(regorus::Value::from(doc)).map_err(|e| e.to_string())?;
    Ok(engine)
}

/// Evaluates gates, keeping one prepared engine per (gate, policy, data) so
/// a decision costs an evaluation, not a compile.
#[derive(Default)]
pub struct Evaluator {
    engines: Mutex<HashMap<(Gate, String, String), regorus::Engine>>,
}

/// Engines kept; past this the cache starts over (policies rarely change).
const CACHED_ENGINES: usize = 64;

impl Evaluator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks `gate`'s policy about `input`. Fails closed.
    pub fn decide(&self, gate: Gate, rego: &str, data: &Value, input: Value) -> Decision {
        let policy_sha256 = sha256_text(rego);
        let data_sha256 = sha256_data(data);
        let key = (gate, policy_sha256.clone(), data_sha256.clone());
        let cached = self.engines.lock().ok().and_then(|m| m.get(&key).cloned());
        let engine = match cached {
            Some(e) => Ok(e),
            None => prepared(gate, rego, data).inspect(|e| {
                if let Ok(mut m) = self.engines.lock() {
                    if m.len() >= CACHED_ENGINES {
                        m.clear();
                    }
                    m.insert(key, e.clone());
                }
            }),
        };
        let outcome = engine.and_then(|mut engine| {
            engine.set_input(regorus::Value::from(input.clone()));
            engine.eval_rule(format!("data.{gate}.deny")).map_err(|e| e.to_string())
        });
        let (allow, deny, error) = match outcome {
            Ok(v) => match deny_messages(&v) {
                Ok(deny) => (deny.is_empty(), deny, None),
                Err(e) => (false, vec![format!("policy {gate} failed: {e}")], Some(e)),
            },
            Err(e) => {
                let what = e.lines().find_map(|l| l.trim().strip_prefix("error:")).unwrap_or(&e).trim().to_string();
                (false, vec![format!("policy {gate} failed: {what}")], Some(e))
            }
        };
        Decision { gate, allow, deny, input, policy_sha256, data_sha256, error }
    }
}

/// `deny` as a sorted list of messages: a set of strings; undefined (no
/// rule fired) is empty; anything else is the policy's error.
fn deny_messages(v: &regorus::Value) -> Result<Vec<String>, String> {
    match v {
        regorus::Value::Undefined => Ok(vec![]),
        regorus::Value::Set(s) => s
            .iter()
            .map(|m| match m {
                regorus::Value::String(s) => Ok(s.to_string()),
                other => Ok(other.to_string()),
            })
            .collect(),
        other => Err(format!("`deny` must be a set of messages, found {other}")),
    }
}

#[cfg(test)]
mod tests;
