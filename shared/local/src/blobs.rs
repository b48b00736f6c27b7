//! Objects in a directory (the embedded home's routing scripts): a key is a
//! relative path, written whole through a temporary file and a rename, its
//! generation the file's modification time in nanoseconds.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bifrost_core::scripts::Blobs;

#[derive(Clone, Debug)]
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    pub fn new(root: impl Into<PathBuf>) -> DirBlobs {
        DirBlobs { root: root.into() }
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

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<i64, String> {
        let path = self.path(key)?;
        let dir = path.parent().ok_or("no parent")?.to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        tokio::fs::write(&tmp, &bytes).await.map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| format!("renaming to {}: {e}", path.display()))?;
        let meta = tokio::fs::metadata(&path).await.map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(generation(&meta))
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
        let g1 = b.put("web/v1.lua", b"one".to_vec()).await.expect("put");
        assert_eq!(b.get("web/v1.lua").await.expect("get"), Some((b"one".to_vec(), g1)));
        for bad in ["../x", "/etc/passwd", "web/../../x", ""] {
            assert!(b.put(bad, b"x".to_vec()).await.is_err(), "{bad}");
            assert!(b.get(bad).await.is_err(), "{bad}");
        }
    }
}
