//! Routing scripts: an app's Lua 5.4 `function handle(req)`, run by the
//! router for each of its requests, in a sandbox. The script is untrusted
//! code from a deployer, so:
//!
//! - only the `table`, `string`, `math` and `utf8` libraries exist; `load`,
//!   `loadstring`, `dofile`, `loadfile`, `require`, `collectgarbage`,
//!   `print` and `string.dump` are removed, and only text chunks load;
//! - each request gets an instruction budget and a wall-clock deadline,
//!   checked by a count hook (the hook reads the clock), and a limit hit
//!   cannot be swallowed by `pcall`: it is raised again at every `pcall`
//!   boundary until it reaches the router;
//! - each state has a memory limit;
//! - the string functions the count hook cannot interrupt (one long C call)
//!   are bounded: `string.rep` by its result's size, the pattern functions
//!   by the worst case of the pattern on that subject ([`pattern`]).
//!
//! A state is made per worker thread per script version ([`Engine`]), so
//! the hot path takes no lock; a limit hit drops the thread's state (a
//! memory bomb kept in a global goes with it).

mod convert;
pub mod pattern;
mod sandbox;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use convert::{Action, Answer, Changes, Request, Variant};

/// What one request's run of a script may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Bytes a script's Lua state may allocate (per worker thread).
    pub memory: usize,
    /// VM instructions per request.
    pub instructions: u64,
    /// Wall-clock time per request.
    pub deadline: Duration,
    /// Longest string `string.rep` may make, and longest subject the
    /// pattern functions take.
    pub max_string: usize,
    /// Worst-case steps a pattern may take on its subject ([`pattern::cost`]).
    pub pattern_steps: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 16 << 20,
            instructions: 1_000_000,
            deadline: Duration::from_millis(20),
            max_string: 1 << 20,
            // About 10 ms for the slowest pattern at this bound (BENCHMARKS.md).
            pattern_steps: 5e6,
        }
    }
}

/// Why a script was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    pub kind: ErrorKind,
    /// The Lua message, with the script's name and line when Lua knows it.
    pub message: String,
    /// The line in the script, when known.
    pub line: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The script does not compile.
    Syntax,
    /// It raised an error, or returned something `handle` may not.
    Runtime,
    /// It hit the instruction, time, memory or string limit.
    Limit,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScriptError {}

/// One version of an app's script.
#[derive(Debug)]
pub struct Script {
    /// Unique in this process: a thread's state belongs to one `Script`.
    id: u64,
    /// What errors call it: the repo path or `v3`.
    pub name: Arc<str>,
    pub source: Arc<str>,
    pub sha256: String,
    pub limits: Limits,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Script {
    pub fn new(name: &str, source: &str, limits: Limits) -> Script {
        Script {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: Arc::from(name),
            source: Arc::from(source),
            sha256: sha256(source),
            limits,
        }
    }
}

impl PartialEq for Script {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.sha256 == other.sha256 && self.limits == other.limits
    }
}

/// Hex SHA-256 of a script's text (what `bifrost scripts list` shows).
pub fn sha256(source: &str) -> String {
    hex::encode(Sha256::digest(source.as_bytes()))
}

/// Whether `source` compiles (no code runs).
pub fn compile(name: &str, source: &str) -> Result<(), ScriptError> {
    let lua = sandbox::new_state(&Limits::default()).map_err(|e| convert::error(name, e, None))?;
    lua.0
        .load(source)
        .set_name(format!("={name}"))
        .set_mode(mlua::ChunkMode::Text)
        .into_function()
        .map(drop)
        .map_err(|e| convert::error(name, e, None))
}

/// The request a pushed script is tried on before it may replace the
/// running one.
pub fn synthetic_request() -> (http::HeaderMap, Request<'static>) {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, http::HeaderValue::from_static("app.localhost"));
    headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static("bifrost-dry-run"));
    headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
    let req = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: None,
        client_ip: "192.0.2.1",
        app: "app",
        deployment: "dry-run",
    };
    (headers, req)
}

/// Compiles `script` in a state of its own and runs it on
/// [`synthetic_request`] under its limits: what a push must pass.
pub fn dry_run(script: &Script) -> Result<Action, ScriptError> {
    let loaded = sandbox::Loaded::new(script)?;
    let (mut headers, mut req) = synthetic_request();
    req.headers = Some(&mut headers);
    loaded.call(script, &mut req)
}

/// Lua states one worker thread keeps (one per app whose script it ran);
/// beyond this the least recently used goes (and is made again if needed,
/// ~100 µs). ~35 KiB each: at most ~36 MiB a thread however many apps run
/// scripts. Not lower: traffic spread evenly over more apps than the cap
/// would make a state on every request (measured, BENCHMARKS.md).
pub const STATES_PER_THREAD: usize = 1024;

/// This thread's states: app → (script id, state, last use).
#[derive(Default)]
struct States {
    by_app: HashMap<Arc<str>, (u64, sandbox::Loaded, u64)>,
    clock: u64,
}

thread_local! {
    static STATES: RefCell<States> = RefCell::new(States::default());
}

/// Runs scripts on the calling thread's own Lua states.
#[derive(Clone, Copy, Debug, Default)]
pub struct Engine;

impl Engine {
    /// Runs `script` (the current one of `app`) for `req`.
    pub fn run(app: &str, script: &Script, req: &mut Request<'_>) -> Result<Action, ScriptError> {
        STATES.with(|states| {
            let mut states = states.borrow_mut();
            let States { by_app, clock } = &mut *states;
            *clock += 1;
            let fresh = !matches!(by_app.get(app), Some((id, _, _)) if *id == script.id);
            if fresh {
                // A new version (or a state a limit hit dropped): the old one goes.
                by_app.remove(app);
                if by_app.len() >= STATES_PER_THREAD
                    && let Some(oldest) = by_app.iter().min_by_key(|(_, (_, _, used))| *used).map(|(k, _)| k.clone())
                {
                    by_app.remove(&oldest);
                }
                by_app.insert(Arc::from(app), (script.id, sandbox::Loaded::new(script)?, *clock));
            }
            let Some((_, loaded, used)) = by_app.get_mut(app) else { unreachable!("inserted above") };
            *used = *clock;
            let out = loaded.call(script, req);
            if matches!(&out, Err(e) if e.kind == ErrorKind::Limit) {
                by_app.remove(app);
            }
            out
        })
    }

    /// Forgets this thread's state for `app` (its script was removed).
    pub fn forget(app: &str) {
        STATES.with(|s| s.borrow_mut().by_app.remove(app));
    }

    /// How many states this thread keeps.
    pub fn states() -> usize {
        STATES.with(|s| s.borrow().by_app.len())
    }
}

#[cfg(test)]
mod tests;
