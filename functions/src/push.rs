//! The push endpoint: what a Pub/Sub push subscription POSTs to on Cloud
//! Run (`POST /push/<function>`, the envelope as JSON). The function's
//! outcome becomes the status Pub/Sub acts on: 204 acknowledges; 503
//! (retry) and 400 (can never succeed) are negative acknowledgements, so
//! Pub/Sub redelivers with backoff and dead-letters after the
//! subscription's maximum attempts.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bifrost_core::events::{Outcome, PushEnvelope};
use bifrost_core::ports::PushHandler;

/// Pub/Sub messages are at most 10 MB; Bifrost's events are a few hundred bytes.
const MAX_PUSH_BYTES: usize = 256 * 1024;

pub fn router(handler: Arc<dyn PushHandler>) -> Router {
    Router::new().route("/push/{function}", post(push)).layer(DefaultBodyLimit::max(MAX_PUSH_BYTES)).with_state(handler)
}

async fn push(State(handler): State<Arc<dyn PushHandler>>, Path(function): Path<String>, body: Bytes) -> Response {
    let envelope: PushEnvelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(function, error = %e, "push body is not a Pub/Sub envelope");
            return (StatusCode::BAD_REQUEST, format!("not a Pub/Sub push envelope: {e}")).into_response();
        }
    };
    let message_id = envelope.message.message_id.clone();
    match handler.push(&function, envelope).await {
        Outcome::Ack => StatusCode::NO_CONTENT.into_response(),
        Outcome::Retry(why) => {
            tracing::info!(function, message_id, why, "push not done; Pub/Sub will redeliver");
            (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
        }
        Outcome::Reject(why) => {
            tracing::warn!(function, message_id, why, "push rejected; it will be dead-lettered");
            (StatusCode::BAD_REQUEST, why).into_response()
        }
    }
}
