//! Harness for end-to-end tests: starts the real `bifrost up` on a free
//! loopback port with its own data dir, runs the real CLI, builds real git
//! repositories, signs real webhooks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "bft_e2e-admin-token";

pub mod router;

/// The `bifrost` binary, built once if a test runs before `cargo build`.
/// `bifrost-sidecar`, built beside `bifrost`.
pub fn sidecar_bin() -> PathBuf {
    bifrost_bin().with_file_name("bifrost-sidecar")
}

/// `bifrost-router` (crate bifrost-router-node), built beside `bifrost`
/// when it is not there yet.
pub fn router_bin() -> PathBuf {
    let bin = bifrost_bin().with_file_name("bifrost-router");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "bifrost-router-node"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success() && bin.exists(), "building {} failed", bin.display());
    }
    bin
}

/// Signs in to the dashboard as a browser does (the login server function,
/// same origin) and returns the sealed session the cookie holds.
pub async fn dashboard_session(http: &reqwest::Client, url: &str, token: &str) -> String {
    let login = http
        .post(format!("{url}/ui/api/login"))
        .header("origin", url)
        .form(&[("token", token), ("next", "/")])
        .send()
        .await
        .expect("sign in");
    login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("bifrost_session=").and_then(|v| v.split(';').next()).map(str::to_string))
        .expect("a session cookie")
}

