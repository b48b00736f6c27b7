//! The boundary between apps and the platform, attacked through the real
//! binary as a hostile deployer would: each attack from the "Safe to host"
//! issue, and what it must get instead.

use std::time::{Duration, Instant};

use bifrost_e2e::{ADMIN_TOKEN, GitRepo, Platform, WEBHOOK_SECRET as SECRET, alive, finished, python_app};
use serde_json::{Value, json};

fn add_project(p: &Platform, name: &str, repo: &GitRepo) {
    p.add_project(name, repo)
}

async fn push(p: &Platform, repo: &GitRepo, delivery: &str) -> String {
    p.push(repo, delivery).await
}

async fn healthy(p: &Platform, id: &str) -> Value {
    p.healthy(id).await
}

/// A python app that tries every way out of its sandbox it can think of
/// and serves what happened at `/`.
fn hostile_app(name: &str, targets: &[(&str, String)]) -> GitRepo {
    let checks: String = targets.iter().map(|(label, code)| format!("    ({label:?}, lambda: {code}),\n")).collect();
    let app = format!(
        r#"import os, socket, http.server, json
PORT = int(os.environ["PORT"])
def read(p): return open(p, "rb").read()[:64]
def attempt(f):
    try:
        return "OPEN " + repr(f())[:200]
    except Exception as e:
        return "refused " + type(e).__name__
CHECKS = [
{checks}]
results = {{label: attempt(f) for label, f in CHECKS}}
results["env"] = sorted(os.environ)
results["uid"] = os.getuid()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/headers":
            body = json.dumps(dict(self.headers)).encode()
        else:
            body = json.dumps(results).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", PORT), H).serve_forever()
"#
    );
    let toml = format!(
        "[app]\nname = \"{name}\"\nruntime = \"python\"\n\n[run]\ncommand = \"python3 app.py\"\n\n[health]\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
    );
    GitRepo::new(&[("deploy.toml", &toml), ("app.py", &app)])
}

fn find_platform_pid(p: &Platform) -> u32 {
    p.pid()
}

