//! The two halves of `bifrost sandbox`, which the platform runs in front of
//! every build step and replica. Both are plain synchronous code in a
//! process of their own, started before any async runtime.
//!
//! - `run` is the *supervisor*: a child subreaper, so every process the
//!   app starts stays its descendant even after a double fork and `setsid`.
//!   It starts `enter`, and on SIGTERM (stop), SIGUSR1 (kill now), its own
//!   parent's death (the platform crashed) or the app's exit, ends the whole
//!   tree. It creates and removes the replica's cgroup.
//! - `enter` joins the cgroup, restricts itself with Landlock, drops to the
//!   app's own user, and `exec`s the command: what runs is confined before
//!   its first instruction.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::cgroup::{self, Cgroup, Limits};
use super::spec::Spec;

/// Exit code when the sandbox itself cannot be set up (never the app's).
pub const SETUP_FAILED: i32 = 125;

/// `bifrost sandbox run|enter|probe ARGS`: never returns.
pub fn main(mode: &str, args: Vec<std::ffi::OsString>) -> ! {
    let code = match mode {
        "probe" => {
            println!("{}", probe().describe());
            0
        }
        _ => match Spec::from_args(args) {
            Err(e) => {
                eprintln!("[bifrost] sandbox: {e}");
                SETUP_FAILED
            }
            Ok(spec) if mode == "enter" => enter(&spec),
            Ok(spec) if mode == "run" => supervise(&spec),
            Ok(_) => {
                eprintln!("[bifrost] sandbox: unknown mode {mode:?} (run, enter, probe)");
                SETUP_FAILED
            }
        },
    };
    std::process::exit(code)
}

/// What the kernel gives us, checked without restricting anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Support {
    pub filesystem: bool,
    pub bind_ports: bool,
    pub scopes: bool,
}

impl Support {
    pub fn describe(&self) -> String {
        if !self.filesystem {
            return "Landlock unavailable".into();
        }
        let mut parts = vec!["filesystem"];
        if self.bind_ports {
            parts.push("TCP bind");
        }
        if self.scopes {
            parts.push("signal and abstract-socket scopes");
        }
        format!("Landlock ({})", parts.join(", "))
    }
}

/// Probes Landlock by creating (not enforcing) rulesets that require each feature.
pub fn probe() -> Support {
    let hard = || Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
    let filesystem = hard().handle_access(AccessFs::from_all(ABI::V1)).and_then(|r| r.create()).is_ok();
    let bind_ports = hard().handle_access(AccessNet::BindTcp).and_then(|r| r.create()).is_ok();
    let scopes = hard().scope(Scope::from_all(ABI::V6)).and_then(|r| r.create()).is_ok();
    Support { filesystem, bind_ports, scopes }
}

fn restrict(spec: &Spec) -> Result<RulesetStatus, String> {
    let abi = ABI::V7;
    let err = |e: landlock::RulesetError| e.to_string();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .handle_access(AccessNet::BindTcp)
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?;
    let rule = |path: &Path, access| -> Option<PathBeneath<PathFd>> {
        // Paths that do not exist here (a /lib32 on this distribution) are skipped.
        PathFd::new(path).ok().map(|fd| PathBeneath::new(fd, access))
    };
    let (system, devices) = super::system_rules();
    for p in system.iter().chain(&spec.readable) {
        if let Some(r) = rule(p, AccessFs::from_read(abi)) {
            ruleset = ruleset.add_rule(r).map_err(err)?;
        }
    }
    for p in &devices {
        if let Some(r) = rule(p, AccessFs::from_file(abi)) {
            ruleset = ruleset.add_rule(r).map_err(err)?;
        }
    }
    for p in &spec.writable {
        if let Some(r) = rule(p, AccessFs::from_all(abi)) {
            ruleset = ruleset.add_rule(r).map_err(err)?;
        }
    }
    for port in &spec.bind {
        ruleset = ruleset.add_rule(NetPort::new(*port, AccessNet::BindTcp)).map_err(err)?;
    }
    let status = ruleset.restrict_self().map_err(err)?;
    Ok(status.ruleset)
}

/// The inner half: confine this process, then become the command.
fn enter(spec: &Spec) -> i32 {
    // The supervisor blocks signals it reads from a signalfd; the app must not inherit that.
    let _ = SigSet::all().thread_unblock();
    if let Some(version) = cgroup::mounted() {
        let limits = Limits { memory_bytes: spec.memory_bytes, cpu_millis: spec.cpu_millis, pids_max: spec.pids_max };
        match Cgroup::create(&version, &spec.owner, &spec.name, limits) {
            Ok(group) => {
                if let Err(e) = group.join(std::process::id()) {
                    eprintln!("[bifrost] sandbox: cannot join cgroup {}: {e}", spec.name);
                    return SETUP_FAILED;
                }
            }
            // Not ours to make (an unprivileged platform without delegation):
            // supervision still holds, without resource limits.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) => {}
            Err(e) => {
                eprintln!("[bifrost] sandbox: cannot create cgroup {}: {e}", spec.name);
                return SETUP_FAILED;
            }
        }
    }
    if spec.landlock {
        match restrict(spec) {
            Ok(RulesetStatus::NotEnforced) => {
                eprintln!("[bifrost] sandbox: this kernel does not enforce Landlock; refusing to run unconfined");
                return SETUP_FAILED;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("[bifrost] sandbox: cannot apply the Landlock rules: {e}");
                return SETUP_FAILED;
            }
        }
    }
    if let Some((uid, gid)) = spec.user {
        use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
        let dropped = setgroups(&[Gid::from_raw(gid)])
            .and_then(|_| setgid(Gid::from_raw(gid)))
            .and_then(|_| setuid(Uid::from_raw(uid)));
        if let Err(e) = dropped {
            eprintln!("[bifrost] sandbox: cannot switch to uid {uid}: {e}");
            return SETUP_FAILED;
        }
        // Make sure there is no way back.
        if setuid(Uid::from_raw(0)).is_ok() && uid != 0 {
            eprintln!("[bifrost] sandbox: uid {uid} could become root again; refusing");
            return SETUP_FAILED;
        }
    }
    // No core dumps of apps that hold secrets in memory.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    if let Some(n) = spec.open_files {
        open_files_limit(n);
    }
    let Some((program, args)) = spec.command.split_first() else { return SETUP_FAILED };
    let err = Command::new(program).args(args).current_dir(&spec.dir).exec();
    eprintln!("[bifrost] cannot run {}: {err}", program.to_string_lossy());
    127
}

