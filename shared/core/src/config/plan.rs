//! Build plans a checkout implies: how each runtime starts when `[run]
//! command` is not set, and where a static site's files are. Shared by the
//! local builder and the Cloud Build Dockerfile, so both start an app the
//! same way. Reads only the checkout's own manifest files.

use std::path::Path;

use super::Runtime;
use crate::ports::BuildError;

/// The first file of `names` that exists in `dir`.
pub fn first_existing<'a>(dir: &Path, names: &[&'a str]) -> Option<&'a str> {
    names.iter().copied().find(|n| dir.join(n).exists())
}

pub fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The binary `cargo build --release` produces for this package.
pub fn rust_binary(dir: &Path) -> Result<String, BuildError> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| BuildError::Failed(format!("runtime rust needs a Cargo.toml at the repository root: {e}")))?;
    let manifest: toml::Table =
        toml::from_str(&text).map_err(|e| BuildError::Failed(format!("Cargo.toml is not valid TOML: {e}")))?;
    let bin = manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .and_then(|bins| bins.first())
        .and_then(|b| b.get("name"))
        .and_then(|n| n.as_str())
        .or_else(|| manifest.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()));
    bin.map(str::to_string)
        .ok_or_else(|| BuildError::Failed("Cargo.toml has no [package] name or [[bin]] to run".into()))
}

/// How a checkout of runtime `rt` starts when `[run] command` is not set,
/// after the runtime's default build (which puts compiled binaries in
/// `.bifrost/bin/`). `None` for static sites and Docker images, which start
/// their own way. Shared by the local builder and the generated Dockerfile.
pub fn start_command(rt: Runtime, dir: &Path) -> Result<Option<String>, BuildError> {
    Ok(match rt {
        Runtime::Rust => Some(format!("./.bifrost/bin/{}", rust_binary(dir)?)),
        Runtime::Go => Some("./.bifrost/bin/app".into()),
        Runtime::Python => match first_existing(dir, &["app.py", "main.py", "server.py"]) {
            Some(f) => Some(format!("python3 {f}")),
            None => procfile_web(dir),
        },
        Runtime::Node => {
            let pkg = read_json(&dir.join("package.json"));
            if pkg.as_ref().is_some_and(|p| p["scripts"]["start"].is_string()) {
                Some("npm start --silent".into())
            } else {
                let main = pkg.as_ref().and_then(|p| p["main"].as_str().map(str::to_string));
                main.or_else(|| first_existing(dir, &["server.js", "index.js", "app.js"]).map(str::to_string))
                    .map(|f| format!("node {f}"))
            }
        }
        Runtime::Static | Runtime::Docker => None,
    })
}

pub fn no_start_command(rt: Runtime) -> BuildError {
    BuildError::Failed(format!(
        "no start command for runtime {rt}: set [run] command in deploy.toml{}",
        match rt {
            Runtime::Python => " (or add app.py, main.py, server.py or a Procfile `web:` line)",
            Runtime::Node => " (or add a `start` script, `main`, or server.js/index.js)",
            _ => "",
        }
    ))
}

/// The folder a static site serves from.
pub fn static_root(dir: &Path) -> &'static str {
    first_existing(dir, &["public", "dist", "build", "site"]).unwrap_or(".")
}

fn procfile_web(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Procfile")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("web:").map(|c| c.trim().to_string()))
}