pub fn bifrost_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("BIFROST_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test-binary> → target/<profile>/bifrost
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
        let bin = profile_dir.join("bifrost");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "bifrost-cli"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p bifrost-cli failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// Builds the size-optimized health sidecar (profile `sidecar`, what
/// scripts/up.sh runs) when `path` does not exist yet.
pub fn ensure_sidecar_profile(path: &Path) {
    if path.exists() {
        return;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "--profile", "sidecar", "-p", "bifrost-sidecar"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success() && path.exists(), "building {} failed", path.display());
}

/// A running `bifrost up`. Killed (SIGKILL) on drop so no test leaks it.
pub struct Platform {
    pub url: String,
    /// The sidecar ingest (gRPC), as printed by `bifrost up`.
    pub ingest_url: String,
    pub data_dir: PathBuf,
    pub home: tempfile::TempDir,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
    /// Run `bifrost up` as this uid (and gid) instead of the test's own.
    run_as: Option<u32>,
    /// Start `bifrost up` with this soft limit on open files (`prlimit`).
    soft_open_files: Option<u64>,
    pub log: PathBuf,
}

impl Platform {
    pub fn start() -> Platform {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Platform {
        Self::start_as(env, None)
    }

    /// `bifrost up` run by an unprivileged user (`uid`, same gid): apps then
    /// share its uid, and Landlock alone keeps them out of its data.
    pub fn start_unprivileged(uid: u32) -> Platform {
        Self::start_as(&[], Some(uid))
    }

    /// `bifrost up` started with a soft limit of `n` open files (as a
    /// systemd session's 1,024), its hard limit unchanged.
    pub fn start_with_soft_open_files(n: u64, env: &[(&str, &str)]) -> Platform {
        Self::build(env, None, Some(n))
    }

    fn start_as(env: &[(&str, &str)], run_as: Option<u32>) -> Platform {
        Self::build(env, run_as, None)
    }

    fn build(env: &[(&str, &str)], run_as: Option<u32>, soft_open_files: Option<u64>) -> Platform {
        let home = tempfile::tempdir().expect("tempdir");
        if let Some(uid) = run_as {
            std::os::unix::fs::chown(home.path(), Some(uid), Some(uid)).expect("chown home");
        }
        // Apps run as users of their own (the tests run as root in CI):
        // their trees under home/apps must be reachable, the rest is not.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod home");
        }
        let data_dir = home.path().join("data");
        let mut p = Platform {
            url: String::new(),
            ingest_url: String::new(),
            data_dir,
            log: home.path().join("bifrost.log"),
            home,
            child: None,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            run_as,
            soft_open_files,
        };
        p.spawn(&[], "127.0.0.1:0");
        p
    }

    fn spawn(&mut self, env: &[(&str, &str)], listen: &str) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut cmd = match self.run_as {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into(), "--".into()])
                    .arg(bifrost_bin());
                c
            }
            None => match self.soft_open_files {
                Some(n) => {
                    let mut c = Command::new("prlimit");
                    c.arg(format!("--nofile={n}:")).arg("--").arg(bifrost_bin());
                    c
                }
                None => Command::new(bifrost_bin()),
            },
        };
        cmd.args(["up", "--listen", listen, "--ingest-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            // (An environment variable, not a flag: benchmarks run this
            // harness against older builds too.)
            .env("BIFROST_APPS_DIR", self.apps_dir())
            .env("BIFROST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("BIFROST_CONFIG_DIR", self.home.path().join("cfg"))
            .env("BIFROST_LOG", "info,bifrost_core=debug,bifrost_sqlite=debug,bifrost_local=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn bifrost up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut url = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("bifrost: listening on ") {
                    url = Some(u.trim().to_string());
                }
                // Printed after the listening line: both are known then.
                if let Some(rest) = line.strip_prefix("bifrost: sidecar ingest on ")
                    && let Some(u) = url.take()
                {
                    let ingest = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((u, ingest));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((url, ingest)) => {
                self.url = url;
                self.ingest_url = ingest;
            }
            Err(_) => {
                let _ = child.kill();
                panic!("bifrost up did not start; log:\n{}", self.log_text());
            }
        }
        self.child = Some(child);
    }

    /// Where this platform keeps apps' trees: `<apps>/<project id>/<deployment id>`.
    pub fn apps_dir(&self) -> PathBuf {
        self.home.path().join("apps")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first log line `pred` accepts, waiting for it (lines are
    /// written in batches, a moment after they are logged).
    pub async fn log_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| pred(l)) {
                return line.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no log line for {what}:\n{text}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// SIGKILL: no shutdown hooks, no draining — a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data dir (a new port).
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.kill9();
        self.spawn(env, "127.0.0.1:0");
    }

    /// Crashes and starts again on the same data dir and the same port, so
    /// clients (a browser's EventSource) reconnect to the same URL.
    pub fn restart_same_port(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_string();
        self.kill9();
        self.spawn(&[], &addr);
    }

    /// Runs the CLI against this platform as admin.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_as(ADMIN_TOKEN, args)
    }

    pub fn cli_as(&self, token: &str, args: &[&str]) -> CliOutput {
        let out = Command::new(bifrost_bin())
            .args(args)
            .env("BIFROST_SERVER", &self.url)
            .env("BIFROST_TOKEN", token)
            .env("BIFROST_CONFIG_DIR", self.home.path().join("cfg"))
            .env("NO_COLOR", "1")
            .output()
            .expect("run bifrost");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, ADMIN_TOKEN)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.kill9();
        // A killed platform's supervisors end their trees when they notice;
        // a finished test does not wait for that.
        bifrost_local::sandbox::sweep(&bifrost_local::process::owner_id(&self.data_dir));
    }
}

#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// The webhook secret of projects made by [`Platform::add_project`].
pub const WEBHOOK_SECRET: &str = "s3cret";

/// A deployment that has stopped moving.
pub fn finished(d: &Value) -> bool {
    matches!(d["status"].as_str(), Some("healthy" | "failed" | "cancelled" | "superseded"))
}

impl Platform {
    /// `bifrost projects add NAME --repo REPO` (webhook secret [`WEBHOOK_SECRET`]).
    pub fn add_project(&self, name: &str, repo: &GitRepo) {
        let out = self.cli(&["projects", "add", name, "--repo", &repo.path_str(), "--webhook-secret", WEBHOOK_SECRET]);
        assert_eq!(out.code, 0, "{out:?}");
    }

