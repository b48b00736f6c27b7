//! The store contract: behaviour every [`Store`] must show. The same suite
//! runs against SQLite (shared's tests) and against Google's Firestore
//! emulator, unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use bifrost_core::analytics::cost::Cost;
use bifrost_core::analytics::run::{AnalyticsResult, SeriesAnomaly, TrafficMinute};
use bifrost_core::analytics::window::Window;
use bifrost_core::domain::{
    Actor, Chaos, Fault, FeedKind, HealthSample, LogLine, NewDeployment, NewProject, Role, RolloutState, Source,
    TrafficChange, TrafficSplit, now, verify_chain,
};
use bifrost_core::error::StoreError;
use bifrost_core::policies::{NewPolicyVersion, verify_policy_chain};
use bifrost_core::ports::{Patch, RouterTally, Store, TrafficCounts, Transition};
use bifrost_core::status::Status;

fn fail(msg: String) -> Result<(), String> {
    Err(msg)
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return fail(format!($($fmt)+));
        }
    };
}

fn git_source(commit: &str) -> Source {
    Source::Git { repo: "/tmp/repo".into(), git_ref: "main".into(), commit: commit.into(), committed_at: None }
}

fn new_deployment(project: &str, dedupe: Option<&str>) -> NewDeployment {
    NewDeployment {
        project: project.into(),
        source: git_source(&"a".repeat(40)),
        actor: Actor::token("contract"),
        dedupe_key: dedupe.map(str::to_string),
        rollback_of: None,
        artifact: None,
    }
}

async fn project(store: &dyn Store, name: &str) -> Result<(), String> {
    store
        .create_project(NewProject {
            name: name.into(),
            repo: Some("/tmp/repo".into()),
            branch: "main".into(),
            webhook_secret: Some("s".into()),
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("create_project({name}): {e}"))
}

async fn walk(store: &dyn Store, id: &str, path: &[Status]) -> Result<(), String> {
    for pair in path.windows(2) {
        store
            .transition(Transition::new(id, pair[0], pair[1], "contract", Actor::function("contract")))
            .await
            .map_err(|e| format!("{} → {}: {e}", pair[0], pair[1]))?;
    }
    Ok(())
}

/// Runs every contract check; `prefix` keeps names unique on a shared backend.
pub async fn run_all(store: Arc<dyn Store>, prefix: &str) -> Result<(), String> {
    projects(&*store, prefix).await?;
    lifecycle(&*store, prefix).await?;
    refuses_bad_transitions(&*store, prefix).await?;
    retry_bumps_attempt(&*store, prefix).await?;
    dedupe_and_supersede(&*store, prefix).await?;
    make_live(&*store, prefix).await?;
    chaos(&*store, prefix).await?;
    tokens(&*store, prefix).await?;
    policies(&*store, prefix).await?;
    delete_cancels(&*store, prefix).await?;
    feed_orders_status_and_logs(&*store, prefix).await?;
    secrets(&*store, prefix).await?;
    health_series(&*store, prefix).await?;
    series_retention(&*store, prefix).await?;
    router_tallies(&*store, prefix).await?;
    tally_retention(&*store, prefix).await?;
    analytics_results(&*store, prefix).await?;
    racing_transitions(store.clone(), prefix, 1000, 8).await?;
    Ok(())
}

pub async fn projects(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}proj");
    project(store, &name).await?;
    let dup = store
        .create_project(NewProject { name: name.clone(), repo: None, branch: "main".into(), webhook_secret: None })
        .await;
    check!(matches!(dup, Err(StoreError::AlreadyExists { .. })), "duplicate project: {dup:?}");
    let bad = store
        .create_project(NewProject {
            name: "Not_A_Label".into(),
            repo: None,
            branch: "main".into(),
            webhook_secret: None,
        })
        .await;
    check!(matches!(bad, Err(StoreError::Invalid(_))), "invalid name accepted: {bad:?}");
    let p = store.get_project(&name).await.map_err(|e| e.to_string())?;
    let by_id = store.get_project(&p.id).await.map_err(|e| e.to_string())?;
    check!(p == by_id, "get by id differs from get by name");
    check!(p.webhook_secret.as_deref() == Some("s"), "webhook secret not kept");
    let all = store.list_projects().await.map_err(|e| e.to_string())?;
    check!(all.iter().any(|x| x.name == name), "list_projects misses {name}");
    let missing = store.get_project(&format!("{prefix}nope")).await;
    check!(matches!(missing, Err(StoreError::NotFound { .. })), "unknown project: {missing:?}");
    Ok(())
}

