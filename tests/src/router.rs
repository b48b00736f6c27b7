//! `bifrost-router` processes for the cluster tests: started with a
//! configuration (optionally inside a network namespace), asked for
//! `/cluster/status`, stopped by SIGTERM or kill -9; and network
//! namespaces joined by a bridge, to run discovery and partitions on a
//! network of their own rather than the host's.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::router_bin;

/// One router process; killed (-9) on drop.
pub struct RouterProc {
    pub child: Child,
    /// `http://addr` it serves on.
    pub url: String,
    pub id: String,
    _dir: tempfile::TempDir,
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RouterProc {
    /// Starts `bifrost-router` with `config` (the JSON file's text, if any),
    /// `args`, `env`, inside `netns` when given; returns once it listens.
    pub fn spawn(
        id: &str,
        config: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
        netns: Option<&str>,
    ) -> RouterProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(router_bin());
                c
            }
            None => Command::new(router_bin()),
        };
        cmd.env_remove("BIFROST_CONFIG");
        if let Some(text) = config {
            let path = dir.path().join("config.json");
            std::fs::write(&path, text).expect("write config");
            cmd.env("BIFROST_CONFIG", path);
        }
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("BIFROST_TEST_ROUTER_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start bifrost-router");
        let stdout = child.stdout.take().expect("stdout");
        let mut url = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("bifrost-router: listening on ") {
                url = format!("http://{}", addr.trim());
                break;
            }
        }
        assert!(!url.is_empty(), "bifrost-router {id} did not start");
        RouterProc { child, url, id: id.to_string(), _dir: dir }
    }

    pub async fn status(&self) -> Value {
        cluster_status(&self.url).await
    }

    /// Waits (up to 60 s) until `check` holds for its `/cluster/status`.
    pub async fn until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status().await;
            if check(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{} never saw {what}: {s:#}", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 30 s) until its `/ready` answers 200 (routes loaded).
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/ready", self.url)).await.map(|r| r.status().as_u16()).ok() != Some(200) {
            assert!(Instant::now() < deadline, "{} never became ready", self.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn sigterm(&self) {
        let pid = self.child.id();
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(sent.success());
    }

    /// Its exit code, waiting up to 20 s.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code();
            }
            assert!(Instant::now() < deadline, "{} did not exit after SIGTERM", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /cluster/status` of a router (Null if it does not answer).
pub async fn cluster_status(url: &str) -> Value {
    match reqwest::get(format!("{url}/cluster/status")).await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A node's state in a `/cluster/status`.
pub fn state_of(s: &Value, id: &str) -> Option<String> {
    s["nodes"].as_array()?.iter().find(|n| n["id"] == id).and_then(|n| n["state"].as_str().map(str::to_string))
}

/// All `n` members known and alive.
pub fn all_healthy(s: &Value, n: u64) -> bool {
    s["members"] == n && s["healthy_members"] == n && s["cluster_health"] == "HEALTHY"
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// `n` network namespaces, each with an `eth0` at `<prefix>.<i>/24`
/// (i = 1..=n) on one bridge, which holds `<prefix>.254` so the test can
/// reach them. Torn down on drop.
pub struct Lan {
    tag: String,
    prefix: String,
    n: usize,
}

impl Lan {
    /// `tag`: a few letters naming the test (interface names are ≤ 15
    /// characters); `prefix`: e.g. `10.77.1`, one per test.
    pub fn new(tag: &str, prefix: &str, n: usize) -> Lan {
        let lan = Lan { tag: tag.to_string(), prefix: prefix.to_string(), n };
        lan.teardown();
        let br = lan.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        // mDNS is multicast: the bridge floods it rather than snooping.
        ip(&["link", "set", &br, "type", "bridge", "mcast_snooping", "0"]);
        ip(&["addr", "add", &format!("{prefix}.254/24"), "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for i in 1..=n {
            let (ns, host_end) = (lan.ns(i), lan.veth(i));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["link", "set", &host_end, "master", &br, "up"]);
            let addr = format!("{}/24", lan.ip(i));
            ip(&[
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &addr,
                "broadcast",
                &format!("{prefix}.255"),
                "dev",
                "eth0",
            ]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            // Multicast (mDNS) leaves by eth0.
            ip(&["netns", "exec", &ns, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        }
        lan
    }

    pub fn ns(&self, i: usize) -> String {
        format!("bft-{}-{i}", self.tag)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{i}", self.prefix)
    }

    fn bridge(&self) -> String {
        format!("bftbr-{}", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("bftv-{}{i}", self.tag)
    }

    /// Cuts (`false`) or restores (`true`) node `i`'s link to the bridge.
    pub fn link(&self, i: usize, up: bool) {
        ip(&["link", "set", &self.veth(i), if up { "up" } else { "down" }]);
    }

    fn teardown(&self) {
        for i in 1..=self.n {
            ip_quiet(&["netns", "delete", &self.ns(i)]);
            ip_quiet(&["link", "delete", &self.veth(i)]);
        }
        ip_quiet(&["link", "delete", &self.bridge()]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.teardown();
    }
}
