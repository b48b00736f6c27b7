//! What the app's process is doing, read from /proc/<pid>: CPU as a delta
//! of `utime + stime` over elapsed wall time (using the kernel's real clock
//! tick), RSS and threads from `status`, open fds from `fd/`.

use std::path::PathBuf;
use std::time::Instant;

/// The kernel's clock tick (`sysconf(_SC_CLK_TCK)`), read from the aux
/// vector the kernel handed this process (`AT_CLKTCK`), so no libc call.
pub fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    if let Ok(auxv) = std::fs::read("/proc/self/auxv") {
        for pair in auxv.chunks_exact(16) {
            let key = u64::from_ne_bytes(pair[..8].try_into().unwrap_or_default());
            let value = u64::from_ne_bytes(pair[8..].try_into().unwrap_or_default());
            if key == AT_CLKTCK && value > 0 {
                return value;
            }
        }
    }
    100
}

/// One reading of a process.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub pid: u32,
    /// Since the previous sample, in % of one core; `None` on the first.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: u64,
    pub threads: u32,
    pub open_fds: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("/proc/{0}/{1} is not in the expected format")]
    Malformed(u32, &'static str),
}

/// Reads a process repeatedly, remembering the last CPU total for deltas.
pub struct ProcReader {
    root: PathBuf,
    pid: u32,
    tick: u64,
    last: Option<(u64, Instant)>,
}

impl ProcReader {
    pub fn new(pid: u32) -> Self {
        ProcReader::with_root("/proc", pid)
    }

    /// For tests: a different /proc.
    pub fn with_root(root: impl Into<PathBuf>, pid: u32) -> Self {
        ProcReader { root: root.into(), pid, tick: clock_ticks_per_second(), last: None }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn sample(&mut self) -> Result<Sample, ProcError> {
        let dir = self.root.join(self.pid.to_string());
        let now = Instant::now();
        let stat = std::fs::read_to_string(dir.join("stat")).map_err(|_| ProcError::Gone(self.pid))?;
        let ticks = cpu_ticks(&stat).ok_or(ProcError::Malformed(self.pid, "stat"))?;
        let status = std::fs::read_to_string(dir.join("status")).map_err(|_| ProcError::Gone(self.pid))?;
        let (rss_kib, threads) = rss_and_threads(&status).ok_or(ProcError::Malformed(self.pid, "status"))?;
        let open_fds = std::fs::read_dir(dir.join("fd")).map(|d| d.count() as u32).unwrap_or(0);
        let cpu_percent = self.last.map(|(prev, at)| {
            let wall = now.duration_since(at).as_secs_f64();
            let used = ticks.saturating_sub(prev) as f64 / self.tick as f64;
            if wall > 0.0 { used / wall * 100.0 } else { 0.0 }
        });
        self.last = Some((ticks, now));
        Ok(Sample { pid: self.pid, cpu_percent, rss_bytes: rss_kib * 1024, threads, open_fds })
    }
}

/// `utime + stime` from /proc/<pid>/stat. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted after the *last* `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3; utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` (KiB) and `Threads` from /proc/<pid>/status. A zombie has no
/// VmRSS: 0.
pub fn rss_and_threads(status: &str) -> Option<(u64, u32)> {
    let mut rss = 0;
    let mut threads = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            rss = v.trim().trim_end_matches("kB").trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Threads:") {
            threads = v.trim().parse().ok();
        }
    }
    Some((rss, threads?))
}

/// The newest process (highest start time) whose command line contains
/// `needle`, skipping this process — for sidecars that share a process
/// namespace with the app and are not told its pid.
pub fn find_pid(needle: &str) -> Option<u32> {
    let me = std::process::id();
    let mut best: Option<(u64, u32)> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline: Vec<u8> = cmdline.iter().map(|b| if *b == 0 { b' ' } else { *b }).collect();
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        let start = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                let rest = s[s.rfind(')')? + 1..].to_string();
                rest.split_whitespace().nth(19)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        if best.is_none_or(|(b, _)| start >= b) {
            best = Some((start, pid));
        }
    }
    best.map(|(_, pid)| pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "42 (we) ird (name) S 1 42 42 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 3 0 12345 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_gives_rss_and_threads() {
        let status = "Name:\tpython3\nVmRSS:\t   51200 kB\nThreads:\t4\n";
        assert_eq!(rss_and_threads(status), Some((51200, 4)));
        assert_eq!(rss_and_threads("Name:\tzombie\nThreads:\t1\n"), Some((0, 1)));
        assert_eq!(rss_and_threads("Name:\tx\n"), None);
    }

    #[test]
    fn the_clock_tick_is_read_from_the_aux_vector() {
        // Linux on x86_64 and arm64 uses 100; the point is that it is read.
        let t = clock_ticks_per_second();
        assert!(t == 100 || t == 250 || t == 1000, "{t}");
    }

    #[test]
    fn reading_this_process_works_and_a_missing_one_is_gone() {
        let mut r = ProcReader::new(std::process::id());
        let first = r.sample().expect("sample");
        assert!(first.cpu_percent.is_none() && first.rss_bytes > 0 && first.threads >= 1 && first.open_fds >= 3);
        assert!(r.sample().expect("again").cpu_percent.is_some());
        let mut gone = ProcReader::new(u32::MAX - 1);
        assert!(matches!(gone.sample(), Err(ProcError::Gone(_))));
    }
}
