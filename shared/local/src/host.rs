//! What this machine can tell the deploy policy about itself: free disk
//! where apps live, load per core, memory available (Linux `/proc`).

use std::path::Path;

use bifrost_core::ports::HostFacts;

/// The facts, each `None` when this host cannot tell it.
pub fn facts(apps_root: &Path) -> HostFacts {
    HostFacts {
        disk_free_gb: disk_free_gb(apps_root),
        cpu_load: load_per_core(),
        memory_available_mb: std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_available_mb(&m)),
    }
}

fn disk_free_gb(dir: &Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    let bytes = s.blocks_available() as f64 * s.fragment_size() as f64;
    Some(round2(bytes / 1e9))
}

fn load_per_core() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let one: f64 = text.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    Some(round2(one / cores))
}

/// `MemAvailable:  123456 kB` → MB.
fn mem_available_mb(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

/// Two decimals: what a reason shows (`Disk free 2.5GB …`).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_available_is_read_from_meminfo_in_mb() {
        let m = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:    2097152 kB\n";
        assert_eq!(mem_available_mb(m), Some(2048.0));
        assert_eq!(mem_available_mb("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn this_host_tells_its_disk_load_and_memory() {
        let f = facts(Path::new("/"));
        assert!(f.disk_free_gb.is_some_and(|g| g >= 0.0), "{f:?}");
        assert!(f.cpu_load.is_some_and(|l| l >= 0.0), "{f:?}");
        assert!(f.memory_available_mb.is_some_and(|m| m > 0.0), "{f:?}");
    }

    #[test]
    fn a_missing_directory_has_no_disk_fact() {
        assert_eq!(disk_free_gb(Path::new("/nonexistent/bifrost")), None);
    }
}
