//! The GCP store: Firestore. Same contract as the SQLite store
//! (`contract.rs`), checked against Google's Firestore emulator.
//!
//! Layout: one collection per kind (`projects`, `deployments`, `audit`,
//! `events`, `feed`, ...), each document holding the domain object as JSON in
//! `data` beside the few fields queries filter or sort on. One serde mapping
//! serves both stores, and a field added to a domain type needs no schema
//! change here.
//!
//! Every write is one Firestore transaction. A transition reads the
//! deployment, checks the one transition table, and writes the deployment
//! (new version, new audit head), its audit record, its outbox event and
//! its feed item. Sequence numbers (audit, events, feed) come from one
//! counter document read and bumped in the same transaction, so they are
//! gap-free per commit and increase in commit order across every process —
//! what SSE resumption (`Last-Event-ID`) needs. Its cost: writes serialize
//! on that document (Firestore sustains a few hundred per second on one
//! document with short transactions; a deployment makes ~8 transitions, and
//! log lines take one number range per batch).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use firestore::errors::FirestoreError;
use firestore::{
    FirestoreConsistencySelector, FirestoreDb, FirestoreDbOptions, FirestoreTransaction, FirestoreTransactionMode,
    FirestoreTransactionOptions,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast};

use crate::pubsub::Publish;
use bifrost_core::analytics::run::{AnalyticsResult, TrafficMinute, UsageMinute};
use bifrost_core::decide;
use bifrost_core::domain::*;
use bifrost_core::error::{StoreError, StoreResult};
use bifrost_core::events::{DeadLetter, Event, PushEnvelope};
use bifrost_core::policies::{NewPolicyVersion, PolicyVersion};
use bifrost_core::ports::{Created, DeadLetters, RouterTally, Store, Transition};
use bifrost_core::status::Status;

mod dead_letters;
mod docs;
mod outbox;
mod tx;

use docs::*;
use outbox::Unpublished;
use tx::*;

/// Where to find Firestore.
#[derive(Clone, Debug)]
pub struct FirestoreConfig {
    pub gcp_project: String,
    /// `(default)` unless the terraform names another.
    pub database: String,
    /// Prepended to every collection name.
    pub collection_prefix: String,
}

impl FirestoreConfig {
    pub fn new(gcp_project: impl Into<String>) -> Self {
        FirestoreConfig {
            gcp_project: gcp_project.into(),
            database: "(default)".into(),
            collection_prefix: String::new(),
        }
    }
}

/// Cheap to clone.
#[derive(Clone)]
pub struct FirestoreStore {
    db: FirestoreDb,
    cols: Arc<Cols>,
    changes: broadcast::Sender<FeedItem>,
    /// One writing transaction at a time per process; holds the newest
    /// sequence published. Why: the emulator resolves two transactions that
    /// read and then write the same document (the counter, a raced
    /// deployment) only by a lock timeout of seconds, so in-process writers
    /// queue here instead, which also publishes feed items in sequence
    /// order. Across processes (Cloud Run instances) Firestore's own
    /// isolation decides; production Firestore resolves such conflicts by
    /// wound-wait without waiting for a timeout.
    writer: Arc<Mutex<u64>>,
    /// Where committed events go (Pub/Sub on GCP); `None` keeps them in the
    /// outbox collection only.
    publisher: Option<Arc<dyn Publish>>,
}

impl FirestoreStore {
    /// Connects. With `FIRESTORE_EMULATOR_HOST` set, talks to the emulator
    /// without credentials; otherwise uses Application Default Credentials.
    pub async fn connect(config: FirestoreConfig) -> StoreResult<Self> {
        let options = FirestoreDbOptions::new(config.gcp_project.clone()).with_database_id(config.database.clone());
        let db =
            FirestoreDb::with_options(options).await.map_err(|e| backend(format!("connecting to Firestore: {e}")))?;
        let (changes, _) = broadcast::channel(16384);
        Ok(FirestoreStore {
            db,
            cols: Arc::new(Cols::new(&config.collection_prefix)),
            changes,
            writer: Arc::new(Mutex::new(0)),
            publisher: None,
        })
    }

