//! The function binaries on Cloud Run's contract, through Google's
//! emulators: `bifrost-gateway` and `bifrost-validate` run as separate
//! processes on `$PORT` with `K_SERVICE` set; the Pub/Sub emulator's push
//! subscriptions point at the validate binary; a signed webhook to the
//! gateway binary drives the deployment to `building`. Their logs are Cloud
//! Logging JSON with the request's trace; SIGTERM stops them within 10 s.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_e2e::{ADMIN_TOKEN, Client, GitRepo, bifrost_bin};
use bifrost_shared::auth::hash_token;
use bifrost_shared::domain::Role;
use bifrost_shared::gcp::emulator::{Emulator, Kind};
use bifrost_shared::gcp::{FirestoreConfig, FirestoreStore};
use bifrost_shared::ports::Store;
use serde_json::{Value, json};

const PROJECT: &str = "bifrost-test";
const SECRET: &str = "cloud-run-secret";
const PREFIX: &str = "cr_";

struct Service {
    child: Child,
    url: String,
    logs: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn binary(name: &str) -> PathBuf {
    let bin = bifrost_bin().with_file_name(name);
    assert!(bin.exists(), "{} is missing: build the workspace first (cargo build --workspace)", bin.display());
    bin
}

fn start(function: &str, firestore: &Emulator, pubsub: &Emulator) -> Service {
    let port = free_port();
    let mut child = Command::new(binary(&format!("bifrost-{function}")))
        .env("PORT", port.to_string())
        .env("K_SERVICE", format!("bifrost-{function}"))
        .env("BIFROST_GCP_PROJECT", PROJECT)
        .env("BIFROST_COLLECTION_PREFIX", PREFIX)
        .env("FIRESTORE_EMULATOR_HOST", &firestore.host)
        .env("PUBSUB_EMULATOR_HOST", &pubsub.host)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the function binary");
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let stdout = child.stdout.take().expect("stdout");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(line);
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "bifrost-{function} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Service { child, url, logs }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)]
fn use_firestore_emulator(e: &Emulator) {
    // SAFETY: the only test of this binary, before any client exists.
    unsafe { std::env::set_var(Kind::Firestore.env_var(), &e.host) };
}

fn json_lines(s: &Service) -> Vec<Value> {
    let lines = s.logs.lock().expect("lock").clone();
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn function_binaries_run_the_pipeline_on_cloud_runs_contract() {
    let firestore = Emulator::start(Kind::Firestore).expect("the Firestore emulator starts");
    let pubsub = Emulator::start(Kind::PubSub).expect("the Pub/Sub emulator starts");
    use_firestore_emulator(&firestore);
    let config = FirestoreConfig { collection_prefix: PREFIX.into(), ..FirestoreConfig::new(PROJECT) };
    let store = FirestoreStore::connect(config).await.expect("firestore");
    store.create_token("admin", Role::Admin, &hash_token(ADMIN_TOKEN)).await.expect("token");

    let mut gateway = start("gateway", &firestore, &pubsub);
    let mut validate = start("validate", &firestore, &pubsub);
    let http = reqwest::Client::new();
    let validate_url = validate.url.clone();
    bifrost_e2e::pubsub::setup(&http, &format!("http://{}", pubsub.host), PROJECT, &["validate"], |_| {
        validate_url.clone()
    })
    .await;

    let repo = GitRepo::new(&[("deploy.toml", "[app]\nname = \"app\"\nruntime = \"python\"\n"), ("app.py", "")]);
    let c = Client::new(&gateway.url, ADMIN_TOKEN);
    let p = c.post("/api/v1/projects", json!({"name": "app", "repo": repo.path_str(), "webhook_secret": SECRET})).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    let push = c.webhook("push", "cr-1", SECRET, &repo.push_payload("refs/heads/main", &repo.head())).await;
    assert_eq!(push.status, 201, "{:?}", push.body);
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();
    let d = c.wait_deployment(&id, "building", |d| d["status"] == "building").await;
    let history: Vec<&str> =
        d["history"].as_array().expect("history").iter().filter_map(|h| h["to"].as_str()).collect();
    assert_eq!(history, ["queued", "validating", "building"]);

    // /healthz, and a request's logs carry its Cloud Trace id.
    let trace = "105445aa7843bc8bf206b12000100000";
    let h = http
        .get(format!("{}/healthz", validate.url))
        .header("x-cloud-trace-context", format!("{trace}/1;o=1"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(h.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = json_lines(&validate);
    assert!(lines.iter().all(|l| l["severity"].is_string() && l["message"].is_string()), "{lines:?}");
    let traced = lines
        .iter()
        .find(|l| l["message"] == "GET /healthz")
        .unwrap_or_else(|| panic!("no log line for /healthz: {lines:?}"));
    assert_eq!(traced["logging.googleapis.com/trace"], format!("projects/{PROJECT}/traces/{trace}"));
    assert_eq!(traced["severity"], "INFO");
    assert!(
        lines.iter().any(|l| l["message"] == "POST /push/validate" && l["status"] == 204),
        "validate answered pushes: {lines:?}"
    );

    // SIGTERM: both drain and exit, well within Cloud Run's 10 s.
    for s in [&mut gateway, &mut validate] {
        let started = Instant::now();
        let pid = s.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let status = loop {
            if let Some(status) = s.child.try_wait().expect("wait") {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{} did not exit within 10 s of SIGTERM", s.url);
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{} exited with {status}", s.url);
    }
    assert!(json_lines(&validate).iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("SIGTERM"))));
    drop((firestore, pubsub));
}
