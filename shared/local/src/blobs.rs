//! Objects in a directory (the embedded home's routing scripts): a key is a
//! relative path, written whole through a temporary file and a rename, its
//! generation the file's modification time in nanoseconds — set past the
//! previous one when the clock has not moved (file times advance in clock
//! ticks of milliseconds, and two writes in one tick would look unchanged).
//! Conditional writes are checked and done under one lock: the data dir
//! belongs to one `bifrost up` process.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bifrost_core::scripts::Blobs;

#[derive(Debug)]
pub struct DirBlobs {
    root: PathBuf,
    write: tokio::sync::Mutex<()>,
}

impl DirBlobs {
    pub fn new(root: impl Into<PathBuf>) -> DirBlobs {
        DirBlobs { root: root.into(), write: tokio::sync::Mutex::new(()) }
    }

    /// Only plain relative names: no `..`, no root, nothing outside.
    fn path(&self, key: &str) -> Result<PathBuf, String> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!("invalid object key {key:?}"));
        }
        Ok(self.root.join(rel))
    }
}

fn generation(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[async_trait]
impl Blobs for DirBlobs {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, String> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let meta = tokio::fs::metadata(&path).await.map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Some((bytes, generation(&meta))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    async fn put_if(&self, key: &str, bytes: Vec<u8>, expected: i64) -> Result<Option<i64>, String> {
        let path = self.path(key)?;
        let _one = self.write.lock().await;
        let now = match tokio::fs::metadata(&path).await {
            Ok(meta) => generation(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if now != expected {
            return Ok(None);
        }
        let dir = path.parent().ok_or("no parent")?.to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        tokio::fs::write(&tmp, &bytes).await.map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        let written = tokio::fs::metadata(&tmp).await.map_err(|e| format!("{}: {e}", tmp.display()))?;
        if generation(&written) <= now {
            let after = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(now as u64 + 1);
            let file =
                std::fs::File::options().write(true).open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            file.set_modified(after).map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        tokio::fs::rename(&tmp, &path).await.map_err(|e| format!("renaming to {}: {e}", path.display()))?;
        let meta = tokio::fs::metadata(&path).await.map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(generation(&meta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_stay_inside_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = DirBlobs::new(dir.path().join("scripts"));
        assert_eq!(b.get("web/v1.lua").await.expect("get"), None);
        let g1 = b.put_if("web/v1.lua", b"one".to_vec(), 0).await.expect("put").expect("created");
        assert_eq!(b.get("web/v1.lua").await.expect("get"), Some((b"one".to_vec(), g1)));
        for bad in ["../x", "/etc/passwd", "web/../../x", ""] {
            assert!(b.put_if(bad, b"x".to_vec(), 0).await.is_err(), "{bad}");
            assert!(b.get(bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_write_lands_only_on_the_generation_it_read_and_each_write_moves_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = DirBlobs::new(dir.path());
        let g1 = b.put_if("index.json", b"1".to_vec(), 0).await.expect("put").expect("created");
        assert_eq!(b.put_if("index.json", b"x".to_vec(), 0).await.expect("put"), None, "it exists");
        // Many writes in one clock tick: each still gets a new generation.
        let mut last = g1;
        for n in 2..50 {
            let g = b.put_if("index.json", n.to_string().into_bytes(), last).await.expect("put").expect("written");
            assert!(g > last, "write {n}: generation {g} after {last}");
            last = g;
        }
        assert_eq!(b.put_if("index.json", b"stale".to_vec(), g1).await.expect("put"), None, "a stale read");
        assert_eq!(b.get("index.json").await.expect("get"), Some((b"49".to_vec(), last)));
        // The clock went back (or the last write's time is ahead of it): the
        // next generation is still past the last one, never a repeat.
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("index.json"))
            .and_then(|f| f.set_modified(ahead))
            .expect("set the time ahead");
        let (_, g) = b.get("index.json").await.expect("get").expect("exists");
        let next = b.put_if("index.json", b"50".to_vec(), g).await.expect("put").expect("written");
        assert!(next > g, "generation {next} after {g}");
    }
}