    /// A signed push of the repo's head to main; the new deployment's id.
    pub async fn push(&self, repo: &GitRepo, delivery: &str) -> String {
        self.push_payload(repo.push_payload("refs/heads/main", &repo.head()), delivery).await
    }

    /// Pushes the repo's head with the payload saying its commit was made
    /// at `committed_at` (RFC 3339), as GitHub's `head_commit.timestamp`.
    pub async fn push_made_at(&self, repo: &GitRepo, delivery: &str, committed_at: &str) -> String {
        let mut payload = repo.push_payload("refs/heads/main", &repo.head());
        payload["head_commit"] = serde_json::json!({"id": repo.head(), "timestamp": committed_at});
        self.push_payload(payload, delivery).await
    }

    async fn push_payload(&self, payload: Value, delivery: &str) -> String {
        let a = self.client().webhook("push", delivery, WEBHOOK_SECRET, &payload).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["deployment"]["id"].as_str().expect("id").to_string()
    }

    /// A new token of the `router` role (what `bifrost-router --gateway` needs).
    pub async fn router_token(&self, name: &str) -> String {
        let a = self.client().post("/api/v1/tokens", serde_json::json!({"name": name, "role": "router"})).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["token"].as_str().expect("token").to_string()
    }

    /// Waits for the deployment to finish, and insists it is healthy.
    pub async fn healthy(&self, id: &str) -> Value {
        let d = self.client().wait_deployment(id, "finished", finished).await;
        assert_eq!(d["status"], "healthy", "{d:#}\nlog:\n{}", self.log_text());
        d
    }
}

/// A python app on `$PORT` answering 200 at every path (`/headers`: the
/// request's headers as JSON), after running `startup` (python source).
pub fn python_app(name: &str, startup: &str) -> GitRepo {
    let app = format!(
        r#"import os, sys, json, http.server
{startup}
PORT = int(os.environ["PORT"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(self.headers)).encode() if self.path == "/headers" else b"ok"
        self.send_response(200); self.end_headers(); self.wfile.write(body)
        if self.path == "/crash":
            os._exit(3)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", PORT), H).serve_forever()
"#
    );
    let toml = format!(
        "[app]\nname = \"{name}\"\nruntime = \"python\"\n\n[run]\ncommand = \"python3 app.py\"\n\n[health]\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
    );
    GitRepo::new(&[("deploy.toml", &toml), ("app.py", &app)])
}

/// Requests through the router (`Host: <app>.localhost:<port>`).
pub struct AppClient {
    http: reqwest::Client,
    base: String,
    /// `<app>.localhost:<port>`, as sent in `Host`.
    pub host: String,
}

impl AppClient {
    pub fn new(p: &Platform, app: &str) -> AppClient {
        AppClient::at(p.client().base(), app)
    }

    /// The app through the router at `base` (`http://host:port`).
    pub fn at(base: &str, app: &str) -> AppClient {
        let port = base.rsplit(':').next().unwrap_or("80").to_string();
        AppClient { http: reqwest::Client::new(), base: base.to_string(), host: format!("{app}.localhost:{port}") }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base)).header("host", &self.host);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.expect("the router answers")
    }
}

