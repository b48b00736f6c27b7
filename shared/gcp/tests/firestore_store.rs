//! The store contract, unchanged, against Google's Firestore emulator —
//! including the 1,000 racing conflicting transitions (exactly one winner
//! each) — plus what only the Firestore layout promises.

use std::sync::Arc;

use bifrost_core::domain::{Actor, NewDeployment, NewProject, Source};
use bifrost_core::events::PushEnvelope;
use bifrost_core::ports::{DeadLetters, Store, Transition};
use bifrost_core::{Status, StoreError};
use bifrost_gcp::pubsub::Publish;
use bifrost_gcp::{FirestoreConfig, FirestoreStore};
use bifrost_testkit::contract;
use bifrost_testkit::emulator::{Emulator, Kind};

fn new_deployment(project: impl Into<String>, commit: char) -> NewDeployment {
    NewDeployment {
        project: project.into(),
        source: Source::Git {
            repo: "/r".into(),
            git_ref: "main".into(),
            commit: commit.to_string().repeat(40),
            committed_at: None,
        },
        actor: Actor::token("t"),
        dedupe_key: None,
        rollback_of: None,
        artifact: None,
    }
}

/// Points the client library at the emulator. One test function per
/// binary, so no other thread reads the environment while it is written.
#[allow(unsafe_code)]
fn use_emulator(emulator: &Emulator) {
    // SAFETY: called from the only test of this binary, before any client exists.
    unsafe { std::env::set_var(Kind::Firestore.env_var(), &emulator.host) };
}

async fn store(prefix: &str) -> FirestoreStore {
    let config = FirestoreConfig { collection_prefix: prefix.into(), ..FirestoreConfig::new("bifrost-test") };
    FirestoreStore::connect(config).await.expect("connects to the emulator")
}

/// Everything runs in one test: one emulator (a JVM takes seconds to
/// start), and the environment variable is set once.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn firestore_store_on_the_emulator() {
    let emulator = Emulator::start(Kind::Firestore).expect("the Firestore emulator starts");
    use_emulator(&emulator);
    contract_suite().await;
    a_refused_transition_writes_nothing().await;
    unconfirmed_events_are_republished().await;
    dead_letters_are_kept_and_redriven().await;
    two_instances_race().await;
    drop(emulator);
}

async fn contract_suite() {
    let s: Arc<dyn Store> = Arc::new(store("contract_").await);
    contract::run_all(s.clone(), "c-").await.expect("contract holds on Firestore");
    bifrost_testkit::history::analytics_run(&*s, "h-").await.expect("the analytics run holds on Firestore");

    // A second store on the same database (another Cloud Run instance)
    // sees the same state, and sequence numbers keep increasing across both.
    let other = store("contract_").await;
    let p = other.get_project("c-life").await.expect("the other instance reads the project");
    let mine = other.list_deployments(Some(&p.name), 10).await.expect("lists");
    assert_eq!(mine.len(), 1, "one deployment in c-life");
    let head = other.feed_head().await.expect("head");
    other
        .create_project(NewProject { name: "c-late".into(), repo: None, branch: "main".into(), webhook_secret: None })
        .await
        .expect("project");
    let d = other.create_deployment(new_deployment("c-late", 'b')).await.expect("creates");
    let items = other.feed(Some(&d.deployment.id), 0, 10).await.expect("feed");
    assert!(items.iter().all(|i| i.seq > head), "new items come after the head {head}: {items:?}");
}

async fn a_refused_transition_writes_nothing() {
    let s = store("refuse_").await;
    s.create_project(NewProject { name: "app".into(), repo: None, branch: "main".into(), webhook_secret: None })
        .await
        .expect("project");
    let d = s.create_deployment(new_deployment("app", 'a')).await.expect("creates").deployment;
    let head = s.feed_head().await.expect("head");
    let skip =
        s.transition(Transition::new(&d.id, Status::Queued, Status::Running, "skip", Actor::function("x"))).await;
    assert!(matches!(skip, Err(StoreError::InvalidTransition { .. })), "{skip:?}");
    let stale = s
        .transition(
            Transition::new(&d.id, Status::Queued, Status::Validating, "stale", Actor::function("x")).at_version(2),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict { actual_version: 1, .. })), "{stale:?}");
    assert_eq!(s.feed_head().await.expect("head"), head, "a refused transition took a sequence number");
    assert_eq!(s.history(&d.id).await.expect("history").len(), 1);
}

/// A bus that is down until told otherwise, recording what it was given.
#[derive(Default)]
struct Bus {
    up: std::sync::atomic::AtomicBool,
    sent: std::sync::Mutex<Vec<(u64, String)>>,
}

#[async_trait::async_trait]
impl Publish for Bus {
    async fn publish(&self, events: &[bifrost_core::events::Event]) -> Result<(), String> {
        if !self.up.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("Pub/Sub unavailable (injected)".into());
        }
        self.sent.lock().expect("lock").extend(events.iter().map(|e| (e.seq, e.kind.clone())));
        Ok(())
    }
}

