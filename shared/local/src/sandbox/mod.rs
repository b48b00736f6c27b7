//! The boundary around untrusted processes: every build step and replica
//! runs as `bifrost sandbox run … -- sh -c CMD` (see [`helper`]), with
//!
//! - an allow-listed environment: `PATH` (toolchains apps can reach),
//!   `LANG`, a `HOME` and `TMPDIR` inside its own directory, toolchain
//!   homes (`RUSTUP_HOME`, …), and what its jail adds (`PORT`, `[env]`) —
//!   nothing of the platform's;
//! - Landlock: read/execute the system's directories and toolchains,
//!   write only its own directory (and its project's caches), bind only
//!   its own `$PORT`, no signals or abstract sockets outside its domain,
//!   no `ptrace`-class access (`/proc/<pid>/environ`) to other processes;
//! - its own uid when the platform runs as root (one per project);
//! - a supervisor that is its child subreaper, so leaving the process
//!   group (`setsid`) or double-forking does not escape a stop;
//! - a cgroup with `[resources]` limits where the host allows one.
//!
//! It is not a container: the app shares the host's network namespace,
//! sees other processes' command lines in /proc, and reads the system's
//! read-only directories.

mod cgroup;
pub mod helper;
mod spec;
mod users;

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

pub use cgroup::Limits;
pub use helper::Support;
pub use spec::Spec;
pub use users::DEFAULT_BASE as DEFAULT_UID_BASE;
use users::UserPool;

use bifrost_core::ports::Isolation;

/// How the platform sets up its sandbox (`bifrost up` flags).
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The `bifrost` binary: runs the helper, and static sites' file server.
    pub helper: PathBuf,
    /// The platform's owner id (data dir hash).
    pub owner: String,
    /// The data dir (where the uid table lives).
    pub data_dir: PathBuf,
    /// Where apps' trees and caches live (must be reachable by app users).
    pub apps_root: PathBuf,
    /// `--insecure-no-sandbox`: run without Landlock where the host has none.
    pub insecure: bool,
    /// First uid handed to a project (root only).
    pub uid_base: u32,
    /// Open files each process of an app or a build may hold (soft and
    /// hard; the host's hard limit if lower): [`DEFAULT_OPEN_FILES`].
    pub open_files: u64,
}

/// Apps' and builds' limit on open files unless configured: what
/// production servers are commonly given (nginx, databases), far below
/// the millions a host's hard limit may allow.
pub const DEFAULT_OPEN_FILES: u64 = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "this host cannot confine apps: {0}. Apps and builds would run with the platform's rights \
         (read its data, tokens and other apps). Use a kernel with Landlock (Linux ≥ 5.13, `lsm=landlock`), \
         or start with --insecure-no-sandbox to accept that"
    )]
    Unavailable(String),
    #[error("{0}")]
    Setup(String),
}

/// Toolchains apps may use, found on the platform's `PATH` at start.
#[derive(Clone, Debug, Default)]
struct Toolchain {
    /// `PATH` entries apps can reach.
    path: Vec<PathBuf>,
    /// Read/execute grants beyond the system's directories.
    readable: Vec<PathBuf>,
    /// `RUSTUP_HOME`, `PYENV_ROOT`, …: where the toolchains keep their data.
    env: Vec<(String, String)>,
    /// `PATH` entries app users cannot reach (for error messages).
    unreachable: Vec<PathBuf>,
}

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    helper: PathBuf,
    owner: String,
    apps_root: PathBuf,
    landlock: bool,
    support: Support,
    users: Option<UserPool>,
    cgroups: Option<cgroup::Version>,
    toolchain: Toolchain,
    /// The file server static sites run (the `bifrost` binary), when app users can run it.
    static_server: Option<PathBuf>,
    open_files: u64,
}

