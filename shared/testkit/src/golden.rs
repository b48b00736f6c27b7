//! Golden files: a test compares what it produced with a file in the
//! repository and fails on any difference. It never rewrites the file:
//! it leaves what it produced under `target/bless/` and `cargo xtask bless`
//! (a separate, deliberate command) copies that over the golden files.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where a mismatching output waits for `cargo xtask bless`.
pub fn pending(relative: &str) -> PathBuf {
    root().join("target/bless").join(relative)
}

/// Panics unless the file at `relative` (from the workspace root) holds
/// exactly `actual`.
pub fn check(relative: &str, actual: &str) {
    let path = root().join(relative);
    let want = std::fs::read_to_string(&path).ok();
    if want.as_deref() == Some(actual) {
        return;
    }
    let out = pending(relative);
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&out, actual);
    match want {
        None => panic!("{relative} does not exist; if the output below is right, run `cargo xtask bless`:\n{actual}"),
        Some(want) => panic!(
            "{relative} differs from what was produced (left in {}); if the change is deliberate, run `cargo xtask bless`\n{}",
            out.display(),
            first_difference(&want, actual)
        ),
    }
}

/// The first differing line, for the failure message.
fn first_difference(want: &str, got: &str) -> String {
    let (mut w, mut g) = (want.lines(), got.lines());
    for n in 1.. {
        match (w.next(), g.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (a, b) => {
                return format!(
                    "line {n}:\n  golden:   {}\n  produced: {}",
                    a.unwrap_or("(end)"),
                    b.unwrap_or("(end)")
                );
            }
        }
    }
    unreachable!("the loop returns at the first difference")
}
