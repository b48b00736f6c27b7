//! What one sandboxed process may do, as the helper's command-line
//! arguments: the platform writes them, `bifrost sandbox run|enter` reads
//! them. Arguments rather than environment, so the app's environment holds
//! only what its jail allows (and `ps` shows the boundary).

use std::ffi::OsString;
use std::path::PathBuf;

/// The jail of one build step or replica, as the helper receives it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spec {
    /// The platform's owner id: the sweep after a crash finds supervisors by it.
    pub owner: String,
    /// Names the cgroup (and the process in logs): `<deployment>-r0`, `<deployment>-build`.
    pub name: String,
    /// Working directory.
    pub dir: PathBuf,
    /// Full access (the app's own tree, its caches).
    pub writable: Vec<PathBuf>,
    /// Read and execute, beyond the system's directories (toolchains).
    pub readable: Vec<PathBuf>,
    /// TCP ports the process may bind (0: an ephemeral one).
    pub bind: Vec<u16>,
    /// Run as this uid/gid (when the platform is root).
    pub user: Option<(u32, u32)>,
    pub memory_bytes: Option<u64>,
    /// CPU limit in millicores.
    pub cpu_millis: Option<u32>,
    pub pids_max: Option<u32>,
    /// RLIMIT_NOFILE, soft and hard (at most the inherited hard limit).
    pub open_files: Option<u64>,
    /// Landlock is required (the default); `false` only with `--insecure-no-sandbox`.
    pub landlock: bool,
    /// How long the tree gets between SIGTERM and SIGKILL when stopped.
    pub grace_ms: u64,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

impl Spec {
    /// The arguments after `bifrost sandbox run|enter`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![];
        let mut flag = |k: &str, v: OsString| {
            a.push(format!("--{k}").into());
            a.push(v);
        };
        flag("owner", self.owner.clone().into());
        flag("name", self.name.clone().into());
        flag("dir", self.dir.clone().into());
        for p in &self.writable {
            flag("rw", p.clone().into());
        }
        for p in &self.readable {
            flag("ro", p.clone().into());
        }
        for port in &self.bind {
            flag("bind", port.to_string().into());
        }
        if let Some((u, g)) = self.user {
            flag("user", format!("{u}:{g}").into());
        }
        if let Some(m) = self.memory_bytes {
            flag("memory", m.to_string().into());
        }
        if let Some(c) = self.cpu_millis {
            flag("cpu", c.to_string().into());
        }
        if let Some(p) = self.pids_max {
            flag("pids", p.to_string().into());
        }
        if let Some(n) = self.open_files {
            flag("open-files", n.to_string().into());
        }
        flag("landlock", if self.landlock { "required" } else { "off" }.into());
        flag("grace-ms", self.grace_ms.to_string().into());
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }

    /// Parses what [`Spec::to_args`] wrote.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Spec, String> {
        let mut spec = Spec { landlock: true, grace_ms: 10_000, ..Spec::default() };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if arg == "--" {
                spec.command = it.collect();
                break;
            }
            let key = arg.to_str().and_then(|k| k.strip_prefix("--")).ok_or_else(|| format!("unexpected {arg:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            let text = || value.to_str().map(str::to_string).ok_or_else(|| format!("--{key}: not UTF-8"));
            let num = |s: String| s.parse::<u64>().map_err(|e| format!("--{key} {s:?}: {e}"));
            match key {
                "owner" => spec.owner = text()?,
                "name" => spec.name = text()?,
                "dir" => spec.dir = PathBuf::from(value),
                "rw" => spec.writable.push(PathBuf::from(value)),
                "ro" => spec.readable.push(PathBuf::from(value)),
                "bind" => {
                    spec.bind.push(num(text()?)?.try_into().map_err(|_| format!("--bind {value:?}: not a port"))?)
                }
                "user" => {
                    let t = text()?;
                    let (u, g) = t.split_once(':').ok_or_else(|| format!("--user {t:?}: expected UID:GID"))?;
                    let id = |s: &str| s.parse::<u32>().map_err(|e| format!("--user {t:?}: {e}"));
                    spec.user = Some((id(u)?, id(g)?));
                }
                "memory" => spec.memory_bytes = Some(num(text()?)?),
                "cpu" => spec.cpu_millis = Some(num(text()?)? as u32),
                "pids" => spec.pids_max = Some(num(text()?)? as u32),
                "open-files" => spec.open_files = Some(num(text()?)?),
                "landlock" => spec.landlock = text()? != "off",
                "grace-ms" => spec.grace_ms = num(text()?)?,
                other => return Err(format!("unknown flag --{other}")),
            }
        }
        if spec.command.is_empty() {
            return Err("no command after --".into());
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_its_arguments() {
        let spec = Spec {
            owner: "abc".into(),
            name: "d_1-r0".into(),
            dir: "/srv/apps/p/d".into(),
            writable: vec!["/srv/apps/p/d".into(), "/srv/apps/p/cache".into()],
            readable: vec!["/opt/node".into(), "/root/.rustup".into()],
            bind: vec![41234],
            user: Some((200001, 200001)),
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(250),
            pids_max: Some(256),
            open_files: Some(4096),
            landlock: true,
            grace_ms: 10_000,
            command: vec!["sh".into(), "-c".into(), "exec python3 app.py --flag -- x".into()],
        };
        assert_eq!(Spec::from_args(spec.to_args()), Ok(spec));
    }

    #[test]
    fn a_spec_without_a_command_is_refused() {
        assert!(Spec::from_args(["--owner".into(), "x".into()]).is_err());
        assert!(Spec::from_args(["--bogus".into(), "x".into(), "--".into(), "true".into()]).is_err());
    }
}
