//! The ingest function: the gRPC service health sidecars stream their
//! reports to. Each stream is authenticated by the replica's token (an HMAC
//! of its identity); each report is stored once (sequence numbers per
//! sidecar run), published live, and handed to the runtime, whose replica
//! state the verify function reads (`success_threshold` good reports →
//! healthy, `failure_threshold` bad ones → failed, with what the probe saw).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bifrost_core::auth::verify_sidecar_token;
use bifrost_core::domain::HealthSample;
use bifrost_core::ports::Observation;
use bifrost_sidecar_proto::ingest_server::{Ingest, IngestServer};
use bifrost_sidecar_proto::{Ack, HealthReport};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use bifrost_functions::Ctx;

pub struct IngestService {
    ctx: Arc<Ctx>,
    key: Arc<Vec<u8>>,
    /// Highest stored seq per (deployment, replica, sidecar run): reports
    /// resent after a reconnect (stored, but the ack was lost) count once.
    stored: Arc<Mutex<HashMap<StreamId, u64>>>,
}

/// (deployment, replica, sidecar run).
type StreamId = (String, u32, String);

/// The tonic service, ready for a `tonic::transport::Server`.
pub fn service(ctx: Arc<Ctx>, key: Vec<u8>) -> IngestServer<IngestService> {
    IngestServer::new(IngestService { ctx, key: Arc::new(key), stored: Arc::default() })
}

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type ReportStream = AckStream;

    async fn report(&self, request: Request<Streaming<HealthReport>>) -> Result<Response<AckStream>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        let mut reports = request.into_inner();
        // The first report names the stream's replica; the token must be its.
        let first = match reports.message().await? {
            Some(r) => r,
            None => return Err(Status::invalid_argument("the stream ended before its first report")),
        };
        if !verify_sidecar_token(&self.key, &first.deployment_id, first.replica, &token) {
            return Err(Status::unauthenticated("this token is not the one issued to that replica"));
        }
        let ctx = self.ctx.clone();
        let seen = self.stored.clone();
        let identity = (first.deployment_id.clone(), first.replica, first.run_id.clone());
        let acks = futures::stream::unfold(
            (ctx, seen, reports, Some(first), identity),
            |(ctx, seen, mut reports, pending, identity)| async move {
                let report = match pending {
                    Some(r) => r,
                    None => match reports.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => return None,
                        Err(e) => return Some((Err(e), (ctx, seen, reports, None, identity))),
                    },
                };
                if (report.deployment_id.as_str(), report.replica, report.run_id.as_str())
                    != (identity.0.as_str(), identity.1, identity.2.as_str())
                {
                    let e = Status::permission_denied("every report of a stream must be for the stream's replica");
                    return Some((Err(e), (ctx, seen, reports, None, identity)));
                }
                let stored = seen.lock().map(|m| m.get(&identity).copied().unwrap_or(0)).unwrap_or(0);
                let mut through = stored;
                if report.seq > stored {
                    if let Err(e) = accept(&ctx, &report).await {
                        return Some((Err(Status::unavailable(e)), (ctx, seen, reports, None, identity)));
                    }
                    through = report.seq;
                    if let Ok(mut m) = seen.lock() {
                        m.insert(identity.clone(), through);
                    }
                }
                Some((Ok(Ack { stored_through: through }), (ctx, seen, reports, None, identity)))
            },
        );
        Ok(Response::new(Box::pin(acks)))
    }
}

/// Stores, publishes and applies one report.
async fn accept(ctx: &Ctx, r: &HealthReport) -> Result<(), String> {
    let sample = sample_of(r);
    let probe = r.probe.clone().unwrap_or_default();
    let observation = Observation {
        ok: probe.http_ok,
        description: describe(&probe),
        cpu_percent: sample.cpu_percent,
        rss_bytes: sample.rss_bytes,
        threads: sample.threads,
        open_fds: sample.open_fds,
    };
    ctx.store.record_health(vec![sample.clone()]).await.map_err(|e| e.to_string())?;
    ctx.runtime.observe(&r.deployment_id, r.replica, observation).await;
    let _ = ctx.health.send(sample);
    Ok(())
}

/// What the probe saw, in the words verify puts in a failure reason.
pub fn describe(p: &bifrost_sidecar_proto::Probe) -> String {
    if p.http_ok {
        format!("HTTP {} in {:.1} ms", p.http_status, p.http_latency_ms)
    } else if p.error.is_empty() {
        "no answer".into()
    } else {
        p.error.clone()
    }
}

pub fn sample_of(r: &HealthReport) -> HealthSample {
    let probe = r.probe.clone().unwrap_or_default();
    let process = r.process;
    HealthSample {
        deployment_id: r.deployment_id.clone(),
        replica: r.replica,
        at: chrono::DateTime::from_timestamp_millis(r.at_unix_ms).unwrap_or_else(chrono::Utc::now),
        span_s: 0,
        probe_ok: if probe.http_ok { 1.0 } else { 0.0 },
        http_status: (probe.http_status > 0).then_some(probe.http_status as u16),
        latency_ms: probe.http_ok.then_some(probe.http_latency_ms),
        cpu_percent: process.as_ref().map(|p| p.cpu_percent),
        rss_bytes: process.as_ref().map(|p| p.rss_bytes),
        threads: process.as_ref().map(|p| p.threads),
        open_fds: process.as_ref().map(|p| p.open_fds),
        error: (!probe.http_ok).then(|| describe(&probe)),
    }
}