    /// Publishes every committed event through `publisher`.
    pub fn with_publisher(mut self, publisher: Arc<dyn Publish>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    async fn seq_items(
        &self,
        col: &str,
        deployment_id: Option<&str>,
        after: Option<u64>,
        before: Option<u64>,
        newest_first: bool,
        limit: usize,
    ) -> StoreResult<Vec<SeqItemDoc>> {
        let id = deployment_id.map(str::to_string);
        let after = after.map(|a| a.min(i64::MAX as u64) as i64);
        let before = before.map(|b| b.min(i64::MAX as u64) as i64);
        let limit = limit.clamp(1, 100_000) as u32;
        self.db
            .fluent()
            .select()
            .from(col)
            .filter(|q| {
                q.for_all([
                    id.as_ref().and_then(|i| q.field("deployment_id").eq(i.clone())),
                    after.and_then(|a| q.field("seq").greater_than(a)),
                    before.and_then(|b| q.field("seq").less_than(b)),
                ])
            })
            .order(|o| o.fields([if newest_first { o.field("seq").desc() } else { o.field("seq").asc() }]))
            .limit(limit)
            .obj::<SeqItemDoc>()
            .query()
            .await
            .map_err(fs)
    }

    /// The query behind `tokens`' unique names and `authenticate`.
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<(String, TokenDoc)>> {
        let hash = hash.to_string();
        let found: Vec<firestore::FirestoreDocument> = self
            .db
            .fluent()
            .select()
            .from(self.cols.tokens.as_str())
            .filter(|q| q.for_all([q.field("hash").eq(hash.clone()), q.field("revoked").eq(false)]))
            .limit(1)
            .query()
            .await
            .map_err(fs)?;
        let Some(doc) = found.into_iter().next() else { return Ok(None) };
        let name = doc.name.rsplit('/').next().unwrap_or_default().to_string();
        let token: TokenDoc = FirestoreDb::deserialize_doc_to(&doc).map_err(fs)?;
        Ok(Some((name, token)))
    }
}

#[async_trait]
impl Store for FirestoreStore {
    async fn create_project(&self, p: NewProject) -> StoreResult<Project> {
        let project = Project::create(p)?;
        self.write(|tx| {
            let project = project.clone();
            async move {
                if tx.get::<NameDoc>(&tx.cols.names, &project.name).await?.is_some() {
                    return Err(StoreError::AlreadyExists { kind: "project", id: project.name.clone() }.into());
                }
                let (names, projects) = (tx.cols.names.clone(), tx.cols.projects.clone());
                tx.set(&names, &project.name, &NameDoc { id: project.id.clone() })?;
                let doc = ProjectDoc { id: project.id.clone(), name: project.name.clone(), data: to_data(&project)? };
                tx.set(&projects, &project.id, &doc)?;
                Ok(project)
            }
            .boxed()
        })
        .await
    }

    async fn get_project(&self, name_or_id: &str) -> StoreResult<Project> {
        let doc = self.reader().project_by_key(name_or_id).await.map_err(fs)?;
        from_data(&doc.ok_or_else(|| StoreError::not_found("project", name_or_id))?.data)
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let docs: Vec<ProjectDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.projects.as_str())
            .order(|o| o.fields([o.field("name").asc()]))
            .obj()
            .query()
            .await
            .map_err(fs)?;
        docs.iter().map(|d| from_data(&d.data)).collect()
    }

    async fn set_traffic(
        &self,
        name_or_id: &str,
        change: TrafficChange,
        reason: &str,
        actor: Actor,
        evidence: Option<String>,
    ) -> StoreResult<Project> {
        self.write(|tx| {
            let (key, change, reason, actor, evidence) =
                (name_or_id.to_string(), change.clone(), reason.to_string(), actor.clone(), evidence.clone());
            async move {
                let doc =
                    tx.project_by_key(&key).await?.ok_or_else(|| StoreError::not_found("project", key.as_str()))?;
                let mut project: Project = from_data(&doc.data)?;
                if let Some(trail) = change.apply(&mut project)? {
                    let ddoc = tx.get_deployment(&trail).await?;
                    let d = deployment_of(&ddoc)?;
                    let at = now();
                    let entry = AuditEntry {
                        at: &at,
                        actor: &actor,
                        from: Some(d.status),
                        to: d.status,
                        reason: &reason,
                        evidence: evidence.as_deref(),
                    };
                    let hash = tx.append_audit(&d, &ddoc.audit_head, entry).await?;
                    let col = tx.cols.deployments.clone();
                    tx.set(&col, &d.id, &deployment_doc(&d, &hash)?)?;
                }
                let col = tx.cols.projects.clone();
                let doc = ProjectDoc { id: project.id.clone(), name: project.name.clone(), data: to_data(&project)? };
                tx.set(&col, &project.id, &doc)?;
                Ok(project)
            }
            .boxed()
        })
        .await
    }

