//! Between Rust and the script: the `req` table it is given, the table it
//! returns (checked: a bad status or header is the script's error, not the
//! router's), and Lua's errors as [`ScriptError`]s with their line.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mlua::{Table, Value};

use crate::{ErrorKind, ScriptError};

/// What `handle(req)` sees of a request.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty if none.
    pub query: &'a str,
    /// `req.headers`: lowercase name → value (repeated ones joined by ", "),
    /// fetched as the script reads them. Lent to the script's state for
    /// the call (taken and put back: no copy).
    pub headers: Option<&'a mut HeaderMap>,
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

/// Builds `req` in Lua from its parts: the VM makes a table with six
/// fields faster than six calls through mlua can set them. The router
/// pushes the parts without a memory limit (mlua then pushes strings
/// unprotected); `arm` puts the limit on before the script's own code runs.
///
/// `req.headers` starts empty and reads through: a name read is fetched
/// (`get`, each time), and `pairs(req.headers)` puts every header in the
/// table first (`fill`). A browser sends a dozen headers and most scripts read one or
/// none. None of these functions is reachable from the script (upvalues,
/// not globals).
pub(crate) const TRAMPOLINE: &str = r#"
local handle, arm, get, fill = ...
local setmetatable, next = setmetatable, next
local lazy = {
  __metatable = false,
  __index = get,
  __pairs = function(headers)
    fill(headers)
    return next, headers, nil
  end,
}
return function(method, path, query, client_ip, app, deployment)
  arm()
  return handle({ method = method, path = path, query = query, headers = setmetatable({}, lazy),
                  client_ip = client_ip, app = app, deployment = deployment })
end
"#;

/// Calls `handle(req)` through the [`TRAMPOLINE`], with the memory limit
/// off; the trampoline arms it.
pub(crate) fn call_handle(trampoline: &mlua::Function, req: &Request<'_>) -> mlua::Result<Value> {
    trampoline.call::<Value>((req.method, req.path, req.query, req.client_ip, req.app, req.deployment))
}

/// One header as `req.headers` shows it: by its lowercase name, repeated
/// values joined by ", ".
pub(crate) fn header(map: &HeaderMap, name: &[u8]) -> Option<Vec<u8>> {
    if name.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    // By &str: looked up without making a `HeaderName` (an allocation for
    // a name that is not a standard one).
    let mut values = map.get_all(std::str::from_utf8(name).ok()?).iter();
    let mut text = values.next()?.as_bytes().to_vec();
    for v in values {
        text.extend_from_slice(b", ");
        text.extend_from_slice(v.as_bytes());
    }
    Some(text)
}

/// Puts every header in `table` that is not there yet (`pairs(req.headers)`).
pub(crate) fn fill(map: &HeaderMap, table: &Table) -> mlua::Result<()> {
    for name in map.keys() {
        if table.raw_get::<Value>(name.as_str())?.is_nil()
            && let Some(text) = header(map, name.as_str().as_bytes())
        {
            table.raw_set(name.as_str(), mlua::BString::from(text))?;
        }
    }
    Ok(())
}

fn runtime(name: &str, message: String) -> ScriptError {
    ScriptError { kind: ErrorKind::Runtime, message: format!("{name}: {message}"), line: None }
}

