//! The GCP event bus: each committed event is published to its type's topic
//! (`<prefix>deployment-<status>`) with the event as JSON `data`, its
//! attributes (type, deployment id, ...) and the deployment id as ordering
//! key, so one deployment's events reach a subscription in order. Pub/Sub's
//! push subscriptions then deliver them to the function services, wrapped
//! in exactly the envelope the embedded dispatcher builds.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use google_cloud_pubsub::client::{BasePublisher, Publisher};
use google_cloud_pubsub::model::Message;

use bifrost_core::events::Event;

/// Where committed events go. The Firestore store calls it after each
/// commit; an event whose publish fails stays in the outbox collection.
#[async_trait]
pub trait Publish: Send + Sync {
    async fn publish(&self, events: &[Event]) -> Result<(), String>;
}

/// Pub/Sub topics for `deployment.<status>` events.
pub struct PubSubBus {
    base: BasePublisher,
    gcp_project: String,
    topic_prefix: String,
    publishers: Mutex<HashMap<String, Publisher>>,
}

/// The topic id of an event type: `deployment.queued` → `<prefix>deployment-queued`.
pub fn topic_id(prefix: &str, event_type: &str) -> String {
    format!("{prefix}{}", event_type.replace('.', "-"))
}

impl PubSubBus {
    /// Connects to Pub/Sub; with `endpoint` (the emulator's
    /// `http://127.0.0.1:PORT`) and anonymous credentials when given.
    pub async fn connect(gcp_project: &str, topic_prefix: &str, endpoint: Option<&str>) -> Result<Self, String> {
        let mut builder = BasePublisher::builder();
        if let Some(e) = endpoint {
            builder = builder
                .with_endpoint(e.to_string())
                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        let base = builder.build().await.map_err(|e| format!("connecting to Pub/Sub: {e}"))?;
        Ok(PubSubBus {
            base,
            gcp_project: gcp_project.to_string(),
            topic_prefix: topic_prefix.to_string(),
            publishers: Mutex::new(HashMap::new()),
        })
    }

    fn publisher(&self, event_type: &str) -> Publisher {
        let topic = format!("projects/{}/topics/{}", self.gcp_project, topic_id(&self.topic_prefix, event_type));
        let mut all = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        // Events are published as they commit: no batching delay.
        all.entry(topic.clone())
            .or_insert_with(|| self.base.publisher(&topic).set_message_count_threshold(1).build())
            .clone()
    }
}

#[async_trait]
impl Publish for PubSubBus {
    async fn publish(&self, events: &[Event]) -> Result<(), String> {
        let mut pending = vec![];
        for e in events {
            let data = serde_json::to_vec(e).map_err(|err| err.to_string())?;
            let msg =
                Message::new().set_data(data).set_attributes(e.attributes()).set_ordering_key(e.deployment_id.clone());
            pending.push((e.kind.clone(), self.publisher(&e.kind).publish(msg)));
        }
        for (kind, p) in pending {
            p.await.map_err(|err| format!("publishing {kind}: {err}"))?;
        }
        Ok(())
    }
}