pub async fn lifecycle(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}life");
    project(store, &name).await?;
    let created = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?;
    let d = created.deployment;
    check!(d.status == Status::Queued && d.version == 1 && d.attempt == 1, "new deployment: {d:?}");
    walk(store, &d.id, &Status::PIPELINE).await?;
    let done = store.get_deployment(&d.id).await.map_err(|e| e.to_string())?;
    check!(done.status == Status::Healthy, "ended {:?}", done.status);
    check!(done.version == 7, "version {} after 6 transitions", done.version);
    let history = store.history(&d.id).await.map_err(|e| e.to_string())?;
    check!(history.len() == 7, "history has {} records, want 7", history.len());
    let tos: Vec<Status> = history.iter().map(|h| h.to).collect();
    check!(tos == Status::PIPELINE, "history order {tos:?}");
    check!(history[0].from.is_none() && history[1].from == Some(Status::Queued), "history from fields");
    verify_chain(&history)?;
    let head = store.feed_head().await.map_err(|e| e.to_string())?;
    let mine = store.feed(Some(&d.id), 0, 1000).await.map_err(|e| e.to_string())?;
    let newest_mine = mine.last().map_or(0, |f| f.seq);
    check!(head >= newest_mine && newest_mine > 0, "feed_head {head} is behind this deployment's item {newest_mine}");
    let beyond = store.feed(None, head, 10).await.map_err(|e| e.to_string())?;
    check!(beyond.iter().all(|f| f.seq > head), "feed after head {head} returned an older item");
    // The global trail is newest first and pages by `before`.
    let newest = store.audit(None, 3).await.map_err(|e| e.to_string())?;
    check!(newest.len() == 3, "audit(None, 3) gave {} records", newest.len());
    check!(newest.windows(2).all(|w| w[0].seq > w[1].seq), "audit not newest first");
    let last = history.last().ok_or("empty history")?;
    let page = store.audit(Some(last.seq + 1), 7).await.map_err(|e| e.to_string())?;
    let mine: Vec<u64> = page.iter().filter(|a| a.deployment_id == d.id).map(|a| a.seq).collect();
    let want: Vec<u64> = history.iter().rev().map(|a| a.seq).collect();
    check!(mine == want, "audit(before {}) shows {mine:?}, history has {want:?}", last.seq + 1);
    let older = store.audit(Some(history[0].seq), 1000).await.map_err(|e| e.to_string())?;
    check!(older.iter().all(|a| a.seq < history[0].seq), "audit(before) returned a newer record");
    let events = store.events(Some(&d.id), 0, 100).await.map_err(|e| e.to_string())?;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    check!(
        kinds
            == [
                "deployment.queued",
                "deployment.validating",
                "deployment.building",
                "deployment.built",
                "deployment.deploying",
                "deployment.running",
                "deployment.healthy"
            ],
        "events {kinds:?}"
    );
    check!(events.windows(2).all(|w| w[0].seq < w[1].seq), "event seqs not increasing");
    check!(events.iter().zip(1..).all(|(e, v)| e.version == v), "event versions do not follow the deployment");
    let after = store.events(Some(&d.id), events[3].seq, 100).await.map_err(|e| e.to_string())?;
    check!(after.len() == 3, "events after seq: {}", after.len());
    let listed = store.list_deployments(Some(&name), 10).await.map_err(|e| e.to_string())?;
    check!(listed.len() == 1 && listed[0].id == d.id, "list_deployments");
    Ok(())
}

pub async fn refuses_bad_transitions(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}bad");
    project(store, &name).await?;
    let d = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
    let actor = Actor::function("contract");
    let skip = store.transition(Transition::new(&d.id, Status::Queued, Status::Healthy, "skip", actor.clone())).await;
    check!(
        matches!(skip, Err(StoreError::InvalidTransition { from: Status::Queued, to: Status::Healthy })),
        "queued → healthy: {skip:?}"
    );
    let stale = store.transition(Transition::new(&d.id, Status::Building, Status::Built, "stale", actor.clone())).await;
    check!(matches!(stale, Err(StoreError::Conflict { actual: Status::Queued, .. })), "stale from: {stale:?}");
    let old_version = store
        .transition(Transition::new(&d.id, Status::Queued, Status::Validating, "v", actor.clone()).at_version(9))
        .await;
    check!(
        matches!(old_version, Err(StoreError::Conflict { actual_version: 1, .. })),
        "stale version: {old_version:?}"
    );
    let unknown = store.transition(Transition::new("d-nope", Status::Queued, Status::Validating, "x", actor)).await;
    check!(matches!(unknown, Err(StoreError::NotFound { .. })), "unknown id: {unknown:?}");
    let after = store.get_deployment(&d.id).await.map_err(|e| e.to_string())?;
    check!(after.status == Status::Queued && after.version == 1, "a refused transition changed {after:?}");
    let history = store.history(&d.id).await.map_err(|e| e.to_string())?;
    check!(history.len() == 1, "a refused transition wrote audit records");
    let events = store.events(Some(&d.id), 0, 10).await.map_err(|e| e.to_string())?;
    check!(events.len() == 1, "a refused transition enqueued events");
    Ok(())
}

pub async fn retry_bumps_attempt(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}retry");
    project(store, &name).await?;
    let d = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
    let patch = Patch { config_errors: Some(vec![]), ..Patch::default() };
    store
        .transition(
            Transition::new(&d.id, Status::Queued, Status::Failed, "boom", Actor::function("c")).with_patch(patch),
        )
        .await
        .map_err(|e| e.to_string())?;
    let r = store
        .transition(Transition::new(&d.id, Status::Failed, Status::Queued, "retry", Actor::token("c")))
        .await
        .map_err(|e| e.to_string())?;
    check!(r.attempt == 2 && r.status == Status::Queued && r.version == 3, "after retry: {r:?}");
    let ev = store.events(Some(&d.id), 0, 10).await.map_err(|e| e.to_string())?;
    check!(ev.last().is_some_and(|e| e.attempt == 2 && e.kind == "deployment.queued"), "retry event {ev:?}");
    Ok(())
}

pub async fn dedupe_and_supersede(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}dedupe");
    let other = format!("{prefix}other");
    project(store, &name).await?;
    project(store, &other).await?;
    let key = format!("{prefix}delivery-1");
    let first = store.create_deployment(new_deployment(&name, Some(&key))).await.map_err(|e| e.to_string())?;
    let again = store.create_deployment(new_deployment(&name, Some(&key))).await.map_err(|e| e.to_string())?;
    check!(!first.duplicate && again.duplicate, "duplicate flags {} {}", first.duplicate, again.duplicate);
    check!(first.deployment.id == again.deployment.id, "dedupe created a second deployment");
    let all = store.list_deployments(Some(&name), 10).await.map_err(|e| e.to_string())?;
    check!(all.len() == 1, "{} deployments after a duplicate delivery", all.len());

    let unrelated = store.create_deployment(new_deployment(&other, None)).await.map_err(|e| e.to_string())?;
    let second = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?;
    check!(second.superseded == vec![first.deployment.id.clone()], "superseded {:?}", second.superseded);
    let old = store.get_deployment(&first.deployment.id).await.map_err(|e| e.to_string())?;
    check!(old.status == Status::Superseded, "older in-flight deployment is {}", old.status);
    let want = format!("superseded by {}", second.deployment.id);
    check!(old.reason.as_deref() == Some(want.as_str()), "supersede reason {:?}, want {want:?}", old.reason);
    let u = store.get_deployment(&unrelated.deployment.id).await.map_err(|e| e.to_string())?;
    check!(u.status == Status::Queued, "another project's deployment was touched");
    Ok(())
}

