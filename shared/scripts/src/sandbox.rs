//! The Lua state a script runs in: what it can reach, and the limits the
//! count hook, the allocator and the string wrappers enforce.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use http::HeaderMap;
use mlua::{ChunkMode, Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Value, VmState};

use crate::convert::{self, Action, Request};
use crate::{ErrorKind, Limits, Script, ScriptError, pattern};

/// Instructions between two checks of the budget and the clock.
const CHECK_EVERY: u32 = 1000;

/// One request's budget, shared with the hook and the wrappers.
#[derive(Debug)]
pub(crate) struct Budget {
    remaining: Cell<i64>,
    deadline: Cell<Instant>,
    /// The limit hit, once hit: raised again at every `pcall` boundary.
    tripped: Cell<Option<&'static str>>,
    /// Where it was hit, when known.
    line: Cell<Option<u32>>,
    limits: Limits,
}

impl Budget {
    fn new(limits: Limits) -> Rc<Budget> {
        Rc::new(Budget {
            remaining: Cell::new(0),
            deadline: Cell::new(Instant::now()),
            tripped: Cell::new(None),
            line: Cell::new(None),
            limits,
        })
    }

    fn start(&self) {
        self.remaining.set(self.limits.instructions as i64);
        self.deadline.set(Instant::now() + self.limits.deadline);
        self.tripped.set(None);
        self.line.set(None);
    }

    fn trip(&self, what: &'static str, line: Option<usize>) -> mlua::Error {
        self.tripped.set(Some(what));
        self.line.set(line.and_then(|l| u32::try_from(l).ok()));
        mlua::Error::runtime(what)
    }

    /// The limit hit during this request, and where.
    pub(crate) fn tripped(&self) -> Option<(&'static str, Option<u32>)> {
        self.tripped.get().map(|what| (what, self.line.get()))
    }
}

/// A sandboxed state and the budget its hook reads.
pub(crate) struct State(pub Lua, pub Rc<Budget>);

/// Globals a script may not have.
const REMOVED: [&str; 8] = ["load", "loadstring", "dofile", "loadfile", "require", "collectgarbage", "print", "module"];

pub(crate) fn new_state(limits: &Limits) -> mlua::Result<State> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8, LuaOptions::default())?;
    let budget = Budget::new(*limits);
    let globals = lua.globals();
    for name in REMOVED {
        globals.raw_set(name, Value::Nil)?;
    }
    let string: mlua::Table = globals.get("string")?;
    string.raw_set("dump", Value::Nil)?;
    bound_strings(&lua, &string, &budget)?;
    rethrow_limits(&lua, &budget)?;

    let b = budget.clone();
    lua.set_hook(HookTriggers::new().every_nth_instruction(CHECK_EVERY), move |_, debug| {
        let left = b.remaining.get() - i64::from(CHECK_EVERY);
        b.remaining.set(left);
        if let Some(what) = b.tripped.get() {
            return Err(mlua::Error::runtime(what));
        }
        if left < 0 {
            return Err(b.trip("instruction limit exceeded", debug.current_line()));
        }
        if Instant::now() > b.deadline.get() {
            return Err(b.trip("time limit exceeded", debug.current_line()));
        }
        Ok(VmState::Continue)
    })?;
    // Generational: a request's tables die young.
    lua.gc_gen(0, 0);
    lua.set_memory_limit(limits.memory)?;
    Ok(State(lua, budget))
}

/// `string.rep` by the size it would make; `find`, `match`, `gmatch` and
/// `gsub` by their subject's size and their pattern's worst case on it.
/// Method calls (`s:rep(n)`) reach the same functions: a string's
/// metatable indexes this very table.
fn bound_strings(lua: &Lua, string: &mlua::Table, budget: &Rc<Budget>) -> mlua::Result<()> {
    let rep: Function = string.get("rep")?;
    let b = budget.clone();
    let bounded_rep = lua.create_function(move |lua, (s, n, sep): (mlua::String, i64, Option<mlua::String>)| {
        let unit = s.as_bytes().len() + sep.as_ref().map_or(0, |x| x.as_bytes().len());
        let size = (unit as u128).saturating_mul(n.max(0) as u128);
        if size > b.limits.max_string as u128 {
            return Err(b.trip(
                "string limit exceeded: string.rep would make more than the per-request limit",
                caller_line(lua, 1),
            ));
        }
        rep.call::<mlua::String>((s, n, sep))
    })?;
    string.raw_set("rep", bounded_rep)?;

    // The pattern functions are guarded in Lua (PATTERN_GUARDS): a call
    // with a pattern seen before and a short enough subject goes straight
    // to C; any other reaches `check` here. A Rust callback around every
    // call cost more than the call (~0.4 µs, BENCHMARKS.md).
    let b = budget.clone();
    let check = lua.create_function(move |lua, (s, p, plain): (mlua::String, mlua::String, bool)| {
        let limits = &b.limits;
        let n = s.as_bytes().len();
        if n > limits.max_string {
            let why = "string limit exceeded: subject too long for a pattern function";
            return Err(b.trip(why, caller_line(lua, GUARDED_CALLER)));
        }
        let shape = pattern::shape(&p.as_bytes());
        let cost = shape.factor * ((n as f64) + 1.0).powi(shape.exponent);
        if !plain && cost > limits.pattern_steps {
            let why = "pattern limit exceeded: this pattern's worst case on this subject is too slow \
                       (anchor it with ^, repeat fewer items, or use a plain find)";
            return Err(b.trip(why, caller_line(lua, GUARDED_CALLER)));
        }
        // One long C call can run past the deadline; a second may not start.
        if !plain && cost > CHEAP_PATTERN_STEPS && Instant::now() > b.deadline.get() {
            return Err(b.trip("time limit exceeded in a pattern function", caller_line(lua, GUARDED_CALLER)));
        }
        Ok(cheap_subjects(shape, limits.max_string))
    })?;
    lua.load(PATTERN_GUARDS).set_name("=bifrost").set_mode(ChunkMode::Text).call::<()>((string.clone(), check))
}

