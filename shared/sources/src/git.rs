//! Sources on one machine: bare git mirrors driven by the `git` CLI (already
//! on every developer machine; libgit2 would add a C build for no gain) and
//! uploaded archives kept under the data dir.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::archive;
use bifrost_core::domain::Source;
use bifrost_core::ports::{CommitInfo, SourceError, Sources};
use bifrost_core::repo::{is_remote, repo_key};

/// Largest file `read_file` returns (deploy.toml, scripts).
pub const MAX_READ_BYTES: u64 = 1 << 20;
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

pub struct GitSources {
    mirrors: PathBuf,
    archives: PathBuf,
    limits: archive::Limits,
    /// One git operation per mirror at a time (git takes locks of its own,
    /// but a clone racing a fetch fails rather than waits).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl GitSources {
    pub fn new(data_dir: &Path) -> Self {
        Self::with_limits(data_dir, archive::Limits::default())
    }

    /// Sources whose uploads and checkouts are held to `limits`.
    pub fn with_limits(data_dir: &Path, limits: archive::Limits) -> Self {
        GitSources {
            mirrors: data_dir.join("git"),
            archives: data_dir.join("sources"),
            limits,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    fn mirror_path(&self, repo: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(repo_key(repo).as_bytes()));
        self.mirrors.join(format!("{}.git", &digest[..16]))
    }

    /// Clones or fetches the mirror of `repo`.
    async fn sync(&self, repo: &str) -> Result<PathBuf, SourceError> {
        let path = self.mirror_path(repo);
        let lock = self.lock_for(&path.to_string_lossy());
        let _guard = lock.lock().await;
        if path.join("HEAD").exists() {
            git(None, &["-C", &path.to_string_lossy(), "fetch", "--prune", "--quiet", "origin"])
                .await
                .map_err(|e| unavailable(repo, &e))?;
        } else {
            std::fs::create_dir_all(&self.mirrors).map_err(|e| SourceError::Unavailable(e.to_string()))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            git(None, &["clone", "--mirror", "--quiet", repo, &tmp.to_string_lossy()])
                .await
                .map_err(|e| unavailable(repo, &e))?;
            std::fs::rename(&tmp, &path).map_err(|e| SourceError::Unavailable(e.to_string()))?;
        }
        Ok(path)
    }

    /// The mirror, fetched if it does not yet have `commit`.
    async fn mirror_with(&self, repo: &str, commit: &str) -> Result<PathBuf, SourceError> {
        let path = self.mirror_path(repo);
        if path.join("HEAD").exists() && has_commit(&path, commit).await {
            return Ok(path);
        }
        let path = self.sync(repo).await?;
        if has_commit(&path, commit).await {
            Ok(path)
        } else {
            Err(SourceError::NotFound(format!("commit {commit} not found in {repo}")))
        }
    }

    fn archive_path(&self, uri: &str) -> Result<PathBuf, SourceError> {
        let path = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
        if path.starts_with(&self.archives) && path.exists() {
            Ok(path)
        } else {
            Err(SourceError::NotFound(format!("uploaded archive {uri} is gone")))
        }
    }
}

/// A clone or fetch that fails is worth retrying: networks, credentials and
/// repositories come back. (Typos are caught when the project is created.)
fn unavailable(repo: &str, err: &str) -> SourceError {
    SourceError::Unavailable(format!("git could not fetch {repo}: {err}"))
}

/// Runs git; `Err` carries its stderr.
async fn git(stdin: Option<&[u8]>, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    let out = tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("git {} timed out after {}s", args.join(" "), GIT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("git failed: {e}"))?;
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

async fn has_commit(mirror: &Path, commit: &str) -> bool {
    git(None, &["-C", &mirror.to_string_lossy(), "cat-file", "-e", &format!("{commit}^{{commit}}")]).await.is_ok()
}

fn is_full_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Normalizes an archive entry path: `./a/b` → `a/b`.
fn entry_path(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches("./").to_string()
}

fn read_from_archive(archive: &Path, want: &str) -> Result<Option<String>, SourceError> {
    let file = std::fs::File::open(archive).map_err(|e| SourceError::Unavailable(e.to_string()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|e| SourceError::Invalid(format!("archive unreadable: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| SourceError::Invalid(format!("archive unreadable: {e}")))?;
        let path = entry.path().map(|p| entry_path(&p)).unwrap_or_default();
        if path == want {
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(SourceError::Invalid(format!("{want} is not a regular file")));
            }
            if entry.size() > MAX_READ_BYTES {
                return Err(SourceError::Invalid(format!("{want} is larger than {} KiB", MAX_READ_BYTES / 1024)));
            }
            let mut s = String::new();
            entry.read_to_string(&mut s).map_err(|e| SourceError::Invalid(format!("{want} is not UTF-8 text: {e}")))?;
            return Ok(Some(s));
        }
    }
    Ok(None)
}

#[async_trait]
impl Sources for GitSources {
    async fn check_repo(&self, repo: &str) -> Result<(), SourceError> {
        if !is_remote(repo) && !Path::new(repo.strip_prefix("file://").unwrap_or(repo)).exists() {
            return Err(SourceError::NotFound(format!("{repo} does not exist on this machine")));
        }
        git(None, &["ls-remote", "--quiet", repo, "HEAD"])
            .await
            .map(|_| ())
            .map_err(|e| SourceError::NotFound(format!("{repo} is not a reachable git repository: {e}")))
    }

    async fn default_branch(&self, repo: &str) -> Result<String, SourceError> {
        // `ref: refs/heads/<branch>\tHEAD` names what HEAD points at, local or remote.
        let out = git(None, &["ls-remote", "--symref", repo, "HEAD"])
            .await
            .map_err(|e| SourceError::NotFound(format!("{repo} is not a reachable git repository: {e}")))?;
        String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.strip_prefix("ref: refs/heads/").and_then(|r| r.split('\t').next()).map(str::to_string))
            .ok_or_else(|| {
                SourceError::NotFound(format!("{repo} has no branch checked out (HEAD names none); give --branch"))
            })
    }

    async fn resolve(&self, repo: &str, git_ref: &str) -> Result<String, SourceError> {
        if git_ref.starts_with('-') || git_ref.contains("..") || git_ref.is_empty() {
            return Err(SourceError::Invalid(format!("{git_ref:?} is not a valid git ref")));
        }
        if is_full_commit(git_ref) {
            self.mirror_with(repo, git_ref).await?;
            return Ok(git_ref.to_lowercase());
        }
        let mirror = self.sync(repo).await?;
        let m = mirror.to_string_lossy();
        for candidate in [format!("refs/heads/{git_ref}"), format!("refs/tags/{git_ref}"), git_ref.to_string()] {
            if let Ok(out) =
                git(None, &["-C", &m, "rev-parse", "--verify", "--quiet", &format!("{candidate}^{{commit}}")]).await
            {
                return Ok(String::from_utf8_lossy(&out).trim().to_string());
            }
        }
        Err(SourceError::NotFound(format!("ref {git_ref:?} not found in {repo}")))
    }

    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, SourceError> {
        if branch.starts_with('-') || branch.contains("..") || branch.is_empty() {
            return Err(SourceError::Invalid(format!("{branch:?} is not a valid branch name")));
        }
        // ls-remote asks the repository and writes nothing: no mirror lock,
        // no fetch (which cost the webhook 30+ ms per push).
        let want = format!("refs/heads/{branch}");
        let out = git(None, &["ls-remote", "--heads", "--", repo, &want]).await.map_err(|e| unavailable(repo, &e))?;
        String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.split_once('\t').filter(|(_, r)| *r == want).map(|(c, _)| c.to_lowercase()))
            .filter(|c| is_full_commit(c))
            .ok_or_else(|| SourceError::NotFound(format!("branch {branch:?} not found in {repo}")))
    }

    async fn commit_info(&self, source: &Source) -> Option<CommitInfo> {
        let Source::Git { repo, commit, .. } = source else { return None };
        if !is_full_commit(commit) {
            return None;
        }
        let mirror = self.mirror_with(repo, commit).await.ok()?;
        let out =
            git(None, &["-C", &mirror.to_string_lossy(), "show", "-s", "--format=%cI%x00%s", commit]).await.ok()?;
        let text = String::from_utf8_lossy(&out);
        let (at, subject) = text.trim_end().split_once('\0')?;
        let at = chrono::DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&chrono::Utc);
        Some(CommitInfo { at, subject: subject.to_string() })
    }

    async fn read_file(&self, source: &Source, path: &str) -> Result<Option<String>, SourceError> {
        match source {
            Source::Git { repo, commit, .. } => {
                let mirror = self.mirror_with(repo, commit).await?;
                let m = mirror.to_string_lossy();
                let spec = format!("{commit}:{path}");
                let Ok(size) = git(None, &["-C", &m, "cat-file", "-s", &spec]).await else {
                    return Ok(None);
                };
                let size: u64 = String::from_utf8_lossy(&size).trim().parse().unwrap_or(0);
                if size > MAX_READ_BYTES {
                    return Err(SourceError::Invalid(format!("{path} is larger than {} KiB", MAX_READ_BYTES / 1024)));
                }
                let bytes =
                    git(None, &["-C", &m, "cat-file", "blob", &spec]).await.map_err(SourceError::Unavailable)?;
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| SourceError::Invalid(format!("{path} is not UTF-8 text")))
            }
            Source::Archive { uri, .. } => {
                let archive = self.archive_path(uri)?;
                let want = path.to_string();
                tokio::task::spawn_blocking(move || read_from_archive(&archive, &want))
                    .await
                    .map_err(|e| SourceError::Unavailable(e.to_string()))?
            }
        }
    }

