//! The GCP event path, end to end, through Google's own emulators: a
//! signed webhook creates a deployment in Firestore; its `deployment.queued`
//! event is published to Pub/Sub; the emulator's push subscriptions deliver
//! it, and then `deployment.validating`, to the validate function's push
//! endpoint on loopback; the deployment reaches `building` exactly as with
//! the embedded dispatcher. A 503 is retried by Pub/Sub; a duplicate push
//! changes nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bifrost_core::Status;
use bifrost_core::auth::hash_token;
use bifrost_core::domain::Role;
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::{PushHandler, Store};
use bifrost_e2e::{ADMIN_TOKEN, Client, GitRepo};
use bifrost_functions::logs::{LogLimits, LogWriter};
use bifrost_functions::{Ctx, Functions, Settings};
use bifrost_gcp::pubsub::PubSubBus;
use bifrost_gcp::{FirestoreConfig, FirestoreStore};
use bifrost_local::{LocalBuilder, ProcessRuntime};
use bifrost_sources::GitSources;
use bifrost_sqlite::SqliteStore;
use bifrost_testkit::emulator::{Emulator, Kind};
use serde_json::json;

const PROJECT: &str = "bifrost-test";
const SECRET: &str = "gcp-webhook-secret";
const VALID: &str = "[app]\nname = \"app\"\nruntime = \"python\"\n\n[run]\ncommand = \"python3 app.py\"\n";

/// The real functions, with one injected 503 on the first delivery and a
/// record of every push.
struct Flaky {
    inner: Functions,
    pushes: Mutex<Vec<(String, PushEnvelope)>>,
}

