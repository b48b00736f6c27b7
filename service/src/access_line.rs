//! The router's access log as text: one short line per request, formatted
//! here rather than by tracing's general formatter. The access-log event's
//! message already is seed 003's line (`200 | 0.003s | upstream | GET
//! /path`) and its method, path, status and seconds are fields only for the
//! JSON loggers, so the text line writes them once:
//!
//! `2026-12-01T20:09:45.123456Z  INFO bifrost::access: 200 | 0.003s | 127.0.0.1:41234 | GET /path app=web deployment=d-1 request_id=… remote_ip=127.0.0.1 user_agent="curl/8.5.0"`
//!
//! Every other event goes to tracing's own format. Values come from
//! clients (path, user agent, request id): control characters are escaped,
//! so a value can neither colour an operator's terminal nor start a line.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// The target of the router's access-log events.
pub(crate) const ACCESS_TARGET: &str = "bifrost::access";

/// Fields the message already shows (`{status} | {seconds}s | … | {method} {path}`).
const IN_MESSAGE: [&str; 4] = ["method", "path", "status", "seconds"];

/// Access-log events as one short line; the rest as tracing's default.
pub(crate) struct AccessOrDefault(pub Format);

impl<S, N> FormatEvent<S, N> for AccessOrDefault
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != ACCESS_TARGET {
            return self.0.format_event(ctx, w, event);
        }
        SystemTime.format_time(&mut w)?;
        if w.has_ansi_escapes() {
            write!(w, " \x1b[32m{:>5}\x1b[0m {ACCESS_TARGET}: ", meta.level().as_str())?;
        } else {
            write!(w, " {:>5} {ACCESS_TARGET}: ", meta.level().as_str())?;
        }
        let mut line = Line { w: &mut w, result: Ok(()) };
        event.record(&mut line);
        line.result?;
        writeln!(w)
    }
}

/// Writes each field as it is visited: the message bare, others `name=value`.
struct Line<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Line<'_, '_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>, quoted: bool) {
        if self.result.is_err() || IN_MESSAGE.contains(&field.name()) {
            return;
        }
        self.result = (|| {
            if field.name() != "message" {
                write!(self.w, " {}=", field.name())?;
            }
            let mut out = Escaped { w: &mut *self.w, quoted };
            if quoted {
                out.w.write_char('"')?;
            }
            out.write_fmt(value)?;
            if quoted {
                out.w.write_char('"')?;
            }
            Ok(())
        })();
    }
}

impl Visit for Line<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Free text (a user agent) is quoted, so the line stays `name=value` pairs.
        let quoted = field.name() != "message" && (value.is_empty() || value.contains([' ', '"', '=']));
        self.field(field, format_args!("{value}"), quoted);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"), false);
    }
}

/// Escapes control characters (ESC, newlines, C1 codes) and, inside
/// quotes, the quote and the backslash.
struct Escaped<'a, 'w> {
    w: &'a mut Writer<'w>,
    quoted: bool,
}

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let plain = |c: char| !c.is_control() && !(self.quoted && (c == '"' || c == '\\'));
        let mut rest = s;
        while let Some(i) = rest.find(|c: char| !plain(c)) {
            self.w.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '"' | '\\' => write!(self.w, "\\{c}")?,
                c => write!(self.w, "{}", c.escape_default())?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.w.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(AccessOrDefault(Format::default().with_ansi(false)))
            .with_writer(move || writer.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        String::from_utf8(out.0.lock().expect("lock").clone()).expect("UTF-8")
    }

    fn access(path: &str, user_agent: &str) {
        let (status, seconds, method) = (200u16, 0.0031f64, "GET");
        tracing::info!(
            target: "bifrost::access",
            app = "web", method, path, status, seconds, deployment = "d-1", request_id = "r-7",
            remote_ip = %"10.0.0.7", user_agent,
            "{status} | {seconds:.3}s | 127.0.0.1:9000 | {method} {path}"
        );
    }

    #[test]
    fn the_access_line_shows_the_message_once_and_the_other_fields_after_it() {
        let text = lines(|| access("/a?b=1", "curl/8.5.0 (x86_64)"));
        let line = text.strip_suffix('\n').expect("one line");
        let (_time, rest) = line.split_once(' ').expect("a time first");
        assert_eq!(
            rest,
            " INFO bifrost::access: 200 | 0.003s | 127.0.0.1:9000 | GET /a?b=1 app=web deployment=d-1 \
             request_id=r-7 remote_ip=10.0.0.7 user_agent=\"curl/8.5.0 (x86_64)\""
        );
    }

    #[test]
    fn control_characters_from_a_client_cannot_start_a_line_or_colour_a_terminal() {
        let text = lines(|| access("/x\n2026-01-01T00:00:00Z  INFO forged", "evil\x1b[31m\"quoted\"\\"));
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains(r#"user_agent="evil\u{1b}[31m\"quoted\"\\""#), "{text:?}");
        assert!(text.contains(r"GET /x\n2026"), "{text:?}");
    }

    #[test]
    fn other_events_keep_tracings_own_format() {
        let text = lines(|| tracing::info!(target: "bifrost::deploy", id = "d-1", "deployed"));
        assert!(text.ends_with(" INFO bifrost::deploy: deployed id=\"d-1\"\n"), "{text:?}");
    }
}
