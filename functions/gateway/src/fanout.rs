//! The SSE fan-out: `GET /api/v1/events` and `GET
//! /api/v1/deployments/{id}/events` subscriptions taken off the HTTP server
//! once their request head is read. A subscriber is then its socket, a
//! broadcast receiver and a small task; every event is encoded once, as the
//! exact bytes (an HTTP/1.1 chunk of axum's SSE framing) every subscriber
//! gets. Served through hyper instead, each subscription kept hyper's
//! connection buffers (8 KiB at least), a service future and a stream of
//! its own: ~38 KiB per subscriber against a budget of 4 (BENCHMARKS.md).
//!
//! Only requests it is sure about are taken: HTTP/1.1 GET, a valid bearer
//! token, an existing deployment. Anything else — an error to report, a
//! cookie, a pipelined request — goes back to the regular router, which
//! answers it (and serves the same stream, just at hyper's cost).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, Sse};
use bifrost_core::auth::hash_token;
use bifrost_core::domain::FeedItem;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::live::{health_event, sse_event};
use bifrost_functions::Ctx;

/// Frames kept for subscribers that are behind; one that falls further
/// behind catches up from the store.
const CAPACITY: usize = 4096;
/// As the axum SSE path: a comment every 15 s keeps proxies from closing an
/// idle stream (and finds subscribers that went away).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event, encoded once for every subscriber.
#[derive(Debug)]
enum Frame {
    /// A feed item (status or log line) with its sequence number.
    Feed { seq: u64, deployment_id: String, chunk: Bytes },
    /// A live health sample (no id: not replayed).
    Health { deployment_id: String, chunk: Bytes },
    /// For every subscriber.
    KeepAlive(Bytes),
    /// The encoder missed items: every subscriber re-reads the store.
    Resync,
}

/// An SSE subscription request, parsed from its head.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    /// `None`: every deployment (`/api/v1/events`).
    pub deployment: Option<String>,
    pub token: String,
    /// `Last-Event-ID`, else `?after=`.
    pub resume: Option<u64>,
    /// The `Host` header (the caller decides whether it is the platform's).
    pub host: String,
}

/// Parses a request head; `Some` only for a plain HTTP/1.1 SSE subscription
/// with a bearer token, the whole of `head` and nothing after it.
pub fn parse_head(head: &[u8]) -> Option<Subscription> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(head).ok()? else { return None };
    if len != head.len() || req.method? != "GET" || req.version? != 1 {
        return None;
    }
    let (path, query) = req.path?.split_once('?').unwrap_or((req.path?, ""));
    let deployment = match path.strip_prefix("/api/v1/") {
        Some("events") => None,
        Some(rest) => {
            let id = rest.strip_prefix("deployments/")?.strip_suffix("/events")?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            Some(id.to_string())
        }
        None => return None,
    };
    let mut after = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("after", n)) => after = Some(n.parse::<u64>().ok()?),
            // Anything else is the router's to judge (and report).
            _ => return None,
        }
    }
    let header = |name: &str| {
        req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let token = header("authorization")?.strip_prefix("Bearer ")?.trim().to_string();
    let last_event_id = match header("last-event-id") {
        Some(v) => Some(v.trim().parse::<u64>().ok()?),
        None => None,
    };
    if header("content-length").is_some_and(|v| v.trim() != "0") || header("transfer-encoding").is_some() {
        return None;
    }
    Some(Subscription { deployment, token, resume: last_event_id.or(after), host: header("host")?.to_string() })
}