/// Records the raw push bodies before the push router parses them.
async fn raw_recorder(
    axum::extract::State(raw): axum::extract::State<Arc<Mutex<Vec<String>>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    raw.lock().expect("lock").push(String::from_utf8_lossy(&bytes).into_owned());
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

#[async_trait]
impl PushHandler for Flaky {
    async fn push(&self, function: &str, envelope: PushEnvelope) -> Outcome {
        let first = {
            let mut p = self.pushes.lock().expect("lock");
            p.push((function.to_string(), envelope.clone()));
            p.len() == 1
        };
        if first {
            return Outcome::Retry("injected: the first delivery fails".into());
        }
        self.inner.push(function, envelope).await
    }
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[allow(unsafe_code)]
fn use_firestore_emulator(e: &Emulator) {
    // SAFETY: the only test of this binary, before any client exists.
    unsafe { std::env::set_var(Kind::Firestore.env_var(), &e.host) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_drives_a_deployment_to_building_through_pubsub_pushes() {
    let firestore = Emulator::start(Kind::Firestore).expect("the Firestore emulator starts");
    let pubsub = Emulator::start(Kind::PubSub).expect("the Pub/Sub emulator starts");
    use_firestore_emulator(&firestore);
    let pubsub_url = format!("http://{}", pubsub.host);

    let bus = PubSubBus::connect(PROJECT, "bifrost-", Some(&pubsub_url)).await.expect("pubsub");
    let config = FirestoreConfig { collection_prefix: "pipe_".into(), ..FirestoreConfig::new(PROJECT) };
    let store = FirestoreStore::connect(config).await.expect("firestore").with_publisher(Arc::new(bus));
    let store: Arc<dyn Store> = Arc::new(store);
    store.create_token("admin", Role::Admin, &hash_token(ADMIN_TOKEN), None).await.expect("token");

    // The adapters validate uses (git sources) are the real ones; build and
    // run are not reached in this test.
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = Arc::new(GitSources::new(dir.path()));
    let (logs, _log_task) = LogWriter::start(store.clone(), LogLimits::default());
    let sandbox = bifrost_local::sandbox::Sandbox::new(bifrost_local::sandbox::SandboxConfig {
        helper: bifrost_e2e::bifrost_bin(),
        owner: "gcp-e2e".into(),
        data_dir: dir.path().to_path_buf(),
        apps_root: dir.path().join("apps"),
        insecure: true,
        uid_base: bifrost_local::sandbox::DEFAULT_UID_BASE,
        open_files: bifrost_local::sandbox::DEFAULT_OPEN_FILES,
    })
    .expect("sandbox");
    let (runtime, _events) = ProcessRuntime::new(logs.clone(), sandbox.clone(), None);
    let dead = SqliteStore::open(&dir.path().join("unused.db"), vec![]).expect("sqlite");
    let ctx = Ctx {
        metrics: Default::default(),
        scripts: Arc::new(bifrost_core::scripts::Scripts::new(Arc::new(bifrost_local::DirBlobs::new(
            dir.path().join("scripts"),
        )))),
        traffic: None,
        export: None,
        points: Default::default(),
        health: tokio::sync::broadcast::channel(16).0,
        store: store.clone(),
        dead_letters: Arc::new(dead),
        sources: sources.clone(),
        builder: Arc::new(LocalBuilder::new(sandbox, sources, Duration::from_secs(5))),
        runtime: Arc::new(runtime),
        logs,
        keys: Some(bifrost_core::seal::Keys::from_master(&[7; 32]).expect("keys")),
        settings: Settings::default(),
    };
    let flaky = Arc::new(Flaky { inner: Functions { ctx: ctx.clone() }, pushes: Mutex::default() });
    let raw: Arc<Mutex<Vec<String>>> = Arc::default();
    let push_addr = serve(
        bifrost_functions::push::router(flaky.clone())
            .layer(axum::middleware::from_fn_with_state(raw.clone(), raw_recorder)),
    )
    .await;
    let gateway = serve(bifrost_gateway::router(ctx.clone())).await;

    // Topics for every event type; push subscriptions as terraform/ makes them.
    let http = reqwest::Client::new();
    bifrost_e2e::pubsub::setup(&http, &pubsub_url, PROJECT, &["validate"], |_| format!("http://{push_addr}")).await;

    // A pull subscription beside the push ones shows what was published.
    let probe =
        json!({"topic": format!("projects/{PROJECT}/topics/bifrost-deployment-queued"), "enableMessageOrdering": true});
    let r = http.put(format!("{pubsub_url}/v1/projects/{PROJECT}/subscriptions/probe")).json(&probe).send().await;
    assert!(r.expect("probe subscription").status().is_success());

    let repo = GitRepo::new(&[("deploy.toml", VALID), ("app.py", "print('hi')\n")]);
    let c = Client::new(&format!("http://{gateway}"), ADMIN_TOKEN);
    let p = c.post("/api/v1/projects", json!({"name": "app", "repo": repo.path_str(), "webhook_secret": SECRET})).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    let push = c.webhook("push", "gcp-1", SECRET, &repo.push_payload("refs/heads/main", &repo.head())).await;
    assert_eq!(push.status, 201, "{:?}", push.body);
    let id = push.body["deployment"]["id"].as_str().expect("id").to_string();

    let start = Instant::now();
    let d = loop {
        let d = store.get_deployment(&id).await.expect("get");
        if d.status == Status::Building || start.elapsed() > Duration::from_secs(60) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pushes = flaky.pushes.lock().expect("lock").clone();
    assert_eq!(d.status, Status::Building, "pushes seen: {}", pushes.len());
    let history: Vec<Status> = store.history(&id).await.expect("history").iter().map(|h| h.to).collect();
    assert_eq!(history, [Status::Queued, Status::Validating, Status::Building]);

    // The envelope is Pub/Sub's: subscription path, attributes, ordering key.
    let (function, first) = &pushes[0];
    assert_eq!(function, "validate");
    assert_eq!(first.subscription, format!("projects/{PROJECT}/subscriptions/bifrost-validate-queued"));
    assert_eq!(first.message.attributes.get("type").map(String::as_str), Some("deployment.queued"));
    // Published with the deployment id as ordering key (the emulator's push
    // body leaves `orderingKey` out; a pull shows it).
    let pulled: serde_json::Value = http
        .post(format!("{pubsub_url}/v1/projects/{PROJECT}/subscriptions/probe:pull"))
        .json(&json!({"maxMessages": 10}))
        .send()
        .await
        .expect("pull")
        .json()
        .await
        .expect("pull body");
    let m = &pulled["receivedMessages"][0]["message"];
    assert_eq!(m["orderingKey"], id.as_str(), "pulled: {pulled}");
    assert_eq!(m["attributes"]["deployment_id"], id.as_str(), "pulled: {pulled}");
    let raw_first = raw.lock().expect("lock")[0].clone();
    assert!(raw_first.contains("\"messageId\"") && raw_first.contains("\"publishTime\""), "{raw_first}");
    // The injected 503 was redelivered: the same message arrived again.
    let same = pushes.iter().filter(|(_, e)| e.message.message_id == first.message.message_id).count();
    assert!(same >= 2, "a nacked push is redelivered ({same} deliveries)");

    // A duplicate delivery is acknowledged and changes nothing.
    let version = d.version;
    let again =
        http.post(format!("http://{push_addr}/push/validate")).json(first).send().await.expect("duplicate push");
    assert_eq!(again.status().as_u16(), 204);
    assert_eq!(store.get_deployment(&id).await.expect("get").version, version, "a duplicate moved the deployment");
    // Garbage is refused with a 400 (Pub/Sub will dead-letter it).
    let junk = http.post(format!("http://{push_addr}/push/validate")).body("{}").send().await.expect("junk");
    assert_eq!(junk.status().as_u16(), 400);
    drop((firestore, pubsub));
}