/// A small HTTP client for the API.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client { base: base.to_string(), token: token.to_string(), http: reqwest::Client::new() }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client { base: self.base.clone(), token: token.to_string(), http: self.http.clone() }
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    pub async fn get(&self, path: &str) -> Answer {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("GET");
        Self::answer(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("POST");
        Self::answer(r).await
    }

    /// Any request: method, path, raw body and extra headers.
    pub async fn request(&self, method: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token).body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Self::answer(rb.send().await.expect("request")).await
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn delete(&self, path: &str) -> Answer {
        let r = self.http.delete(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("DELETE");
        Self::answer(r).await
    }

    /// GET through the router: `Host: <app>.localhost:<port>`.
    pub async fn app_get(&self, app: &str, path: &str) -> Result<(u16, Option<String>, String), String> {
        let port = self.base.rsplit(':').next().unwrap_or("80");
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("host", format!("{app}.localhost:{port}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let deployment = r.headers().get("x-bifrost-deployment").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = r.text().await.map_err(|e| e.to_string())?;
        Ok((status, deployment, body))
    }

    /// Reads a Server-Sent Events stream until `until` holds for an event's
    /// data (or 60 s pass). Returns (id, event, data) of every event.
    /// Status and log events (those with an `id:`) until `until` holds.
    pub async fn sse(
        &self,
        path: &str,
        last_event_id: Option<u64>,
        until: impl Fn(&Value) -> bool,
    ) -> Vec<(u64, String, Value)> {
        self.sse_all(path, last_event_id, |id, _, v| id.is_some() && until(v))
            .await
            .into_iter()
            .filter_map(|(id, e, v)| id.map(|id| (id, e, v)))
            .collect()
    }

    /// Every event, with or without an id, until `until` holds.
    pub async fn sse_all(
        &self,
        path: &str,
        last_event_id: Option<u64>,
        until: impl Fn(Option<u64>, &str, &Value) -> bool,
    ) -> Vec<(Option<u64>, String, Value)> {
        let mut rb = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id.to_string());
        }
        let mut resp = rb.send().await.expect("SSE request");
        assert_eq!(resp.status().as_u16(), 200, "SSE status");
        assert!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("text/event-stream")),
            "not an event stream"
        );
        let mut out = vec![];
        let mut buf = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let chunk = match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
                Ok(Ok(Some(c))) => c,
                _ => break,
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
                let stop = until(id, &event, &v);
                out.push((id, event, v));
                if stop {
                    return out;
                }
            }
        }
        out
    }

    /// Sends a GitHub webhook signed with `secret`.
    pub async fn webhook(&self, event: &str, delivery: &str, secret: &str, payload: &Value) -> Answer {
        let body = serde_json::to_vec(payload).expect("json");
        let sig = bifrost_core::auth::sign_github(secret.as_bytes(), &body);
        self.webhook_raw(event, delivery, Some(&sig), body).await
    }

    pub async fn webhook_raw(&self, event: &str, delivery: &str, signature: Option<&str>, body: Vec<u8>) -> Answer {
        let mut rb = self
            .http
            .post(format!("{}/api/v1/webhooks/github", self.base))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            rb = rb.header("x-hub-signature-256", s);
        }
        Self::answer(rb.send().await.expect("webhook")).await
    }

    /// Polls a deployment until `pred` holds on it (30 s at most).
    pub async fn wait_deployment(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        let mut last = Value::Null;
        while start.elapsed() < Duration::from_secs(120) {
            let a = self.get(&format!("/api/v1/deployments/{id}")).await;
            if a.status == 200 && pred(&a.body) {
                return a.body;
            }
            last = a.body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("deployment {id} never became {what}; last: {last:#}");
    }
}