    async fn delete_project(&self, name_or_id: &str, actor: Actor) -> StoreResult<Project> {
        let deleted = self
            .write(|tx| {
                let (key, actor) = (name_or_id.to_string(), actor.clone());
                async move {
                    let doc =
                        tx.project_by_key(&key).await?.ok_or_else(|| StoreError::not_found("project", key.as_str()))?;
                    let project: Project = from_data(&doc.data)?;
                    let open: Vec<Status> =
                        Status::ALL.into_iter().filter(|s| decide::cancelled_by_project_delete(*s)).collect();
                    let docs = tx.query_deployments(Some(&project.id), &open).await?;
                    let seen = docs
                        .iter()
                        .map(|d| Ok((d.id.as_str(), d.status.parse::<Status>().map_err(backend)?)))
                        .collect::<StoreResult<Vec<_>>>()?;
                    for t in decide::cancel_for_project_delete(seen, &actor) {
                        tx.transition(&t).await?;
                    }
                    let (names, projects) = (tx.cols.names.clone(), tx.cols.projects.clone());
                    tx.delete(&names, &project.name);
                    tx.delete(&projects, &project.id);
                    Ok(project)
                }
                .boxed()
            })
            .await?;
        // Its secrets go with it (tokens limited to it stop authenticating:
        // the gateway checks their project exists).
        let project = deleted;
        for s in self.list_secrets(Some(&project.id)).await? {
            let _ = self.delete_secret(&project.id, &s.name).await;
        }
        Ok(project)
    }

    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Created> {
        self.write(|tx| {
            let new = new.clone();
            async move {
                let pdoc = tx
                    .project_by_key(&new.project)
                    .await?
                    .ok_or_else(|| StoreError::not_found("project", new.project.as_str()))?;
                let project: Project = from_data(&pdoc.data)?;
                if let Some(key) = &new.dedupe_key
                    && let Some(seen) = tx.get::<DedupeDoc>(&tx.cols.dedupe, key).await?
                {
                    let d = deployment_of(&tx.get_deployment(&seen.deployment_id).await?)?;
                    return Ok(Created { deployment: d, duplicate: true, superseded: vec![] });
                }
                let at = now();
                let d = Deployment::queued(&new, &project, at);
                let reason = d.reason.clone().unwrap_or_default();
                let in_flight: Vec<Status> =
                    Status::ALL.into_iter().filter(|s| decide::superseded_by_new(*s)).collect();
                let docs = tx.query_deployments(Some(&project.id), &in_flight).await?;
                let seen = docs
                    .iter()
                    .map(|o| Ok((o.id.as_str(), o.status.parse::<Status>().map_err(backend)?)))
                    .collect::<StoreResult<Vec<_>>>()?;
                let mut superseded = vec![];
                for t in decide::supersede_for_new(&d.id, seen, &new.actor) {
                    tx.transition(&t).await?;
                    superseded.push(t.deployment_id);
                }
                let entry = AuditEntry {
                    at: &at,
                    actor: &new.actor,
                    from: None,
                    to: Status::Queued,
                    reason: &reason,
                    evidence: None,
                };
                let hash = tx.append_audit(&d, "", entry).await?;
                let col = tx.cols.deployments.clone();
                tx.set(&col, &d.id, &deployment_doc(&d, &hash)?)?;
                if let Some(key) = &new.dedupe_key {
                    let col = tx.cols.dedupe.clone();
                    tx.set(&col, key, &DedupeDoc { deployment_id: d.id.clone() })?;
                }
                tx.emit(Event::of(&d, None, &reason, &new.actor, at)).await?;
                Ok(Created { deployment: d, duplicate: false, superseded })
            }
            .boxed()
        })
        .await
    }

    async fn get_deployment(&self, id: &str) -> StoreResult<Deployment> {
        let doc: Option<DeploymentDoc> =
            self.db.fluent().select().by_id_in(&self.cols.deployments).obj().one(id).await.map_err(fs)?;
        deployment_of(&doc.ok_or_else(|| StoreError::not_found("deployment", id))?)
    }

