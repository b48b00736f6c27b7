//! Dead letters on GCP: recorded from the dead-letter topics' pushes,
//! listed and redriven.

use super::*;

/// `dead_letters/{seq}_{subscription}`: a dead letter as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct DeadLetterDoc {
    pub(super) dead_ms: i64,
    pub(super) data: String,
}

/// Attributes Pub/Sub adds to a message it moves to a dead-letter topic.
pub(super) const DEAD_SOURCE_SUBSCRIPTION: &str = "CloudPubSubDeadLetterSourceSubscription";
pub(super) const DEAD_DELIVERY_COUNT: &str = "CloudPubSubDeadLetterSourceDeliveryCount";

pub(super) fn dead_letter_doc_id(id: &str) -> String {
    id.replace('/', "_")
}

impl FirestoreStore {
    /// Keeps a message Pub/Sub dead-lettered (pushed from a dead-letter
    /// topic's subscription) so the API can list and redrive it. Recording
    /// the same one twice keeps one.
    pub async fn record_dead_letter(&self, envelope: &PushEnvelope) -> StoreResult<DeadLetter> {
        let event = envelope.event().map_err(|e| StoreError::Invalid(format!("not a Bifrost event: {e}")))?;
        let attrs = &envelope.message.attributes;
        // `projects/P/subscriptions/bifrost-validate-queued` → `validate-queued`
        // (what the embedded dispatcher calls the subscription).
        let source = attrs.get(DEAD_SOURCE_SUBSCRIPTION).map_or_else(
            || envelope.subscription_name().trim_start_matches("bifrost-dead-").to_string(),
            |s| s.rsplit('/').next().unwrap_or(s).trim_start_matches("bifrost-").to_string(),
        );
        let attempts = attrs.get(DEAD_DELIVERY_COUNT).and_then(|n| n.parse().ok()).unwrap_or(0);
        let letter = DeadLetter {
            id: format!("{}/{source}", event.seq),
            subscription: source.clone(),
            last_error: format!("Pub/Sub gave up after {attempts} deliveries to {source}"),
            attempts,
            event,
            dead_at: bifrost_core::domain::now(),
        };
        let doc = DeadLetterDoc { dead_ms: letter.dead_at.timestamp_millis(), data: to_data(&letter)? };
        let doc_id = dead_letter_doc_id(&letter.id);
        // Create only: a redelivered dead letter keeps its first record.
        let created = self
            .db
            .fluent()
            .insert()
            .into(&self.cols.dead_letters)
            .document_id(&doc_id)
            .object(&doc)
            .execute::<DeadLetterDoc>()
            .await;
        match created {
            Ok(_) => Ok(letter),
            Err(e) => {
                let existing: Option<DeadLetterDoc> = self
                    .db
                    .fluent()
                    .select()
                    .by_id_in(self.cols.dead_letters.as_str())
                    .obj()
                    .one(&doc_id)
                    .await
                    .map_err(fs)?;
                match existing {
                    Some(d) => serde_json::from_str(&d.data).map_err(backend),
                    None => Err(fs(e)),
                }
            }
        }
    }
}

/// Dead letters on GCP: Pub/Sub moves a message it gave up on to the
/// subscription's dead-letter topic, whose push subscription hands it to
/// `record_dead_letter`. Redriving re-publishes the event to its topic;
/// every event topic has exactly one subscription (terraform/), so only
/// the function that gave up gets it again.
#[async_trait]
impl DeadLetters for FirestoreStore {
    async fn record(&self, envelope: &PushEnvelope) -> StoreResult<DeadLetter> {
        self.record_dead_letter(envelope).await
    }

    async fn republish_unconfirmed(&self, older_than: Duration) -> StoreResult<usize> {
        self.republish(older_than).await
    }

    async fn backlog(&self) -> StoreResult<bifrost_core::ports::Backlog> {
        self.unconfirmed().await
    }

    async fn dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        let docs: Vec<DeadLetterDoc> = self
            .db
            .fluent()
            .select()
            .from(self.cols.dead_letters.as_str())
            .order(|o| o.fields([o.field("dead_ms").asc()]))
            .limit(1000)
            .obj()
            .query()
            .await
            .map_err(fs)?;
        docs.iter().map(|d| serde_json::from_str(&d.data).map_err(backend)).collect()
    }

    async fn redrive(&self, ids: Option<Vec<String>>) -> StoreResult<usize> {
        let publisher = self.publisher.as_ref().ok_or_else(|| backend("no event bus to redrive through"))?;
        let all = self.dead_letters().await?;
        let chosen: Vec<DeadLetter> = match ids {
            None => all,
            Some(ids) => {
                let mut out = vec![];
                for id in ids {
                    match all.iter().find(|d| d.id == id) {
                        Some(d) => out.push(d.clone()),
                        None => return Err(StoreError::not_found("dead letter", &id)),
                    }
                }
                out
            }
        };
        for d in &chosen {
            publisher.publish(std::slice::from_ref(&d.event)).await.map_err(StoreError::Backend)?;
            self.db
                .fluent()
                .delete()
                .from(self.cols.dead_letters.as_str())
                .document_id(dead_letter_doc_id(&d.id))
                .execute()
                .await
                .map_err(fs)?;
        }
        Ok(chosen.len())
    }
}