/// One process to confine.
#[derive(Clone, Debug, Default)]
pub struct Jail {
    /// `<deployment>-build`, `<deployment>-r0`: names its cgroup.
    pub name: String,
    pub project_id: String,
    /// Working directory; writable.
    pub dir: PathBuf,
    /// Further writable directories (caches).
    pub writable: Vec<PathBuf>,
    /// Ports it may bind (0: any ephemeral one).
    pub bind: Vec<u16>,
    /// Environment beyond the base (`PATH`, `LANG`, `HOME`, `TMPDIR`).
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

const SYSTEM_DIRS: [&str; 10] = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
];
const DEVICES: [&str; 5] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];
/// What of /etc stays closed: credentials and host keys. (With its own uid
/// an app could not read most of them anyway; without one, Landlock decides.)
const ETC_CLOSED: [&str; 12] = [
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssh",
    "ssl",
    "security",
    "bifrost",
    "credstore",
    "credstore.encrypted",
];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Can a process of another uid (not in our group) reach `path`: every
/// directory on the way searchable by others, and a file readable or
/// executable by them?
pub fn others_can_reach(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else { return false };
    path.ancestors().all(|a| {
        a.metadata().map(|m| if m.is_dir() { m.mode() & 0o001 != 0 } else { m.mode() & 0o005 != 0 }).unwrap_or(false)
    })
}

fn under_system(p: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|s| p.starts_with(s))
}

/// What every sandboxed process may read and execute: the system's
/// directories and /etc (less credentials); and the device files it may
/// write. Computed by the helper itself, so a command line stays short.
pub(crate) fn system_rules() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut read: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
    read.extend(etc_entries());
    (read, DEVICES.iter().map(PathBuf::from).collect())
}

fn etc_entries() -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir("/etc") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !ETC_CLOSED.contains(&name.as_str()) {
                out.push(e.path());
            }
        }
    }
    // TLS roots, without the private keys beside them.
    out.extend(["/etc/ssl/certs", "/etc/ssl/openssl.cnf"].map(PathBuf::from));
    // resolv.conf is often a link into /run.
    if let Ok(target) = Path::new("/etc/resolv.conf").canonicalize()
        && !target.starts_with("/etc")
    {
        out.push(target);
    }
    out
}

fn toolchain(root: bool) -> Toolchain {
    let mut t = Toolchain::default();
    let home = std::env::home_dir();
    let reachable = |p: &Path| !root || others_can_reach(p);
    let grant = |t: &mut Toolchain, p: PathBuf| {
        if !under_system(&p) && !t.readable.contains(&p) {
            t.readable.push(p);
        }
    };
    for dir in std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default() {
        let Ok(canon) = dir.canonicalize() else { continue };
        if !canon.is_dir() || t.path.contains(&dir) {
            continue;
        }
        if !reachable(&canon) {
            t.unreachable.push(dir);
            continue;
        }
        t.path.push(dir.clone());
        grant(&mut t, canon.clone());
        // `/usr/local/bin/node -> /opt/node-v20/bin/node`: grant the install prefix.
        for e in std::fs::read_dir(&canon).into_iter().flatten().flatten() {
            if !e.file_type().map(|f| f.is_symlink()).unwrap_or(false) {
                continue;
            }
            let Ok(target) = e.path().canonicalize() else { continue };
            let Some(prefix) = target.parent().and_then(Path::parent) else { continue };
            let too_wide = prefix.components().count() < 3
                || home.as_deref().is_some_and(|h| h.starts_with(prefix))
                || prefix.starts_with("/etc");
            if !too_wide && reachable(prefix) {
                grant(&mut t, prefix.to_path_buf());
            }
        }
    }
    // Toolchain managers keep their toolchains outside PATH.
    let managers =
        [("RUSTUP_HOME", ".rustup"), ("PYENV_ROOT", ".pyenv"), ("NVM_DIR", ".nvm"), ("VOLTA_HOME", ".volta")];
    for (var, default) in managers {
        let dir = std::env::var_os(var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)));
        if let Some(dir) = dir.filter(|d| d.is_dir())
            && reachable(&dir)
        {
            t.env.push((var.to_string(), dir.display().to_string()));
            grant(&mut t, dir);
        }
    }
    if let Some(goroot) = std::env::var_os("GOROOT").map(PathBuf::from).filter(|d| d.is_dir() && reachable(d)) {
        t.env.push(("GOROOT".into(), goroot.display().to_string()));
        grant(&mut t, goroot);
    }
    t
}

