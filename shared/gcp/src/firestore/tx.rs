//! Transactions: the retry loop, the buffered writes a refused logic step
//! never commits, the sequence counter, and the steps every write shares
//! (audit chain, outbox event, transition).

use super::*;

/// The counter document every sequence number comes from.
pub(super) const SEQ_DOC: &str = "seq";
/// The document holding the audit trail's newest global anchor.
pub(super) const ANCHOR_DOC: &str = "audit_anchor";
/// Firestore's `in` filter takes at most 30 values; queries stay far below.
pub(super) const MAX_IN: usize = 30;
/// Firestore allows 500 writes per commit.
pub(super) const MAX_WRITES: usize = 500;
/// Attempts per transaction under contention (backoff 5 ms doubling to 1 s, jittered).
pub(super) const MAX_ATTEMPTS: u32 = 40;

/// Contention (`ABORTED`) and transient unavailability are worth another try.
pub(super) fn retryable(e: &FirestoreError) -> bool {
    match e {
        FirestoreError::DatabaseError(d) => d.retry_possible,
        FirestoreError::NetworkError(_) => true,
        _ => false,
    }
}

/// A document write, buffered until the transaction's logic has succeeded
/// (a refused transition must write nothing).
pub(super) enum Op {
    Set { col: String, id: String, doc: serde_json::Value },
    Delete { col: String, id: String },
}

/// One transaction's state: reads go through `db` (bound to the
/// transaction), writes are buffered in `ops`.
pub(super) struct Tx<'a> {
    pub(super) db: FirestoreDb,
    pub(super) cols: &'a Cols,
    pub(super) ops: Vec<Op>,
    /// The counter as read (first use) and as advanced since.
    pub(super) seq: Option<(i64, i64)>,
    /// The audit anchor as read (first use) and as advanced since.
    pub(super) anchor: Option<(String, String)>,
    pub(super) events: Vec<Event>,
    pub(super) feed: Vec<FeedItem>,
}

impl<'a> Tx<'a> {
    pub(super) async fn get<T: DeserializeOwned + Send>(
        &self,
        col: &str,
        id: &str,
    ) -> Result<Option<T>, FirestoreError> {
        self.db.fluent().select().by_id_in(col).obj::<T>().one(id).await
    }

    pub(super) fn set<T: Serialize>(&mut self, col: &str, id: &str, doc: &T) -> StoreResult<()> {
        let doc = serde_json::to_value(doc).map_err(backend)?;
        self.ops.push(Op::Set { col: col.to_string(), id: id.to_string(), doc });
        Ok(())
    }

    pub(super) fn delete(&mut self, col: &str, id: &str) {
        self.ops.push(Op::Delete { col: col.to_string(), id: id.to_string() });
    }

    /// The next sequence number (reads the counter on first use).
    pub(super) async fn next_seq(&mut self) -> Result<u64, FirestoreError> {
        let (read, last) = match self.seq {
            Some(s) => s,
            None => {
                let last = self.get::<SeqDoc>(&self.cols.meta, SEQ_DOC).await?.map_or(0, |d| d.last);
                (last, last)
            }
        };
        self.seq = Some((read, last + 1));
        Ok((last + 1) as u64)
    }

    /// Queues every buffered write (and the counter) on the transaction.
    pub(super) fn apply(self, t: &mut FirestoreTransaction<'_>) -> Result<(Vec<Event>, Vec<FeedItem>), FirestoreError> {
        let Tx { db, cols, ops, seq, anchor, events, feed } = self;
        if let Some((read, last)) = seq
            && last != read
        {
            db.fluent()
                .update()
                .in_col(&cols.meta)
                .document_id(SEQ_DOC)
                .object(&SeqDoc { last })
                .add_to_transaction(t)?;
        }
        if let Some((read, head)) = anchor
            && head != read
        {
            db.fluent()
                .update()
                .in_col(&cols.meta)
                .document_id(ANCHOR_DOC)
                .object(&AnchorDoc { head })
                .add_to_transaction(t)?;
        }
        for op in ops {
            match op {
                Op::Set { col, id, doc } => {
                    db.fluent().update().in_col(&col).document_id(&id).object(&doc).add_to_transaction(t)?;
                }
                Op::Delete { col, id } => {
                    db.fluent().delete().from(col.as_str()).document_id(&id).add_to_transaction(t)?;
                }
            }
        }
        Ok((events, feed))
    }
}

