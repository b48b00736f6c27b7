//! Every event delivered twice — one copy after the other, and both at
//! once — to every function of the real `bifrost up`: the deployments go
//! through the same steps exactly once, with one event per step, and every
//! doubled delivery is acknowledged. Covers each subscription the pipeline
//! reaches: validate, build, deploy (built, deploying, healthy, superseded,
//! failed) and verify.

use std::collections::BTreeSet;

use bifrost_e2e::{GitRepo, Platform, python_app};
use serde_json::Value;

async fn statuses(p: &Platform, id: &str) -> Vec<String> {
    let history = p.client().get(&format!("/api/v1/deployments/{id}/history")).await.body;
    history.as_array().expect("history").iter().filter_map(|e| e["status"].as_str().map(str::to_string)).collect()
}

async fn doubled(mode: &str) {
    let p = Platform::start_with(&[("BIFROST_DUPLICATE_DELIVERIES", mode)]);
    let repo = python_app("twice", "");
    p.add_project("twice", &repo);
    let v1 = p.push(&repo, &format!("{mode}-1")).await;
    p.healthy(&v1).await;
    repo.commit(&[("VERSION", "2")], "v2");
    let v2 = p.push(&repo, &format!("{mode}-2")).await;
    p.healthy(&v2).await;
    let c = p.client();
    let v1_done = c.wait_deployment(&v1, "superseded", |d| d["status"] == "superseded").await;
    assert_eq!(v1_done["status"], "superseded");
    let broken: GitRepo = repo;
    broken.commit(&[("deploy.toml", "[app]\nname = \"twice\"\nruntime = \"cobol\"\n")], "broken");
    let v3 = p.push(&broken, &format!("{mode}-3")).await;
    let failed = c.wait_deployment(&v3, "failed", bifrost_e2e::finished).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let once = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let live = ["queued", "validating", "building", "built", "deploying", "running", "healthy"];
    assert_eq!(statuses(&p, &v2).await, once(&live), "v2's steps, each once");
    let mut superseded = live.to_vec();
    superseded.push("superseded");
    assert_eq!(statuses(&p, &v1).await, once(&superseded), "v1's steps, each once");
    assert_eq!(statuses(&p, &v3).await, once(&["queued", "validating", "failed"]), "v3's steps, each once");
    let d2: Value = c.get(&format!("/api/v1/deployments/{v2}")).await.body;
    assert_eq!(d2["version"].as_u64(), Some(live.len() as u64), "one write per step: {d2:#}");

    // The last doubled deliveries (deploy stopping v1 after its drain,
    // deploy on failed) finish after the statuses are written.
    let log = wait_for_doubled(&p, SUBSCRIPTIONS).await;
    assert!(!log.contains("was not acknowledged"), "a doubled delivery failed:\n{log}");
}

/// Each subscription the three deployments pass through.
const SUBSCRIPTIONS: &[&str] = &[
    "validate-queued",
    "validate-validating",
    "build-building",
    "deploy-built",
    "deploy-deploying",
    "verify-running",
    "deploy-healthy",
    "deploy-superseded",
    "deploy-failed",
];

fn doubled_in(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("delivered twice"))
        .filter_map(|l| l.split("subscription=").nth(1)?.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Waits until each of `subs` had a doubled delivery; the platform's log then.
async fn wait_for_doubled(p: &Platform, subs: &[&str]) -> String {
    for _ in 0..600 {
        let log = p.log_text();
        if subs.iter().all(|s| doubled_in(&log).contains(*s)) {
            return log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = p.log_text();
    panic!("not every subscription was delivered twice: reached {:?}\n{log}", doubled_in(&log));
}
#[tokio::test(flavor = "multi_thread")]
async fn every_event_delivered_twice_in_a_row_changes_nothing() {
    doubled("sequential").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_delivered_twice_at_once_changes_nothing() {
    doubled("concurrent").await;
}
