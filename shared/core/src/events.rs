//! Events and the Pub/Sub push envelope they travel in.
//!
//! Every transition publishes one [`Event`] (`deployment.<new status>`). A
//! function receives it wrapped exactly as Pub/Sub's push delivery wraps a
//! message, so the same handler serves the embedded dispatcher and a Cloud
//! Run push endpoint.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::domain::{Actor, Timestamp};
use crate::status::Status;

/// What happened to a deployment. Serialized as the message's `data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique message id.
    pub id: String,
    /// Store-assigned, increasing sequence (the SSE `id:`); 0 until stored.
    #[serde(default)]
    pub seq: u64,
    /// `deployment.<status>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub deployment_id: String,
    pub project_id: String,
    pub project: String,
    pub from: Option<Status>,
    pub status: Status,
    /// The deployment's version after the transition that produced this event.
    pub version: u64,
    pub attempt: u32,
    pub reason: String,
    pub actor: Actor,
    pub at: Timestamp,
}

impl crate::domain::FeedKind {
    /// The feed's record of a status change.
    pub fn of_event(e: &Event) -> Self {
        crate::domain::FeedKind::Status {
            from: e.from,
            status: e.status,
            version: e.version,
            attempt: e.attempt,
            reason: e.reason.clone(),
            actor: e.actor.clone(),
        }
    }
}

impl Event {
    /// The event a deployment's change produces (`deployment.<status>`);
    /// the store assigns `id` and `seq` when it enqueues it.
    pub fn of(
        d: &crate::domain::Deployment,
        from: Option<Status>,
        reason: &str,
        actor: &Actor,
        at: Timestamp,
    ) -> Event {
        Event {
            id: String::new(),
            seq: 0,
            kind: d.status.event_type(),
            deployment_id: d.id.clone(),
            project_id: d.project_id.clone(),
            project: d.project.clone(),
            from,
            status: d.status,
            version: d.version,
            attempt: d.attempt,
            reason: reason.to_string(),
            actor: actor.clone(),
            at,
        }
    }

    /// Pub/Sub message attributes: enough to filter and route without decoding data.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("type".to_string(), self.kind.clone()),
            ("deployment_id".to_string(), self.deployment_id.clone()),
            ("project".to_string(), self.project.clone()),
            ("status".to_string(), self.status.as_str().to_string()),
        ])
    }
}

/// Who receives which event type. In the embedded home the store creates one
/// delivery per matching subscription; on GCP each is a Pub/Sub push
/// subscription (terraform/pubsub.tf).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Subscription id, e.g. `validate-queued`.
    pub name: String,
    /// The function that handles it, e.g. `validate`.
    pub function: String,
    /// The event type (topic), e.g. `deployment.queued`.
    pub topic: String,
}

impl Subscription {
    pub fn new(function: &str, status: Status) -> Self {
        Subscription {
            name: format!("{function}-{}", status.as_str()),
            function: function.to_string(),
            topic: status.event_type(),
        }
    }
}

/// The JSON body Pub/Sub POSTs to a push endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushEnvelope {
    pub message: PushMessage,
    /// `projects/<project>/subscriptions/<name>`.
    pub subscription: String,
    /// Present when the subscription has a dead-letter policy.
    #[serde(rename = "deliveryAttempt", default, skip_serializing_if = "Option::is_none")]
    pub delivery_attempt: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PushMessage {
    /// Base64 of the event JSON.
    pub data: String,
    pub attributes: BTreeMap<String, String>,
    pub message_id: String,
    /// RFC 3339, e.g. `2021-02-26T19:13:55.749Z`.
    pub publish_time: String,
    pub ordering_key: Option<String>,
}

/// Pub/Sub sends both camelCase and snake_case spellings of the id and time.
#[derive(Serialize, Deserialize)]
struct PushMessageWire {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    data: String,
    #[serde(rename = "messageId", default, skip_serializing_if = "Option::is_none")]
    message_id_camel: Option<String>,
    #[serde(rename = "message_id", default, skip_serializing_if = "Option::is_none")]
    message_id_snake: Option<String>,
    #[serde(rename = "publishTime", default, skip_serializing_if = "Option::is_none")]
    publish_time_camel: Option<String>,
    #[serde(rename = "publish_time", default, skip_serializing_if = "Option::is_none")]
    publish_time_snake: Option<String>,
    #[serde(rename = "orderingKey", default, skip_serializing_if = "Option::is_none")]
    ordering_key: Option<String>,
}