/// The bytes axum's SSE body gives for `event`, as one HTTP/1.1 chunk.
async fn chunk(event: SseEvent) -> Bytes {
    use http_body_util::BodyExt;
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(event) });
    let body = Sse::new(stream).into_response().into_body();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut out = Vec::with_capacity(bytes.len() + 12);
    out.extend_from_slice(format!("{:X}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(&bytes);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
transfer-encoding: chunked\r\n\r\n";

pub struct Fanout {
    ctx: Ctx,
    tx: broadcast::Sender<Arc<Frame>>,
}

impl Fanout {
    /// Starts the encoder: one task reading the store's live feed and the
    /// health samples, encoding each once.
    pub fn start(ctx: Ctx) -> Arc<Fanout> {
        let (tx, _) = broadcast::channel(CAPACITY);
        let fanout = Arc::new(Fanout { ctx: ctx.clone(), tx: tx.clone() });
        let mut feed = ctx.store.subscribe();
        let mut health = ctx.health.subscribe();
        tokio::spawn(async move {
            let keep_alive = chunk(SseEvent::default().comment("")).await;
            let mut tick = tokio::time::interval(KEEP_ALIVE);
            tick.tick().await;
            loop {
                let frame = tokio::select! {
                    item = feed.recv() => match item {
                        Ok(item) => Frame::Feed {
                            seq: item.seq,
                            deployment_id: item.deployment_id.clone(),
                            chunk: chunk(sse_event(&item)).await,
                        },
                        Err(RecvError::Lagged(_)) => Frame::Resync,
                        Err(RecvError::Closed) => return,
                    },
                    sample = health.recv() => match sample {
                        Ok(h) => Frame::Health { deployment_id: h.deployment_id.clone(), chunk: chunk(health_event(&h)).await },
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return,
                    },
                    _ = tick.tick() => Frame::KeepAlive(keep_alive.clone()),
                };
                // No subscribers is fine.
                let _ = tx.send(Arc::new(frame));
            }
        });
        fanout
    }

    /// Serves `sub` on `stream` if it may: the token is valid, of a viewer
    /// or above, and the deployment exists. Otherwise the stream comes back untouched, for
    /// the router to answer.
    pub async fn take(self: &Arc<Self>, mut stream: TcpStream, sub: Subscription) -> Result<(), TcpStream> {
        let store = &self.ctx.store;
        let Ok(Some(token)) = store.authenticate(&hash_token(&sub.token)).await else { return Err(stream) };
        // The feed is a viewer's (a router's token reads only routes).
        if token.role < bifrost_core::Role::Viewer {
            return Err(stream);
        }
        match &sub.deployment {
            // A project-limited token's view of every deployment is filtered:
            // the router serves that.
            None if token.project_id.is_some() => return Err(stream),
            None => {}
            Some(id) => match store.get_deployment(id).await {
                Ok(d) if token.reaches(&d.project_id) => {}
                _ => return Err(stream),
            },
        }
        // Subscribe before reading the store: nothing committed in between
        // is missed; the sequence check drops what the replay sent.
        let rx = self.tx.subscribe();
        let last = match (sub.resume, &sub.deployment) {
            (Some(n), _) => n,
            (None, Some(_)) => 0,
            // The global stream without a resume point starts now.
            (None, None) => match store.feed_head().await {
                Ok(head) => head,
                Err(_) => return Err(stream),
            },
        };
        if stream.write_all(RESPONSE_HEAD).await.is_err() {
            return Ok(());
        }
        let me = self.clone();
        tokio::spawn(async move { me.serve(stream, rx, sub.deployment, last).await });
        Ok(())
    }

    /// One subscriber: the replay, then the live frames; ends when the
    /// client is gone.
    async fn serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        mut rx: broadcast::Receiver<Arc<Frame>>,
        deployment: Option<String>,
        mut last: u64,
    ) {
        let mine = |id: &str| deployment.as_deref().is_none_or(|d| d == id);
        let _open = self.ctx.metrics.sse_open();
        // Boxed: the replay's state is big and short-lived; the task keeps
        // only what the live loop needs.
        if Box::pin(self.replay(&mut stream, deployment.as_deref(), &mut last)).await.is_err() {
            return;
        }
        loop {
            let frame = match rx.recv().await {
                Ok(f) => f,
                Err(RecvError::Lagged(_)) => Arc::new(Frame::Resync),
                Err(RecvError::Closed) => return,
            };
            let written = match &*frame {
                Frame::Feed { seq, deployment_id, chunk } if *seq > last && mine(deployment_id) => {
                    last = *seq;
                    stream.write_all(chunk).await
                }
                Frame::Health { deployment_id, chunk } if mine(deployment_id) => stream.write_all(chunk).await,
                Frame::KeepAlive(chunk) => stream.write_all(chunk).await,
                Frame::Resync => Box::pin(self.replay(&mut stream, deployment.as_deref(), &mut last)).await,
                _ => Ok(()),
            };
            if written.is_err() {
                return;
            }
        }
    }

    /// Writes what the store has after `last`, in pages.
    async fn replay(&self, stream: &mut TcpStream, deployment: Option<&str>, last: &mut u64) -> std::io::Result<()> {
        loop {
            let page: Vec<FeedItem> = self.ctx.store.feed(deployment, *last, 500).await.unwrap_or_default();
            let Some(end) = page.last().map(|i| i.seq) else { return Ok(()) };
            for item in &page {
                stream.write_all(&chunk(sse_event(item)).await).await?;
            }
            *last = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[&str]) -> Vec<u8> {
        format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
    }

    #[test]
    fn takes_only_plain_subscriptions() {
        let all = head(&["GET /api/v1/events HTTP/1.1", "Host: 127.0.0.1:7070", "Authorization: Bearer t0k"]);
        assert_eq!(
            parse_head(&all),
            Some(Subscription { deployment: None, token: "t0k".into(), resume: None, host: "127.0.0.1:7070".into() })
        );
        let one = head(&[
            "GET /api/v1/deployments/d01abc/events?after=7 HTTP/1.1",
            "host: x",
            "authorization: Bearer t",
            "Last-Event-ID: 9",
        ]);
        let sub = parse_head(&one).expect("a subscription");
        assert_eq!((sub.deployment.as_deref(), sub.resume), (Some("d01abc"), Some(9)), "Last-Event-ID wins");

        for refused in [
            head(&["POST /api/v1/events HTTP/1.1", "Host: x", "Authorization: Bearer t"]),
            head(&["GET /api/v1/events HTTP/1.0", "Host: x", "Authorization: Bearer t"]),
            head(&["GET /api/v1/events HTTP/1.1", "Host: x"]),
            head(&["GET /api/v1/events HTTP/1.1", "Host: x", "Cookie: bifrost_session=t"]),
            head(&["GET /api/v1/events?after=x HTTP/1.1", "Host: x", "Authorization: Bearer t"]),
            head(&["GET /api/v1/events?limit=3 HTTP/1.1", "Host: x", "Authorization: Bearer t"]),
            head(&["GET /api/v1/deployments/../events HTTP/1.1", "Host: x", "Authorization: Bearer t"]),
            head(&["GET /api/v1/projects HTTP/1.1", "Host: x", "Authorization: Bearer t"]),
            head(&["GET /api/v1/events HTTP/1.1", "Authorization: Bearer t"]),
            head(&["GET /api/v1/events HTTP/1.1", "Host: x", "Authorization: Bearer t", "Last-Event-ID: soon"]),
            head(&["GET /api/v1/events HTTP/1.1", "Host: x", "Authorization: Bearer t", "Content-Length: 5"]),
        ] {
            assert_eq!(parse_head(&refused), None, "{}", String::from_utf8_lossy(&refused));
        }
        // A pipelined second request, or a head cut short: not taken.
        let mut pipelined = all.clone();
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse_head(&pipelined), None);
        assert_eq!(parse_head(&all[..all.len() - 2]), None);
    }
}
