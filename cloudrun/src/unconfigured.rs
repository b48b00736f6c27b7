//! Adapters this service does not have (yet): each call says which and
//! fails as "unavailable", so a push that needs one is retried by Pub/Sub
//! and dead-lettered in the end, never silently dropped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bifrost_core::ports::{
    BuildError, BuildRequest, Builder, LogSink, ReplicaSpec, ReplicaStatus, Runtime, RuntimeError,
};

pub struct Unconfigured(pub &'static str);

impl Unconfigured {
    fn why(&self) -> String {
        format!("{} is not configured in this service", self.0)
    }
}

#[async_trait]
impl Builder for Unconfigured {
    async fn build(&self, _req: BuildRequest, _log: Arc<dyn LogSink>) -> Result<serde_json::Value, BuildError> {
        Err(BuildError::Unavailable(self.why()))
    }
    async fn discard(&self, _project_id: &str, _deployment_id: &str) {}
}

#[async_trait]
impl Runtime for Unconfigured {
    async fn apply(&self, _spec: ReplicaSpec) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unavailable(self.why()))
    }
    async fn wait_listening(&self, _id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unavailable(self.why()))
    }
    async fn stop(&self, _id: &str, _drain: Duration) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unavailable(self.why()))
    }
    async fn status(&self, _id: &str) -> Vec<ReplicaStatus> {
        vec![]
    }
}

#[async_trait]
impl bifrost_core::scripts::Blobs for Unconfigured {
    async fn get(&self, _key: &str) -> Result<Option<(Vec<u8>, i64)>, String> {
        Err(self.why())
    }
    async fn put_if(&self, _key: &str, _bytes: Vec<u8>, _expected: i64) -> Result<Option<i64>, String> {
        Err(self.why())
    }
}
