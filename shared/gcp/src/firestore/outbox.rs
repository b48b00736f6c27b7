//! The outbox on GCP: every committed event is published to Pub/Sub and its
//! `unpublished` marker dropped once confirmed; the re-publisher sends what
//! was never confirmed.

use super::*;

/// `unpublished/{seq}`: an outbox event Pub/Sub has not confirmed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Unpublished {
    pub(super) seq: i64,
    pub(super) at_ms: i64,
}
impl FirestoreStore {
    /// Events Pub/Sub has not confirmed (counted up to 1,000).
    pub(super) async fn unconfirmed(&self) -> StoreResult<bifrost_core::ports::Backlog> {
        let markers: Vec<Unpublished> = self
            .db
            .fluent()
            .select()
            .from(self.cols.unpublished.as_str())
            .order(|o| o.fields([o.field("at_ms").asc()]))
            .limit(1000)
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let now_ms = bifrost_core::domain::now().timestamp_millis();
        Ok(bifrost_core::ports::Backlog {
            pending: markers.len() as u64,
            oldest_age: markers.first().map(|m| Duration::from_millis((now_ms - m.at_ms).max(0) as u64)),
        })
    }

    /// Drops the markers of events Pub/Sub confirmed. If this fails the
    /// re-publisher sends them again: a duplicate, which functions ignore.
    pub(super) async fn published(&self, events: &[Event]) {
        for e in events {
            let res = self
                .db
                .fluent()
                .delete()
                .from(self.cols.unpublished.as_str())
                .document_id(seq_id(e.seq))
                .execute()
                .await;
            if let Err(err) = res {
                tracing::warn!(error = %err, seq = e.seq, "could not clear a published event's marker");
            }
        }
    }

    /// The outbox's re-publisher: publishes, in commit order, every event
    /// committed before `older_than` ago that Pub/Sub never confirmed (a
    /// failed publish, an instance stopped between commit and publish), and
    /// clears its marker. Younger ones may still be in flight from another
    /// instance. Returns how many were sent. Run by the analytics service
    /// on Cloud Scheduler's call.
    pub async fn republish(&self, older_than: Duration) -> StoreResult<usize> {
        let Some(p) = &self.publisher else { return Ok(0) };
        let cutoff = (bifrost_core::domain::now() - chrono::Duration::from_std(older_than).unwrap_or_default())
            .timestamp_millis();
        let markers: Vec<Unpublished> = self
            .db
            .fluent()
            .select()
            .from(self.cols.unpublished.as_str())
            .filter(|q| q.field("at_ms").less_than(cutoff))
            .order(|o| o.fields([o.field("at_ms").asc()]))
            .limit(500)
            .obj()
            .query()
            .await
            .map_err(fs)?;
        let mut sent = 0;
        let mut markers: Vec<i64> = markers.into_iter().map(|m| m.seq).collect();
        markers.sort_unstable();
        for seq in markers {
            let doc: Option<SeqItemDoc> = self
                .db
                .fluent()
                .select()
                .by_id_in(self.cols.events.as_str())
                .obj()
                .one(&seq_id(seq as u64))
                .await
                .map_err(fs)?;
            let Some(doc) = doc else { continue };
            let event: Event = serde_json::from_str(&doc.data).map_err(backend)?;
            p.publish(std::slice::from_ref(&event)).await.map_err(StoreError::Backend)?;
            self.published(std::slice::from_ref(&event)).await;
            sent += 1;
        }
        Ok(sent)
    }
}