impl Serialize for PushMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PushMessageWire {
            attributes: self.attributes.clone(),
            data: self.data.clone(),
            message_id_camel: Some(self.message_id.clone()),
            message_id_snake: Some(self.message_id.clone()),
            publish_time_camel: Some(self.publish_time.clone()),
            publish_time_snake: Some(self.publish_time.clone()),
            ordering_key: self.ordering_key.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PushMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = PushMessageWire::deserialize(d)?;
        let message_id =
            w.message_id_camel.or(w.message_id_snake).ok_or_else(|| serde::de::Error::missing_field("messageId"))?;
        Ok(PushMessage {
            data: w.data,
            attributes: w.attributes,
            message_id,
            publish_time: w.publish_time_camel.or(w.publish_time_snake).unwrap_or_default(),
            ordering_key: w.ordering_key.filter(|k| !k.is_empty()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("push message data is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("push message data is not an event: {0}")]
    Json(#[from] serde_json::Error),
}

impl PushEnvelope {
    /// Wraps an event exactly as Pub/Sub would deliver it to `subscription`.
    pub fn wrap(event: &Event, gcp_project: &str, subscription: &str, delivery_attempt: Option<u32>) -> Self {
        // Serializing an Event cannot fail: all its fields are plain data.
        let json = serde_json::to_vec(event).unwrap_or_default();
        PushEnvelope {
            message: PushMessage {
                data: B64.encode(json),
                attributes: event.attributes(),
                message_id: event.id.clone(),
                publish_time: event.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ordering_key: Some(event.deployment_id.clone()),
            },
            subscription: format!("projects/{gcp_project}/subscriptions/{subscription}"),
            delivery_attempt,
        }
    }

    /// Decodes the event inside.
    pub fn event(&self) -> Result<Event, EnvelopeError> {
        let bytes = B64.decode(self.message.data.as_bytes())?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// The subscription's short name (after the last `/`).
    pub fn subscription_name(&self) -> &str {
        self.subscription.rsplit('/').next().unwrap_or(&self.subscription)
    }
}

/// What a function answers to a push: the push endpoint maps these to
/// HTTP 204 / 503 / 400 (Pub/Sub acks only 2xx, and retries the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or already done: redeliveries are acknowledged).
    Ack,
    /// Transient failure: deliver again later.
    Retry(String),
    /// The message can never succeed (malformed): dead-letter it.
    Reject(String),
}

/// An event whose delivery to a subscription gave up after the maximum attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `<event seq>/<subscription>`: what redrive takes.
    pub id: String,
    pub subscription: String,
    pub event: Event,
    pub attempts: u32,
    pub last_error: String,
    pub dead_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::now;

    fn event() -> Event {
        Event {
            id: "m1".into(),
            seq: 7,
            kind: "deployment.queued".into(),
            deployment_id: "d1".into(),
            project_id: "p1".into(),
            project: "hello".into(),
            from: None,
            status: Status::Queued,
            version: 1,
            attempt: 1,
            reason: "push".into(),
            actor: Actor::github("octocat"),
            at: now(),
        }
    }

    #[test]
    fn envelope_has_pubsub_push_shape() {
        let original = event();
        let env = PushEnvelope::wrap(&original, "bifrost", "validate-queued", None);
        let v = serde_json::to_value(&env).expect("serializes");
        let msg = &v["message"];
        assert_eq!(v["subscription"], "projects/bifrost/subscriptions/validate-queued");
        assert_eq!(msg["messageId"], "m1");
        assert_eq!(msg["message_id"], "m1");
        assert_eq!(msg["publishTime"], msg["publish_time"]);
        assert!(msg["publishTime"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(msg["attributes"]["type"], "deployment.queued");
        assert_eq!(msg["orderingKey"], "d1");
        assert!(v.get("deliveryAttempt").is_none());
        assert_eq!(env.event().expect("decodes"), original);
    }

    #[test]
    fn accepts_what_the_emulator_sends() {
        // A push body as Pub/Sub sends it, data = base64 of an event.
        let data = B64.encode(serde_json::to_vec(&event()).expect("json"));
        let body = format!(
            r#"{{"message":{{"attributes":{{"type":"deployment.queued"}},"data":"{data}","messageId":"42","publishTime":"2024-01-01T00:00:00.000Z"}},"subscription":"projects/p/subscriptions/validate-queued","deliveryAttempt":3}}"#
        );
        let env: PushEnvelope = serde_json::from_str(&body).expect("parses");
        assert_eq!(env.message.message_id, "42");
        assert_eq!(env.delivery_attempt, Some(3));
        assert_eq!(env.subscription_name(), "validate-queued");
        assert_eq!(env.event().expect("event").deployment_id, "d1");
    }

    #[test]
    fn bad_data_is_a_typed_error() {
        let mut env = PushEnvelope::wrap(&event(), "p", "s", None);
        env.message.data = "!!!".into();
        assert!(matches!(env.event(), Err(EnvelopeError::Base64(_))));
        env.message.data = B64.encode(b"{}");
        assert!(matches!(env.event(), Err(EnvelopeError::Json(_))));
    }
}