pub async fn make_live(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}live");
    project(store, &name).await?;
    let mut ids = vec![];
    for _ in 0..2 {
        let d = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
        walk(store, &d.id, &Status::PIPELINE[..6]).await?;
        let patch = Patch { make_live: true, ..Patch::default() };
        store
            .transition(
                Transition::new(&d.id, Status::Running, Status::Healthy, "healthy", Actor::function("verify"))
                    .with_patch(patch),
            )
            .await
            .map_err(|e| e.to_string())?;
        ids.push(d.id);
    }
    let p = store.get_project(&name).await.map_err(|e| e.to_string())?;
    check!(p.live_deployment_id.as_deref() == Some(ids[1].as_str()), "live is {:?}", p.live_deployment_id);
    let first = store.get_deployment(&ids[0]).await.map_err(|e| e.to_string())?;
    check!(first.status == Status::Superseded, "replaced live deployment is {}", first.status);
    let want = format!("replaced by {} (now live)", ids[1]);
    check!(first.reason.as_deref() == Some(want.as_str()), "replace reason {:?}, want {want:?}", first.reason);
    Ok(())
}

/// Fault injection and a traffic split are kept on the project, read back
/// as written, each apart from the other, and each change is a record in
/// the live deployment's audit trail — a rollout's in its canary's (status
/// unchanged, the hash chains intact).
pub async fn chaos(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}chaos");
    project(store, &name).await?;
    let d = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
    walk(store, &d.id, &Status::PIPELINE[..6]).await?;
    let live = Transition::new(&d.id, Status::Running, Status::Healthy, "healthy", Actor::function("verify"))
        .with_patch(Patch { make_live: true, ..Patch::default() });
    store.transition(live).await.map_err(|e| e.to_string())?;
    let at = bifrost_core::domain::now();
    let c = Chaos {
        deployment: None,
        fault: Fault::Error { rate: 0.5, status: 503 },
        until: at + chrono::Duration::minutes(15),
        set_by: Actor::token("admin"),
        at,
    };
    let set = store
        .set_traffic(&name, TrafficChange::Chaos(Some(c.clone())), "chaos: on", Actor::token("admin"), None)
        .await
        .map_err(|e| e.to_string())?;
    check!(set.chaos.as_ref() == Some(&c), "set_traffic answered {:?}", set.chaos);
    let split = TrafficSplit { deployment: "d-other".into(), weight: 10, set_by: Actor::token("admin"), at };
    let set = store
        .set_traffic(&name, TrafficChange::Split(Some(split.clone())), "split: 10%", Actor::token("admin"), None)
        .await
        .map_err(|e| e.to_string())?;
    check!(set.split.as_ref() == Some(&split) && set.chaos.is_some(), "a split kept the chaos: {set:?}");
    let read = store.get_project(&name).await.map_err(|e| e.to_string())?;
    check!(
        read.chaos.as_ref().map(|r| (&r.fault, &r.set_by)) == Some((&c.fault, &c.set_by)),
        "read back {:?}",
        read.chaos
    );
    check!(read.split.as_ref().map(|s| (s.weight, &s.deployment)) == Some((10, &split.deployment)), "{read:?}");
    store
        .set_traffic(&name, TrafficChange::Chaos(None), "chaos: off", Actor::token("admin"), None)
        .await
        .map_err(|e| e.to_string())?;
    let read = store.get_project(&name).await.map_err(|e| e.to_string())?;
    check!(read.chaos.is_none() && read.split.is_some(), "chaos not cleared, or the split with it: {read:?}");
    store
        .set_traffic(&name, TrafficChange::Split(None), "split: reset", Actor::token("admin"), None)
        .await
        .map_err(|e| e.to_string())?;
    check!(store.get_project(&name).await.map_err(|e| e.to_string())?.split.is_none(), "split not cleared");
    // A rollout: its state and split set together, compare-and-set on its
    // generation, the decision kept as the record's evidence.
    let canary = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
    walk(store, &canary.id, &Status::PIPELINE[..6]).await?;
    let rollout = |generation: u64| RolloutState {
        deployment: canary.id.clone(),
        stable: d.id.clone(),
        step: 0,
        weight: 10,
        window_started: at,
        inconclusive: 0,
        errors: 0,
        paused: None,
        promote_requested: false,
        last_decision: None,
        generation,
    };
    let canary_split =
        TrafficSplit { deployment: canary.id.clone(), weight: 10, set_by: Actor::function("verify"), at };
    let start = TrafficChange::Rollout {
        rollout: Some(rollout(1)),
        split: Some(canary_split.clone()),
        expected_generation: None,
    };
    let set = store
        .set_traffic(&name, start.clone(), "canary: step 1", Actor::function("verify"), Some("{\"allow\":true}".into()))
        .await
        .map_err(|e| e.to_string())?;
    check!(set.rollout == Some(rollout(1)) && set.split == Some(canary_split), "rollout set: {set:?}");
    let again = store.set_traffic(&name, start, "canary: step 1 again", Actor::function("verify"), None).await;
    check!(matches!(again, Err(StoreError::AlreadyExists { .. })), "a second start: {again:?}");
    let end = TrafficChange::Rollout { rollout: None, split: None, expected_generation: Some(1) };
    store.set_traffic(&name, end, "canary: done", Actor::function("verify"), None).await.map_err(|e| e.to_string())?;
    let read = store.get_project(&name).await.map_err(|e| e.to_string())?;
    check!(read.rollout.is_none() && read.split.is_none(), "rollout not cleared: {read:?}");
    let history = store.history(&d.id).await.map_err(|e| e.to_string())?;
    let reasons: Vec<&str> = history.iter().map(|r| r.reason.as_str()).collect();
    check!(
        reasons.ends_with(&["chaos: on", "split: 10%", "chaos: off", "split: reset"]),
        "live deployment's audit trail {reasons:?}"
    );
    let on_canary = store.history(&canary.id).await.map_err(|e| e.to_string())?;
    let reasons: Vec<&str> = on_canary.iter().map(|r| r.reason.as_str()).collect();
    check!(reasons.ends_with(&["canary: step 1", "canary: done"]), "canary's audit trail {reasons:?}");
    let last = on_canary.last().map(|r| (r.from, r.to));
    check!(last == Some((Some(Status::Running), Status::Running)), "a rollout record moved the canary: {last:?}");
    let evidence = on_canary.iter().find(|r| r.reason == "canary: step 1").and_then(|r| r.evidence.clone());
    check!(evidence.as_deref() == Some("{\"allow\":true}"), "evidence: {evidence:?}");
    for trail in [&history, &on_canary] {
        for pair in trail.windows(2) {
            check!(pair[1].prev_hash == pair[0].hash, "the audit chain breaks after {:?}", pair[0].reason);
        }
    }
    let after = store.get_deployment(&d.id).await.map_err(|e| e.to_string())?;
    check!(after.status == Status::Healthy, "chaos changed the status to {}", after.status);
    let moved = store
        .transition(Transition::new(&d.id, Status::Healthy, Status::Superseded, "next", Actor::function("contract")))
        .await;
    check!(moved.is_ok(), "a transition after chaos records failed: {moved:?}");
    Ok(())
}

