//! `deploy.toml`: the typed configuration, its defaults, and the validator
//! that reports every problem at once with line, column and key path.

mod defaults;
mod explain;
pub mod plan;
mod schema;
mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use defaults::*;

/// Largest deploy.toml accepted.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
pub use explain::{Explained, explain};
pub use schema::{KEYS, KeyDoc, SECTIONS, json_schema};
pub use values::{Cpu, Duration, Memory, RateLimit, RateLimitKey};

/// Parses and validates a deploy.toml. `Err` holds every problem found,
/// sorted by position.
pub fn parse(source: &str) -> Result<DeployConfig, Vec<ConfigError>> {
    validate::validate(source)
}

/// An error about an otherwise valid file, placed at `section.key`'s value
/// (e.g. an app name that does not match its project).
pub fn error_at(source: &str, section: &str, key: &str, expected: &str, found: &str) -> ConfigError {
    let (line, column) = validate::locate(source, section, key).unwrap_or((1, 1));
    let path = format!("{section}.{key}");
    ConfigError {
        line,
        column,
        message: format!("{path}: expected {expected}, found {found}"),
        path,
        expected: Some(expected.to_string()),
        found: Some(found.to_string()),
        suggestion: None,
        source_line: None,
    }
}

/// One problem in a deploy.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    /// 1-based line of the offending key or value.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
    /// Dotted key path, e.g. `scaling.max_replicas`; empty for syntax errors.
    pub path: String,
    /// The whole story: what was expected, what was found, any suggestion.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// "did you mean" suggestion for unknown keys and sections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// The text of the offending line, kept with the error so the dashboard
    /// can show it in place after the source is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_line: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deploy.toml:{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Fills each error's `source_line` from the text it was found in.
pub fn attach_source_lines(source: &str, errors: &mut [ConfigError]) {
    let lines: Vec<&str> = source.lines().collect();
    for e in errors {
        e.source_line = lines.get(e.line.saturating_sub(1) as usize).map(|l| l.to_string());
    }
}

/// Renders errors like a compiler: location, message, the source line and a caret.
pub fn render_errors(source: &str, errors: &[ConfigError], file: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for e in errors {
        out.push_str(&format!("{file}:{}:{}: error: {}\n", e.line, e.column, e.message));
        if let Some(text) = lines.get(e.line.saturating_sub(1) as usize) {
            let gutter = e.line.to_string();
            out.push_str(&format!("{gutter} | {text}\n"));
            let pad: String = text
                .chars()
                .take(e.column.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{} | {pad}^\n", " ".repeat(gutter.len())));
        }
    }
    out
}

/// A validated deploy.toml with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployConfig {
    pub app: App,
    pub build: Build,
    pub run: Run,
    pub scaling: Scaling,
    pub health: Health,
    pub resources: Resources,
    pub env: BTreeMap<String, EnvValue>,
    pub rollout: Rollout,
    pub traffic: Traffic,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub runtime: Runtime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Rust,
    Go,
    Python,
    Node,
    Static,
    Docker,
}

impl Runtime {
    pub const ALL: [Runtime; 6] =
        [Runtime::Rust, Runtime::Go, Runtime::Python, Runtime::Node, Runtime::Static, Runtime::Docker];
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Rust => "rust",
            Runtime::Go => "go",
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Static => "static",
            Runtime::Docker => "docker",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// Replaces the runtime's default build.
    pub command: Option<String>,
    /// For `runtime = "docker"` (default `Dockerfile`).
    pub dockerfile: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Replaces the runtime's default start command.
    pub command: Option<String>,
    /// The port the app listens on in a container; embedded, `$PORT` is a
    /// free loopback port instead.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Average CPU % (of the request) the autoscaler aims for, 1-100.
    pub cpu_target: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: Cpu,
    pub memory: Memory,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Value(String),
    Secret { secret: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub strategy: Strategy,
    /// Canary traffic percentages, strictly increasing, ending at 100.
    pub steps: Vec<u32>,
    pub analysis_interval: Duration,
    /// 0.0-1.0: the canary's error-rate ceiling.
    pub max_error_rate: f64,
    pub max_p99_ms: u32,
    /// Canary requests a window needs to be judged; fewer is inconclusive.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u32,
    /// What three inconclusive windows in a row lead to.
    #[serde(default)]
    pub on_no_data: OnNoData,
    /// After going live, how long a failure rolls the app back by itself.
    #[serde(default = "defaults::bake")]
    pub bake: Duration,
}

/// What a canary does after three windows with too little traffic to judge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNoData {
    /// Wait for `bifrost rollout promote` / `abort`.
    #[default]
    Pause,
    Rollback,
    Promote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Rolling,
    Canary,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub rate_limit: Option<RateLimit>,
    /// Whose requests one limit counts (default: the whole app's).
    #[serde(default)]
    pub rate_limit_key: RateLimitKey,
    /// Requests allowed at once above the steady rate (default: one
    /// second's worth of the rate, at least 1).
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    /// Request headers set and removed on the way to the app.
    pub headers: Headers,
    /// Response headers set and removed on the way back.
    #[serde(default)]
    pub response_headers: Headers,
    /// A Lua script in the repo, run by the router for every request.
    pub script: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Headers {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

pub const MAX_REPLICAS_LIMIT: u32 = 100;
