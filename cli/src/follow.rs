//! Following a deployment's Server-Sent Events: parses the stream, prints
//! status changes and log lines, and reconnects with `Last-Event-ID` so a
//! dropped connection loses and repeats nothing.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use bifrost_api::sse::SseParser;

use crate::client::{Api, CliError, CliResult, Exit, api_error};
use crate::output::{self, dim, s};

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
