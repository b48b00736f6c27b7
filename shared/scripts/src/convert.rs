//! Between Rust and the script: the `req` table it is given, the table it
//! returns (checked: a bad status or header is the script's error, not the
//! router's), and Lua's errors as [`ScriptError`]s with their line.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mlua::{Lua, Table, Value};

use crate::{ErrorKind, ScriptError};

/// What `handle(req)` sees of a request.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty if none.
    pub query: &'a str,
    /// `req.headers`: lowercase name → value (repeated ones joined by ", ").
    pub headers: Option<&'a HeaderMap>,
    pub client_ip: &'a str,
    pub app: &'a str,
    pub deployment: &'a str,
}

/// Which side of a split a script pins a request to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Stable,
    Canary,
}

/// An answer the script gives itself (`return {status = 503, ...}`).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Changes to the request and its answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
    /// A new path (and query) for the app.
    pub path: Option<String>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    pub variant: Option<Variant>,
}

/// What the script decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `nil`: the request goes on unchanged.
    Pass,
    Answer(Answer),
    Change(Changes),
}

pub(crate) fn request_table(lua: &Lua, req: &Request<'_>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 8)?;
    t.raw_set("method", req.method)?;
    t.raw_set("path", req.path)?;
    t.raw_set("query", req.query)?;
    t.raw_set("client_ip", req.client_ip)?;
    t.raw_set("app", req.app)?;
    t.raw_set("deployment", req.deployment)?;
    let headers = lua.create_table_with_capacity(0, req.headers.map_or(0, HeaderMap::keys_len))?;
    if let Some(map) = req.headers {
        for name in map.keys() {
            let mut values = map.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            let value = match values.next() {
                None => lua.create_string(first.as_bytes())?,
                Some(second) => {
                    let mut joined = [first.as_bytes(), b", ", second.as_bytes()].concat();
                    for v in values {
                        joined.extend_from_slice(b", ");
                        joined.extend_from_slice(v.as_bytes());
                    }
                    lua.create_string(joined)?
                }
            };
            headers.raw_set(name.as_str(), value)?;
        }
    }
    t.raw_set("headers", headers)?;
    Ok(t)
}

fn runtime(name: &str, message: String) -> ScriptError {
    ScriptError { kind: ErrorKind::Runtime, message: format!("{name}: {message}"), line: None }
}

/// `handle`'s return value as an [`Action`].
pub(crate) fn action(name: &str, out: Value) -> Result<Action, ScriptError> {
    let t = match out {
        Value::Nil => return Ok(Action::Pass),
        Value::Table(t) => t,
        other => {
            return Err(runtime(name, format!("handle(req) must return nil or a table, not a {}", other.type_name())));
        }
    };
    let field = |k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
    if !field("status").is_nil() {
        let status = match field("status") {
            Value::Integer(n) => u16::try_from(n).ok(),
            Value::Number(n) if n.fract() == 0.0 => Some(n as u16),
            _ => None,
        }
        .and_then(|n| StatusCode::from_u16(n).ok())
        .filter(|s| s.as_u16() >= 200)
        .ok_or_else(|| runtime(name, "`status` must be an HTTP status code from 200 to 599".into()))?;
        let body = match field("body") {
            Value::Nil => Vec::new(),
            Value::String(s) => s.as_bytes().to_vec(),
            other => return Err(runtime(name, format!("`body` must be a string, not a {}", other.type_name()))),
        };
        return Ok(Action::Answer(Answer { status, body, headers: header_pairs(name, "headers", field("headers"))? }));
    }
    let path = match field("path") {
        Value::Nil => None,
        Value::String(s) => {
            let p = s.to_str().map(|p| p.to_string()).unwrap_or_default();
            if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(runtime(name, format!("`path` must be a path starting with /, not {p:?}")));
            }
            Some(p)
        }
        other => return Err(runtime(name, format!("`path` must be a string, not a {}", other.type_name()))),
    };
    let variant = match field("variant") {
        Value::Nil => None,
        Value::String(s) if s.as_bytes() == b"stable" => Some(Variant::Stable),
        Value::String(s) if s.as_bytes() == b"canary" => Some(Variant::Canary),
        _ => return Err(runtime(name, "`variant` must be \"stable\" or \"canary\"".into())),
    };
    let remove_headers = match field("remove_headers") {
        Value::Nil => Vec::new(),
        Value::Table(list) => list
            .sequence_values::<Value>()
            .map(|v| header_name(name, "remove_headers", v.unwrap_or(Value::Nil)))
            .collect::<Result<_, _>>()?,
        other => return Err(runtime(name, format!("`remove_headers` must be a list, not a {}", other.type_name()))),
    };
    Ok(Action::Change(Changes {
        set_headers: header_pairs(name, "set_headers", field("set_headers"))?,
        remove_headers,
        path,
        response_headers: header_pairs(name, "response_headers", field("response_headers"))?,
        variant,
    }))
}

fn header_name(name: &str, what: &str, v: Value) -> Result<HeaderName, ScriptError> {
    match &v {
        Value::String(s) => HeaderName::from_bytes(s.as_bytes().as_ref()).ok(),
        _ => None,
    }
    .ok_or_else(|| runtime(name, format!("`{what}` holds something that is not a header name")))
}

fn header_pairs(name: &str, what: &str, v: Value) -> Result<Vec<(HeaderName, HeaderValue)>, ScriptError> {
    let t = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(t) => t,
        other => return Err(runtime(name, format!("`{what}` must be a table, not a {}", other.type_name()))),
    };
    let mut out = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| runtime(name, e.to_string()))?;
        let n = header_name(name, what, k)?;
        let value = match &v {
            Value::String(s) => HeaderValue::from_bytes(s.as_bytes().as_ref()).ok(),
            Value::Integer(i) => HeaderValue::from_str(&i.to_string()).ok(),
            _ => None,
        }
        .ok_or_else(|| runtime(name, format!("`{what}.{n}` must be a header value (a string without newlines)")))?;
        out.push((n, value));
    }
    Ok(out)
}

/// A Lua error as a [`ScriptError`]: the innermost message, the line from
/// `name:LINE:` in it, and whether a limit (`tripped`) caused it.
pub(crate) fn error(name: &str, e: mlua::Error, tripped: Option<(&'static str, Option<u32>)>) -> ScriptError {
    let (kind, message) = match innermost(&e) {
        mlua::Error::SyntaxError { message, .. } => (ErrorKind::Syntax, message.clone()),
        mlua::Error::MemoryError(_) => (ErrorKind::Limit, format!("{name}: memory limit exceeded")),
        mlua::Error::RuntimeError(m) => (ErrorKind::Runtime, m.clone()),
        other => (ErrorKind::Runtime, other.to_string()),
    };
    let kind = if tripped.is_some() { ErrorKind::Limit } else { kind };
    let (message, line) = match tripped {
        // A limit's message has no position: say where it stopped.
        Some((what, Some(line))) => (format!("{name}:{line}: {what}"), Some(line)),
        Some((what, None)) => (format!("{name}: {what}"), None),
        None if message.starts_with(name) => (message.clone(), line_of(name, &message)),
        None => (format!("{name}: {message}"), line_of(name, &message)),
    };
    ScriptError { kind, message, line }
}

fn innermost(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => innermost(cause),
        mlua::Error::WithContext { cause, .. } => innermost(cause),
        other => other,
    }
}

/// `3` from `routes/app.lua:3: attempt to index a nil value`.
fn line_of(name: &str, message: &str) -> Option<u32> {
    let at = message.find(&format!("{name}:"))? + name.len() + 1;
    let digits: String = message[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