/// A call whose bound is at most this many steps needs no look at the
/// clock. Between two runs of the count hook (every `CHECK_EVERY`
/// instructions, ≥ 15 of them per guarded call) such calls add at most
/// ~70 × 10⁴ steps, ~1.5 ms, past the deadline.
const CHEAP_PATTERN_STEPS: f64 = 1e4;

/// The longest subject on which `shape`'s bound stays cheap (−1: none).
fn cheap_subjects(shape: pattern::Shape, max_string: usize) -> i64 {
    let pattern::Shape { exponent, factor } = shape;
    let longest = match exponent {
        _ if factor > CHEAP_PATTERN_STEPS => -1.0,
        0 => max_string as f64,
        e => ((CHEAP_PATTERN_STEPS / factor).powf(1.0 / f64::from(e)) - 1.0).floor(),
    };
    longest.min(max_string as f64) as i64
}

/// Stack level of the script's line in `check`: the Rust function (0),
/// `slow` (1), the wrapper (2), the script (3).
const GUARDED_CALLER: usize = 3;

/// The pattern functions' guards. `fast[p]`: the longest subject on which
/// pattern `p` is cheap (learnt from `check`; at most 256 patterns kept, a
/// script's patterns are mostly constants). Anything else — a new
/// pattern, a long subject, a number (Lua matches its text) — goes
/// through `check`, which refuses a call over a limit before the C
/// function starts. `type`, `tostring` and the C functions are upvalues:
/// a script cannot swap them.
const PATTERN_GUARDS: &str = r#"
local string, check = ...
local type, tostring = type, tostring
local find, match, gmatch, gsub = string.find, string.match, string.gmatch, string.gsub
local fast, known = {}, 0

local function slow(s, p, plain)
  local ts, tp = type(s), type(p)
  if (ts ~= "string" and ts ~= "number") or (tp ~= "string" and tp ~= "number") then return end
  local m = check(tostring(s), tostring(p), plain)
  if tp == "string" and fast[p] == nil then
    if known >= 256 then fast, known = {}, 0 end
    fast[p], known = m, known + 1
  end
end