impl FirestoreStore {
    /// Reads outside a transaction, through the same helpers.
    pub(super) fn reader(&self) -> Tx<'_> {
        Tx { db: self.db.clone(), cols: &self.cols, ops: vec![], seq: None, anchor: None, events: vec![], feed: vec![] }
    }

    /// Deletes documents of one collection in one commit (at most a
    /// commit's worth: the caller pages).
    pub(super) async fn delete_all(&self, col: &str, ids: &[String]) -> StoreResult<()> {
        self.write(|tx| {
            let (col, ids) = (col.to_string(), ids.to_vec());
            async move {
                for id in &ids {
                    tx.delete(&col, id);
                }
                Ok(())
            }
            .boxed()
        })
        .await
    }

    /// Runs `logic` in a Firestore transaction, retried on contention; on
    /// success publishes the feed items it produced. A store error from
    /// `logic` (a refusal) rolls back and writes nothing.
    pub(super) async fn write<T, F>(&self, logic: F) -> StoreResult<T>
    where
        F: for<'t, 'c> Fn(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T, TxError>>,
    {
        let mut last_published = self.writer.lock().await;
        let mut delay = Duration::from_millis(5);
        let mut retry_of = None;
        for attempt in 1.. {
            let mode = match retry_of.take() {
                Some(id) => FirestoreTransactionMode::ReadWriteRetry(id),
                None => FirestoreTransactionMode::ReadWrite,
            };
            let mut t = self
                .db
                .begin_transaction_with_options(FirestoreTransactionOptions::new().with_mode(mode))
                .await
                .map_err(fs)?;
            let id = t.transaction_id().clone();
            let db = self.db.clone_with_consistency_selector(FirestoreConsistencySelector::Transaction(id.clone()));
            let mut tx =
                Tx { db, cols: &self.cols, ops: vec![], seq: None, anchor: None, events: vec![], feed: vec![] };
            let outcome = match logic(&mut tx).await {
                Ok(_) if tx.ops.len() + 1 > MAX_WRITES => {
                    let _ = t.rollback().await;
                    return Err(StoreError::Invalid(format!(
                        "one change would write {} documents; Firestore allows {MAX_WRITES}",
                        tx.ops.len()
                    )));
                }
                Ok(value) => match tx.apply(&mut t) {
                    Ok((events, feed)) => t.commit().await.map(|_| (value, events, feed)),
                    Err(e) => {
                        let _ = t.rollback().await;
                        Err(e)
                    }
                },
                Err(TxError::Store(e)) => {
                    let _ = t.rollback().await;
                    return Err(e);
                }
                Err(TxError::Firestore(e)) => {
                    let _ = t.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Ok((value, events, feed)) => {
                    // Under the writer lock: one deployment's events are
                    // handed to Pub/Sub in commit order. A failed publish
                    // leaves the event's marker for the re-publisher.
                    let mut confirmed = false;
                    if let Some(p) = &self.publisher
                        && !events.is_empty()
                    {
                        match p.publish(&events).await {
                            Ok(()) => confirmed = true,
                            Err(e) => {
                                tracing::warn!(error = %e, "publishing events failed; the re-publisher sends them")
                            }
                        }
                    }
                    for item in feed {
                        *last_published = (*last_published).max(item.seq);
                        let _ = self.changes.send(item);
                    }
                    // Clearing the markers needs no order: other writers
                    // need not wait for it.
                    drop(last_published);
                    if confirmed {
                        self.published(&events).await;
                    }
                    return Ok(value);
                }
                Err(e) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "firestore transaction contended; retrying");
                    retry_of = Some(id);
                    tokio::time::sleep(delay.mul_f64(0.5 + rand::random::<f64>())).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(fs(e)),
            }
        }
        unreachable!("the attempt loop returns")
    }
}

/// What a transaction's logic can fail with.
pub(super) enum TxError {
    Store(StoreError),
    Firestore(FirestoreError),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

impl From<FirestoreError> for TxError {
    fn from(e: FirestoreError) -> Self {
        TxError::Firestore(e)
    }
}

impl Tx<'_> {
    pub(super) async fn project_by_key(&self, name_or_id: &str) -> Result<Option<ProjectDoc>, FirestoreError> {
        if let Some(p) =
            self.db.fluent().select().by_id_in(&self.cols.projects).obj::<ProjectDoc>().one(name_or_id).await?
        {
            return Ok(Some(p));
        }
        match self.db.fluent().select().by_id_in(&self.cols.names).obj::<NameDoc>().one(name_or_id).await? {
            Some(n) => self.db.fluent().select().by_id_in(&self.cols.projects).obj::<ProjectDoc>().one(&n.id).await,
            None => Ok(None),
        }
    }

    pub(super) async fn query_deployments(
        &self,
        project_id: Option<&str>,
        statuses: &[Status],
    ) -> Result<Vec<DeploymentDoc>, FirestoreError> {
        let names: Vec<String> = statuses.iter().take(MAX_IN).map(|s| s.as_str().to_string()).collect();
        let pid = project_id.map(str::to_string);
        self.db
            .fluent()
            .select()
            .from(self.cols.deployments.as_str())
            .filter(|q| {
                q.for_all([
                    pid.as_ref().and_then(|p| q.field("project_id").eq(p.clone())),
                    q.field("status").is_in(names.clone()),
                ])
            })
            .obj::<DeploymentDoc>()
            .query()
            .await
    }

