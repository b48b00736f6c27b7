//! One unprivileged user per project, for a platform that runs as root:
//! numbers handed out from a base and remembered in the data dir, so a
//! project keeps its uid across restarts and no two projects share one.
//! (No /etc/passwd entries are needed; `HOME` is set for every process.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The default first uid: above the ranges distributions hand out
/// (system < 1000, users < 60000, subuid ranges from 100000 by 65536).
pub const DEFAULT_BASE: u32 = 2_000_000;

#[derive(Default, Serialize, Deserialize)]
struct Table {
    next: u32,
    projects: BTreeMap<String, u32>,
}

pub struct UserPool {
    path: PathBuf,
    base: u32,
    table: Mutex<Table>,
}

impl UserPool {
    pub fn open(data_dir: &Path, base: u32) -> std::io::Result<UserPool> {
        let path = data_dir.join("app-users.json");
        let table = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{} is damaged: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::default(),
            Err(e) => return Err(e),
        };
        Ok(UserPool { path, base, table: Mutex::new(table) })
    }

    /// The uid (and gid, the same number) of a project, made on first use.
    pub fn user_of(&self, project_id: &str) -> std::io::Result<(u32, u32)> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(uid) = t.projects.get(project_id) {
            return Ok((*uid, *uid));
        }
        let uid = t.next.max(self.base);
        t.next = uid + 1;
        t.projects.insert(project_id.to_string(), uid);
        super::write_private(&self.path, &serde_json::to_vec_pretty(&*t).unwrap_or_default())?;
        Ok((uid, uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_project_gets_its_own_uid_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = UserPool::open(dir.path(), 5000).expect("open");
        let a = pool.user_of("p_a").expect("a");
        let b = pool.user_of("p_b").expect("b");
        assert_ne!(a, b);
        assert_eq!(pool.user_of("p_a").expect("a again"), a);
        let reopened = UserPool::open(dir.path(), 5000).expect("reopen");
        assert_eq!(reopened.user_of("p_b").expect("b"), b);
        assert_ne!(reopened.user_of("p_c").expect("c").0, b.0);
        assert!(a.0 >= 5000);
    }
}