/// Every app gets the same descriptor limit however the platform was
/// started (which raises its own soft limit for its clients), and a hard
/// one it cannot raise: a hostile app cannot pin the host's kernel memory
/// in a million open files (uncharged to a cgroup v1 memory limit).
fn open_files_limit(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(n, |(_, hard)| hard);
    let n = hard.min(n);
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, n, n) {
        eprintln!("[bifrost] sandbox: cannot limit open files to {n}: {e}");
    }
}

/// The outer half: start `enter`, reap and watch, end the tree on demand.
fn supervise(spec: &Spec) -> i32 {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("[bifrost] sandbox: cannot become a subreaper: {e}");
        return SETUP_FAILED;
    }
    let parent = nix::unistd::getppid();
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1] {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        eprintln!("[bifrost] sandbox: cannot block signals: {e}");
        return SETUP_FAILED;
    }
    let signals = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[bifrost] sandbox: signalfd: {e}");
            return SETUP_FAILED;
        }
    };
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("[bifrost] sandbox: cannot find its own binary: {e}");
            return SETUP_FAILED;
        }
    };
    let child = match Command::new(me).arg("sandbox").arg("enter").args(spec.to_args()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[bifrost] sandbox: cannot start: {e}");
            return SETUP_FAILED;
        }
    };
    let main = Pid::from_raw(child.id() as i32);
    // Reaped by waitpid below, not through `Child`.
    drop(child);
    let mut outcome: Option<WaitStatus> = None;
    // When set: the tree is being stopped; SIGKILL everything at this instant.
    let mut kill_at: Option<Instant> = None;
    loop {
        // Reap every exited descendant (orphans are re-parented to us).
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(main) {
                        outcome = Some(status);
                    }
                }
            }
        }
        if outcome.is_some() {
            if descendants().is_empty() {
                break;
            }
            // The app's main process ended: what it left behind goes with it, now.
            kill_at = Some(Instant::now());
        }
        if let Some(at) = kill_at
            && Instant::now() >= at
        {
            signal_tree(Signal::SIGKILL);
        }
        if nix::unistd::getppid() != parent && kill_at.is_none() {
            // The platform is gone (kill -9): nobody will stop us; stop now.
            signal_tree(Signal::SIGTERM);
            kill_at = Some(Instant::now() + Duration::from_secs(2));
        }
        let mut fds = [nix::poll::PollFd::new(signals.as_fd(), nix::poll::PollFlags::POLLIN)];
        let wait: u16 = if kill_at.is_some() { 20 } else { 500 };
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait));
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP) if kill_at.is_none() => {
                    signal_tree(Signal::SIGTERM);
                    kill_at = Some(Instant::now() + Duration::from_millis(spec.grace_ms));
                }
                Ok(Signal::SIGUSR1) => kill_at = Some(Instant::now()),
                _ => {}
            }
        }
    }
    if let Some(version) = cgroup::mounted() {
        let group = Cgroup::existing(&version, &spec.owner, &spec.name);
        // Otherwise the app's log would only say "killed by SIGKILL".
        let killed = group.oom_kills();
        if killed > 0 {
            // (Builds have no limit of their own: the host ran out.)
            let at = spec.memory_bytes.map_or(String::new(), |b| {
                format!(" at the memory limit of {} MiB ([resources] memory)", b.div_ceil(1 << 20))
            });
            eprintln!("[bifrost] out of memory: the kernel killed {killed} process(es) here{at}");
        }
        group.destroy();
    }
    match outcome {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, sig, _)) => {
            // Die the same way, so the platform can say "killed by SIGSEGV".
            let _ = SigSet::all().thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            128 + sig as i32
        }
        _ => SETUP_FAILED,
    }
}

/// Every process below this one (by parent links in /proc).
fn descendants() -> Vec<Pid> {
    let me = std::process::id() as i32;
    let mut parent_of: Vec<(i32, i32)> = vec![];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            // pid (comm) state ppid ...: comm may hold spaces and parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
            let mut f = rest.split_whitespace();
            let state = f.next().unwrap_or("");
            let ppid = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if state != "Z" {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = vec![];
    let mut frontier = vec![me];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(Pid::from_raw(*child));
            frontier.push(*child);
        }
    }
    out
}

fn signal_tree(sig: Signal) {
    for p in descendants() {
        let _ = kill(p, sig);
        if sig == Signal::SIGTERM {
            // A stopped process would never see the SIGTERM.
            let _ = kill(p, Signal::SIGCONT);
        }
    }
}