/// An event whose publish failed stays in the outbox and is sent by the
/// re-publisher, once; an event published at commit is not sent again.
async fn unconfirmed_events_are_republished() {
    let bus = Arc::new(Bus::default());
    let s = store("repub_").await.with_publisher(bus.clone());
    s.create_project(NewProject { name: "app".into(), repo: None, branch: "main".into(), webhook_secret: None })
        .await
        .expect("project");
    let d = s.create_deployment(new_deployment("app", 'a')).await.expect("creates").deployment;
    assert!(bus.sent.lock().expect("lock").is_empty(), "the bus was down");

    bus.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let v = s.transition(Transition::new(&d.id, Status::Queued, Status::Validating, "go", Actor::function("x"))).await;
    v.expect("transitions");
    assert_eq!(bus.sent.lock().expect("lock").len(), 1, "published at commit");

    let young = s.republish(std::time::Duration::from_secs(3600)).await.expect("republishes");
    assert_eq!(young, 0, "events younger than the cutoff may still be in flight elsewhere");
    let sent = s.republish(std::time::Duration::ZERO).await.expect("republishes");
    assert_eq!(sent, 1, "only the event whose publish failed");
    let kinds: Vec<String> = bus.sent.lock().expect("lock").iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(kinds, ["deployment.validating", "deployment.queued"]);
    assert_eq!(s.republish(std::time::Duration::ZERO).await.expect("republishes"), 0, "sent once");
}

/// A message Pub/Sub moved to a dead-letter topic, pushed to the analytics
/// service, becomes a dead letter the API lists; redrive re-publishes it.
async fn dead_letters_are_kept_and_redriven() {
    let bus = Arc::new(Bus::default());
    bus.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let s = store("dead_").await.with_publisher(bus.clone());
    s.create_project(NewProject { name: "app".into(), repo: None, branch: "main".into(), webhook_secret: None })
        .await
        .expect("project");
    let d = s.create_deployment(new_deployment("app", 'a')).await.expect("creates").deployment;
    let event = s.events(Some(&d.id), 0, 10).await.expect("events").remove(0);
    // As Pub/Sub delivers a dead-lettered message: the original data and
    // attributes plus where it died and after how many deliveries.
    let mut envelope = PushEnvelope::wrap(&event, "bifrost-test", "bifrost-dead-validate-queued", None);
    let attrs = &mut envelope.message.attributes;
    attrs.insert(
        "CloudPubSubDeadLetterSourceSubscription".into(),
        "projects/bifrost-test/subscriptions/bifrost-validate-queued".into(),
    );
    attrs.insert("CloudPubSubDeadLetterSourceDeliveryCount".into(), "10".into());
    let recorded = s.record_dead_letter(&envelope).await.expect("records");
    s.record_dead_letter(&envelope).await.expect("a redelivered dead letter is recorded once");
    let listed = s.dead_letters().await.expect("lists");
    assert_eq!(listed, std::slice::from_ref(&recorded));
    assert_eq!(recorded.id, format!("{}/validate-queued", event.seq));
    assert_eq!((recorded.attempts, recorded.event.clone()), (10, event.clone()));
    assert!(recorded.last_error.contains("gave up after 10 deliveries"), "{}", recorded.last_error);

    let mut junk = envelope.clone();
    junk.message.data = "bm90IGpzb24=".into();
    assert!(matches!(s.record_dead_letter(&junk).await, Err(StoreError::Invalid(_))));
    let unknown = s.redrive(Some(vec!["1/nope".into()])).await;
    assert!(matches!(unknown, Err(StoreError::NotFound { .. })), "{unknown:?}");

    let before = bus.sent.lock().expect("lock").len();
    assert_eq!(s.redrive(Some(vec![recorded.id.clone()])).await.expect("redrives"), 1);
    assert_eq!(bus.sent.lock().expect("lock")[before..], [(event.seq, "deployment.queued".to_string())]);
    assert!(s.dead_letters().await.expect("lists").is_empty(), "a redriven letter is gone");
}

/// Two stores (two Cloud Run instances) race the same transitions: here
/// Firestore's transaction isolation, not the in-process writer queue,
/// must leave exactly one winner per deployment.
async fn two_instances_race() {
    let (a, b) = (store("race2_").await, store("race2_").await);
    let mut ids = vec![];
    for i in 0..5 {
        let name = format!("r{i}");
        a.create_project(NewProject { name: name.clone(), repo: None, branch: "main".into(), webhook_secret: None })
            .await
            .expect("project");
        let d = a.create_deployment(new_deployment(name, 'c')).await.expect("creates");
        ids.push(d.deployment.id);
    }
    let race = |s: FirestoreStore, to: Status, ids: Vec<String>| {
        tokio::spawn(async move {
            let mut wins = vec![];
            for id in ids {
                let t = Transition::new(&id, Status::Queued, to, "race", Actor::function("racer")).at_version(1);
                match s.transition(t).await {
                    Ok(_) => wins.push(id),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("racer got an untyped error: {e}"),
                }
            }
            wins
        })
    };
    let one = race(a.clone(), Status::Validating, ids.clone());
    let two = race(b.clone(), Status::Cancelled, ids.clone());
    let mut wins = one.await.expect("racer a");
    wins.extend(two.await.expect("racer b"));
    wins.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(wins, want, "each deployment has exactly one winner");
    for id in &ids {
        let h = b.history(id).await.expect("history");
        assert_eq!(h.len(), 2, "{id}: one creation and one winning transition, got {h:?}");
        let d = a.get_deployment(id).await.expect("get");
        assert_eq!(d.version, 2);
    }
}