/// Writes a file only the platform's user can read, atomically (a reader
/// sees the old or the new content, never a partial or a wider-open one).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates `dir` (and parents) and sets its mode.
fn dir_with_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Hands a tree to `user` (without following links out of it).
pub fn chown_tree(root: &Path, user: (u32, u32)) -> std::io::Result<()> {
    use nix::unistd::{Gid, Uid};
    let (uid, gid) = (Some(Uid::from_raw(user.0)), Some(Gid::from_raw(user.1)));
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, uid.map(|u| u.as_raw()), gid.map(|g| g.as_raw()))?;
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

impl Sandbox {
    /// Probes the host and prepares the apps' root. Refuses a host without
    /// Landlock unless `insecure` is set.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let setup = |what: &str, e: std::io::Error| SandboxError::Setup(format!("{what}: {e}"));
        let support = helper::probe();
        if !support.filesystem && !cfg.insecure {
            return Err(SandboxError::Unavailable("the kernel has no Landlock".into()));
        }
        let root = is_root();
        let users = if root {
            Some(UserPool::open(&cfg.data_dir, cfg.uid_base).map_err(|e| setup("the app users' table", e))?)
        } else {
            None
        };
        // Apps' trees: searchable, not listable, by app users.
        dir_with_mode(&cfg.apps_root, 0o711).map_err(|e| setup(&cfg.apps_root.display().to_string(), e))?;
        if root && !others_can_reach(&cfg.apps_root) {
            let blocker = cfg
                .apps_root
                .ancestors()
                .skip(1)
                .find(|a| a.metadata().map(|m| m.mode() & 0o001 == 0).unwrap_or(false))
                .map(|a| a.display().to_string())
                .unwrap_or_default();
            return Err(SandboxError::Setup(format!(
                "--apps-dir {}: apps run as their own users and could not reach it ({blocker} is not searchable \
                 by other users); choose a directory under /var/lib or /srv",
                cfg.apps_root.display()
            )));
        }
        let static_server = (!root || others_can_reach(&cfg.helper)).then(|| cfg.helper.clone());
        Ok(Sandbox {
            inner: Arc::new(Inner {
                helper: cfg.helper,
                owner: cfg.owner,
                apps_root: cfg.apps_root,
                landlock: support.filesystem,
                support,
                users,
                cgroups: cgroup::detect(),
                toolchain: toolchain(root),
                static_server,
                open_files: cfg.open_files,
            }),
        })
    }

    /// What confines apps here, for `/healthz` and the start banner.
    pub fn isolation(&self) -> Isolation {
        let i = &self.inner;
        let mut parts = vec![i.support.describe()];
        if i.users.is_some() {
            parts.push("a uid per project".into());
        }
        if let Some(v) = &i.cgroups {
            parts.push(format!("cgroups {v}"));
        }
        parts.push("allow-listed environment".into());
        parts.push("subreaper supervision".into());
        Isolation {
            enforced: i.landlock,
            summary: parts.join(", "),
            warning: (!i.landlock).then(|| {
                "NOT SANDBOXED (--insecure-no-sandbox): apps and builds can read the platform's data, tokens \
                 and other apps"
                    .to_string()
            }),
        }
    }

    /// A project's directory: `<apps root>/<project id>`.
    /// Where apps' trees and caches live.
    pub fn apps_root(&self) -> &Path {
        &self.inner.apps_root
    }

    pub fn project_dir(&self, project_id: &str) -> PathBuf {
        self.inner.apps_root.join(project_id)
    }

    /// Where a deployment's tree lives.
    pub fn deployment_dir(&self, project_id: &str, deployment_id: &str) -> PathBuf {
        self.project_dir(project_id).join(deployment_id)
    }

    /// Build caches shared by a project's builds (never by other projects).
    pub fn cache_dir(&self, project_id: &str) -> PathBuf {
        self.project_dir(project_id).join("cache")
    }

    /// The user a project's processes run as (`None` when the platform is not root).
    pub fn user_of(&self, project_id: &str) -> std::io::Result<Option<(u32, u32)>> {
        match &self.inner.users {
            Some(pool) => pool.user_of(project_id).map(Some),
            None => Ok(None),
        }
    }

    /// Creates a directory owned by the project's user (0700), with the
    /// project directory above it (platform-owned, 0711: apps cannot add to it).
    pub fn own_dir(&self, project_id: &str, dir: &Path) -> std::io::Result<()> {
        dir_with_mode(&self.project_dir(project_id), 0o711)?;
        dir_with_mode(dir, 0o700)?;
        if let Some(user) = self.user_of(project_id)? {
            std::os::unix::fs::lchown(dir, Some(user.0), Some(user.1))?;
        }
        Ok(())
    }

    /// Hands a tree (a checkout) to the project's user.
    pub fn hand_over(&self, project_id: &str, dir: &Path) -> std::io::Result<()> {
        match self.user_of(project_id)? {
            Some(user) => chown_tree(dir, user),
            None => Ok(()),
        }
    }

    /// Removes everything of a project: its trees and caches.
    pub fn remove_project(&self, project_id: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.project_dir(project_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The program apps may run to serve a static site.
    pub fn static_server(&self) -> Result<&Path, String> {
        self.inner.static_server.as_deref().ok_or_else(|| {
            format!(
                "static sites are served by {}, which app users cannot reach; install bifrost where other users \
                 can read it (e.g. /usr/local/bin)",
                self.inner.helper.display()
            )
        })
    }

    /// The `PATH` apps get.
    pub fn path(&self) -> OsString {
        std::env::join_paths(&self.inner.toolchain.path).unwrap_or_default()
    }

    /// A tool on the apps' `PATH`; the error says why it is missing.
    pub fn find(&self, bin: &str) -> Result<PathBuf, String> {
        let t = &self.inner.toolchain;
        if let Some(p) = t.path.iter().map(|d| d.join(bin)).find(|p| p.is_file()) {
            return Ok(p);
        }
        match t.unreachable.iter().map(|d| d.join(bin)).find(|p| p.is_file()) {
            Some(p) => Err(format!(
                "`{bin}` is installed at {}, where apps (running as their own users) cannot reach it; install it \
                 for all users (e.g. from the distribution's packages), or set [build] command",
                p.display()
            )),
            None => Err(format!("`{bin}` is not installed on the platform's machine (not in PATH)")),
        }
    }

    /// The command that runs `jail` confined. Output is piped; the
    /// supervisor is its own process group's leader. Stop it with
    /// [`Supervised`].
    pub fn command(&self, jail: &Jail) -> Result<tokio::process::Command, String> {
        let i = &self.inner;
        let user = self.user_of(&jail.project_id).map_err(|e| format!("the project's user: {e}"))?;
        let mut writable = vec![jail.dir.clone()];
        writable.extend(jail.writable.iter().cloned());
        let mut readable = i.toolchain.readable.clone();
        if let Some(s) = &i.static_server {
            readable.push(s.clone());
        }
        let spec = Spec {
            owner: i.owner.clone(),
            name: jail.name.clone(),
            dir: jail.dir.clone(),
            writable,
            readable,
            bind: jail.bind.clone(),
            user,
            memory_bytes: jail.limits.memory_bytes,
            cpu_millis: jail.limits.cpu_millis,
            pids_max: jail.limits.pids_max,
            open_files: Some(i.open_files),
            landlock: i.landlock,
            grace_ms: 10_000,
            command: jail.command.clone(),
        };
        let home = jail.dir.join(".bifrost/home");
        let tmp = jail.dir.join(".bifrost/tmp");
        for d in [&home, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            if let Some((uid, gid)) = user {
                let _ = std::os::unix::fs::lchown(d, Some(uid), Some(gid));
                let _ = d.parent().map(|p| std::os::unix::fs::lchown(p, Some(uid), Some(gid)));
            }
        }
        let lang = std::env::var("LANG").ok().filter(|l| !l.is_empty()).unwrap_or_else(|| "C.UTF-8".into());
        let mut cmd = tokio::process::Command::new(&i.helper);
        cmd.arg("sandbox")
            .arg("run")
            .args(spec.to_args())
            .env_clear()
            .env("PATH", self.path())
            .env("LANG", lang)
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .envs(i.toolchain.env.iter().cloned())
            .envs(jail.env.iter().cloned())
            .current_dir(&jail.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // A dropped handle asks the supervisor to end the tree
            // (`Supervised`); killing the supervisor itself would orphan it.
            .kill_on_drop(false);
        Ok(cmd)
    }

    /// After a crash: ends what a previous run of this platform left
    /// (supervisors found by their command line, then the cgroups). Returns
    /// how many processes it stopped.
    pub fn sweep(&self) -> usize {
        sweep(&self.inner.owner)
    }
}

/// See [`Sandbox::sweep`]; usable without a sandbox (test harnesses).
pub fn sweep(owner: &str) -> usize {
    use nix::sys::signal::{Signal, kill};
    let me = std::process::id();
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let supervisor = args.len() > 4
            && args[1] == b"sandbox"
            && args[2] == b"run"
            && args[3] == b"--owner"
            && args[4] == owner.as_bytes();
        if supervisor {
            let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGUSR1);
            found.push(pid);
        }
    }
    // Supervisors end their trees at once on SIGUSR1; give them a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline && found.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for p in &found {
        let _ = kill(nix::unistd::Pid::from_raw(*p as i32), Signal::SIGKILL);
    }
    found.len() + cgroup::sweep(owner)
}