/// A real git repository in a temp dir.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, args, &[])
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("git")
        // Some tests hand a repository to another user (the platform's).
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@bifrost.test")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@bifrost.test")
        .envs(env.iter().copied())
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl GitRepo {
    pub fn new(files: &[(&str, &str)]) -> GitRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let repo = GitRepo { dir };
        repo.commit(files, "initial");
        repo
    }

    /// Copies a directory of the repo's examples/ in and commits it.
    pub fn from_example(name: &str) -> GitRepo {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
        let repo = GitRepo { dir: tempfile::tempdir().expect("tempdir") };
        git(repo.path(), &["init", "-q", "-b", "main"]);
        copy_dir(&src, repo.path());
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-q", "-m", "example"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Writes the files and commits; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (name, content) in files {
            let p = self.dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(p, content).expect("write");
        }
        git(self.dir.path(), &["add", "-A"]);
        git(self.dir.path(), &["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// A commit made at `date` (RFC 3339; author and committer).
    pub fn commit_at(&self, files: &[(&str, &str)], message: &str, date: &str) -> String {
        for (name, content) in files {
            std::fs::write(self.dir.path().join(name), content).expect("write");
        }
        git(self.dir.path(), &["add", "-A"]);
        let env = [("GIT_AUTHOR_DATE", date), ("GIT_COMMITTER_DATE", date)];
        git_env(self.dir.path(), &["commit", "-q", "--allow-empty", "-m", message], &env);
        self.head()
    }

    pub fn head(&self) -> String {
        git(self.dir.path(), &["rev-parse", "HEAD"])
    }

    /// A GitHub push payload for this repo.
    pub fn push_payload(&self, git_ref: &str, after: &str) -> Value {
        serde_json::json!({
            "ref": git_ref,
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "deleted": false,
            "repository": {"full_name": "e2e/app", "clone_url": self.path_str(), "html_url": "https://example.invalid/e2e/app"},
            "pusher": {"name": "e2e"},
            "sender": {"login": "e2e-user"},
        })
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

/// Serializes tests that must not overlap (e.g. ones counting processes).
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Is a process alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')).unwrap_or(false))
        .unwrap_or(false)
}

/// Processes whose environment has `KEY=VALUE`.
pub fn pids_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok(env) = std::fs::read(entry.path().join("environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// Google's Pub/Sub emulator, set up the way terraform/ sets up Pub/Sub:
/// a topic per event type, a push subscription per (function, event).
pub mod pubsub {
    use bifrost_core::Status;
    use bifrost_gcp::pubsub::topic_id;
    use serde_json::json;

    /// Creates every topic, and a push subscription for each of
    /// `functions`' subscriptions, pushing to `push_base(function)/push/<function>`.
    pub async fn setup(
        http: &reqwest::Client,
        emulator_url: &str,
        project: &str,
        functions: &[&str],
        push_base: impl Fn(&str) -> String,
    ) {
        for s in Status::ALL {
            let topic = topic_id("bifrost-", &s.event_type());
            let r =
                http.put(format!("{emulator_url}/v1/projects/{project}/topics/{topic}")).json(&json!({})).send().await;
            assert!(r.expect("create topic").status().is_success(), "topic {topic}");
        }
        for sub in bifrost_functions::subscriptions().into_iter().filter(|s| functions.contains(&s.function.as_str())) {
            let body = json!({
                "topic": format!("projects/{project}/topics/{}", topic_id("bifrost-", &sub.topic)),
                "pushConfig": {"pushEndpoint": format!("{}/push/{}", push_base(&sub.function), sub.function)},
                "ackDeadlineSeconds": 10,
                "enableMessageOrdering": true,
                "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"},
            });
            let url = format!("{emulator_url}/v1/projects/{project}/subscriptions/bifrost-{}", sub.name);
            let r = http.put(url).json(&body).send().await.expect("create subscription");
            assert!(r.status().is_success(), "subscription {}: {}", sub.name, r.text().await.unwrap_or_default());
        }
    }
}

/// Cloud Build's API as the builder sees it (Cloud Build cannot run here),
/// writing its build log into a real (emulated) Cloud Storage bucket.
pub mod cloud_build {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::http::{Method, StatusCode};
    use axum::response::IntoResponse;
    use bifrost_gcp::storage::Gcs;
    use bytes::Bytes;
    use serde_json::{Value, json};
    use std::sync::Arc;

    pub const DIGEST: &str = "sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904c0ae1ab57e2b2c9a3b4e5f60";
    /// What the fake's build writes to its log, the last line without a newline.
    pub const LOG: [&str; 4] =
        ["Step 1/6 : FROM python:3.12-slim", "Step 6/6 : CMD [\"python3\"]", "Successfully built 3f2a", "DONE"];

    #[derive(Clone, Copy, PartialEq)]
    pub enum Verdict {
        Success,
        Failure,
        /// Never finishes (the test cancels it).
        Hang,
        /// Refuses the submit with 403.
        Forbidden,
    }

    pub struct FakeCloudBuild {
        pub gcs: Gcs,
        pub logs_bucket: String,
        pub verdict: Verdict,
        pub polls: AtomicU32,
        /// Every request: method, path, JSON body.
        pub seen: Mutex<Vec<(Method, String, Value)>>,
    }

    impl FakeCloudBuild {
        async fn handle(&self, method: Method, path: String, body: Value) -> axum::response::Response {
            self.seen.lock().expect("lock").push((method.clone(), path.clone(), body.clone()));
            // `/v1/projects/P/locations/R/builds[/ID[:cancel]]`, any P and R.
            let builds = match path.find("/builds") {
                Some(i) if path.starts_with("/v1/projects/") && path.contains("/locations/") => &path[..i + 7],
                _ => "/v1/projects/-/locations/-/builds",
            };
            let build_id = "7f0c1b2a-build";
            if method == Method::POST && path == builds {
                if self.verdict == Verdict::Forbidden {
                    let err = json!({"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}});
                    return (StatusCode::FORBIDDEN, axum::Json(err)).into_response();
                }
                return axum::Json(json!({
                    "name": "projects/acme/locations/europe-west1/operations/op-1",
                    "metadata": {
                        "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
                        "build": { "id": build_id, "status": "QUEUED",
                                   "logUrl": format!("https://console.cloud.google.com/cloud-build/builds;region=europe-west1/{build_id}?project=acme") }
                    }
                }))
                .into_response();
            }
            if method == Method::POST && path == format!("{builds}/{build_id}:cancel") {
                return axum::Json(json!({ "id": build_id, "status": "CANCELLED" })).into_response();
            }
            if method == Method::GET && path == format!("{builds}/{build_id}") {
                let n = self.polls.fetch_add(1, Ordering::SeqCst) as usize;
                // The log grows by a line per poll, as Cloud Build streams it.
                let shown = (n + 1).min(LOG.len());
                let text = LOG[..shown].join("\n") + if shown < LOG.len() { "\n" } else { "" };
                let object = format!("log-{build_id}.txt");
                if let Err(e) = self.gcs.put(&self.logs_bucket, &object, Bytes::from(text), "text/plain").await {
                    return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response();
                }
                let status = match (n, self.verdict) {
                    (0, _) => "QUEUED",
                    (_, Verdict::Hang) => "WORKING",
                    (n, _) if n < LOG.len() => "WORKING",
                    (_, Verdict::Failure) => "FAILURE",
                    _ => "SUCCESS",
                };
                let mut build = json!({ "id": build_id, "status": status });
                if status == "SUCCESS" {
                    let image = body_image(&self.seen.lock().expect("lock"));
                    build["results"] = json!({ "images": [{ "name": image, "digest": DIGEST }] });
                }
                if status == "FAILURE" {
                    build["failureInfo"] = json!({ "type": "USER_BUILD_STEP",
                        "detail": "Build step failure: build step 0 \"gcr.io/cloud-builders/docker\" failed: step exited with non-zero status: 1" });
                }
                return axum::Json(build).into_response();
            }
            (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": 404, "message": format!("no route {path}")}})))
                .into_response()
        }
    }

    /// The image the submitted build said it would push.
    fn body_image(seen: &[(Method, String, Value)]) -> String {
        seen.iter()
            .find(|(m, _, _)| m == Method::POST)
            .map(|(_, _, b)| b["images"][0].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    pub async fn serve(fake: Arc<FakeCloudBuild>) -> String {
        let app = axum::Router::new().fallback(move |method: Method, uri: axum::http::Uri, body: Bytes| {
            let fake = fake.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                fake.handle(method, uri.path().to_string(), body).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// Buckets come from terraform on GCP; on the emulator, from its JSON API.
    pub async fn create_bucket(host: &str, name: &str) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resp = reqwest::Client::new()
            .post(format!("http://{host}/storage/v1/b?project=acme"))
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("the emulator answers");
        assert!(resp.status().is_success(), "creating bucket {name}: {}", resp.status());
    }
}