pub async fn tokens(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}alice");
    let hash = format!("{prefix}{}", "f".repeat(32));
    let t = store.create_token(&name, Role::Deployer, &hash, None).await.map_err(|e| e.to_string())?;
    let dup = store.create_token(&name, Role::Viewer, "other", None).await;
    check!(matches!(dup, Err(StoreError::AlreadyExists { .. })), "duplicate token name: {dup:?}");
    let found = store.authenticate(&hash).await.map_err(|e| e.to_string())?;
    check!(found.as_ref().is_some_and(|f| f.id == t.id && f.role == Role::Deployer), "authenticate: {found:?}");
    check!(found.as_ref().is_some_and(|f| f.project_id.is_none()), "unscoped token came back scoped: {found:?}");
    // Limited to one project: the limit comes back with the token.
    let scoped_hash = format!("{prefix}{}", "e".repeat(32));
    let scoped_name = format!("{prefix}bob");
    store.create_token(&scoped_name, Role::Deployer, &scoped_hash, Some("p_x")).await.map_err(|e| e.to_string())?;
    let scoped = store.authenticate(&scoped_hash).await.map_err(|e| e.to_string())?;
    check!(scoped.as_ref().and_then(|s| s.project_id.as_deref()) == Some("p_x"), "scoped token: {scoped:?}");
    let admin = store.create_token(&format!("{prefix}carol"), Role::Admin, "x", Some("p_x")).await;
    check!(matches!(admin, Err(StoreError::Invalid(_))), "a project-limited admin token: {admin:?}");
    check!(store.authenticate("nope").await.map_err(|e| e.to_string())?.is_none(), "unknown hash authenticated");
    store.revoke_token(&name).await.map_err(|e| e.to_string())?;
    check!(store.authenticate(&hash).await.map_err(|e| e.to_string())?.is_none(), "revoked token authenticated");
    Ok(())
}

/// Policy versions: numbered from 1, chained, compare-and-set on the
/// version a change was made on, listed oldest first per name.
pub async fn policies(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}deploy");
    let new = |base: u64, min: u64| NewPolicyVersion {
        name: name.clone(),
        rego: "package deploy".into(),
        data: serde_json::json!({ "min_disk_gb": min }),
        projects: [("web".to_string(), serde_json::json!({ "min_disk_gb": 1 }))].into(),
        set_by: Actor::token("admin"),
        reason: format!("data min_disk_gb={min}"),
        base_version: base,
    };
    check!(store.policy_versions(&name).await.map_err(|e| e.to_string())?.is_empty(), "a new policy has versions");
    let v1 = store.put_policy(new(0, 5)).await.map_err(|e| e.to_string())?;
    let v2 = store.put_policy(new(1, 7)).await.map_err(|e| e.to_string())?;
    check!((v1.version, v2.version) == (1, 2), "versions {} and {}", v1.version, v2.version);
    let stale = store.put_policy(new(1, 9)).await;
    check!(matches!(stale, Err(StoreError::AlreadyExists { .. })), "a change on an old version: {stale:?}");
    let other = store.put_policy(NewPolicyVersion { name: format!("{prefix}promote"), ..new(0, 1) }).await;
    check!(other.as_ref().is_ok_and(|v| v.version == 1), "another policy's first version: {other:?}");
    let all = store.policy_versions(&name).await.map_err(|e| e.to_string())?;
    check!(all == vec![v1, v2], "read back: {all:?}");
    check!(verify_policy_chain(&all).is_ok(), "chain: {:?}", verify_policy_chain(&all));
    check!(all[1].data_for(Some("web"))["min_disk_gb"] == 1, "the project's value: {:?}", all[1].data_for(Some("web")));
    Ok(())
}