    async fn list_deployments(&self, project: Option<&str>, limit: usize) -> StoreResult<Vec<Deployment>> {
        let pid = match project {
            Some(p) => Some(self.get_project(p).await?.id),
            None => None,
        };
        let docs: Vec<DeploymentDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.deployments.as_str())
            .filter(|q| q.for_all([pid.as_ref().and_then(|p| q.field("project_id").eq(p.clone()))]))
            .order(|o| o.fields([o.field("created_ms").desc(), o.field("id").desc()]))
            .limit(limit.clamp(1, 10_000) as u32)
            .obj()
            .query()
            .await
            .map_err(fs)?;
        docs.iter().map(deployment_of).collect()
    }

    async fn transition(&self, t: Transition) -> StoreResult<Deployment> {
        self.write(|tx| {
            let t = t.clone();
            async move { tx.transition(&t).await }.boxed()
        })
        .await
    }

    async fn history(&self, deployment_id: &str) -> StoreResult<Vec<AuditRecord>> {
        let docs = self.seq_items(&self.cols.audit, Some(deployment_id), None, None, false, 100_000).await?;
        if docs.is_empty() {
            self.get_deployment(deployment_id).await?;
        }
        docs.iter().map(|d| from_data(&d.data)).collect()
    }

    async fn audit(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let docs = self.seq_items(&self.cols.audit, None, None, before, true, limit).await?;
        docs.iter().map(|d| from_data(&d.data)).collect()
    }

    async fn events(&self, deployment_id: Option<&str>, after_seq: u64, limit: usize) -> StoreResult<Vec<Event>> {
        let docs = self.seq_items(&self.cols.events, deployment_id, Some(after_seq), None, false, limit).await?;
        docs.iter().map(|d| from_data(&d.data)).collect()
    }

    async fn deployments_in(&self, statuses: &[Status]) -> StoreResult<Vec<Deployment>> {
        let mut docs = self.reader().query_deployments(None, statuses).await.map_err(fs)?;
        docs.sort_by_key(|d| d.created_ms);
        docs.iter().map(deployment_of).collect()
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> StoreResult<()> {
        // One transaction per chunk: one counter bump per chunk, not per line.
        for chunk in lines.chunks(MAX_WRITES - 10) {
            self.write(|tx| {
                let chunk = chunk.to_vec();
                async move {
                    for l in &chunk {
                        let seq = tx.next_seq().await?;
                        let item = FeedItem {
                            seq,
                            deployment_id: l.deployment_id.clone(),
                            project: l.project.clone(),
                            at: l.at,
                            kind: FeedKind::Log { stream: l.stream.clone(), line: l.line.clone() },
                        };
                        let doc = SeqItemDoc {
                            seq: seq as i64,
                            deployment_id: l.deployment_id.clone(),
                            data: to_data(&item)?,
                        };
                        let col = tx.cols.feed.clone();
                        tx.set(&col, &seq_id(seq), &doc)?;
                        tx.feed.push(item);
                    }
                    Ok(())
                }
                .boxed()
            })
            .await?;
        }
        Ok(())
    }

    async fn trim_logs(&self, deployment_id: &str, build: bool, keep_bytes: usize) -> StoreResult<usize> {
        let docs = self.seq_items(&self.cols.feed, Some(deployment_id), None, None, true, 1_000_000).await?;
        let mut newer = 0usize;
        let mut dropped = 0;
        for d in docs {
            let item: FeedItem = from_data(&d.data)?;
            let FeedKind::Log { stream, line } = &item.kind else { continue };
            if (stream == "build") != build {
                continue;
            }
            newer += line.len() + 1;
            if newer > keep_bytes {
                self.db
                    .fluent()
                    .delete()
                    .from(self.cols.feed.as_str())
                    .document_id(seq_id(item.seq))
                    .execute()
                    .await
                    .map_err(fs)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    async fn feed(&self, deployment_id: Option<&str>, after_seq: u64, limit: usize) -> StoreResult<Vec<FeedItem>> {
        let docs = self.seq_items(&self.cols.feed, deployment_id, Some(after_seq), None, false, limit).await?;
        docs.iter().map(|d| from_data(&d.data)).collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.changes.subscribe()
    }

    async fn feed_head(&self) -> StoreResult<u64> {
        let newest = self.seq_items(&self.cols.feed, None, None, None, true, 1).await?;
        Ok(newest.first().map_or(0, |d| d.seq as u64))
    }

    async fn record_health(&self, samples: Vec<HealthSample>) -> StoreResult<()> {
        for chunk in samples.chunks(MAX_WRITES) {
            self.write(|tx| {
                let chunk = chunk.to_vec();
                async move {
                    let col = tx.cols.health.clone();
                    for h in &chunk {
                        let doc = HealthDoc {
                            deployment_id: h.deployment_id.clone(),
                            at_ms: h.at.timestamp_millis(),
                            span_s: h.span_s as i64,
                            data: to_data(h)?,
                        };
                        tx.set(&col, &new_id("h"), &doc)?;
                    }
                    Ok(())
                }
                .boxed()
            })
            .await?;
        }
        Ok(())
    }

    async fn health(&self, deployment_id: &str, since: Timestamp, limit: usize) -> StoreResult<Vec<HealthSample>> {
        let (id, since) = (deployment_id.to_string(), since.timestamp_millis());
        let docs: Vec<HealthDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.health.as_str())
            .filter(|q| {
                q.for_all([q.field("deployment_id").eq(id.clone()), q.field("at_ms").greater_than_or_equal(since)])
            })
            .order(|o| o.fields([o.field("at_ms").asc()]))
            .limit(limit.clamp(1, 100_000) as u32)
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let mut out: Vec<HealthSample> = docs.iter().map(|d| from_data(&d.data)).collect::<StoreResult<_>>()?;
        out.sort_by_key(|h| (h.at, h.replica));
        Ok(out)
    }

    async fn downsample_health(&self, before: Timestamp) -> StoreResult<usize> {
        let cutoff = decide::health_cutoff_ms(before);
        let raw: Vec<firestore::FirestoreDocument> = self
            .db
            .fluent()
            .select()
            .from(self.cols.health.as_str())
            .filter(|q| q.for_all([q.field("span_s").eq(0i64), q.field("at_ms").less_than(cutoff)]))
            .query()
            .await
            .map_err(fs)?;
        let mut buckets: BTreeMap<(String, u32, i64), Vec<(String, HealthSample)>> = BTreeMap::new();
        for doc in &raw {
            let h: HealthDoc = FirestoreDb::deserialize_doc_to(doc).map_err(fs)?;
            let sample: HealthSample = from_data(&h.data)?;
            let id = doc.name.rsplit('/').next().unwrap_or_default().to_string();
            buckets
                .entry((sample.deployment_id.clone(), sample.replica, decide::minute_of(h.at_ms)))
                .or_default()
                .push((id, sample));
        }
        let mut folded = 0;
        // A bucket and the reports it replaces commit together.
        for ((deployment_id, replica, minute), reports) in buckets {
            let samples: Vec<HealthSample> = reports.iter().map(|(_, s)| s.clone()).collect();
            let bucket = decide::fold_health(&deployment_id, replica, minute, &samples);
            for part in reports.chunks(MAX_WRITES - 1) {
                let first = std::ptr::eq(part.as_ptr(), reports.as_ptr());
                self.write(|tx| {
                    let (bucket, ids): (HealthSample, Vec<String>) =
                        (bucket.clone(), part.iter().map(|(id, _)| id.clone()).collect());
                    async move {
                        let col = tx.cols.health.clone();
                        if first {
                            let doc = HealthDoc {
                                deployment_id: bucket.deployment_id.clone(),
                                at_ms: bucket.at.timestamp_millis(),
                                span_s: 60,
                                data: to_data(&bucket)?,
                            };
                            tx.set(&col, &new_id("h"), &doc)?;
                        }
                        for id in &ids {
                            tx.delete(&col, id);
                        }
                        Ok(())
                    }
                    .boxed()
                })
                .await?;
            }
            folded += reports.len();
        }
        Ok(folded)
    }

    async fn prune_series(&self, before: Timestamp) -> StoreResult<usize> {
        let cutoff = before.timestamp_millis();
        let mut pruned = 0;
        let series = [
            (self.cols.health.clone(), "at_ms"),
            (self.cols.traffic_minutes.clone(), "minute_ms"),
            (self.cols.analytics.clone(), "start_ms"),
        ];
        for (col, field) in series {
            // A commit's worth at a time, until none is older.
            loop {
                let old: Vec<firestore::FirestoreDocument> = self
                    .db
                    .fluent()
                    .select()
                    .from(col.as_str())
                    .filter(|q| q.field(field).less_than(cutoff))
                    .limit((MAX_WRITES - 1) as u32)
                    .query()
                    .await
                    .map_err(fs)?;
                if old.is_empty() {
                    break;
                }
                let ids: Vec<String> =
                    old.iter().map(|d| d.name.rsplit('/').next().unwrap_or_default().to_string()).collect();
                self.delete_all(&col, &ids).await?;
                pruned += ids.len();
            }
        }
        Ok(pruned)
    }

    async fn set_secret(&self, project_id: &str, name: &str, sealed: &str) -> StoreResult<()> {
        let doc = SecretDoc {
            value: sealed.to_string(),
            updated_ms: now().timestamp_millis(),
            project_id: Some(project_id.to_string()),
            name: Some(name.to_string()),
        };
        self.db
            .fluent()
            .update()
            .in_col(&self.cols.secrets)
            .document_id(secret_doc_id(project_id, name))
            .object(&doc)
            .execute::<SecretDoc>()
            .await
            .map_err(fs)?;
        Ok(())
    }

    async fn delete_secret(&self, project_id: &str, name: &str) -> StoreResult<()> {
        self.write(|tx| {
            let (id, name) = (secret_doc_id(project_id, name), name.to_string());
            async move {
                let col = tx.cols.secrets.clone();
                if tx.get::<SecretDoc>(&col, &id).await?.is_none() {
                    return Err(StoreError::not_found("secret", name).into());
                }
                tx.delete(&col, &id);
                Ok(())
            }
            .boxed()
        })
        .await
    }

    async fn list_secrets(&self, project_id: Option<&str>) -> StoreResult<Vec<SecretInfo>> {
        let docs: Vec<firestore::FirestoreDocument> =
            self.db.fluent().select().from(self.cols.secrets.as_str()).query().await.map_err(fs)?;
        let mut out = vec![];
        for doc in &docs {
            let s: SecretDoc = FirestoreDb::deserialize_doc_to(doc).map_err(fs)?;
            if project_id.is_some() && s.project_id.as_deref() != project_id {
                continue;
            }
            let id = doc.name.rsplit('/').next().unwrap_or_default().to_string();
            out.push(SecretInfo {
                name: s.name.clone().unwrap_or(id),
                project_id: s.project_id,
                updated_at: chrono::DateTime::from_timestamp_millis(s.updated_ms).unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| (&a.project_id, &a.name).cmp(&(&b.project_id, &b.name)));
        Ok(out)
    }

    async fn secret_values(&self, project_id: &str, names: &[String]) -> StoreResult<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for n in names {
            let s: Option<SecretDoc> = self
                .db
                .fluent()
                .select()
                .by_id_in(&self.cols.secrets)
                .obj()
                .one(secret_doc_id(project_id, n))
                .await
                .map_err(fs)?;
            out.insert(n.clone(), s.ok_or_else(|| StoreError::not_found("secret", n))?.value);
        }
        Ok(out)
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        project_id: Option<&str>,
    ) -> StoreResult<ApiToken> {
        let token = ApiToken::create(name, role, project_id)?;
        let doc =
            TokenDoc { id: token.id.clone(), hash: token_hash.to_string(), revoked: false, data: to_data(&token)? };
        self.write(|tx| {
            let (token, doc) = (token.clone(), doc.clone());
            async move {
                let col = tx.cols.tokens.clone();
                if tx.get::<TokenDoc>(&col, &token.name).await?.is_some() {
                    return Err(StoreError::AlreadyExists { kind: "token", id: token.name.clone() }.into());
                }
                tx.set(&col, &token.name, &doc)?;
                Ok(token)
            }
            .boxed()
        })
        .await
    }

    async fn authenticate(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        let Some((name, doc)) = self.token_by_hash(token_hash).await? else { return Ok(None) };
        let mut token: ApiToken = from_data(&doc.data)?;
        // Record use at most once a minute: reads stay reads.
        if token.last_used_at.is_none_or(|l| now() - l > chrono::Duration::seconds(60)) {
            token.last_used_at = Some(now());
            let updated = TokenDoc { data: to_data(&token)?, ..doc };
            self.db
                .fluent()
                .update()
                .in_col(&self.cols.tokens)
                .document_id(&name)
                .object(&updated)
                .execute::<TokenDoc>()
                .await
                .map_err(fs)?;
        }
        Ok(Some(token))
    }

    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        let docs: Vec<TokenDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.tokens.as_str())
            .filter(|q| q.for_all([q.field("revoked").eq(false)]))
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let mut out: Vec<ApiToken> = docs.iter().map(|d| from_data(&d.data)).collect::<StoreResult<_>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn put_policy(&self, new: NewPolicyVersion) -> StoreResult<PolicyVersion> {
        self.write(|tx| {
            let new = new.clone();
            async move {
                let (meta, col) = (tx.cols.meta.clone(), tx.cols.policies.clone());
                let head_id = format!("policy~{}", new.name);
                let at = tx.get::<PolicyHeadDoc>(&meta, &head_id).await?.map_or(0, |h| h.version as u64);
                if at != new.base_version {
                    return Err(StoreError::AlreadyExists {
                        kind: "policy version",
                        id: format!("{} v{} (changed meanwhile; reload and try again)", new.name, at),
                    }
                    .into());
                }
                let prev: Option<PolicyVersion> = match at {
                    0 => None,
                    v => {
                        let doc = tx.get::<PolicyDoc>(&col, &policy_doc_id(&new.name, v)).await?;
                        Some(from_data(
                            &doc.ok_or_else(|| backend(format!("policy {} v{v} is missing", new.name)))?.data,
                        )?)
                    }
                };
                let v = new.seal(prev.as_ref(), now());
                let doc = PolicyDoc { name: v.name.clone(), version: v.version as i64, data: to_data(&v)? };
                tx.set(&col, &policy_doc_id(&v.name, v.version), &doc)?;
                tx.set(&meta, &head_id, &PolicyHeadDoc { version: v.version as i64 })?;
                Ok(v)
            }
            .boxed()
        })
        .await
    }

    async fn record_tallies(&self, tallies: Vec<RouterTally>) -> StoreResult<()> {
        for chunk in tallies.chunks(MAX_WRITES) {
            self.write(|tx| {
                let chunk = chunk.to_vec();
                async move {
                    let col = tx.cols.tallies.clone();
                    let mut newer = Vec::with_capacity(chunk.len());
                    for t in &chunk {
                        let id = tally_doc_id(t);
                        let kept = tx.get::<TallyDoc>(&col, &id).await?;
                        // A late report (fewer requests) never replaces a newer one.
                        if kept.is_none_or(|k| k.requests <= t.counts.requests as i64) {
                            newer.push((id, t));
                        }
                    }
                    for (id, t) in newer {
                        let doc = TallyDoc {
                            deployment_id: t.deployment_id.clone(),
                            requests: t.counts.requests as i64,
                            data: to_data(t)?,
                            at_ms: Some(t.at.timestamp_millis()),
                        };
                        tx.set(&col, &id, &doc)?;
                    }
                    Ok(())
                }
                .boxed()
            })
            .await?;
        }
        Ok(())
    }

    async fn tallies(&self, deployment_id: &str) -> StoreResult<Vec<RouterTally>> {
        let docs: Vec<TallyDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.tallies.as_str())
            .filter(|q| q.for_all([q.field("deployment_id").eq(deployment_id)]))
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let mut out: Vec<RouterTally> = docs.iter().map(|d| from_data(&d.data)).collect::<StoreResult<_>>()?;
        out.sort_by(|a, b| (&a.router, a.started_ms).cmp(&(&b.router, b.started_ms)));
        Ok(out)
    }

    async fn prune_tallies(&self, before: Timestamp, serving: &[String]) -> StoreResult<usize> {
        let cutoff = before.timestamp_millis();
        let col = self.cols.tallies.clone();
        let mut pruned = 0;
        // Pages of stale tallies, in `at_ms` order: the serving ones are
        // skipped (kept), the rest deleted a commit's worth at a time.
        let mut after: Option<i64> = None;
        loop {
            let page: Vec<TallyDoc> = self
                .db
                .fluent()
                .select()
                .from(col.as_str())
                .filter(|q| {
                    q.for_all([
                        q.field("at_ms").less_than(cutoff),
                        after.and_then(|a| q.field("at_ms").greater_than_or_equal(a)),
                    ])
                })
                .order(|o| o.fields([o.field("at_ms").asc()]))
                .limit((MAX_WRITES - 1) as u32)
                .obj()
                .query()
                .await
                .map_err(fs)?;
            let stale: Vec<String> = page
                .iter()
                .filter(|d| !serving.contains(&d.deployment_id))
                .filter_map(|d| from_data::<RouterTally>(&d.data).ok())
                .map(|t| tally_doc_id(&t))
                .collect();
            if !stale.is_empty() {
                self.delete_all(&col, &stale).await?;
                pruned += stale.len();
            }
            let last = page.last().and_then(|d| d.at_ms);
            // A full page of kept tallies moves on past their time; a
            // page with deletions reads from the same time again.
            if page.len() < MAX_WRITES - 1 || last.is_none() {
                break;
            }
            if stale.is_empty() {
                after = last.map(|l| l + 1);
            }
        }
        Ok(pruned)
    }

    async fn record_traffic_minutes(&self, minutes: Vec<TrafficMinute>) -> StoreResult<()> {
        for chunk in minutes.chunks(MAX_WRITES) {
            self.write(|tx| {
                let chunk = chunk.to_vec();
                async move {
                    let col = tx.cols.traffic_minutes.clone();
                    for m in &chunk {
                        let ms = m.minute.timestamp_millis();
                        let doc =
                            TrafficMinuteDoc { project_id: m.project_id.clone(), minute_ms: ms, data: to_data(m)? };
                        tx.set(&col, &format!("{}~{ms}~{}", m.project_id, m.deployment_id), &doc)?;
                    }
                    Ok(())
                }
                .boxed()
            })
            .await?;
        }
        Ok(())
    }

    async fn usage_minutes(
        &self,
        deployment_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UsageMinute>> {
        // Firestore cannot group: read the reports and group them here.
        let mut samples = self.health(deployment_id, from, 100_000).await?;
        samples.retain(|s| s.at < to);
        Ok(bifrost_core::analytics::run::usage_minutes(&samples))
    }

    async fn traffic_minutes(
        &self,
        project_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<TrafficMinute>> {
        let (id, from, to) = (project_id.to_string(), from.timestamp_millis(), to.timestamp_millis());
        let docs: Vec<TrafficMinuteDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.traffic_minutes.as_str())
            .filter(|q| {
                q.for_all([
                    q.field("project_id").eq(id.clone()),
                    q.field("minute_ms").greater_than_or_equal(from),
                    q.field("minute_ms").less_than(to),
                ])
            })
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let mut out: Vec<TrafficMinute> = docs.iter().map(|d| from_data(&d.data)).collect::<StoreResult<_>>()?;
        out.sort_by(|a, b| (a.minute, &a.deployment_id).cmp(&(b.minute, &b.deployment_id)));
        Ok(out)
    }

    async fn put_analytics(&self, result: AnalyticsResult) -> StoreResult<(AnalyticsResult, bool)> {
        self.write(|tx| {
            let result = result.clone();
            async move {
                let col = tx.cols.analytics.clone();
                let (start, end) = (result.window.start.timestamp_millis(), result.window.end.timestamp_millis());
                let id = format!("{}~{start:013}~{end:013}", result.project_id);
                if let Some(kept) = tx.get::<AnalyticsDoc>(&col, &id).await? {
                    return Ok((from_data(&kept.data)?, false));
                }
                let doc =
                    AnalyticsDoc { project_id: result.project_id.clone(), start_ms: start, data: to_data(&result)? };
                tx.set(&col, &id, &doc)?;
                Ok((result, true))
            }
            .boxed()
        })
        .await
    }

    async fn analytics(&self, project_id: &str, from: Timestamp, to: Timestamp) -> StoreResult<Vec<AnalyticsResult>> {
        let (id, from, to) = (project_id.to_string(), from.timestamp_millis(), to.timestamp_millis());
        let docs: Vec<AnalyticsDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.analytics.as_str())
            .filter(|q| {
                q.for_all([
                    q.field("project_id").eq(id.clone()),
                    q.field("start_ms").greater_than_or_equal(from),
                    q.field("start_ms").less_than(to),
                ])
            })
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let mut out: Vec<AnalyticsResult> = docs.iter().map(|d| from_data(&d.data)).collect::<StoreResult<_>>()?;
        out.sort_by_key(|r| (r.window.start, r.window.end));
        Ok(out)
    }

    async fn analytics_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let doc: Option<SettingDoc> = self
            .db
            .fluent()
            .select()
            .by_id_in(self.cols.meta.as_str())
            .obj()
            .one(&format!("analytics~{key}"))
            .await
            .map_err(fs)?;
        Ok(doc.map(|d| d.value))
    }

    async fn set_analytics_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        self.write(|tx| {
            let (key, value) = (key.to_string(), value.to_string());
            async move {
                let meta = tx.cols.meta.clone();
                tx.set(&meta, &format!("analytics~{key}"), &SettingDoc { value })?;
                Ok(())
            }
            .boxed()
        })
        .await
    }

    async fn policy_versions(&self, name: &str) -> StoreResult<Vec<PolicyVersion>> {
        // Equality only (no ordering on another field): no composite index.
        let docs: Vec<PolicyDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.policies.as_str())
            .filter(|q| q.for_all([q.field("name").eq(name)]))
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let mut out: Vec<PolicyVersion> = docs.iter().map(|d| from_data(&d.data)).collect::<StoreResult<_>>()?;
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    async fn revoke_token(&self, id_or_name: &str) -> StoreResult<ApiToken> {
        self.write(|tx| {
            let key = id_or_name.to_string();
            async move {
                let col = tx.cols.tokens.clone();
                let mut found = tx.get::<TokenDoc>(&col, &key).await?.map(|d| (key.clone(), d));
                if found.is_none() {
                    let by_id: Vec<firestore::FirestoreDocument> = tx
                        .db
                        .fluent()
                        .select()
                        .from(tx.cols.tokens.as_str())
                        .filter(|q| q.for_all([q.field("id").eq(key.clone())]))
                        .limit(1)
                        .query()
                        .await?;
                    if let Some(doc) = by_id.first() {
                        let name = doc.name.rsplit('/').next().unwrap_or_default().to_string();
                        found = Some((name, FirestoreDb::deserialize_doc_to(doc)?));
                    }
                }
                let (name, doc) =
                    found.filter(|(_, d)| !d.revoked).ok_or_else(|| StoreError::not_found("token", key.as_str()))?;
                let token: ApiToken = from_data(&doc.data)?;
                tx.set(&col, &name, &TokenDoc { revoked: true, ..doc })?;
                Ok(token)
            }
            .boxed()
        })
        .await
    }
}
