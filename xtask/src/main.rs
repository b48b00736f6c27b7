//! `cargo xtask bless`: rewrites the golden files (GKE YAML, Cloud Build
//! requests and Dockerfiles, deploy.toml's JSON Schema, the OpenAPI
//! document) from what the golden tests produce. The tests themselves only
//! ever compare; this is the deliberate step that accepts a change.
//!
//! `cargo xtask web [--dev]`: builds the dashboard's browser half.
//!
//! 1. `cargo rustc` the `bifrost-web` lib for wasm32 with the `hydrate`
//!    feature, as a cdylib, in the size-tuned `web` profile;
//! 2. runs wasm-bindgen through its library (pinned to the crate's exact
//!    version, so the two cannot drift);
//! 3. shrinks it with `wasm-opt` when one is found (npm `binaryen@132`,
//!    installed by the scripts; Debian's older binaryen breaks hydration);
//! 4. writes gzip copies that the server sends to browsers that accept them.
//!
//! Output: `target/site/pkg/bifrost_web.js` and `bifrost_web_bg.wasm`,
//! which `bifrost up` and `bifrost-web` serve under `/pkg`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const OUT_NAME: &str = "bifrost_web";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("web") => web(args.iter().any(|a| a == "--dev")),
        Some("bless") => bless(),
        _ => {
            eprintln!(
                "usage: cargo xtask web [--dev] | bless\n\n  web    build the dashboard's client wasm into target/site/pkg\n  bless  accept what the golden tests produce as the new golden files"
            );
            std::process::exit(2);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn web(dev: bool) -> anyhow::Result<()> {
    let root = root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let profile = if dev { "dev" } else { "web" };
    let started = std::time::Instant::now();
    eprintln!("xtask: building the dashboard client (wasm32, profile {profile})...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["rustc", "--quiet", "-p", "bifrost-web", "--lib", "--target", "wasm32-unknown-unknown"])
        .args(["--features", "hydrate", "--profile", profile, "--crate-type", "cdylib"])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the wasm failed (is the target installed? `rustup target add wasm32-unknown-unknown`)");
    }
    let dir = if dev { "debug" } else { profile };
    let wasm = target_dir.join("wasm32-unknown-unknown").join(dir).join(format!("{OUT_NAME}.wasm"));
    let pkg = target_dir.join("site").join("pkg");
    std::fs::create_dir_all(&pkg).with_context(|| format!("creating {}", pkg.display()))?;

    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen.input_path(&wasm).out_name(OUT_NAME).web(true)?.debug(dev).keep_debug(dev);
    bindgen.generate(&pkg).with_context(|| format!("wasm-bindgen on {}", wasm.display()))?;
    let out = pkg.join(format!("{OUT_NAME}_bg.wasm"));

    if !dev {
        match wasm_opt(&root) {
            Some(tool) => {
                let tmp = pkg.join(format!("{OUT_NAME}_bg.opt.wasm"));
                let status = Command::new(&tool)
                    .arg(&out)
                    .args(["-Oz", "--strip-debug", "--strip-producers", "-o"])
                    .arg(&tmp)
                    .args(FEATURES)
                    .status()
                    .with_context(|| format!("running {}", tool.display()))?;
                if !status.success() {
                    bail!("{} failed on {}", tool.display(), out.display());
                }
                std::fs::rename(&tmp, &out)?;
            }
            None => eprintln!(
                "xtask: no wasm-opt (npm binaryen@132) found: the wasm is larger but works \
                 (scripts/up.sh installs it into .tools/)"
            ),
        }
    }
    for name in [format!("{OUT_NAME}_bg.wasm"), format!("{OUT_NAME}.js")] {
        gzip(&pkg.join(&name))?;
    }
    let raw = std::fs::metadata(&out)?.len();
    let gz = std::fs::metadata(pkg.join(format!("{OUT_NAME}_bg.wasm.gz")))?.len();
    eprintln!(
        "xtask: {} ({:.0} KiB, {:.0} KiB gzip) in {:.0?}",
        out.display(),
        raw as f64 / 1024.0,
        gz as f64 / 1024.0,
        started.elapsed()
    );
    Ok(())
}

/// Features wasm-opt may use. Not `--enable-multivalue` or
/// `--enable-reference-types`: with those, -Oz output failed to hydrate
/// (a panic in tachys' hydration), seen with binaryen 132 here.
const FEATURES: &[&str] =
    &["--enable-bulk-memory", "--enable-mutable-globals", "--enable-nontrapping-float-to-int", "--enable-sign-ext"];

/// `$BIFROST_WASM_OPT`, else the npm install under `.tools/`.
fn wasm_opt(root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BIFROST_WASM_OPT") {
        return Some(PathBuf::from(p));
    }
    let local = root.join(".tools/node_modules/.bin/wasm-opt");
    local.is_file().then_some(local)
}

fn gzip(path: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let gz_path = PathBuf::from(format!("{}.gz", path.display()));
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz_path)?, flate2::Compression::best());
    enc.write_all(&data)?;
    enc.finish()?;
    Ok(())
}

/// The golden tests, by package and test target.
const GOLDEN_TESTS: &[(&str, &str)] = &[
    ("bifrost-core", "deploy_toml"),
    ("bifrost-gcp", "gke_render"),
    ("bifrost-gcp", "cloud_build_golden"),
    ("bifrost-gcp", "bigquery_golden"),
    ("bifrost-gateway", "openapi_golden"),
];

fn bless() -> anyhow::Result<()> {
    let root = root();
    let pending = root.join("target/bless");
    let _ = std::fs::remove_dir_all(&pending);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (package, test) in GOLDEN_TESTS {
        eprintln!("xtask: running {package} --test {test}");
        // Failures are expected: a mismatch is what leaves a file to bless.
        Command::new(&cargo)
            .current_dir(&root)
            .args(["test", "--quiet", "-p", package, "--test", test])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("running cargo test")?;
    }
    let mut blessed = vec![];
    copy_tree(&pending, &pending, &root, &mut blessed)?;
    let _ = std::fs::remove_dir_all(&pending);
    if blessed.is_empty() {
        eprintln!("xtask: every golden file already matches");
    }
    for path in &blessed {
        eprintln!("xtask: blessed {path}");
    }
    Ok(())
}

fn copy_tree(base: &Path, dir: &Path, root: &Path, blessed: &mut Vec<String>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            copy_tree(base, &path, root, blessed)?;
            continue;
        }
        let relative = path.strip_prefix(base)?.to_path_buf();
        let dest = root.join(&relative);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&path, &dest).with_context(|| format!("writing {}", dest.display()))?;
        blessed.push(relative.display().to_string());
    }
    Ok(())
}
