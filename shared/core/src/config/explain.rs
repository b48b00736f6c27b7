//! The effective configuration: every documented key with the value a
//! deployment will use, and whether the user set it or a default did
//! (`bifrost validate --explain`).

use serde::Serialize;

use super::DeployConfig;
use super::schema::KEYS;

/// One key of the effective configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explained {
    /// `section.key`.
    pub key: String,
    /// The value in deploy.toml's own notation (`"500ms"`, `3`, `[10, 50, 100]`).
    pub value: String,
    /// Written in the file (otherwise a default).
    pub set: bool,
    /// What the documentation says the default is.
    pub default: &'static str,
}

/// Explains `config`, parsed from `source` (which must be the text it was
/// parsed from: whether a key was set is read from it).
pub fn explain(source: &str, config: &DeployConfig) -> Vec<Explained> {
    let written: toml::Table = toml::from_str(source).unwrap_or_default();
    let mut effective = serde_json::to_value(config).unwrap_or_default();
    effective["build"]["dockerfile"] = config.build.dockerfile_for(config.app.runtime).into();
    let mut out: Vec<Explained> = KEYS
        .iter()
        .map(|k| Explained {
            key: format!("{}.{}", k.section, k.key),
            value: notation(&effective[k.section][k.key]),
            set: written.get(k.section).and_then(|s| s.get(k.key)).is_some(),
            default: k.default,
        })
        .collect();
    for (name, value) in &config.env {
        let value = serde_json::to_value(value).unwrap_or_default();
        out.push(Explained { key: format!("env.{name}"), value: notation(&value), set: true, default: "none" });
    }
    out
}

/// A JSON value as deploy.toml would write it; sizes keep the user's
/// spelling (`"250m"`), unset options read `none`.
fn notation(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "none".into(),
        Value::Object(m) if m.contains_key("raw") => notation(&m["raw"]),
        Value::Object(m) => {
            // Empty parts are left out, as a user would write them.
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| (k, notation(v)))
                .filter(|(_, v)| !matches!(v.as_str(), "{}" | "[]" | "none"))
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            if inner.is_empty() { "{}".into() } else { format!("{{ {} }}", inner.join(", ")) }
        }
        Value::Array(a) => format!("[{}]", a.iter().map(notation).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}