/// `handle`'s return value as an [`Action`]. The table is walked once
/// (a lookup per known field would cost more than the fields there are).
pub(crate) fn action(name: &str, out: Value) -> Result<Action, ScriptError> {
    let t = match out {
        Value::Nil => return Ok(Action::Pass),
        Value::Table(t) => t,
        other => {
            return Err(runtime(name, format!("handle(req) must return nil or a table, not a {}", other.type_name())));
        }
    };
    let (mut status, mut body, mut headers) = (Value::Nil, Value::Nil, Value::Nil);
    let mut changes = Changes::default();
    // `for_each` keeps the key on Lua's stack (`pairs` makes a registry
    // reference of each); the script's error stops the walk.
    let mut failed = None;
    let walked = t.for_each::<Value, Value>(|k, v| {
        let Value::String(k) = k else { return Ok(()) };
        let read = || -> Result<(), ScriptError> {
            match &k.as_bytes()[..] {
                b"status" => status = v,
                b"body" => body = v,
                b"headers" => headers = v,
                b"set_headers" => changes.set_headers = header_pairs(name, "set_headers", v)?,
                b"response_headers" => changes.response_headers = header_pairs(name, "response_headers", v)?,
                b"remove_headers" => changes.remove_headers = header_list(name, v)?,
                b"path" => changes.path = Some(path(name, v)?),
                b"variant" => {
                    changes.variant = Some(match &v {
                        Value::String(s) if s.as_bytes() == b"stable" => Variant::Stable,
                        Value::String(s) if s.as_bytes() == b"canary" => Variant::Canary,
                        _ => return Err(runtime(name, "`variant` must be \"stable\" or \"canary\"".into())),
                    })
                }
                // Unknown keys are the script's own business.
                _ => {}
            }
            Ok(())
        };
        read().map_err(|e| {
            failed = Some(e);
            mlua::Error::runtime("stopped")
        })
    });
    if let Some(e) = failed {
        return Err(e);
    }
    walked.map_err(|e| runtime(name, e.to_string()))?;
    if status.is_nil() {
        return Ok(Action::Change(changes));
    }
    let status = match status {
        Value::Integer(n) => u16::try_from(n).ok(),
        Value::Number(n) if n.fract() == 0.0 => Some(n as u16),
        _ => None,
    }
    .and_then(|n| StatusCode::from_u16(n).ok())
    .filter(|s| s.as_u16() >= 200)
    .ok_or_else(|| runtime(name, "`status` must be an HTTP status code from 200 to 599".into()))?;
    let body = match body {
        Value::Nil => Vec::new(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => return Err(runtime(name, format!("`body` must be a string, not a {}", other.type_name()))),
    };
    Ok(Action::Answer(Answer { status, body, headers: header_pairs(name, "headers", headers)? }))
}

fn path(name: &str, v: Value) -> Result<String, ScriptError> {
    match v {
        Value::String(s) => {
            let p = s.to_str().map(|p| p.to_string()).unwrap_or_default();
            if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(runtime(name, format!("`path` must be a path starting with /, not {p:?}")));
            }
            Ok(p)
        }
        other => Err(runtime(name, format!("`path` must be a string, not a {}", other.type_name()))),
    }
}

fn header_list(name: &str, v: Value) -> Result<Vec<HeaderName>, ScriptError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Table(list) => list
            .sequence_values::<Value>()
            .map(|v| header_name(name, "remove_headers", v.unwrap_or(Value::Nil)))
            .collect(),
        other => Err(runtime(name, format!("`remove_headers` must be a list, not a {}", other.type_name()))),
    }
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
    // Read as Rust strings straight off the stack (no registry refs); Lua
    // turns numbers into strings, anything else is an error here.
    let mut failed = None;
    let walked = t.for_each::<mlua::BString, mlua::BString>(|k, v| {
        let pair = HeaderName::from_bytes(&k)
            .map_err(|_| runtime(name, format!("`{what}` holds something that is not a header name")))
            .and_then(|n| match HeaderValue::from_maybe_shared(bytes::Bytes::from(Vec::from(v))) {
                Ok(value) => Ok((n, value)),
                Err(_) => {
                    Err(runtime(name, format!("`{what}.{n}` must be a header value (a string without newlines)")))
                }
            });
        match pair {
            Ok(pair) => {
                out.push(pair);
                Ok(())
            }
            Err(e) => {
                failed = Some(e);
                Err(mlua::Error::runtime("stopped"))
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    walked.map_err(|_| runtime(name, format!("`{what}` must map header names to values (strings or numbers)")))?;
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
