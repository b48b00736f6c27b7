//! Google's own emulators (installed with the Cloud SDK under
//! `/usr/lib/google-cloud-sdk/platform/`), and PyPI's `gcp-storage-emulator`
//! for Cloud Storage (Google ships none), started on a free loopback port
//! for tests and local runs. The wrapper scripts leave a java child behind,
//! so each emulator gets its own process group and the whole group is
//! killed on drop.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SDK_PLATFORM: &str = "/usr/lib/google-cloud-sdk/platform";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Firestore,
    PubSub,
    /// PyPI `gcp-storage-emulator` (scripts/test.sh installs it into
    /// `.tools/gcs-emulator`; `BIFROST_GCS_EMULATOR` overrides the path).
    Storage,
}

/// The storage emulator: `$BIFROST_GCS_EMULATOR`, else the first
/// `.tools/gcs-emulator/bin/gcp-storage-emulator` up from the current
/// directory (tests run in a crate's directory).
fn storage_emulator() -> PathBuf {
    if let Some(p) = std::env::var_os("BIFROST_GCS_EMULATOR") {
        return PathBuf::from(p);
    }
    let rel = ".tools/gcs-emulator/bin/gcp-storage-emulator";
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors().map(|d| d.join(rel)).find(|p| p.exists()).unwrap_or_else(|| PathBuf::from(rel))
}

impl Kind {
    fn command(self) -> PathBuf {
        let root =
            std::env::var_os("BIFROST_GCLOUD_PLATFORM").map_or_else(|| PathBuf::from(SDK_PLATFORM), PathBuf::from);
        match self {
            Kind::Firestore => root.join("cloud-firestore-emulator/cloud_firestore_emulator"),
            Kind::PubSub => root.join("pubsub-emulator/bin/cloud-pubsub-emulator"),
            Kind::Storage => storage_emulator(),
        }
    }

    /// The variable client libraries read the emulator's address from.
    pub fn env_var(self) -> &'static str {
        match self {
            Kind::Firestore => "FIRESTORE_EMULATOR_HOST",
            Kind::PubSub => "PUBSUB_EMULATOR_HOST",
            Kind::Storage => "STORAGE_EMULATOR_HOST",
        }
    }
}

