//! Server-Sent Events as the API sends them (`text/event-stream`), parsed
//! incrementally: the CLI's `--wait` and the routers' route feed read them.

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
