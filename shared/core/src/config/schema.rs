//! The key table: every deploy.toml key with its type, default and meaning.
//! It feeds "did you mean" suggestions, the shipped JSON Schema
//! (`schemas/deploy.schema.json`) and a test that docs/deploy-toml.md names
//! every key.

use serde_json::{Value, json};

pub struct KeyDoc {
    pub section: &'static str,
    pub key: &'static str,
    pub ty: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
    /// JSON Schema of the value.
    pub schema: fn() -> Value,
}

/// Sections in the order the docs present them, with whether they are required.
pub const SECTIONS: &[(&str, bool, &str)] = &[
    ("app", true, "What the app is."),
    ("build", false, "How to build it, when the runtime's default is not right."),
    ("run", false, "How to start it."),
    ("scaling", false, "How many replicas."),
    ("health", false, "How the platform decides the app is healthy."),
    ("resources", false, "CPU and memory per replica."),
    ("env", false, "Environment variables: `KEY = \"value\"` or `KEY = { secret = \"name\" }`."),
    ("rollout", false, "How a new version replaces the live one."),
    ("traffic", false, "What the router does to requests on the way in."),
];

fn duration() -> Value {
    json!({"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"})
}
fn positive(max: u32) -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": max})
}
fn string() -> Value {
    json!({"type": "string", "minLength": 1})
}
fn repo_path() -> Value {
    json!({"type": "string", "minLength": 1, "not": {"pattern": "(^/|(^|/)\\.\\.(/|$))"}})
}

pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        section: "app",
        key: "name",
        ty: "string (DNS label)",
        default: "required",
        doc: "The app's name: 1-63 lowercase letters, digits and `-`; its URL is `<name>.<domain>`.",
        schema: || json!({"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}),
    },
    KeyDoc {
        section: "app",
        key: "runtime",
        ty: "string",
        default: "required",
        doc: "One of `rust`, `go`, `python`, `node`, `static`, `docker`.",
        schema: || json!({"enum": ["rust", "go", "python", "node", "static", "docker"]}),
    },
    KeyDoc {
        section: "build",
        key: "command",
        ty: "string",
        default: "the runtime's build",
        doc: "A shell command run in the checkout instead of the runtime's default build.",
        schema: string,
    },
    KeyDoc {
        section: "build",
        key: "dockerfile",
        ty: "string (path)",
        default: "\"Dockerfile\"",
        doc: "For `runtime = \"docker\"`: the Dockerfile, relative to the repo root.",
        schema: repo_path,
    },
    KeyDoc {
        section: "run",
        key: "command",
        ty: "string",
        default: "the runtime's start command",
        doc: "A shell command that starts one replica. The app must listen on `$PORT`.",
        schema: string,
    },
    KeyDoc {
        section: "run",
        key: "port",
        ty: "integer (1-65535)",
        default: "8080",
        doc: "The container port on GKE (also passed as `$PORT`). Embedded, `$PORT` is a free loopback port.",
        schema: || json!({"type": "integer", "minimum": 1, "maximum": 65535}),
    },
    KeyDoc {
        section: "scaling",
        key: "min_replicas",
        ty: "integer (1-100)",
        default: "1",
        doc: "Replicas always running.",
        schema: || positive(100),
    },
    KeyDoc {
        section: "scaling",
        key: "max_replicas",
        ty: "integer (min_replicas-100)",
        default: "max(3, min_replicas)",
        doc: "Upper bound for the autoscaler; must be >= `min_replicas`.",
        schema: || positive(100),
    },
    KeyDoc {
        section: "scaling",
        key: "cpu_target",
        ty: "integer (1-100)",
        default: "70",
        doc: "Average CPU utilisation (% of the request) the autoscaler aims for.",
        schema: || positive(100),
    },
    KeyDoc {
        section: "health",
        key: "path",
        ty: "string",
        default: "\"/\"",
        doc: "HTTP path probed on every replica; must start with `/`. A 2xx or 3xx answer is healthy.",
        schema: || json!({"type": "string", "pattern": "^/[^\\s]*$"}),
    },
    KeyDoc {
        section: "health",
        key: "interval",
        ty: "duration",
        default: "\"10s\"",
        doc: "Time between probes.",
        schema: duration,
    },
    KeyDoc {
        section: "health",
        key: "timeout",
        ty: "duration",
        default: "half of `interval`, at most \"2s\"",
        doc: "How long one probe may take; must be shorter than `interval`.",
        schema: duration,
    },
    KeyDoc {
        section: "health",
        key: "success_threshold",
        ty: "integer (1-100)",
        default: "1",
        doc: "Consecutive good probes before a deployment is healthy.",
        schema: || positive(100),
    },
    KeyDoc {
        section: "health",
        key: "failure_threshold",
        ty: "integer (1-100)",
        default: "3",
        doc: "Consecutive bad probes before a deployment fails.",
        schema: || positive(100),
    },
    KeyDoc {
        section: "resources",
        key: "cpu",
        ty: "string (Kubernetes quantity)",
        default: "\"250m\"",
        doc: "CPU per replica: `\"250m\"`, `\"0.5\"`, `\"2\"`.",
        schema: || json!({"type": ["string", "number"], "pattern": "^[0-9]+(\\.[0-9]+)?m?$"}),
    },
    KeyDoc {
        section: "resources",
        key: "memory",
        ty: "string (Kubernetes quantity)",
        default: "\"256Mi\"",
        doc: "Memory per replica: `\"128Mi\"`, `\"1Gi\"`, `\"512M\"`; at least 1Mi.",
        schema: || json!({"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?([eE][0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"}),
    },
    KeyDoc {
        section: "rollout",
        key: "strategy",
        ty: "string",
        default: "\"rolling\"",
        doc: "`rolling` replaces all replicas once the new version is healthy; `canary` shifts traffic by `steps`.",
        schema: || json!({"enum": ["rolling", "canary"]}),
    },
    KeyDoc {
        section: "rollout",
        key: "steps",
        ty: "array of integers (1-100)",
        default: "[10, 50, 100]",
        doc: "Canary traffic percentages, strictly increasing, ending at 100.",
        schema: || json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100}, "minItems": 1}),
    },
    KeyDoc {
        section: "rollout",
        key: "analysis_interval",
        ty: "duration",
        default: "\"1m\"",
        doc: "How long each canary step is observed before the promote gate decides.",
        schema: duration,
    },
    KeyDoc {
        section: "rollout",
        key: "max_error_rate",
        ty: "float (0.0-1.0)",
        default: "0.01",
        doc: "Highest share of 5xx answers a canary step may show.",
        schema: || json!({"type": "number", "minimum": 0, "maximum": 1}),
    },
    KeyDoc {
        section: "rollout",
        key: "max_p99_ms",
        ty: "integer (ms)",
        default: "500",
        doc: "Highest p99 latency a canary step may show.",
        schema: || json!({"type": "integer", "minimum": 1}),
    },
    KeyDoc {
        section: "rollout",
        key: "min_requests",
        ty: "integer",
        default: "50",
        doc: "Canary requests a window needs to be judged; a window with fewer is *inconclusive* (never a pass) and is extended.",
        schema: || json!({"type": "integer", "minimum": 1}),
    },
    KeyDoc {
        section: "rollout",
        key: "bake",
        ty: "duration",
        default: "\"5m\"",
        doc: "After going live (either strategy), a deployment whose replicas exit or fail their health checks within this time is rolled back by itself to the previous healthy one; later it is reported degraded, never stopped.",
        schema: duration,
    },
    KeyDoc {
        section: "rollout",
        key: "on_no_data",
        ty: "string",
        default: "\"pause\"",
        doc: "After three inconclusive windows in a row: `pause` (wait for `bifrost rollout promote` / `abort`), `rollback` or `promote`.",
        schema: || json!({"enum": ["pause", "rollback", "promote"]}),
    },
    KeyDoc {
        section: "traffic",
        key: "rate_limit",
        ty: "string",
        default: "none",
        doc: "Requests allowed per app across all routers: `\"100/s\"`, `\"6000/m\"`, `\"10000/h\"`.",
        schema: || json!({"type": "string", "pattern": "^[0-9]+/(s|sec|second|m|min|minute|h|hour)$"}),
    },
    KeyDoc {
        section: "traffic",
        key: "rate_limit_key",
        ty: "string",
        default: "\"app\"",
        doc: "Whose requests one limit counts: `\"app\"` (all of them), `\"client_ip\"`, or `\"header:X-Api-Key\"` (each value of that header; requests without it share one count).",
        schema: || json!({"type": "string", "pattern": "^(app|client_ip|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"}),
    },
    KeyDoc {
        section: "traffic",
        key: "rate_limit_burst",
        ty: "integer",
        default: "one second of the rate",
        doc: "Requests allowed at once above the steady rate (at least 1).",
        schema: || json!({"type": "integer", "minimum": 1, "maximum": 1_000_000}),
    },
    KeyDoc {
        section: "traffic",
        key: "headers",
        ty: "table",
        default: "{}",
        doc: "`headers.set` (table of name = value) adds or replaces request headers; `headers.remove` (array of names) drops them.",
        schema: || {
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "set": {"type": "object", "additionalProperties": {"type": "string"}},
                    "remove": {"type": "array", "items": {"type": "string"}}
                }
            })
        },
    },
    KeyDoc {
        section: "traffic",
        key: "response_headers",
        ty: "table",
        default: "{}",
        doc: "`response_headers.set` / `response_headers.remove`: the same, on the app's responses.",
        schema: || {
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "set": {"type": "object", "additionalProperties": {"type": "string"}},
                    "remove": {"type": "array", "items": {"type": "string"}}
                }
            })
        },
    },
    KeyDoc {
        section: "traffic",
        key: "script",
        ty: "string (path)",
        default: "none",
        doc: "A Lua script in the repo (e.g. `routes/app.lua`) run by the router for every request.",
        schema: || json!({"type": "string", "pattern": "\\.lua$"}),
    },
];