/// A replica reads nothing of the platform: not its environment (the
/// admin token), not the data dir (database, keys), not the CLI's saved
/// credentials, not /etc/shadow, not another app's tree; it cannot bind a
/// port other than its own, write outside its tree, or signal the
/// platform; its environment is the allow-list. And none of it shows up in
/// the logs an operator reads.
#[tokio::test]
async fn a_replica_cannot_read_the_platform_its_secrets_or_other_apps() {
    let p = Platform::start();
    let pid = find_platform_pid(&p);
    let data = p.data_dir.display().to_string();
    // A neighbour app whose tree the hostile one tries to read.
    let neighbour = GitRepo::from_example("hello-python");
    add_project(&p, "hello-python", &neighbour);
    let n = push(&p, &neighbour, "n-1").await;
    healthy(&p, &n).await;
    let neighbour_dir = p.apps_dir().display().to_string();
    let neighbour_pid = p.client().get(&format!("/api/v1/deployments/{n}/replicas")).await.body[0]["pid"]
        .as_u64()
        .expect("the neighbour's pid");
    let cfg = p.home.path().join("cfg").display().to_string();
    let targets = [
        ("platform_environ", format!("read('/proc/{pid}/environ')")),
        ("neighbour_environ", format!("read('/proc/{neighbour_pid}/environ')")),
        ("neighbour_memory", format!("read('/proc/{neighbour_pid}/maps')")),
        ("database", format!("read('{data}/bifrost.db')")),
        ("secrets_key", format!("read('{data}/secrets.key')")),
        ("ingest_key", format!("read('{data}/ingest.key')")),
        ("data_dir_listing", format!("os.listdir('{data}')")),
        ("credentials", format!("os.listdir('{cfg}')")),
        ("shadow", "read('/etc/shadow')".into()),
        ("apps_listing", format!("os.listdir('{neighbour_dir}')")),
        ("write_tmp", "open('/tmp/bifrost-escape', 'w').write('x')".into()),
        ("bind_other_high_port", "socket.socket().bind(('127.0.0.1', 48123))".into()),
        ("signal_platform", format!("os.kill({pid}, 0)")),
    ];
    let repo = hostile_app("evil", &targets);
    add_project(&p, "evil", &repo);
    let id = push(&p, &repo, "e-1").await;
    healthy(&p, &id).await;
    let (status, _, body) = p.client().app_get("evil", "/").await.expect("evil answers");
    assert_eq!(status, 200, "{body}");
    let results: Value = serde_json::from_str(&body).expect("json");
    for (label, _) in &targets {
        let r = results[*label].as_str().unwrap_or("");
        assert!(r.starts_with("refused"), "{label}: the app got through: {r}");
    }
    let env: Vec<&str> = results["env"].as_array().expect("env").iter().filter_map(Value::as_str).collect();
    for key in &env {
        assert!(
            [
                "BIFROST_APP",
                "BIFROST_DEPLOYMENT",
                "BIFROST_REPLICA",
                "HOME",
                "LANG",
                "PATH",
                "PORT",
                "PWD",
                "TMPDIR",
                "VIRTUAL_ENV"
            ]
            .contains(key),
            "{key} leaked into the app's environment: {env:?}"
        );
    }
    if nix_root() {
        assert_ne!(results["uid"], 0, "apps must not run as root");
    }
    // Nothing of the platform's secrets in what the operator reads.
    let logs = p.cli(&["logs", &id]).stdout;
    assert!(!logs.contains(ADMIN_TOKEN) && !logs.contains("bft_"), "{logs}");
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// The same attacks against a platform that does not run as root: apps
/// share its uid, so file permissions and /proc's own checks protect
/// nothing — Landlock alone must refuse every one of them.
#[tokio::test]
async fn landlock_alone_holds_when_the_platform_is_not_root() {
    if !nix_root() {
        eprintln!("SKIPPED: needs root to start the platform as another user");
        assert!(std::env::var_os("BIFROST_REQUIRE_ALL_TESTS").is_none(), "CI runs as root");
        return;
    }
    let nobody = 65534;
    let p = Platform::start_unprivileged(nobody);
    let pid = p.pid();
    let data = p.data_dir.display().to_string();
    let give = |r: &GitRepo| {
        bifrost_local::sandbox::chown_tree(r.path(), (nobody, nobody)).expect("chown repo");
    };
    let neighbour = GitRepo::from_example("hello-python");
    give(&neighbour);
    add_project(&p, "hello-python", &neighbour);
    let n = push(&p, &neighbour, "n-1").await;
    healthy(&p, &n).await;
    let apps = p.apps_dir().display().to_string();
    let targets = [
        ("platform_environ", format!("read('/proc/{pid}/environ')")),
        ("database", format!("read('{data}/bifrost.db')")),
        ("secrets_key", format!("read('{data}/secrets.key')")),
        ("data_dir_listing", format!("os.listdir('{data}')")),
        ("apps_listing", format!("os.listdir('{apps}')")),
        ("write_tmp", "open('/tmp/bifrost-escape', 'w').write('x')".into()),
        ("bind_other_high_port", "socket.socket().bind(('127.0.0.1', 48124))".into()),
        ("signal_platform", format!("os.kill({pid}, 0)")),
    ];
    let repo = hostile_app("evil", &targets);
    give(&repo);
    add_project(&p, "evil", &repo);
    let id = push(&p, &repo, "e-1").await;
    healthy(&p, &id).await;
    let (status, _, body) = p.client().app_get("evil", "/").await.expect("evil answers");
    assert_eq!(status, 200, "{body}");
    let results: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(results["uid"], nobody, "the app runs as the platform's own (unprivileged) user");
    for (label, _) in &targets {
        let r = results[*label].as_str().unwrap_or("");
        assert!(r.starts_with("refused"), "{label}: Landlock let the app through: {r}");
    }
}

/// A build step is confined like a replica: it cannot read the data dir
/// or the platform's environment either.
#[tokio::test]
async fn a_build_cannot_read_the_data_dir_or_the_platforms_environment() {
    let p = Platform::start();
    let data = p.data_dir.display().to_string();
    let pid = p.pid();
    let build = format!("cat {data}/secrets.key; cat /proc/{pid}/environ; ls {data}; env; echo BUILD-DONE; false");
    let repo = GitRepo::new(&[
        ("deploy.toml", &format!("[app]\nname = \"sneaky\"\nruntime = \"static\"\n\n[build]\ncommand = \"{build}\"\n")),
        ("index.html", "x"),
    ]);
    add_project(&p, "sneaky", &repo);
    let id = push(&p, &repo, "s-1").await;
    let d = p.client().wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let logs = p.cli(&["logs", &id]).stdout;
    assert!(logs.contains("BUILD-DONE"), "the build ran: {logs}");
    assert!(logs.contains("Permission denied"), "the reads were refused: {logs}");
    let key = std::fs::read_to_string(p.data_dir.join("secrets.key")).expect("key");
    assert!(!logs.contains(key.trim()), "the secrets key leaked into the build log");
    assert!(!logs.contains(ADMIN_TOKEN) && !logs.contains("BIFROST_ADMIN_TOKEN"), "{logs}");
}

/// An app that leaves its process group (`setsid`, double fork) is still
/// found and stopped: when its deployment is replaced, and when the
/// platform shuts down.
#[tokio::test]
async fn a_process_that_leaves_its_group_is_still_stopped() {
    let mut p = Platform::start();
    // Escape the process group twice over and note the pid in our own tree.
    let repo = python_app(
        "escaper",
        "import subprocess\nsubprocess.Popen(\"setsid sh -c 'sleep 1000 & echo $! > escaped.pid; wait' &\", shell=True)",
    );
    add_project(&p, "escaper", &repo);
    let project_id = p.client().get("/api/v1/projects/escaper").await.body["id"].as_str().expect("id").to_string();
    let escaped_pid = |id: &str| -> Option<u32> {
        let f = p.apps_dir().join(&project_id).join(id).join("escaped.pid");
        std::fs::read_to_string(f).ok()?.trim().parse().ok()
    };
    let wait_pid = |id: &str| {
        let start = Instant::now();
        loop {
            if let Some(pid) = escaped_pid(id) {
                return pid;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the escape never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let v1 = push(&p, &repo, "x-1").await;
    healthy(&p, &v1).await;
    let first = wait_pid(&v1);
    assert!(alive(first));
    // Replaced: the superseded deployment's escaped process goes with it.
    repo.commit(&[("README", "v2")], "v2");
    let v2 = push(&p, &repo, "x-2").await;
    healthy(&p, &v2).await;
    let second = wait_pid(&v2);
    let start = Instant::now();
    while alive(first) {
        assert!(start.elapsed() < Duration::from_secs(30), "an escaped process survived its deployment's replacement");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The platform dies (kill -9): its supervisors end their trees themselves.
    p.kill9();
    let start = Instant::now();
    while alive(second) {
        assert!(start.elapsed() < Duration::from_secs(30), "an escaped process survived the platform's death");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads and checkouts stay inside the tree: a symlink or hard link out
/// is refused by name, and the static file server never follows a link
/// (made at build time) out of its root.
#[tokio::test]
async fn links_out_of_the_tree_are_refused_and_never_served() {
    let p = Platform::start();
    let c = p.client();
    assert_eq!(p.cli(&["projects", "add", "site"]).code, 0);
    // An upload with public/root -> /.
    let tarball = {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let toml = b"[app]\nname = \"site\"\nruntime = \"static\"\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(toml.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "deploy.toml", &toml[..]).expect("toml");
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "public/root", "/").expect("link");
        b.into_inner().and_then(|g| g.finish()).expect("tarball")
    };
    let a =
        c.request("POST", "/api/v1/projects/site/deployments", tarball, &[("content-type", "application/gzip")]).await;
    assert_eq!(a.status, 422, "{:?}", a.body);
    let msg = a.body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("public/root") && msg.contains("leaves the source tree"), "{msg}");

    // The same link in a git repository fails the build, naming the entry.
    let repo = GitRepo::new(&[
        ("deploy.toml", "[app]\nname = \"gitsite\"\nruntime = \"static\"\n"),
        ("public/index.html", "hi"),
    ]);
    std::os::unix::fs::symlink("/etc", repo.path().join("public/etc")).expect("symlink");
    repo.commit(&[], "a link out");
    add_project(&p, "gitsite", &repo);
    let id = push(&p, &repo, "l-1").await;
    let d = c.wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    assert!(d["reason"].as_str().unwrap_or("").contains("public/etc"), "{d:#}");

    // A link made by the build itself: the file server does not follow it.
    let repo = GitRepo::new(&[
        (
            "deploy.toml",
            "[app]\nname = \"linker\"\nruntime = \"static\"\n\n[build]\ncommand = \"ln -s / public/root\"\n",
        ),
        ("public/index.html", "<h1>hi</h1>"),
    ]);
    add_project(&p, "linker", &repo);
    let id = push(&p, &repo, "l-2").await;
    healthy(&p, &id).await;
    let (status, _, body) = c.app_get("linker", "/index.html").await.expect("serves");
    assert_eq!(status, 200, "{body}");
    for path in ["/root/etc/passwd", "/root/etc/hostname", "/root/"] {
        let (status, _, body) = c.app_get("linker", path).await.expect("answers");
        assert_eq!(status, 404, "{path} was served: {body}");
    }
}

/// A decompression bomb is refused with what it is; the API answers
/// throughout three of them at once.
#[tokio::test]
async fn upload_bombs_are_refused_and_the_api_keeps_answering() {
    let p = Platform::start();
    assert_eq!(p.cli(&["projects", "add", "bomb"]).code, 0);
    let bomb = {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut b = tar::Builder::new(gz);
        let zeros = vec![0u8; 8 << 20];
        for i in 0..64 {
            let mut h = tar::Header::new_gnu();
            h.set_size(zeros.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("z{i}"), zeros.as_slice()).expect("append");
        }
        b.into_inner().and_then(|g| g.finish()).expect("bomb")
    };
    let mut uploads = vec![];
    for _ in 0..3 {
        let c = p.client();
        let body = bomb.clone();
        uploads.push(tokio::spawn(async move {
            c.request("POST", "/api/v1/projects/bomb/deployments", body, &[("content-type", "application/gzip")]).await
        }));
    }
    let c = p.client();
    let mut answered = 0;
    while uploads.iter().any(|u| !u.is_finished()) {
        assert_eq!(c.get("/healthz").await.status, 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered > 0);
    for u in uploads {
        let a = u.await.expect("upload");
        assert_eq!(a.status, 422, "{:?}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap_or("").contains("decompression bomb"), "{:?}", a.body);
    }
    // An upload over the size limit is a 413.
    let status = status_of_upload(&p.url, "/api/v1/projects/bomb/deployments", (100 << 20) + 1).await;
    assert_eq!(status, 413);
}

/// The status line the server answers a `len`-byte gzip upload with. The
/// server may answer and close before the client has sent everything (as
/// it should for an oversized body); an HTTP client then fails on the
/// write and never shows the answer, so this writes and reads apart.
async fn status_of_upload(base: &str, path: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/gzip\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf))
            .await
            .expect("an answer within 60 s")
            .expect("read");
        assert!(n > 0, "closed without an answer: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    let line = String::from_utf8_lossy(&answer);
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {line:?}"))
}

/// The dashboard's session reaches no app: the cookie holds no API token,
/// is SameSite=Strict; the router strips it (and Bifrost tokens) from what
/// apps receive; apps are not served on the dashboard's host; a
/// state-changing call from another origin is refused; sign-in only
/// redirects to paths on this site.
#[tokio::test]
async fn the_dashboards_session_never_reaches_an_app() {
    let p = Platform::start();
    let repo = hostile_app("spy", &[]);
    add_project(&p, "spy", &repo);
    let id = push(&p, &repo, "c-1").await;
    healthy(&p, &id).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let base = p.url.clone();
    // Sign in as the dashboard does (a server function, same origin).
    let login = http
        .post(format!("{base}/ui/api/login"))
        .header("origin", &base)
        .form(&[("token", ADMIN_TOKEN), ("next", "/")])
        .send()
        .await
        .expect("login");
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("bifrost_session="))
        .expect("a session cookie")
        .to_string();
    assert!(!cookie.contains(ADMIN_TOKEN) && !cookie.contains("bft_"), "the cookie holds the token: {cookie}");
    assert!(cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"), "{cookie}");
    let session = cookie.split(';').next().expect("pair").to_string();

    // The router forwards neither the session nor a Bifrost API token.
    let port = base.rsplit(':').next().expect("port");
    let seen: Value = http
        .get(format!("{base}/headers"))
        .header("host", format!("spy.localhost:{port}"))
        .header("cookie", format!("{session}; theme=dark"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("app")
        .json()
        .await
        .expect("json");
    let text = seen.to_string();
    assert!(!text.contains("bifrost_session") && !text.contains(ADMIN_TOKEN), "the app saw: {text}");
    assert!(text.contains("theme=dark"), "the app's own cookies pass: {text}");

    // No app on the dashboard's host.
    let a = http.get(format!("{base}/apps/spy/")).header("cookie", &session).send().await.expect("fallback");
    let body = a.text().await.unwrap_or_default();
    assert!(!body.contains("uid"), "an app was served on the dashboard's origin: {body}");

    // A state-changing server function from another origin (an app's page) is refused.
    let forged = http
        .post(format!("{base}/ui/api/logout"))
        .header("cookie", &session)
        .header("origin", format!("http://spy.localhost:{port}"))
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status().as_u16(), 403);
    // Sign-in redirects only to this site.
    for next in ["//evil.example/x", "/\\evil.example", "https://evil.example"] {
        let r = http
            .post(format!("{base}/ui/api/login"))
            .header("origin", &base)
            .form(&[("token", ADMIN_TOKEN), ("next", next)])
            .send()
            .await
            .expect("login");
        let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(!location.contains("evil"), "{next} redirected to {location}");
    }
}

/// Secrets are sealed at rest and belong to a project: another project's
/// secret of the same name does not exist for a deployment, and a value an
/// app prints is masked before it is stored.
#[tokio::test]
async fn secrets_are_sealed_scoped_to_their_project_and_masked_in_logs() {
    let p = Platform::start();
    let value = "pa55w0rd-do-not-print";
    let startup = r#"print("my password is " + os.environ["DB_PASSWORD"], flush=True)"#;
    let with_secret = |name: &str| {
        let repo = python_app(name, startup);
        let toml = std::fs::read_to_string(repo.path().join("deploy.toml")).expect("toml")
            + "\n[env]\nDB_PASSWORD = { secret = \"db-password\" }\n";
        repo.commit(&[("deploy.toml", &toml)], "the secret");
        repo
    };
    let owner = with_secret("owner");
    let thief = with_secret("thief");
    add_project(&p, "owner", &owner);
    add_project(&p, "thief", &thief);
    let set = std::process::Command::new(bifrost_e2e::bifrost_bin())
        .args(["secrets", "set", "db-password", "--project", "owner"])
        .env("BIFROST_SERVER", &p.url)
        .env("BIFROST_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(value.as_bytes())?;
            c.wait_with_output()
        })
        .expect("secrets set");
    assert!(set.status.success(), "{set:?}");
    // Listed by name, never by value.
    let listed = p.cli(&["secrets", "list", "--project", "owner", "--json"]);
    assert!(listed.stdout.contains("db-password") && !listed.stdout.contains(value), "{listed:?}");
    // At rest: sealed.
    let db = std::fs::read(p.data_dir.join("bifrost.db")).expect("db");
    assert!(!db.windows(value.len()).any(|w| w == value.as_bytes()), "the secret is stored in plaintext");
    // The owner's deployment gets it, and its log shows it masked.
    let id = push(&p, &owner, "o-1").await;
    healthy(&p, &id).await;
    let start = Instant::now();
    let logs = loop {
        let logs = p.cli(&["logs", &id]).stdout;
        if logs.contains("my password is") || start.elapsed() > Duration::from_secs(20) {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(logs.contains("my password is ***"), "{logs}");
    assert!(!logs.contains(value), "the secret reached the log: {logs}");
    // Another project naming the same secret: it does not exist there.
    let id = push(&p, &thief, "t-1").await;
    let d = p.client().wait_deployment(&id, "finished", finished).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.contains("\"db-password\" does not exist in project thief"), "{reason}");
}

/// Request bodies are bounded and the role is checked before a body is
/// read; a log line is cut at 16 KiB with a marker.
#[tokio::test]
async fn bodies_are_bounded_and_roles_are_checked_before_the_body() {
    let p = Platform::start();
    let c = p.client();
    let viewer = c.post("/api/v1/tokens", json!({"name": "v", "role": "viewer"})).await.body["token"]
        .as_str()
        .expect("token")
        .to_string();
    // A viewer announces a 512 MiB body to an admin route and sends the
    // first KiB: the refusal comes back without the rest being read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = p.url.trim_start_matches("http://").to_string();
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "POST /api/v1/tokens HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {viewer}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            512u64 << 20
        );
        tcp.write_all(head.as_bytes()).await.expect("head");
        tcp.write_all(&[b' '; 1024]).await.expect("some body");
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut answer))
            .await
            .expect("an answer before the body")
            .expect("read");
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    }
    // An admin's JSON body over 64 KiB: 413.
    let name = "x".repeat(70 << 10);
    let a = c.post("/api/v1/tokens", json!({"name": name, "role": "viewer"})).await;
    assert_eq!(a.status, 413, "{:?}", a.body);

    // A line without a newline, 1 MiB long: stored cut, with the marker.
    let repo = python_app(
        "longline",
        r#"sys.stdout.write("y" * (1 << 20)); sys.stdout.write("\nafter\n"); sys.stdout.flush()"#,
    );
    add_project(&p, "longline", &repo);
    let id = push(&p, &repo, "ll-1").await;
    healthy(&p, &id).await;
    let items = c.get(&format!("/api/v1/deployments/{id}/logs")).await.body;
    let lines: Vec<&str> = items.as_array().expect("items").iter().filter_map(|i| i["line"].as_str()).collect();
    let long = lines.iter().find(|l| l.starts_with("yyyy")).expect("the long line");
    assert!(long.len() < 17 * 1024, "stored {} bytes", long.len());
    assert!(long.contains("line cut at 16 KiB"), "{}", &long[long.len() - 100..]);
    assert!(lines.contains(&"after"), "the next line survived");
}

/// App output cannot drive the operator's terminal: `bifrost logs` prints
/// no clipboard write, title change or screen clear.
#[tokio::test]
async fn app_output_cannot_drive_the_operators_terminal() {
    let p = Platform::start();
    let repo =
        python_app("ansi", r#"print("clip\x1b]52;c;ZXZpbA==\x07title\x1b]0;pwned\x07clear\x1b[2Jdone", flush=True)"#);
    add_project(&p, "ansi", &repo);
    let id = push(&p, &repo, "a-1").await;
    healthy(&p, &id).await;
    let start = Instant::now();
    loop {
        let out = p.cli(&["logs", &id]).stdout;
        if out.contains("cliptitlecleardone") {
            assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the line never showed: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A signed push replayed under a new delivery id (or arriving late)
/// deploys nothing: only the branch's current head deploys.
#[tokio::test]
async fn a_replayed_push_does_not_roll_the_app_back() {
    let p = Platform::start();
    let repo = GitRepo::from_example("hello-python");
    add_project(&p, "hello-python", &repo);
    let c = p.client();
    let v1_commit = repo.head();
    let v1_payload = repo.push_payload("refs/heads/main", &v1_commit);
    let v1 = push(&p, &repo, "r-1").await;
    healthy(&p, &v1).await;
    repo.commit(&[("README", "v2")], "v2");
    let v2 = push(&p, &repo, "r-2").await;
    healthy(&p, &v2).await;
    let replay = c.webhook("push", "r-1-replayed", SECRET, &v1_payload).await;
    assert_eq!(replay.status, 202, "{:?}", replay.body);
    assert_eq!(replay.body["status"], "ignored");
    let reason = replay.body["reason"].as_str().unwrap_or("");
    assert!(reason.starts_with("stale push: main is now at "), "{reason}");
    let live = c.get("/api/v1/projects/hello-python").await.body;
    assert_eq!(live["live_deployment_id"], v2.as_str());
}

/// The live deployment cannot be cancelled; a live app that crash-loops is
/// restarted and reported degraded, never stopped.
#[tokio::test]
async fn a_live_app_is_never_stopped_by_a_cancel_or_a_crash_loop() {
    let p = Platform::start();
    // Healthy until /crash, then crashes on every start after the first.
    let repo = python_app(
        "flaky",
        r#"marker = os.path.join(os.environ["HOME"], "started-once")
if os.path.exists(marker):
    print("crashing on start", flush=True)
    sys.exit(3)
open(marker, "w").close()"#,
    );
    add_project(&p, "flaky", &repo);
    let id = push(&p, &repo, "f-1").await;
    healthy(&p, &id).await;
    let c = p.client();
    let cancel = p.cli(&["cancel", &id]);
    assert_ne!(cancel.code, 0, "{cancel:?}");
    assert!(cancel.stderr.contains("is live"), "{cancel:?}");
    // Crash it: every restart now crashes too.
    let _ = c.app_get("flaky", "/crash").await;
    let start = Instant::now();
    let detail = loop {
        let d = c.get(&format!("/api/v1/deployments/{id}")).await.body;
        let restarts: u64 =
            c.get(&format!("/api/v1/deployments/{id}/replicas")).await.body[0]["restarts"].as_u64().unwrap_or(0);
        if restarts >= 6 {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "not restarted enough: {restarts}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(detail["status"], "healthy", "a crash-looping live app was stopped: {detail:#}");
    assert!(detail["degraded"].as_array().is_some_and(|d| !d.is_empty()), "{detail:#}");
    let status = p.cli(&["status", &id]);
    assert!(status.stdout.contains("degraded") && status.stdout.contains("exited with 3"), "{status:?}");
}

/// `bifrost up` started exactly as scripts/up.sh starts it — the same
/// flags, a relative --sidecar-bin, from the repository's root — deploys
/// the README's example to healthy, the health decided by sidecars.
#[tokio::test]
async fn the_readme_start_command_deploys_an_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root");
    let script = std::fs::read_to_string(root.join("scripts/up.sh")).expect("scripts/up.sh");
    let line = script.lines().find(|l| l.trim_start().starts_with("exec ")).expect("the exec line");
    // exec target/release/bifrost up --sidecar-bin target/sidecar/bifrost-sidecar "$@"
    let flags: Vec<&str> =
        line.split_whitespace().skip_while(|w| *w != "up").skip(1).take_while(|w| *w != "\"$@\"").collect();
    let sidecar = flags.iter().position(|f| *f == "--sidecar-bin").map(|i| flags[i + 1]).expect("--sidecar-bin");
    assert!(!sidecar.starts_with('/'), "up.sh passes a relative path: {sidecar}");
    bifrost_e2e::ensure_sidecar_profile(&root.join(sidecar));

    let home = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    let mut child = std::process::Command::new(bifrost_e2e::bifrost_bin())
        .arg("up")
        .args(&flags)
        // What a user would add to scripts/up.sh's "$@": free ports.
        .args(["--listen", "127.0.0.1:0", "--ingest-listen", "127.0.0.1:0"])
        .current_dir(&root)
        .env("BIFROST_DATA_DIR", home.path().join("data"))
        .env("BIFROST_APPS_DIR", home.path().join("apps"))
        .env("BIFROST_CONFIG_DIR", home.path().join("cfg"))
        .env("BIFROST_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("bifrost up");
    let stdout = child.stdout.take().expect("stdout");
    let url = {
        use std::io::BufRead;
        let mut url = String::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(u) = line.strip_prefix("bifrost: listening on ") {
                url = u.trim().to_string();
            }
            if line.starts_with("bifrost: sidecar ingest on") {
                assert!(line.contains("bifrost-sidecar"), "the sidecar was not found: {line}");
                break;
            }
        }
        url
    };
    assert!(!url.is_empty(), "bifrost up did not start");
    let deploy = std::process::Command::new(bifrost_e2e::bifrost_bin())
        .args(["deploy", "examples/hello-python", "--wait"])
        .current_dir(&root)
        .env("BIFROST_SERVER", &url)
        .env("BIFROST_TOKEN", ADMIN_TOKEN)
        .env("BIFROST_CONFIG_DIR", home.path().join("cfg"))
        .env("NO_COLOR", "1")
        .output()
        .expect("deploy");
    let _ = child.kill();
    let _ = child.wait();
    bifrost_local::sandbox::sweep(&bifrost_local::process::owner_id(
        &home.path().join("data").canonicalize().unwrap_or_default(),
    ));
    let out = String::from_utf8_lossy(&deploy.stdout).to_string() + &String::from_utf8_lossy(&deploy.stderr);
    assert!(deploy.status.success(), "{out}");
    assert!(out.contains("live at http://hello-python.localhost:"), "{out}");
    assert!(out.contains("replicas healthy"), "{out}");
}

/// The soft and hard limits on open files of a process, from /proc.
fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let n: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

/// A thousand idle client connections do not starve the platform of
/// descriptors when it was started at a systemd session's soft limit of
/// 1,024: it raises its own to the hard limit. An app gets the limit
/// configured for apps (`--app-open-files`), soft and hard, and cannot
/// raise it.
#[tokio::test]
async fn idle_connections_past_a_soft_limit_of_1024_do_not_starve_the_platform_and_apps_cannot_raise_their_limit() {
    let p = Platform::start_with_soft_open_files(1024, &[("BIFROST_APP_OPEN_FILES", "1500")]);
    let (soft, hard) = open_files_limit(p.pid());
    assert_eq!(soft, hard, "the platform kept the soft limit it was started with");
    assert!(hard > 2_000, "this host's hard limit ({hard}) is too low to run this test");
    let want = 1500;
    let rlimit = "__import__('resource')";
    let targets = [
        ("limit", format!("{rlimit}.getrlimit({rlimit}.RLIMIT_NOFILE)")),
        ("raise", format!("{rlimit}.setrlimit({rlimit}.RLIMIT_NOFILE, ({0}, {0}))", want + 1)),
    ];
    let repo = hostile_app("files", &targets);
    add_project(&p, "files", &repo);
    let id = push(&p, &repo, "f-1").await;
    healthy(&p, &id).await;

    // 1,100 connections that send nothing, all accepted by the platform.
    let addr = p.url.trim_start_matches("http://").to_string();
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", p.pid())).map(|d| d.count()).unwrap_or(0);
    let before = fds();
    let mut held = Vec::new();
    for _ in 0..1_100 {
        held.push(tokio::net::TcpStream::connect(&addr).await.expect("connect"));
    }
    let start = Instant::now();
    while fds() < before + 1_050 {
        assert!(start.elapsed() < Duration::from_secs(20), "the platform accepted only {}", fds() - before);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The API and the app (through the router) still answer.
    let within = Duration::from_secs(20);
    let api = tokio::time::timeout(within, p.client().get(&format!("/api/v1/deployments/{id}"))).await;
    assert_eq!(api.expect("the API stopped answering").status, 200);
    let app =
        tokio::time::timeout(within, p.client().app_get("files", "/")).await.expect("the router stopped answering");
    let (status, _, body) = app.expect("files answers");
    assert_eq!(status, 200, "{body}");
    let results: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(results["limit"].as_str(), Some(format!("OPEN ({want}, {want})").as_str()), "{results}");
    assert!(results["raise"].as_str().unwrap_or("").starts_with("refused"), "{results}");
    drop(held);
}

/// Slow clients cannot hold the router's connections: heads trickled a
/// byte at a time (slowloris), connections that never send a request,
/// keep-alive connections left idle after a response, and a webhook body
/// that stops half-way are all closed by the platform, whose open descriptors return to what they were; the app
/// answers throughout.
#[tokio::test]
async fn slow_and_idle_clients_are_disconnected_and_their_descriptors_freed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    // Long enough for all 150 connections to be open at once on a loaded
    // machine (the test first checks the platform holds them).
    let p = Platform::start_with(&[("BIFROST_CLIENT_HEADER_TIMEOUT", "10s")]);
    let repo = hostile_app("slow", &[]);
    add_project(&p, "slow", &repo);
    let id = push(&p, &repo, "s-1").await;
    healthy(&p, &id).await;
    let addr = p.url.trim_start_matches("http://").to_string();
    let port = addr.rsplit(':').next().expect("port").to_string();
    let host = format!("slow.localhost:{port}");
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", p.pid())).map(|d| d.count()).unwrap_or(0);
    let before = fds();

    let mut held = Vec::new();
    for i in 0..150 {
        let mut tcp = TcpStream::connect(&addr).await.expect("connect");
        match i % 3 {
            // A head that never ends.
            0 => tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes()).await.expect("write"),
            // Nothing at all.
            1 => {}
            // One whole request through to the app, then silence.
            _ => {
                tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                    .await
                    .expect("write");
                let mut buf = [0u8; 1024];
                let n = tcp.read(&mut buf).await.expect("response");
                let got = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(got.starts_with("HTTP/1.1 200"), "request {i}: {got}");
            }
        }
        held.push(tcp);
    }
    // A webhook whose body stops after its first bytes.
    let mut stalled = TcpStream::connect(&addr).await.expect("connect");
    let head = "POST /api/v1/webhooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n";
    stalled.write_all(format!("{head}Content-Length: 4096\r\n\r\n{{\"ref\":").as_bytes()).await.expect("write");
    held.push(stalled);
    // (Accepted from the backlog as the platform gets to them; a few
    // descriptors of its own come and go meanwhile.)
    let start = Instant::now();
    while fds() < before + 140 {
        let held = fds().saturating_sub(before);
        assert!(start.elapsed() < Duration::from_secs(5), "the platform held only {held} of the attack's connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The app keeps answering other clients meanwhile.
    let ok = reqwest::Client::new().get(format!("{}/healthz", p.url)).header("host", &host).send().await.expect("app");
    assert_eq!(ok.status().as_u16(), 200);

    for (i, tcp) in held.iter_mut().enumerate() {
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            let mut buf = [0u8; 1024];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection {i} was never closed by the platform");
    }
    drop(held);
    let start = Instant::now();
    while fds() > before + 5 {
        assert!(start.elapsed() < Duration::from_secs(20), "descriptors not freed: {} before, {} now", before, fds());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