/// The app's own process under a supervisor (what `enter` became): the pid
/// its health sidecar watches and an operator would look for. Waits up to
/// `wait` for the supervisor to have started it.
pub async fn main_pid(supervisor: u32, wait: std::time::Duration) -> Option<u32> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        // `children` needs CONFIG_PROC_CHILDREN; without it, parent links.
        let found = match std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")) {
            Ok(children) => children.split_whitespace().filter_map(|p| p.parse().ok()).next(),
            Err(_) => child_by_parent_link(supervisor),
        };
        if let Some(pid) = found {
            return Some(pid);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

fn child_by_parent_link(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
}

/// The platform's handle on a supervisor: stop politely or at once. Dropping
/// it ends the tree at once (a cancelled build, a shutdown).
pub struct Supervised {
    pid: Option<i32>,
}

impl Supervised {
    pub fn new(child: &tokio::process::Child) -> Supervised {
        Supervised { pid: child.id().map(|p| p as i32) }
    }

    fn send(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// SIGTERM to the whole tree; SIGKILL after its grace period.
    pub fn stop(&self) {
        self.send(nix::sys::signal::Signal::SIGTERM);
    }

    /// SIGKILL to the whole tree now.
    pub fn kill(&self) {
        self.send(nix::sys::signal::Signal::SIGUSR1);
    }

    /// The supervisor did not end: kill it and its group (last resort).
    pub fn kill_supervisor(&self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// The supervisor has been waited for: nothing left to signal.
    pub fn done(&mut self) {
        self.pid = None;
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}