/// Known keys of a section, for "did you mean".
pub fn keys_of(section: &str) -> impl Iterator<Item = &'static str> + '_ {
    KEYS.iter().filter(move |k| k.section == section).map(|k| k.key)
}

/// The JSON Schema (draft 2020-12) for editors, generated from [`KEYS`].
pub fn json_schema() -> Value {
    let mut props = serde_json::Map::new();
    for (section, _, doc) in SECTIONS {
        let section_schema = if *section == "env" {
            json!({
                "type": "object",
                "description": doc,
                "propertyNames": {"pattern": "^[A-Z_][A-Z0-9_]*$"},
                "additionalProperties": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "object", "required": ["secret"], "additionalProperties": false,
                         "properties": {"secret": {"type": "string", "minLength": 1}}}
                    ]
                }
            })
        } else {
            let mut keys = serde_json::Map::new();
            let mut required = vec![];
            for k in KEYS.iter().filter(|k| k.section == *section) {
                let mut s = (k.schema)();
                if let Value::Object(m) = &mut s {
                    m.insert("description".into(), Value::String(format!("{} Default: {}.", k.doc, k.default)));
                }
                keys.insert(k.key.into(), s);
                if k.default == "required" {
                    required.push(k.key);
                }
            }
            json!({
                "type": "object",
                "description": doc,
                "additionalProperties": false,
                "required": required,
                "properties": keys,
            })
        };
        props.insert((*section).into(), section_schema);
    }
    let required: Vec<_> = SECTIONS.iter().filter(|(_, req, _)| *req).map(|(s, _, _)| *s).collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://bifrost.dev/schemas/deploy.schema.json",
        "title": "Bifrost deploy.toml",
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": props,
    })
}