pub async fn delete_cancels(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}gone");
    project(store, &name).await?;
    // A live deployment and one on its way: deleting cancels both.
    let live = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
    walk(store, &live.id, &Status::PIPELINE[..6]).await?;
    let healthy = Transition::new(&live.id, Status::Running, Status::Healthy, "healthy", Actor::function("verify"))
        .with_patch(Patch { make_live: true, ..Patch::default() });
    store.transition(healthy).await.map_err(|e| e.to_string())?;
    let d = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
    store.delete_project(&name, Actor::token("c")).await.map_err(|e| e.to_string())?;
    check!(matches!(store.get_project(&name).await, Err(StoreError::NotFound { .. })), "project still there");
    for id in [&live.id, &d.id] {
        let history = store.history(id).await.map_err(|e| e.to_string())?;
        let last = history.last();
        check!(
            last.is_some_and(|h| h.to == Status::Cancelled && h.reason == "project deleted"),
            "deletion did not cancel {id}: {history:?}"
        );
    }
    Ok(())
}

/// `contests` deployments, each raced by `racers` concurrent conflicting
/// transitions out of `queued`: exactly one wins each; the rest get a typed
/// conflict.
pub async fn racing_transitions(
    store: Arc<dyn Store>,
    prefix: &str,
    contests: usize,
    racers: usize,
) -> Result<(), String> {
    // One project per contest: a new deployment supersedes its project's
    // in-flight ones, so contests must not share a project.
    let mut targets = vec![];
    for i in 0..contests {
        let pname = format!("{prefix}r{i}");
        project(&*store, &pname).await?;
        targets.push(
            store.create_deployment(new_deployment(&pname, None)).await.map_err(|e| e.to_string())?.deployment.id,
        );
    }
    let targets = Arc::new(targets);
    let mut tasks = vec![];
    for r in 0..racers {
        let store = store.clone();
        let targets = targets.clone();
        tasks.push(tokio::spawn(async move {
            let to = [Status::Validating, Status::Failed, Status::Cancelled][r % 3];
            let mut results = vec![];
            // Racers walk the list from different offsets so contests overlap.
            let n = targets.len();
            for k in 0..n {
                let id = &targets[(k + r * n / 8) % n];
                let res = store
                    .transition(
                        Transition::new(id, Status::Queued, to, format!("racer {r}"), Actor::function("racer"))
                            .at_version(1),
                    )
                    .await;
                results.push((id.clone(), res));
            }
            results
        }));
    }
    let mut winners: HashMap<String, usize> = HashMap::new();
    let mut conflicts = 0;
    for t in tasks {
        for (id, res) in t.await.map_err(|e| e.to_string())? {
            match res {
                Ok(_) => *winners.entry(id).or_default() += 1,
                Err(StoreError::Conflict { .. }) => conflicts += 1,
                Err(e) => return fail(format!("racer got an untyped error: {e}")),
            }
        }
    }
    check!(winners.len() == contests, "{} of {contests} contests had a winner", winners.len());
    check!(winners.values().all(|&w| w == 1), "a contest had more than one winner");
    check!(conflicts == contests * (racers - 1), "{conflicts} conflicts, want {}", contests * (racers - 1));
    for id in targets.iter() {
        let h = store.history(id).await.map_err(|e| e.to_string())?;
        check!(h.len() == 2, "deployment {id} has {} audit records after the race", h.len());
    }
    Ok(())
}

pub async fn feed_orders_status_and_logs(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}feed");
    project(store, &name).await?;
    let mut live = store.subscribe();
    let d = store.create_deployment(new_deployment(&name, None)).await.map_err(|e| e.to_string())?.deployment;
    let line = |text: &str| LogLine {
        deployment_id: d.id.clone(),
        project: name.clone(),
        at: now(),
        stream: "build".into(),
        line: text.into(),
    };
    store.append_logs(vec![line("one"), line("\u{1b}[31mtwo\u{1b}[0m")]).await.map_err(|e| e.to_string())?;
    walk(store, &d.id, &[Status::Queued, Status::Validating]).await?;
    store.append_logs(vec![line("three")]).await.map_err(|e| e.to_string())?;
    let feed = store.feed(Some(&d.id), 0, 100).await.map_err(|e| e.to_string())?;
    let shown: Vec<String> = feed
        .iter()
        .map(|f| match &f.kind {
            FeedKind::Status { status, .. } => format!("status:{status}"),
            FeedKind::Log { line, .. } => format!("log:{line}"),
        })
        .collect();
    check!(
        shown == ["status:queued", "log:one", "log:\u{1b}[31mtwo\u{1b}[0m", "status:validating", "log:three"],
        "feed order {shown:?}"
    );
    check!(feed.windows(2).all(|w| w[0].seq < w[1].seq), "feed seqs not increasing");
    let resumed = store.feed(Some(&d.id), feed[2].seq, 100).await.map_err(|e| e.to_string())?;
    check!(resumed.len() == 2 && resumed[0].seq == feed[3].seq, "resume after a seq: {resumed:?}");
    // The live subscription saw the same items in the same order.
    let mut seen = vec![];
    while let Ok(item) = live.try_recv() {
        if item.deployment_id == d.id {
            seen.push(item.seq);
        }
    }
    let all: Vec<u64> = feed.iter().map(|f| f.seq).collect();
    check!(seen == all, "live feed {seen:?} vs stored {all:?}");
    let in_validating = store.deployments_in(&[Status::Validating]).await.map_err(|e| e.to_string())?;
    check!(in_validating.iter().any(|x| x.id == d.id), "deployments_in misses {}", d.id);
    Ok(())
}