-- One closure per function over one prototype (a state is made per
-- thread per app: its size counts). The fourth argument is find's
-- `plain`; gsub's count is not.
local function guarded(c, has_plain)
  return function(s, p, a, b)
    local m = fast[p]
    if not (m and type(s) == "string" and #s <= m) then slow(s, p, has_plain and b) end
    return c(s, p, a, b)
  end
end
string.find, string.match = guarded(find, true), guarded(match, false)
string.gmatch, string.gsub = guarded(gmatch, false), guarded(gsub, false)
"#;

/// The script's line `level` calls up from a Rust function (1: its caller).
fn caller_line(lua: &Lua, level: usize) -> Option<usize> {
    lua.inspect_stack(level, |d| d.current_line()).flatten()
}

/// `pcall` and `xpcall` that give a limit's error back: a script cannot
/// catch its way past its budget.
fn rethrow_limits(lua: &Lua, budget: &Rc<Budget>) -> mlua::Result<()> {
    let globals = lua.globals();
    for name in ["pcall", "xpcall"] {
        let inner: Function = globals.get(name)?;
        let b = budget.clone();
        let wrapped = lua.create_function(move |_, args: MultiValue| {
            let out = inner.call::<MultiValue>(args)?;
            match b.tripped.get() {
                Some(what) => Err(mlua::Error::runtime(what)),
                None => Ok(out),
            }
        })?;
        globals.raw_set(name, wrapped)?;
    }
    Ok(())
}

/// A script loaded in a state of its own, its `handle` at hand (through
/// [`convert::TRAMPOLINE`]).
pub(crate) struct Loaded {
    state: State,
    call: Function,
    /// The request's headers while `handle` runs (`req.headers` reads them).
    headers: Rc<RefCell<HeaderMap>>,
}

impl Loaded {
    pub(crate) fn new(script: &Script) -> Result<Loaded, ScriptError> {
        let name = &*script.name;
        let state = new_state(&script.limits).map_err(|e| convert::error(name, e, None))?;
        let chunk = state
            .0
            .load(&*script.source)
            .set_name(format!("={name}"))
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| convert::error(name, e, None))?;
        // The chunk's top level runs under the same limits as a request.
        state.1.start();
        chunk.call::<()>(()).map_err(|e| convert::error(name, e, state.1.tripped()))?;
        let handle = match state.0.globals().raw_get::<Value>("handle") {
            Ok(Value::Function(f)) => f,
            _ => {
                return Err(ScriptError {
                    kind: ErrorKind::Runtime,
                    message: format!("{name}: the script must define `function handle(req)`"),
                    line: None,
                });
            }
        };
        let memory = script.limits.memory;
        let headers = Rc::new(RefCell::new(HeaderMap::new()));
        let lua = &state.0;
        // Fetching headers is the router's own bounded work (what hyper
        // accepted), done without the limit like building `req`.
        let unlimited = move |lua: &Lua, on: bool| lua.set_memory_limit(if on { 0 } else { memory }).map(drop);
        let call = lua
            .create_function(move |lua, ()| unlimited(lua, false))
            .and_then(|arm| {
                let map = headers.clone();
                // `__index(headers, name)`: the table is not needed (a bool
                // takes it without a registry reference); a name that is
                // not a string is no header.
                let get = lua.create_function(move |lua, (_, name): (bool, Value)| {
                    let Value::String(name) = name else { return Ok(None) };
                    unlimited(lua, true)?;
                    let value = convert::header(&map.borrow(), &name.as_bytes()).map(mlua::BString::from);
                    unlimited(lua, false)?;
                    Ok(value)
                })?;
                let map = headers.clone();
                let fill = lua.create_function(move |lua, table: mlua::Table| {
                    unlimited(lua, true)?;
                    let filled = convert::fill(&map.borrow(), &table);
                    unlimited(lua, false)?;
                    filled
                })?;
                lua.load(convert::TRAMPOLINE)
                    .set_name("=bifrost")
                    .set_mode(ChunkMode::Text)
                    .call::<Function>((handle, arm, get, fill))
            })
            .map_err(|e| convert::error(name, e, None))?;
        Ok(Loaded { state, call, headers })
    }

    pub(crate) fn call(&self, script: &Script, req: &mut Request<'_>) -> Result<Action, ScriptError> {
        let name = &*script.name;
        let State(lua, budget) = &self.state;
        // The request's table and the answer's reading are the router's own
        // bounded work: without a memory limit mlua pushes strings and sets
        // fields unprotected (no pcall per field), ~3x faster. The script
        // itself runs under the limit.
        let limit = budget.limits.memory;
        let unlimited = |on: bool| lua.set_memory_limit(if on { 0 } else { limit }).map(drop);
        if let Some(h) = req.headers.as_deref_mut() {
            std::mem::swap(h, &mut self.headers.borrow_mut());
        }
        budget.start();
        let out = unlimited(true)
            .and_then(|()| convert::call_handle(&self.call, req))
            .map_err(|e| convert::error(name, e, budget.tripped()));
        // The headers go back to the request. (A `req` a script keeps and
        // reads during a later request sees that one's: the app's own.)
        let lent = self.headers.take();
        if let Some(h) = req.headers.as_deref_mut() {
            *h = lent;
        }
        let _ = unlimited(true);
        let action = out.and_then(|v| convert::action(name, v));
        let _ = unlimited(false);
        action
    }
}

#[cfg(test)]
mod tests {
    use super::{CHEAP_PATTERN_STEPS, cheap_subjects};
    use crate::pattern::{cost, shape};

    #[test]
    fn a_pattern_is_cheap_on_subjects_up_to_the_length_where_its_bound_passes_the_threshold() {
        let max = 1 << 20;
        assert_eq!(cheap_subjects(shape(b"^/admin"), max), max as i64, "bounded by the pattern alone");
        for p in [&b"/admin"[..], b"user=(%w+)", b"^a?b?c?(%w+)", b".-.-.-x"] {
            let n = cheap_subjects(shape(p), max);
            assert!(n >= 0, "{}", String::from_utf8_lossy(p));
            assert!(cost(p, n as usize) <= CHEAP_PATTERN_STEPS, "{}", String::from_utf8_lossy(p));
            assert!(cost(p, n as usize + 1) > CHEAP_PATTERN_STEPS, "{}", String::from_utf8_lossy(p));
        }
        assert_eq!(cheap_subjects(shape(&b"a?".repeat(20)), max), -1, "2^20 tries on any subject");
    }
}
