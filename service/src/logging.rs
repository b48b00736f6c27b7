//! Logs. On Cloud Run (`K_SERVICE` set): one JSON object per line in Cloud
//! Logging's structured shape — `severity`, `message`, `time`, the event's
//! fields, and `logging.googleapis.com/trace` from the request span's
//! `trace` field. Elsewhere: tracing's plain text.

use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{DefaultFields, Format};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::access_line::{ACCESS_TARGET, AccessOrDefault};
use crate::batched::{Batched, Flush};

pub fn init(cloud_run: bool, gcp_project: &str) -> Flush {
    let filter = EnvFilter::try_from_env("BIFROST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if cloud_run {
        let (out, flush) = Batched::stdout();
        let _ = registry.with(CloudLogging { project: gcp_project.to_string(), out }).try_init();
        flush
    } else {
        let (out, flush) = Batched::stderr();
        let _ = registry.with(text_layer(out)).try_init();
        flush
    }
}

/// The CLI's logging (`bifrost up` and the other commands) on stderr, in
/// batches: tracing's text, or its JSON lines with `json`.
pub fn init_cli(filter: EnvFilter, json: bool) -> Flush {
    let (out, flush) = Batched::stderr();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry.with(tracing_subscriber::fmt::layer().json().with_writer(out)).try_init()
    } else {
        registry.with(text_layer(out)).try_init()
    };
    flush
}

/// tracing's text lines, colored only on a terminal (escape codes would
/// litter a file or a log collector); the access log's in its own short
/// format ([`AccessOrDefault`]).
fn text_layer<S>(out: Batched) -> tracing_subscriber::fmt::Layer<S, DefaultFields, AccessOrDefault, Batched>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(AccessOrDefault(Format::default()))
        .with_writer(out)
}

/// An access-log event's fields as the `httpRequest` object Cloud Logging
/// shows as a request (method, URL, status, latency as `"0.003s"`, client,
/// user agent); app, deployment and request id stay beside it.
fn http_request(fields: &mut Map<String, Value>) {
    let mut req = Map::new();
    for (from, to) in [
        ("method", "requestMethod"),
        ("path", "requestUrl"),
        ("status", "status"),
        ("remote_ip", "remoteIp"),
        ("user_agent", "userAgent"),
    ] {
        if let Some(v) = fields.remove(from) {
            req.insert(to.into(), v);
        }
    }
    if let Some(s) = fields.remove("seconds").and_then(|v| v.as_f64()) {
        req.insert("latency".into(), Value::from(format!("{s:.6}s")));
    }
    fields.insert("httpRequest".into(), Value::Object(req));
}

struct CloudLogging {
    project: String,
    out: Batched,
}

/// A span's trace id, kept in its extensions.
struct Trace(String);

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S> Layer<S> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(Value::String(t)), Some(span)) = (fields.0.remove("trace"), ctx.span(id))
            && !t.is_empty()
        {
            span.extensions_mut().insert(Trace(t));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("severity".into(), Value::from(severity(event.metadata().level())));
        line.insert("message".into(), fields.0.remove("message").unwrap_or_else(|| Value::from("")));
        line.insert(
            "time".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert("target".into(), Value::from(event.metadata().target()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(Trace(t)) = span.extensions().get::<Trace>() {
                    line.insert(
                        "logging.googleapis.com/trace".into(),
                        Value::from(format!("projects/{}/traces/{t}", self.project)),
                    );
                    break;
                }
            }
        }
        if event.metadata().target() == ACCESS_TARGET {
            http_request(&mut fields.0);
        }
        line.extend(fields.0);
        // One write per line: lines of concurrent events never mix.
        let Ok(mut text) = serde_json::to_vec(&Value::Object(line)) else { return };
        text.push(b'\n');
        let _ = self.out.clone().write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_log_event_becomes_cloud_loggings_http_request() {
        let mut f = Map::new();
        for (k, v) in [
            ("method", Value::from("GET")),
            ("path", Value::from("/a?b=1")),
            ("status", Value::from(429)),
            ("seconds", Value::from(0.0031)),
            ("remote_ip", Value::from("10.0.0.7")),
            ("user_agent", Value::from("curl/8")),
            ("app", Value::from("web")),
            ("request_id", Value::from("r1")),
        ] {
            f.insert(k.into(), v);
        }
        http_request(&mut f);
        assert_eq!(
            f["httpRequest"],
            serde_json::json!({"requestMethod": "GET", "requestUrl": "/a?b=1", "status": 429,
                "latency": "0.003100s", "remoteIp": "10.0.0.7", "userAgent": "curl/8"})
        );
        assert_eq!((f["app"].as_str(), f["request_id"].as_str()), (Some("web"), Some("r1")));
        assert!(!f.contains_key("method") && !f.contains_key("seconds"));
    }
}
