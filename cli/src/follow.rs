//! Following a deployment's Server-Sent Events: parses the stream, prints
//! status changes and log lines, and reconnects with `Last-Event-ID` so a
//! dropped connection loses and repeats nothing.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Api, CliError, CliResult, Exit, api_error};
use crate::output::{self, dim, s};

/// One parsed SSE event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Incremental SSE parser (the text/event-stream format).
#[derive(Default)]
pub struct SseParser {
    buf: String,
    pending: Vec<u8>,
    current: SseEvent,
}

impl SseParser {
    /// Bytes as they arrive: a UTF-8 character split across two chunks is
    /// kept until its rest arrives.
    pub fn push_bytes(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(valid);
        let text = String::from_utf8_lossy(&std::mem::replace(&mut self.pending, rest)).into_owned();
        self.push(&text)
    }

    pub fn push(&mut self, chunk: &str) -> Vec<SseEvent> {
        self.buf.push_str(chunk);
        let mut out = vec![];
        while let Some(nl) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.current.data.is_empty() || !self.current.event.is_empty() {
                    out.push(std::mem::take(&mut self.current));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) =
                line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {}
            }
        }
        out
    }
}

/// Prints one feed item as a human line.
pub fn print_item(item: &Value) {
    match s(item, "kind") {
        "status" => println!(
            "{} {} {}",
            dim(&output::when(s(item, "at"))),
            output::status(s(item, "status")),
            dim(&output::term_safe(s(item, "reason")))
        ),
        _ => println!("{} {}", dim(&format!("{:>9} |", s(item, "stream"))), output::term_safe(s(item, "line"))),
    }
}

/// Streams the deployment's feed; `until` decides when to stop (it sees each
/// item). With `follow = false` it prints what exists and returns.
pub async fn follow(api: &Api, id: &str, json: bool, mut until: impl FnMut(&Value) -> bool) -> CliResult<()> {
    let mut last: Option<String> = None;
    let mut failures = 0;
    loop {
        let mut rb =
            api.request(Method::GET, &format!("/api/v1/deployments/{id}/events")).header("accept", "text/event-stream");
        if let Some(l) = &last {
            rb = rb.header("last-event-id", l);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) if failures < 10 => {
                failures += 1;
                eprintln!("{}", dim(&format!("(connection lost: {e}; reconnecting)")));
                tokio::time::sleep(Duration::from_millis(500 * failures)).await;
                continue;
            }
            Err(e) => return Err(CliError::new(Exit::Error, format!("cannot follow {id}: {e}"))),
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(api_error(status, &body));
        }
        failures = 0;
        let mut parser = SseParser::default();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            for ev in parser.push_bytes(&chunk) {
                if ev.id.is_some() {
                    last = ev.id.clone();
                }
                // Health samples are live-only extras; logs shows status and lines.
                if ev.event == "health" {
                    continue;
                }
                let Ok(item) = serde_json::from_str::<Value>(&ev.data) else { continue };
                if json {
                    println!("{}", ev.data);
                } else {
                    print_item(&item);
                }
                if until(&item) {
                    return Ok(());
                }
            }
        }
        // The server closed the stream (restart?): resume where we were.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push("id: 7\nevent: log\nda").is_empty());
        let evs = p.push("ta: {\"a\":1}\n\n: keep-alive\n\nid: 8\ndata: x\ndata: y\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent { id: Some("7".into()), event: "log".into(), data: "{\"a\":1}".into() },
                SseEvent { id: Some("8".into()), event: String::new(), data: "x\ny".into() },
            ]
        );
    }
}
