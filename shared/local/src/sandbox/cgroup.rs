//! Control groups for sandboxed processes: memory, CPU and process-count
//! limits from `[resources]`, and a net that catches every process of a
//! replica even if its supervisor died. Cgroups v2 (most hosts) and v1
//! (these build machines) are both supported; without write access to
//! either (an unprivileged platform) the sandbox runs without them.
//!
//! Groups live under the platform's own group, in `bifrost-<owner>/<name>`,
//! so a sweep after a crash finds exactly what this platform made.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";

/// Which hierarchy this host mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// The hierarchy mounted here, whether or not this process may use it.
pub fn mounted() -> Option<Version> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Some(Version::V2)
    } else if Path::new(ROOT).join("memory/cgroup.procs").exists() {
        Some(Version::V1)
    } else {
        None
    }
}

/// The cgroup version usable here, if this process may create groups
/// (probed once, by the platform at start).
pub fn detect() -> Option<Version> {
    let v = mounted()?;
    // Can we make groups under our own? (root usually can; a user only with delegation)
    let probe = bases(&v).into_iter().next()?.join(format!("bifrost-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).ok()?;
    let _ = std::fs::remove_dir(&probe);
    Some(v)
}

/// This process's group path in a v1 controller or the v2 tree.
fn own_path(controller: Option<&str>) -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let matches = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        if matches {
            return PathBuf::from(path.trim_start_matches('/'));
        }
    }
    PathBuf::new()
}

/// The directories our groups are made under: one per v1 controller used,
/// or the v2 tree.
fn bases(v: &Version) -> Vec<PathBuf> {
    match v {
        Version::V2 => vec![Path::new(ROOT).join(own_path(None))],
        Version::V1 => ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists())
            .map(|c| Path::new(ROOT).join(c).join(own_path(Some(c))))
            .collect(),
    }
}

/// Limits for one group.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    pub pids_max: Option<u32>,
}

/// One group (a directory per v1 controller, one in v2).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    version: Version,
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
}

impl Cgroup {
    /// Makes `bifrost-<owner>/<name>` and applies the limits.
    pub fn create(version: &Version, owner: &str, name: &str, limits: Limits) -> io::Result<Cgroup> {
        let mut dirs = vec![];
        for base in bases(version) {
            let parent = base.join(format!("bifrost-{owner}"));
            std::fs::create_dir_all(&parent)?;
            if *version == Version::V2 {
                // Controllers for the children; refused where our own group
                // holds processes (v2's no-internal-process rule): then the
                // group still tracks and kills, without limits.
                let _ = write(&base, "cgroup.subtree_control", "+memory +cpu +pids");
                let _ = write(&parent, "cgroup.subtree_control", "+memory +cpu +pids");
            }
            let dir = parent.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            dirs.push(dir);
        }
        let group = Cgroup { dirs, version: version.clone() };
        group.limit(limits);
        Ok(group)
    }

    fn limit(&self, l: Limits) {
        const PERIOD: u64 = 100_000;
        for dir in &self.dirs {
            let has = |f: &str| dir.join(f).exists();
            match self.version {
                Version::V2 => {
                    if let (Some(m), true) = (l.memory_bytes, has("memory.max")) {
                        let _ = write(dir, "memory.max", &m.to_string());
                        let _ = write(dir, "memory.swap.max", "0");
                    }
                    if let (Some(c), true) = (l.cpu_millis, has("cpu.max")) {
                        let _ = write(dir, "cpu.max", &format!("{} {PERIOD}", u64::from(c) * PERIOD / 1000));
                    }
                    if let (Some(p), true) = (l.pids_max, has("pids.max")) {
                        let _ = write(dir, "pids.max", &p.to_string());
                    }
                }
                Version::V1 => {
                    if let (Some(m), true) = (l.memory_bytes, has("memory.limit_in_bytes")) {
                        let _ = write(dir, "memory.limit_in_bytes", &m.to_string());
                    }
                    if let (Some(c), true) = (l.cpu_millis, has("cpu.cfs_quota_us")) {
                        let _ = write(dir, "cpu.cfs_period_us", &PERIOD.to_string());
                        let _ = write(dir, "cpu.cfs_quota_us", &(u64::from(c) * PERIOD / 1000).to_string());
                    }
                    if let (Some(p), true) = (l.pids_max, has("pids.max")) {
                        let _ = write(dir, "pids.max", &p.to_string());
                    }
                }
            }
        }
    }

    /// The group `bifrost-<owner>/<name>` as it is (made by [`Cgroup::create`]).
    pub fn existing(version: &Version, owner: &str, name: &str) -> Cgroup {
        let dirs = bases(version).into_iter().map(|b| b.join(format!("bifrost-{owner}")).join(name)).collect();
        Cgroup { dirs, version: version.clone() }
    }

    /// Moves `pid` (and its future children) into the group.
    pub fn join(&self, pid: u32) -> io::Result<()> {
        for dir in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// How many processes the kernel killed in this group at its memory
    /// limit (`oom_kill` of v2's `memory.events`, v1's `memory.oom_control`).
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        self.dirs.iter().filter_map(|d| std::fs::read_to_string(d.join(file)).ok()).map(|t| oom_kill_count(&t)).sum()
    }

    /// Kills everything in the group and removes it.
    pub fn destroy(self) {
        kill_all(&self.dirs);
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The `oom_kill N` line of a memory controller's event file (0 without one).
fn oom_kill_count(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

fn procs_of(dirs: &[PathBuf]) -> Vec<i32> {
    let mut out: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn kill_all(dirs: &[PathBuf]) {
    use nix::sys::signal::{Signal, kill};
    for d in dirs {
        // v2 (5.14+): one write kills the whole group, forks included.
        let _ = write(d, "cgroup.kill", "1");
    }
    for _ in 0..200 {
        let procs = procs_of(dirs);
        if procs.is_empty() {
            return;
        }
        for p in procs {
            let _ = kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// After a crash: kills and removes every group this owner made. Returns
/// how many processes were still in them.
pub fn sweep(owner: &str) -> usize {
    let Some(version) = detect() else { return 0 };
    let mut killed = 0;
    for base in bases(&version) {
        let parent = base.join(format!("bifrost-{owner}"));
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let dir = vec![e.path()];
                killed += procs_of(&dir).len();
                kill_all(&dir);
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_both_hierarchies_event_files() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(oom_kill_count(v2), 2);
        assert_eq!(oom_kill_count(v1), 5);
        // Kernels before 4.13 (v1) have no counter.
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