/// A running emulator; killed (with its children) on drop.
pub struct Emulator {
    child: Child,
    /// `127.0.0.1:PORT`: where clients connect (for Storage, the shim).
    pub host: String,
    pub kind: Kind,
    /// Stops the Storage shim's thread when dropped.
    _shim: Option<tokio::sync::oneshot::Sender<()>>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Emulator {
    /// Starts the emulator and waits until it accepts connections (the JVM
    /// takes a few seconds).
    pub fn start(kind: Kind) -> Result<Emulator, String> {
        let cmd = kind.command();
        if !cmd.exists() {
            let hint = match kind {
                Kind::Storage => "scripts/test.sh installs it; or set BIFROST_GCS_EMULATOR",
                _ => "set BIFROST_GCLOUD_PLATFORM to the Cloud SDK's platform/ directory",
            };
            return Err(format!("{} is not installed (expected at {}; {hint})", kind.env_var(), cmd.display()));
        }
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let mut command = Command::new(&cmd);
        match kind {
            Kind::Firestore => command.args(["start", "--host=127.0.0.1", &format!("--port={port}")]),
            Kind::PubSub => command.args(["--host=127.0.0.1", &format!("--port={port}")]),
            Kind::Storage => {
                command.args(["start", "--host=127.0.0.1", &format!("--port={port}"), "--in-memory", "-q"])
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", cmd.display()))?;
        let host = format!("127.0.0.1:{port}");
        let mut emulator = Emulator { child, host, kind, _shim: None };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(&emulator.host).is_ok()
                && (kind == Kind::Storage || answers_ok(&emulator.host))
            {
                if kind == Kind::Storage {
                    let (host, stop) = storage_shim::start(&emulator.host)?;
                    emulator.host = host;
                    emulator._shim = Some(stop);
                }
                return Ok(emulator);
            }
            if let Ok(Some(status)) = emulator.child.try_wait() {
                return Err(format!("{} exited before listening ({status})", cmd.display()));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on {} within 60 s", cmd.display(), emulator.host));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Google's Java emulators accept connections before they serve (a first
/// call then gets "connection reset"); they are ready once `GET /` answers
/// 200 ("Ok").
fn answers_ok(host: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(host) else { return false };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    matches!(conn.read(&mut head), Ok(n) if n >= 12 && head[..n].starts_with(b"HTTP/1.1 200"))
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The wrapper's java child shares the group: kill the group.
        let pgid = self.child.id() as i32;
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gcp-storage-emulator` answers object downloads without the
/// `x-goog-generation` header Cloud Storage always sends, and Google's
/// client refuses a read without it; and it ignores the `ifGenerationMatch`
/// precondition of an upload. This loopback proxy forwards every request
/// unchanged and, on a download lacking the header, adds it from the
/// object's own metadata; an upload with a precondition is checked against
/// the object's generation first and, when it does not hold, answered 412
/// with Cloud Storage's error body. Uploads and downloads pass one at a
/// time, so a check and its write are one step, and a download's content
/// and the generation added to it are of one write (as Cloud Storage's
/// own answers are). The adapter talks to the emulator exactly as it talks
/// to Cloud Storage.
mod storage_shim {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response, StatusCode};

    pub fn start(upstream: &str) -> Result<(String, tokio::sync::oneshot::Sender<()>), String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("shim: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("shim: {e}"))?;
        let host = listener.local_addr().map_err(|e| format!("shim: {e}"))?.to_string();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let upstream = format!("http://{upstream}");
        std::thread::Builder::new()
            .name("gcs-emulator-shim".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                    let client = reqwest::Client::new();
                    loop {
                        let stream = tokio::select! {
                            _ = &mut stopped => return,
                            accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                        };
                        let (client, upstream) = (client.clone(), upstream.clone());
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let (client, upstream) = (client.clone(), upstream.clone());
                                async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
                            });
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                        });
                    }
                });
            })
            .map_err(|e| format!("shim: {e}"))?;
        Ok((host, stop))
    }

    /// An upload's `ifGenerationMatch`: the object's metadata path and the
    /// generation it must have (0: must not exist).
    fn precondition(path: &str, query: &str) -> Option<(String, i64)> {
        let bucket = path.strip_prefix("/upload/storage/v1/b/")?.strip_suffix("/o")?;
        let param = |key: &str| query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
        let expected = param("ifGenerationMatch")?.parse().ok()?;
        Some((format!("/storage/v1/b/{bucket}/o/{}", param("name")?), expected))
    }

    async fn forward(
        client: &reqwest::Client,
        upstream: &str,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        let fail = |e: String| {
            let mut r = Response::new(Full::new(Bytes::from(e)));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        };
        let (parts, body) = req.into_parts();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return fail(e.to_string()),
        };
        // One upload or download at a time: a precondition's check and its
        // write are one step, and a download's content and the generation
        // added to it (read after it) are of the same write.
        static OBJECTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let upload = parts.method == hyper::Method::POST && parts.uri.path().starts_with("/upload/");
        let download = parts.method == hyper::Method::GET && path_and_query.contains("alt=media");
        let _one = if upload || download { Some(OBJECTS.lock().await) } else { None };
        let condition = upload.then(|| precondition(parts.uri.path(), parts.uri.query().unwrap_or(""))).flatten();
        if let Some((meta_path, expected)) = &condition {
            let current = match client.get(format!("{upstream}{meta_path}")).send().await {
                Ok(m) if m.status() == hyper::StatusCode::NOT_FOUND => Some(0),
                Ok(m) => m.json::<serde_json::Value>().await.ok().and_then(|v| match &v["generation"] {
                    serde_json::Value::String(s) => s.parse::<i64>().ok(),
                    serde_json::Value::Number(n) => n.as_i64(),
                    _ => None,
                }),
                Err(_) => None,
            };
            if current != Some(*expected) {
                let body = serde_json::json!({"error": {
                    "code": 412,
                    "message": "At least one of the pre-conditions you specified did not hold.",
                    "errors": [{"message": "At least one of the pre-conditions you specified did not hold.",
                                "domain": "global", "reason": "conditionNotMet",
                                "locationType": "header", "location": "If-Match"}],
                }});
                let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                *r.status_mut() = StatusCode::PRECONDITION_FAILED;
                r.headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
                return r;
            }
        }
        let mut out = client.request(parts.method.clone(), format!("{upstream}{path_and_query}")).body(body);
        for (name, value) in &parts.headers {
            if name != hyper::header::HOST {
                out = out.header(name, value);
            }
        }
        let resp = match out.send().await {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        let mut headers = resp.headers().clone();
        let status = resp.status();
        if download && status.is_success() && !headers.contains_key("x-goog-generation") {
            let meta_url = format!("{upstream}{}", parts.uri.path());
            let generation = match client.get(meta_url).send().await {
                Ok(m) => m.json::<serde_json::Value>().await.ok().and_then(|v| match &v["generation"] {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
                Err(_) => None,
            };
            if let Some(value) = generation.and_then(|g| hyper::header::HeaderValue::from_str(&g).ok()) {
                headers.insert("x-goog-generation", value);
            }
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        let mut r = Response::new(Full::new(bytes));
        *r.status_mut() = status;
        headers.remove(hyper::header::TRANSFER_ENCODING);
        headers.remove(hyper::header::CONTENT_LENGTH);
        *r.headers_mut() = headers;
        r
    }
}