/// Secrets belong to a project: another project's secret of the same name
/// is another secret, and one a project does not have is `NotFound`.
pub async fn secrets(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let a = format!("{prefix}db-url");
    let (p1, p2) = (format!("{prefix}p_one"), format!("{prefix}p_two"));
    store.set_secret(&p1, &a, "sealed:v1:one").await.map_err(|e| e.to_string())?;
    store.set_secret(&p1, &a, "sealed:v1:two").await.map_err(|e| e.to_string())?;
    let values = store.secret_values(&p1, std::slice::from_ref(&a)).await.map_err(|e| e.to_string())?;
    check!(values.get(&a).map(String::as_str) == Some("sealed:v1:two"), "secret value {values:?}");
    let other = store.secret_values(&p2, std::slice::from_ref(&a)).await;
    check!(matches!(other, Err(StoreError::NotFound { .. })), "another project's secret resolved: {other:?}");
    store.set_secret(&p2, &a, "sealed:v1:three").await.map_err(|e| e.to_string())?;
    let values = store.secret_values(&p1, std::slice::from_ref(&a)).await.map_err(|e| e.to_string())?;
    check!(values.get(&a).map(String::as_str) == Some("sealed:v1:two"), "project two's write leaked: {values:?}");
    let missing = store.secret_values(&p1, &[format!("{prefix}nope")]).await;
    check!(matches!(missing, Err(StoreError::NotFound { .. })), "missing secret: {missing:?}");
    let listed = store.list_secrets(Some(&p1)).await.map_err(|e| e.to_string())?;
    check!(
        listed.len() == 1 && listed[0].name == a && listed[0].project_id.as_deref() == Some(p1.as_str()),
        "list_secrets(one project): {listed:?}"
    );
    let all = store.list_secrets(None).await.map_err(|e| e.to_string())?;
    check!(all.iter().filter(|s| s.name == a).count() == 2, "list_secrets(all): {all:?}");
    store.delete_secret(&p1, &a).await.map_err(|e| e.to_string())?;
    check!(matches!(store.delete_secret(&p1, &a).await, Err(StoreError::NotFound { .. })), "deleted twice");
    check!(store.secret_values(&p2, std::slice::from_ref(&a)).await.is_ok(), "deleting one project's took the other's");
    store.delete_secret(&p2, &a).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Sidecar reports are stored, read back in order, and folded into
/// one-minute buckets once old, with averages and the share of good probes.
pub async fn health_series(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let dep = format!("{prefix}health-dep");
    // Two old minutes (4 reports each, one bad in the first) and one recent report.
    let base = chrono::DateTime::from_timestamp_millis(1_700_000_040_000).ok_or("time")?; // on a minute
    let mut samples = vec![];
    for (i, offset_s) in [0i64, 15, 30, 45, 60, 75, 90, 105].iter().enumerate() {
        samples.push(HealthSample {
            deployment_id: dep.clone(),
            replica: 0,
            at: base + chrono::Duration::seconds(*offset_s),
            span_s: 0,
            probe_ok: if i == 1 { 0.0 } else { 1.0 },
            http_status: Some(if i == 1 { 500 } else { 200 }),
            latency_ms: Some(10.0 * (i as f64 + 1.0)),
            cpu_percent: Some(4.0),
            rss_bytes: Some(1000 + i as u64),
            threads: Some(2),
            open_fds: Some(7),
            error: (i == 1).then(|| "GET / → 500".to_string()),
        });
    }
    let recent = HealthSample { at: now(), ..samples[0].clone() };
    samples.push(recent);
    store.record_health(samples).await.map_err(|e| e.to_string())?;
    let all = store.health(&dep, base, 100).await.map_err(|e| e.to_string())?;
    check!(all.len() == 9, "stored {} of 9", all.len());
    check!(all.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");

    let folded = store.downsample_health(base + chrono::Duration::minutes(5)).await.map_err(|e| e.to_string())?;
    check!(folded == 8, "folded {folded} old reports, expected 8");
    let after = store.health(&dep, base, 100).await.map_err(|e| e.to_string())?;
    check!(after.len() == 3, "two buckets and the recent report, got {}", after.len());
    let (m1, m2) = (&after[0], &after[1]);
    check!(m1.span_s == 60 && m1.at == base, "first bucket {m1:?}");
    let three_of_four = (m1.probe_ok - 0.75).abs() < 1e-9;
    check!(three_of_four, "3 of 4 good in minute one: {}", m1.probe_ok);
    check!(m1.latency_ms.is_some_and(|l| (l - 25.0).abs() < 1e-9), "average latency {:?}", m1.latency_ms);
    check!(m1.rss_bytes == Some(1003), "highest RSS {:?}", m1.rss_bytes);
    check!(m2.probe_ok == 1.0 && m2.at == base + chrono::Duration::minutes(1), "second bucket {m2:?}");
    check!(after[2].span_s == 0, "the recent report stays whole");
    let again = store.downsample_health(base + chrono::Duration::minutes(5)).await.map_err(|e| e.to_string())?;
    check!(again == 0, "buckets are not folded again ({again})");
    Ok(())
}

/// The retention: health reports and buckets, traffic minutes and
/// analytics results older than the cutoff go, newer ones stay, and a
/// second pass finds nothing. (Its times are in 2001, which no other
/// check uses: the pass is store-wide.)
pub async fn series_retention(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().map_err(|e| e.to_string());
    let (old, cutoff, new) = (at("2001-01-01T00:00:00Z")?, at("2001-06-01T00:00:00Z")?, at("2001-12-01T00:00:00Z")?);
    let (project, dep) = (format!("{prefix}ret-proj"), format!("{prefix}ret-dep"));
    let minute = |t| TrafficMinute {
        deployment_id: dep.clone(),
        project_id: project.clone(),
        minute: t,
        requests: 10,
        errors: 1,
        p99_ms: Some(3.0),
    };
    store.record_traffic_minutes(vec![minute(old), minute(new)]).await.map_err(e)?;
    let report = |t, span_s| HealthSample {
        deployment_id: dep.clone(),
        replica: 0,
        at: t,
        span_s,
        probe_ok: 1.0,
        http_status: Some(200),
        latency_ms: Some(1.0),
        cpu_percent: None,
        rss_bytes: None,
        threads: None,
        open_fds: None,
        error: None,
    };
    store.record_health(vec![report(old, 0), report(old, 60), report(new, 0)]).await.map_err(e)?;
    let result = |t| AnalyticsResult {
        project_id: project.clone(),
        project: project.clone(),
        window: Window { start: t, end: t + chrono::Duration::minutes(5) },
        run_id: "ret".into(),
        computed_at: t,
        cost: Cost::default(),
        currency: "EUR".into(),
        errors: 0,
        anomalies: vec![],
    };
    store.put_analytics(result(old)).await.map_err(e)?;
    store.put_analytics(result(new)).await.map_err(e)?;

    let pruned = store.prune_series(cutoff).await.map_err(e)?;
    check!(pruned == 4, "removed {pruned} rows, expected 4 (a traffic minute, two health rows, a result)");
    let (from, to) = (at("2000-01-01T00:00:00Z")?, at("2002-01-01T00:00:00Z")?);
    let minutes = store.traffic_minutes(&project, from, to).await.map_err(e)?;
    check!(minutes.len() == 1 && minutes[0].minute == new, "traffic minutes left: {minutes:?}");
    let health = store.health(&dep, from, 100).await.map_err(e)?;
    check!(health.len() == 1 && health[0].at == new, "health left: {health:?}");
    let results = store.analytics(&project, from, to).await.map_err(e)?;
    check!(results.len() == 1 && results[0].window.start == new, "results left: {}", results.len());
    let again = store.prune_series(cutoff).await.map_err(e)?;
    check!(again == 0, "a second pass removed {again}");
    Ok(())
}

/// Routers' counts: one tally per (router, start, deployment), replaced
/// by a newer report and never by a late one with fewer requests; a
/// restarted router's counts are a tally of their own.
pub async fn router_tallies(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let dep = format!("{prefix}tally-dep");
    let tally = |router: &str, started_ms: i64, requests: u64| RouterTally {
        router: router.into(),
        started_ms,
        deployment_id: dep.clone(),
        counts: TrafficCounts {
            requests,
            errors: requests / 10,
            latency_buckets: vec![(0.1, requests / 2), (f64::INFINITY, requests)],
        },
        at: now(),
    };
    let other = RouterTally { deployment_id: format!("{prefix}tally-other"), ..tally("r/1", 1, 999) };
    store.record_tallies(vec![tally("r/1", 1, 10), tally("r-2", 5, 20), other]).await.map_err(|e| e.to_string())?;
    store.record_tallies(vec![tally("r/1", 1, 30)]).await.map_err(|e| e.to_string())?;
    // Late: fewer requests than kept.
    store.record_tallies(vec![tally("r/1", 1, 25)]).await.map_err(|e| e.to_string())?;
    // r-2 restarted: counts from zero again, beside its old tally.
    store.record_tallies(vec![tally("r-2", 9, 4)]).await.map_err(|e| e.to_string())?;
    let got = store.tallies(&dep).await.map_err(|e| e.to_string())?;
    let seen: Vec<(String, i64, u64)> =
        got.iter().map(|t| (t.router.clone(), t.started_ms, t.counts.requests)).collect();
    check!(
        seen == [("r-2".to_string(), 5, 20), ("r-2".to_string(), 9, 4), ("r/1".to_string(), 1, 30)],
        "tallies {seen:?}"
    );
    let infinite = got[2].counts.latency_buckets.last().is_some_and(|(le, n)| le.is_infinite() && *n == 30);
    check!(infinite, "the +Inf bucket survives storage: {:?}", got[2].counts.latency_buckets);
    check!(store.tallies(&format!("{prefix}tally-none")).await.map_err(|e| e.to_string())?.is_empty(), "none");
    Ok(())
}

/// The retention on tallies: one not reported since the cutoff goes,
/// unless its deployment is serving; a newer one stays; a late report
/// (fewer requests) does not make a tally newer; a second pass finds
/// nothing. (Its times are in 2002, which no other check uses: the pass is
/// store-wide.)
pub async fn tally_retention(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().map_err(|e| e.to_string());
    let (old, cutoff, new) = (at("2002-01-01T00:00:00Z")?, at("2002-06-01T00:00:00Z")?, at("2002-12-01T00:00:00Z")?);
    let (retired, serving, quiet) =
        (format!("{prefix}tret-retired"), format!("{prefix}tret-serving"), format!("{prefix}tret-quiet"));
    let tally = |dep: &str, router: &str, requests: u64, at| RouterTally {
        router: router.into(),
        started_ms: 1,
        deployment_id: dep.to_string(),
        counts: TrafficCounts { requests, errors: 0, latency_buckets: vec![(f64::INFINITY, requests)] },
        at,
    };
    store
        .record_tallies(vec![
            tally(&retired, "gone", 5, old),
            tally(&retired, "alive", 7, new),
            tally(&serving, "gone", 9, old),
            tally(&quiet, "r", 3, old),
        ])
        .await
        .map_err(e)?;
    // Late and smaller: changes nothing, its time included.
    store.record_tallies(vec![tally(&quiet, "r", 2, new)]).await.map_err(e)?;
    let pruned = store.prune_tallies(cutoff, std::slice::from_ref(&serving)).await.map_err(e)?;
    check!(pruned == 2, "removed {pruned} tallies, expected 2 (the retired deployment's stale one, the quiet one)");
    let left = |dep: String| async move {
        store.tallies(&dep).await.map(|t| t.iter().map(|t| t.router.clone()).collect::<Vec<_>>()).map_err(e)
    };
    check!(left(retired.clone()).await? == ["alive"], "the retired deployment keeps its recent tally only");
    check!(left(serving.clone()).await? == ["gone"], "a serving deployment keeps its stale tally");
    check!(left(quiet.clone()).await?.is_empty(), "a late report made a stale tally look recent");
    let again = store.prune_tallies(cutoff, std::slice::from_ref(&serving)).await.map_err(e)?;
    check!(again == 0, "a second pass removed {again}");
    Ok(())
}

/// Analytics: traffic minutes read back by project and time (a minute
/// written again replaced), one result per (project, window) whatever
/// runs it again, and settings replaced by key.
pub async fn analytics_results(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let project = format!("{prefix}an-proj");
    let t0 = chrono::DateTime::from_timestamp(1_794_999_600, 0).ok_or("time")?;
    let minute = |m: i64, deployment: &str, requests: u64| TrafficMinute {
        deployment_id: deployment.into(),
        project_id: project.clone(),
        minute: t0 + chrono::Duration::minutes(m),
        requests,
        errors: requests / 100,
        p99_ms: (requests > 0).then_some(12.5),
    };
    let other = TrafficMinute { project_id: format!("{prefix}an-other"), ..minute(1, "d1", 7) };
    store
        .record_traffic_minutes(vec![
            minute(0, "d1", 100),
            minute(1, "d1", 0),
            minute(1, "d2", 50),
            minute(5, "d1", 1),
            other,
        ])
        .await
        .map_err(e)?;
    store.record_traffic_minutes(vec![minute(0, "d1", 300)]).await.map_err(e)?;
    let got = store.traffic_minutes(&project, t0, t0 + chrono::Duration::minutes(5)).await.map_err(e)?;
    let seen: Vec<(i64, String, u64, Option<f64>)> =
        got.iter().map(|m| ((m.minute - t0).num_minutes(), m.deployment_id.clone(), m.requests, m.p99_ms)).collect();
    check!(
        seen == [(0, "d1".into(), 300, Some(12.5)), (1, "d1".into(), 0, None), (1, "d2".into(), 50, Some(12.5))],
        "traffic minutes {seen:?}"
    );

    // Health reports as usage minutes: means per replica and minute, in [from, to).
    let dep = format!("{prefix}an-dep");
    let report = |replica: u32, s: i64, cpu: Option<f64>, rss: Option<u64>| HealthSample {
        deployment_id: dep.clone(),
        replica,
        at: t0 + chrono::Duration::seconds(s),
        span_s: 0,
        probe_ok: 1.0,
        http_status: Some(200),
        latency_ms: Some(1.0),
        cpu_percent: cpu,
        rss_bytes: rss,
        threads: None,
        open_fds: None,
        error: None,
    };
    store
        .record_health(vec![
            report(0, 1, Some(10.0), Some(100)),
            report(0, 31, Some(30.0), Some(300)),
            report(1, 2, Some(5.0), None),
            report(0, 61, Some(50.0), Some(500)),
            report(0, 121, Some(70.0), Some(700)),
        ])
        .await
        .map_err(e)?;
    let usage = store.usage_minutes(&dep, t0, t0 + chrono::Duration::minutes(2)).await.map_err(e)?;
    let seen: Vec<(i64, u32, Option<f64>, Option<f64>)> =
        usage.iter().map(|u| ((u.minute - t0).num_minutes(), u.replica, u.cpu_percent, u.rss_bytes)).collect();
    check!(
        seen == [(0, 0, Some(20.0), Some(200.0)), (0, 1, Some(5.0), None), (1, 0, Some(50.0), Some(500.0))],
        "usage minutes {seen:?}"
    );

    let result = |start: i64, minutes: i64, run: &str| AnalyticsResult {
        project_id: project.clone(),
        project: project.clone(),
        window: Window {
            start: t0 + chrono::Duration::minutes(start),
            end: t0 + chrono::Duration::minutes(start + minutes),
        },
        run_id: run.into(),
        computed_at: t0,
        cost: Cost { total: 0.25, cpu: 0.2, memory: 0.05, requests: 300, ..Cost::default() },
        currency: "USD".into(),
        errors: 3,
        anomalies: vec![SeriesAnomaly {
            series: "requests_per_s".into(),
            at: t0,
            value: 9.0,
            baseline: 1.0,
            score: 5.5,
        }],
    };
    let (kept, new) = store.put_analytics(result(0, 5, "run-1")).await.map_err(e)?;
    check!(new && kept == result(0, 5, "run-1"), "first result: {new} {kept:?}");
    let (kept, new) = store.put_analytics(result(0, 5, "run-2")).await.map_err(e)?;
    check!(!new && kept.run_id == "run-1", "the same window again keeps the first: {new} {}", kept.run_id);
    store.put_analytics(result(0, 60, "hour")).await.map_err(e)?;
    store.put_analytics(result(5, 5, "run-3")).await.map_err(e)?;
    let all = store.analytics(&project, t0, t0 + chrono::Duration::hours(1)).await.map_err(e)?;
    let runs: Vec<&str> = all.iter().map(|r| r.run_id.as_str()).collect();
    check!(runs == ["run-1", "hour", "run-3"], "results by window: {runs:?}");
    let later = store.analytics(&project, t0 + chrono::Duration::minutes(1), t0 + chrono::Duration::hours(1)).await;
    check!(later.map_err(e)?.len() == 1, "only windows starting in the range");

    let key = format!("{prefix}schedule");
    check!(store.analytics_setting(&key).await.map_err(e)?.is_none(), "unset setting");
    store.set_analytics_setting(&key, "{\"done_until\":1}").await.map_err(e)?;
    store.set_analytics_setting(&key, "{\"done_until\":2}").await.map_err(e)?;
    let v = store.analytics_setting(&key).await.map_err(e)?;
    check!(v.as_deref() == Some("{\"done_until\":2}"), "setting {v:?}");
    Ok(())
}