    pub(super) async fn get_deployment(&self, id: &str) -> Result<DeploymentDoc, TxError> {
        self.get::<DeploymentDoc>(&self.cols.deployments, id)
            .await?
            .ok_or_else(|| StoreError::not_found("deployment", id).into())
    }

    /// Appends an audit record chained to `prev_hash`; returns its hash.
    pub(super) async fn append_audit(
        &mut self,
        d: &Deployment,
        prev_hash: &str,
        e: AuditEntry<'_>,
    ) -> Result<String, TxError> {
        let hash = e.hash(prev_hash, &d.id);
        let AuditEntry { at, actor, from, to, reason, evidence } = e;
        let seq = self.next_seq().await?;
        let prev_anchor = match &self.anchor {
            Some((_, head)) => head.clone(),
            None => self.get::<AnchorDoc>(&self.cols.meta, ANCHOR_DOC).await?.map(|d| d.head).unwrap_or_default(),
        };
        let anchor = bifrost_core::audit::anchor(&prev_anchor, &hash);
        let read = self.anchor.take().map_or(prev_anchor, |(read, _)| read);
        self.anchor = Some((read, anchor.clone()));
        let record = AuditRecord {
            seq,
            deployment_id: d.id.clone(),
            project_id: d.project_id.clone(),
            at: *at,
            actor: actor.clone(),
            from,
            to,
            reason: reason.to_string(),
            evidence: evidence.map(str::to_string),
            prev_hash: prev_hash.to_string(),
            hash: hash.clone(),
            anchor: Some(anchor),
        };
        let doc = SeqItemDoc { seq: seq as i64, deployment_id: d.id.clone(), data: to_data(&record)? };
        let col = self.cols.audit.clone();
        self.set(&col, &seq_id(seq), &doc)?;
        Ok(hash)
    }

    /// Enqueues the event and its feed item.
    pub(super) async fn emit(&mut self, mut e: Event) -> Result<(), TxError> {
        let seq = self.next_seq().await?;
        e.seq = seq;
        e.id = seq.to_string();
        let doc = SeqItemDoc { seq: seq as i64, deployment_id: e.deployment_id.clone(), data: to_data(&e)? };
        let col = self.cols.events.clone();
        self.set(&col, &seq_id(seq), &doc)?;
        // Removed once Pub/Sub has the event; the re-publisher sends what
        // is left (a publish that failed, an instance that died in between).
        let marker = Unpublished { seq: seq as i64, at_ms: e.at.timestamp_millis() };
        let col = self.cols.unpublished.clone();
        self.set(&col, &seq_id(seq), &marker)?;
        self.events.push(e.clone());
        let kind = FeedKind::of_event(&e);
        let fseq = self.next_seq().await?;
        let item =
            FeedItem { seq: fseq, deployment_id: e.deployment_id.clone(), project: e.project.clone(), at: e.at, kind };
        let doc = SeqItemDoc { seq: fseq as i64, deployment_id: e.deployment_id.clone(), data: to_data(&item)? };
        let col = self.cols.feed.clone();
        self.set(&col, &seq_id(fseq), &doc)?;
        self.feed.push(item);
        Ok(())
    }

    pub(super) fn transition<'s>(
        &'s mut self,
        t: &'s Transition,
    ) -> futures::future::BoxFuture<'s, Result<Deployment, TxError>> {
        async move {
            t.check()?;
            let doc = self.get_deployment(&t.deployment_id).await?;
            let cur = deployment_of(&doc)?;
            let at = now();
            let next = t.apply_to(&cur, at)?;
            let entry = t.audit_entry(cur.status, &at);
            let hash = self.append_audit(&next, &doc.audit_head, entry).await?;
            let col = self.cols.deployments.clone();
            self.set(&col, &next.id, &deployment_doc(&next, &hash)?)?;
            self.emit(Event::of(&next, Some(cur.status), &t.reason, &t.actor, at)).await?;

            if t.patch.make_live {
                let pcol = self.cols.projects.clone();
                let pdoc = self
                    .get::<ProjectDoc>(&pcol, &next.project_id)
                    .await?
                    .ok_or_else(|| StoreError::not_found("project", &next.project_id))?;
                let mut project: Project = from_data(&pdoc.data)?;
                let previous = project.live_deployment_id.replace(next.id.clone());
                self.set(&pcol, &project.id, &ProjectDoc { data: to_data(&project)?, ..pdoc })?;
                let old = match previous.filter(|p| *p != next.id) {
                    Some(prev) => {
                        self.get::<DeploymentDoc>(&col, &prev).await?.map(|d| deployment_of(&d)).transpose()?
                    }
                    None => None,
                };
                if let Some(sup) =
                    decide::replace_live(&next.id, old.as_ref().map(|o| (o.id.as_str(), o.status)), &t.actor)
                {
                    self.transition(&sup).await?;
                }
            }
            Ok(next)
        }
        .boxed()
    }
}
