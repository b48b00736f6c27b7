//! Packs a local directory into the `.tar.gz` that `bifrost deploy PATH`
//! uploads. Honors .gitignore (and .bifrostignore); never includes `.git`.

use std::path::Path;

use anyhow::Context;

/// Directories that are build output or local state, skipped even without a .gitignore.
const ALWAYS_SKIP: &[&str] = &[".git", "target", "node_modules", ".venv", "__pycache__", ".bifrost"];

pub struct Packed {
    pub bytes: Vec<u8>,
    pub files: usize,
}

pub fn pack(dir: &Path) -> anyhow::Result<Packed> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .add_custom_ignore_filename(".bifrostignore")
        .filter_entry(|e| !ALWAYS_SKIP.contains(&e.file_name().to_string_lossy().as_ref()))
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut files = 0;
    for entry in walker {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let rel = path.strip_prefix(dir).unwrap_or(path);
        if rel.as_os_str().is_empty() {
            continue;
        }
        let ft = entry.file_type().context("file type")?;
        if ft.is_dir() {
            tar.append_dir(rel, path).with_context(|| format!("adding {}", rel.display()))?;
        } else if ft.is_file() || ft.is_symlink() {
            tar.append_path_with_name(path, rel).with_context(|| format!("adding {}", rel.display()))?;
            files += 1;
        }
    }
    let gz = tar.into_inner().context("finishing the archive")?;
    let bytes = gz.finish().context("compressing the archive")?;
    Ok(Packed { bytes, files })
}