    async fn checkout(&self, source: &Source, dest: &Path) -> Result<(), SourceError> {
        std::fs::create_dir_all(dest).map_err(|e| SourceError::Unavailable(e.to_string()))?;
        let dest = dest.to_path_buf();
        let limits = self.limits;
        match source {
            Source::Git { repo, commit, .. } => {
                let mirror = self.mirror_with(repo, commit).await?;
                let tar = git(None, &["-C", &mirror.to_string_lossy(), "archive", "--format=tar", commit])
                    .await
                    .map_err(SourceError::Unavailable)?;
                // The repository's own links are checked like an upload's.
                archive::off_runtime(move || archive::unpack(tar.as_slice(), None, &dest, &limits)).await.map(drop)
            }
            Source::Archive { uri, .. } => {
                let path = self.archive_path(uri)?;
                archive::off_runtime(move || {
                    let len = std::fs::metadata(&path).map(|m| m.len()).ok();
                    let file = std::fs::File::open(&path).map_err(|e| SourceError::Unavailable(e.to_string()))?;
                    archive::unpack(flate2::read::GzDecoder::new(file), len, &dest, &limits)
                })
                .await
                .map(drop)
            }
        }
    }

    async fn store_archive(&self, bytes: Vec<u8>) -> Result<Source, SourceError> {
        let limits = self.limits;
        let archives = self.archives.clone();
        archive::off_runtime(move || {
            archive::check(&bytes, &limits)?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            std::fs::create_dir_all(&archives).map_err(|e| SourceError::Unavailable(e.to_string()))?;
            let path = archives.join(format!("{sha256}.tar.gz"));
            if !path.exists() {
                let tmp = path.with_extension("part");
                std::fs::write(&tmp, &bytes).map_err(|e| SourceError::Unavailable(e.to_string()))?;
                std::fs::rename(&tmp, &path).map_err(|e| SourceError::Unavailable(e.to_string()))?;
            }
            Ok(Source::Archive { uri: format!("file://{}", path.display()), sha256 })
        })
        .await
    }
}
