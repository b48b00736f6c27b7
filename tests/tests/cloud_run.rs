//! The function binaries on Cloud Run's contract, through Google's
//! emulators: `bifrost-gateway`, `bifrost-validate` and `bifrost-build` run
//! as separate processes on `$PORT` with `K_SERVICE` set; the Pub/Sub
//! emulator's push subscriptions point at validate and build; a signed
//! webhook to the gateway binary drives the deployment to `built`: the build
//! binary uploads the source to the storage emulator and builds it with a
//! fake Cloud Build (none can run here) whose log it streams. Their logs are
//! Cloud Logging JSON with the request's trace; SIGTERM stops them within 10 s.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicU32;

use bifrost_core::auth::hash_token;
use bifrost_core::domain::Role;
use bifrost_core::events::PushEnvelope;
use bifrost_core::ports::Store;
use bifrost_e2e::cloud_build::{DIGEST, FakeCloudBuild, LOG, Verdict, create_bucket, serve};
use bifrost_e2e::{ADMIN_TOKEN, Client, GitRepo, bifrost_bin};
use bifrost_gcp::storage::Gcs;
use bifrost_gcp::{FirestoreConfig, FirestoreStore};
use bifrost_testkit::emulator::{Emulator, Kind};
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

fn start(function: &str, firestore: &Emulator, pubsub: &Emulator, extra: &[(&str, &str)]) -> Service {
    let port = free_port();
    let mut child = Command::new(binary(&format!("bifrost-{function}")))
        .envs(extra.iter().copied())
        .env("PORT", port.to_string())
        .env("K_SERVICE", format!("bifrost-{function}"))
        // The gateway and deploy refuse to start without it; bifrost-web on
        // Cloud Run without its session key.
        .env("BIFROST_ENCRYPTION_KEY", "42".repeat(32))
        .env("BIFROST_SESSION_KEY", "43".repeat(32))
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
    store.create_token("admin", Role::Admin, &hash_token(ADMIN_TOKEN), None).await.expect("token");

    // Cloud Storage (emulated) for sources and build logs; Cloud Build (fake).
    let storage = Emulator::start(Kind::Storage).expect("the storage emulator starts");
    for bucket in ["sources", "build-logs"] {
        create_bucket(&storage.host, bucket).await;
    }
    let gcs = Gcs::connect(Some(&format!("http://{}", storage.host))).await.expect("gcs");
    let fake = Arc::new(FakeCloudBuild {
        gcs: gcs.clone(),
        logs_bucket: "build-logs".into(),
        verdict: Verdict::Success,
        polls: AtomicU32::new(0),
        seen: Mutex::new(vec![]),
    });
    let cloud_build_api = serve(fake.clone()).await;
    let gcs_env = [("BIFROST_SOURCES_BUCKET", "sources"), ("STORAGE_EMULATOR_HOST", storage.host.as_str())];
    let build_env = [
        gcs_env[0],
        gcs_env[1],
        ("BIFROST_REGION", "europe-west1"),
        ("BIFROST_BUILD_LOGS_BUCKET", "build-logs"),
        ("BIFROST_ARTIFACT_REPOSITORY", "europe-west1-docker.pkg.dev/bifrost-test/bifrost/apps"),
        ("BIFROST_CLOUD_BUILD_API", cloud_build_api.as_str()),
    ];

    let mut gateway = start("gateway", &firestore, &pubsub, &gcs_env);
    let mut validate = start("validate", &firestore, &pubsub, &gcs_env);
    let mut build = start("build", &firestore, &pubsub, &build_env);
    let http = reqwest::Client::new();
    let (validate_url, build_url) = (validate.url.clone(), build.url.clone());
    bifrost_e2e::pubsub::setup(&http, &format!("http://{}", pubsub.host), PROJECT, &["validate", "build"], |f| {
        if f == "build" { build_url.clone() } else { validate_url.clone() }
    })
    .await;

    let repo = GitRepo::new(&[("deploy.toml", "[app]\nname = \"app\"\nruntime = \"python\"\n"), ("app.py", "")]);
    let c = Client::new(&gateway.url, ADMIN_TOKEN);
    let p = c.post("/api/v1/projects", json!({"name": "app", "repo": repo.path_str(), "webhook_secret": SECRET})).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    let push = c.webhook("push", "cr-1", SECRET, &repo.push_payload("refs/heads/main", &repo.head())).await;
    assert_eq!(push.status, 201, "{:?}", push.body);
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();
    let d = c.wait_deployment(&id, "built", |d| d["status"] == "built" || d["status"] == "failed").await;
    let history: Vec<&str> =
        d["history"].as_array().expect("history").iter().filter_map(|h| h["to"].as_str()).collect();
    assert_eq!(history, ["queued", "validating", "building", "built"], "{d}");
    let stored = store.get_deployment(&id).await.expect("the deployment");
    assert_eq!(
        stored.artifact.as_ref().map(|a| a["image"].clone()).unwrap_or_default(),
        format!("europe-west1-docker.pkg.dev/bifrost-test/bifrost/apps/app@{DIGEST}"),
        "the build's image, by digest: {d}"
    );
    let context = gcs.get("sources", &format!("builds/{id}.tar.gz")).await.expect("reads");
    assert!(context.is_some(), "the build context was uploaded");
    let logs = c.get(&format!("/api/v1/deployments/{id}/logs")).await;
    let lines: Vec<&str> = logs
        .body
        .as_array()
        .expect("feed items")
        .iter()
        .filter(|item| item["kind"] == "log" && item["stream"] == "build")
        .filter_map(|item| item["line"].as_str())
        .filter(|l| !l.starts_with("==>"))
        .collect();
    assert_eq!(lines, LOG, "Cloud Build's log is the deployment's build log, in order, once");

    // Cloud Scheduler's call to analytics: the outbox re-publisher finds
    // nothing unconfirmed (every publish succeeded), health is folded.
    let mut analytics = start("analytics", &firestore, &pubsub, &[]);
    let run = http.post(format!("{}/run", analytics.url)).send().await.expect("analytics answers");
    assert_eq!(run.status().as_u16(), 200);
    let body = run.text().await.expect("body");
    assert!(body.starts_with("republished 0 events; folded "), "{body}");

    // A message Pub/Sub dead-lettered reaches analytics from the dead-letter
    // topic's push subscription; the gateway's API lists and redrives it.
    let queued = store.events(Some(&id), 0, 1).await.expect("events").remove(0);
    let mut dead = PushEnvelope::wrap(&queued, PROJECT, "bifrost-dead-validate-queued", None);
    dead.message.attributes.insert(
        "CloudPubSubDeadLetterSourceSubscription".into(),
        format!("projects/{PROJECT}/subscriptions/bifrost-validate-queued"),
    );
    dead.message.attributes.insert("CloudPubSubDeadLetterSourceDeliveryCount".into(), "5".into());
    let pushed = http.post(format!("{}/push/dead-letter", analytics.url)).json(&dead).send().await.expect("push");
    assert_eq!(pushed.status().as_u16(), 204);
    let listed = c.get("/api/v1/events/dead").await;
    assert_eq!(listed.status, 200);
    let letter_id = format!("{}/validate-queued", queued.seq);
    assert_eq!(listed.body[0]["id"], letter_id.as_str(), "{:?}", listed.body);
    assert_eq!(listed.body[0]["attempts"], 5);
    let validate_pushes = |s: &Service| {
        json_lines(s).iter().filter(|l| l["message"] == "POST /push/validate" && l["status"] == 204).count()
    };
    let pushes_before = validate_pushes(&validate);
    let redriven = c.post("/api/v1/events/dead/redrive", json!({"ids": [letter_id]})).await;
    assert_eq!(redriven.body["redriven"], 1, "{:?}", redriven.body);
    assert_eq!(c.get("/api/v1/events/dead").await.body, json!([]));
    // Redelivered to validate, a duplicate of work already done: acked,
    // and nothing moves.
    let started = Instant::now();
    while validate_pushes(&validate) == pushes_before {
        assert!(started.elapsed() < Duration::from_secs(20), "the redriven event never reached validate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = c.get(&format!("/api/v1/deployments/{id}")).await;
    assert_eq!(after.body["status"], "built", "{:?}", after.body);

    // /healthz, and a request's logs carry its Cloud Trace id: the function
    // services and the dashboard's own service alike.
    let mut web = start("web", &firestore, &pubsub, &[("BIFROST_API_URL", gateway.url.as_str())]);
    let trace = "105445aa7843bc8bf206b12000100000";
    for s in [&validate, &web] {
        let h = http
            .get(format!("{}/healthz", s.url))
            .header("x-cloud-trace-context", format!("{trace}/1;o=1"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(h.status().as_u16(), 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in [&validate, &web] {
        let lines = json_lines(s);
        assert!(lines.iter().all(|l| l["severity"].is_string() && l["message"].is_string()), "{lines:?}");
        let traced = lines
            .iter()
            .find(|l| l["message"] == "GET /healthz")
            .unwrap_or_else(|| panic!("no log line for /healthz: {lines:?}"));
        assert_eq!(traced["logging.googleapis.com/trace"], format!("projects/{PROJECT}/traces/{trace}"));
        assert_eq!(traced["severity"], "INFO");
    }
    let lines = json_lines(&validate);
    assert!(
        lines.iter().any(|l| l["message"] == "POST /push/validate" && l["status"] == 204),
        "validate answered pushes: {lines:?}"
    );

    // A dashboard's live stream is open on the gateway: it must not hold
    // the drain past Cloud Run's 10 s.
    let mut live = tokio::net::TcpStream::connect(gateway.url.trim_start_matches("http://")).await.expect("connects");
    let sub = format!("GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut live, sub.as_bytes()).await.expect("subscribes");
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut live, &mut head).await.expect("answered");
    assert_eq!(&head, b"HTTP/1.1 200", "the stream is open");

    // SIGTERM: every service drains and exits by itself, cleanly, having
    // said why (how fast is measured, not asserted: Cloud Run allows 10 s).
    for s in [&mut gateway, &mut validate, &mut build, &mut web, &mut analytics] {
        let started = Instant::now();
        let pid = s.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let status = loop {
            if let Some(status) = s.child.try_wait().expect("wait") {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{} never exited after SIGTERM", s.url);
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{} exited with {status}", s.url);
    }
    assert!(json_lines(&validate).iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("SIGTERM"))));
    drop((firestore, pubsub, storage));
}
